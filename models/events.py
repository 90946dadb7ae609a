"""Patient events (the data layer's events table) turned into solver events.

A bolus is a jump in one state, optionally scaled by a parameter (so that its
sensitivity is exact); a period is a piecewise-constant input that the solver switches
at its start and end. The solver restarts exactly at every event time.

Mapping of event kinds (``carthema.data`` events table) to the model:

========================  ==================================================================
cart_infusion             bolus into ``cart_E``: amount (CAR+ cells/kg) x ``cart_f_dose``;
                          a duration of N >= 2 days splits the amount into N equal daily
                          infusions; without targets, also opens ``cart_expand`` until
                          first dose + ``cart_tmax``
lymphodepletion           input ``ld`` = sum over drugs of weight x amount / reference dose
                          (:data:`LD_REFERENCE`) during ``duration`` days (default 1)
stem_cell_boost           allogeneic: bolus into donor stem cells (x ``graft_hsc``), donor
                          neutrophil progenitors (x ``graft_prog``), platelet progenitors
                          (x ``graft_prog_plt``) and donor T cells (CD3+/kg / 1e8);
                          autologous: the same into host compartments, no T-cell effect
gcsf                      input ``gcsf`` = 1 during ``duration`` days
tpo_agonist               input ``tpo`` = 1 during ``duration`` days
platelet_transfusion      bolus into ``plt_circ``: amount (units) x ``plt_unit_increment``
rbc_transfusion,          no model effect (no red-cell lineage, no explicit cytokine or
tocilizumab,              steroid effect): listed in ``ignored``
corticosteroid,
plasma_exchange
========================  ==================================================================

Events that the chosen component set has no state for are listed in
:attr:`SolverEvents.ignored`, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.errors import InputError
from .model import Model

#: Lymphodepleting drugs: (reference dose mg/m2/day, weight). A standard
#: fludarabine 30 mg/m2 + cyclophosphamide 500 mg/m2 day has intensity 1.
LD_REFERENCE: dict[str, tuple[float, float]] = {
    "fludarabine": (30.0, 0.5),
    "cyclophosphamide": (500.0, 0.5),
    "bendamustine": (90.0, 1.0),
}

#: CD3+ per CD34+ cell in an unselected mobilised peripheral-blood graft when neither the
#: CD3+ nor the mononuclear-cell dose is given: typical grafts carry about 2-3e8 CD3+/kg
#: with 5e6 CD34+/kg (assumption).
UNSELECTED_CD3_PER_CD34 = 50.0
#: CD3+ fraction of mononuclear cells in a mobilised apheresis product (assumption: T
#: cells are roughly a quarter of the mononuclear cells).
CD3_FRACTION_OF_MNC = 0.25
#: Event kinds the model has no mechanism for; reported in ``SolverEvents.ignored``.
NO_MODEL_EFFECT = {
    "rbc_transfusion": "no red-cell lineage in the model",
    "tocilizumab": "no explicit IL-6 blockade in the model",
    "corticosteroid": "no explicit steroid effect in the model",
    "plasma_exchange": "no explicit cytokine removal in the model",
}

BOLUS, SET_INPUT = 0, 1


@dataclass(frozen=True)
class SolverEvents:
    """Events in solver form, sorted by time (days since first CAR-T infusion)."""

    t: np.ndarray
    kind: np.ndarray
    target: np.ndarray
    value: np.ndarray
    scale: np.ndarray
    ignored: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def n(self) -> int:
        return int(self.t.size)

    @property
    def first_time(self) -> float | None:
        return float(self.t[0]) if self.t.size else None


def _get(row: pd.Series, col: str, default=None):
    val = row.get(col, default)
    if val is None or (isinstance(val, float) and np.isnan(val)):
        return default
    if val is pd.NA:
        return default
    return val


def _is_true(val) -> bool:
    if isinstance(val, str):
        return val.strip().lower() in ("yes", "true", "1", "y")
    return bool(val) if val is not None else False


def build_events(
    model: Model, events: pd.DataFrame | None, p: np.ndarray, *, patient: str | None = None
) -> SolverEvents:
    """Solver events of one patient.

    Parameters
    ----------
    model:
        The model the events drive.
    events:
        Events table (columns: patient, day, kind, amount, unit, duration, and for some
        kinds drug, source, cd34_selected, cd3_per_kg) in canonical units; ``None`` or
        empty for no events.
    p:
        Parameter vector (natural scale); only structural parameters are read here.
    patient:
        Select this patient's rows when the table holds several patients.
    """
    rows: list[tuple[float, int, int, float, int]] = []
    periods: dict[str, list[tuple[float, float, float]]] = {}
    ignored: list[str] = []
    notes: list[str] = []
    if events is None or len(events) == 0:
        return _empty()
    ev = events
    if patient is not None and "patient" in ev.columns:
        ev = ev[ev["patient"].astype(str) == str(patient)]
        if len(ev) == 0:
            raise InputError(
                f"no events for patient '{patient}'",
                column="patient",
                fix="check the patient identifier or pass events for this patient",
            )
    ev = ev.sort_values("day", kind="stable")

    def state(name: str) -> int:
        return model.index("state", name)

    def scale(name: str) -> int:
        return model.index("param", name)

    first_cart: float | None = None
    for _, row in ev.iterrows():
        day = float(row["day"])
        kind = str(row["kind"])
        amount = _get(row, "amount")
        amount = None if amount is None else float(amount)
        duration = float(_get(row, "duration", 0.0) or 0.0)
        label = f"{kind} on day {day:g}"
        if kind == "cart_infusion":
            if not model.has("cart_E"):
                ignored.append(label + " (model has no CAR-T component)")
                continue
            n_split = max(1, int(round(duration))) if duration >= 2 else 1
            for i in range(n_split):
                rows.append(
                    (day + i, BOLUS, state("cart_E"), amount / n_split, scale("cart_f_dose"))
                )
            first_cart = day if first_cart is None else min(first_cart, day)
        elif kind == "lymphodepletion":
            if not model.has("ld"):
                ignored.append(label + " (model has no lymphodepletion input)")
                continue
            drug = str(_get(row, "drug", "")).strip().lower()
            if drug not in LD_REFERENCE:
                raise InputError(
                    f"the model has no reference dose for lymphodepletion drug '{drug}' "
                    f"(day {day:g})",
                    column="drug",
                    fix=f"the model knows {sorted(LD_REFERENCE)}; express the regimen as an "
                    "equivalent dose of one of them",
                )
            ref, weight = LD_REFERENCE[drug]
            # A lymphodepletion row is one day's dose unless a duration says otherwise.
            span = duration if duration > 0 else 1.0
            periods.setdefault("ld", []).append((day, day + span, weight * amount / ref))
        elif kind in ("gcsf", "tpo_agonist"):
            name = "gcsf" if kind == "gcsf" else "tpo"
            if not model.has(name):
                ignored.append(label + " (model has no haematopoiesis component)")
                continue
            if duration <= 0:
                raise InputError(
                    f"{kind} period on day {day:g} has no duration",
                    column="duration",
                    fix="give the number of days the treatment was given",
                )
            periods.setdefault(name, []).append((day, day + duration, 1.0))
        elif kind == "platelet_transfusion":
            if not model.has("plt_circ"):
                ignored.append(label + " (model has no platelet lineage)")
                continue
            rows.append((day, BOLUS, state("plt_circ"), amount, scale("plt_unit_increment")))
        elif kind == "stem_cell_boost":
            if not model.has("hsc_H"):
                ignored.append(label + " (model has no haematopoiesis component)")
                continue
            source = str(_get(row, "source", "allogeneic")).strip().lower()
            allo = source != "autologous"
            sfx = "d" if allo else "h"
            rows.append(
                (day, BOLUS, state("hsc_D" if allo else "hsc_H"), amount, scale("graft_hsc"))
            )
            rows.append((day, BOLUS, state(f"neu_prol_{sfx}"), amount, scale("graft_prog")))
            rows.append((day, BOLUS, state("plt_prol"), amount, scale("graft_prog_plt")))
            if allo:
                cd3 = _get(row, "cd3_per_kg")
                mnc = _get(row, "mnc_per_kg")
                if cd3 is None:
                    if _is_true(_get(row, "cd34_selected", False)):
                        cd3 = 0.0
                    elif mnc is not None:
                        cd3 = CD3_FRACTION_OF_MNC * float(mnc)
                        notes.append(
                            f"{label}: unselected graft without a CD3+ dose; assumed "
                            f"{CD3_FRACTION_OF_MNC:g} of {float(mnc):.3g} MNC/kg = {cd3:.3g} "
                            "CD3+/kg"
                        )
                    else:
                        cd3 = UNSELECTED_CD3_PER_CD34 * amount
                        notes.append(
                            f"{label}: unselected graft without a CD3+ dose; assumed "
                            f"{UNSELECTED_CD3_PER_CD34:g} CD3+ per CD34+ = {cd3:.3g}/kg"
                        )
                if float(cd3) > 0:
                    rows.append((day, BOLUS, state("gvh_T"), float(cd3) / 1e8, -1))
        elif kind in NO_MODEL_EFFECT:
            ignored.append(f"{label} ({NO_MODEL_EFFECT[kind]})")
        else:
            raise InputError(
                f"unknown event kind '{kind}'", column="kind", fix="see carthema.data events kinds"
            )

    if first_cart is not None and not model.has("tgt_B") and model.has("cart_expand"):
        tmax = float(p[model.index("param", "cart_tmax")])
        periods.setdefault("cart_expand", []).append((first_cart, first_cart + tmax, 1.0))

    for name, spans in periods.items():
        idx = model.index("input", name)
        for t_switch in sorted({t for a, b, _ in spans for t in (a, b)}):
            level = sum(v for a, b, v in spans if a <= t_switch < b)
            rows.append((t_switch, SET_INPUT, idx, level, -1))

    rows.sort(key=lambda r: r[0])
    if not rows:
        return _empty(tuple(ignored), tuple(notes))
    t, kind, target, value, sc = zip(*rows, strict=True)
    return SolverEvents(
        np.asarray(t, dtype=float),
        np.asarray(kind, dtype=np.int64),
        np.asarray(target, dtype=np.int64),
        np.asarray(value, dtype=float),
        np.asarray(sc, dtype=np.int64),
        ignored=tuple(ignored),
        notes=tuple(notes),
    )


def _empty(ignored: tuple[str, ...] = (), notes: tuple[str, ...] = ()) -> SolverEvents:
    none_f, none_i = np.zeros(0), np.zeros(0, dtype=np.int64)
    return SolverEvents(none_f, none_i, none_i, none_f, none_i, ignored=ignored, notes=notes)
