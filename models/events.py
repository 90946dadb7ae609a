"""Patient events (the data layer's events table) turned into solver events.

A bolus is a jump in one state, optionally scaled by a parameter (so that its
sensitivity is exact); a period is a piecewise-constant input that the solver switches
at its start and end. The solver restarts exactly at every event time.

Each component owns the events that act on its states: it declares
``EVENTS = {kind: handler}`` (see :mod:`carthema.models.dosing`), and
:func:`build_events` dispatches every row to the handler of its kind:

========================  ==================================================================
cart_infusion             ``cart``: bolus into ``cart_E`` (CAR+ cells/kg x ``cart_f_dose``),
                          split over ``duration`` days; without targets it also opens
                          ``cart_expand`` for ``cart_tmax`` days
lymphodepletion           ``targets``, ``haematopoiesis``: input ``ld`` = sum over drugs of
                          weight x amount / reference dose (:data:`LD_REFERENCE`)
stem_cell_boost           ``haematopoiesis``: graft stem cells (x ``graft_hsc``) and
                          neutrophil and platelet progenitors (x ``graft_prog``,
                          ``graft_prog_plt``) into the compartments of the graft's origin
                          (``source``: autologous, prior-donor, allogeneic = new donor); a
                          new donor's T cells from its CD3+ dose
gcsf, tpo_agonist         ``haematopoiesis``: input ``gcsf`` / ``tpo`` = 1 for ``duration``
platelet_transfusion      ``haematopoiesis``: bolus into ``plt_circ`` (units x
                          ``plt_unit_increment``)
rbc_transfusion,          no model effect (no red-cell lineage, no explicit cytokine or
tocilizumab,              steroid effect): listed in ``ignored``
corticosteroid,
plasma_exchange
========================  ==================================================================

Events whose component is not in the chosen set are listed in
:attr:`SolverEvents.ignored`, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.errors import InputError
from .components import cart, haematopoiesis, targets
from .dosing import BOLUS, LD_REFERENCE, SET_INPUT, EventContext, EventRow, Handler
from .model import Model

__all__ = ["BOLUS", "LD_REFERENCE", "SET_INPUT", "SolverEvents", "build_events"]

#: Event kinds the model has no mechanism for; reported in ``SolverEvents.ignored``.
NO_MODEL_EFFECT = {
    "rbc_transfusion": "no red-cell lineage in the model",
    "tocilizumab": "no explicit IL-6 blockade in the model",
    "corticosteroid": "no explicit steroid effect in the model",
    "plasma_exchange": "no explicit cytokine removal in the model",
}
#: Every component that declares events, for naming the one a kind needs.
_ALL_COMPONENTS = (cart, targets, haematopoiesis)


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


def _handlers(model: Model) -> dict[str, Handler]:
    out: dict[str, Handler] = {}
    for comp in model.components:
        for kind, handler in getattr(comp, "EVENTS", {}).items():
            out.setdefault(kind, handler)
    return out


def _owner(kind: str) -> str | None:
    for comp in _ALL_COMPONENTS:
        if kind in getattr(comp, "EVENTS", {}):
            return comp.__name__.rsplit(".", 1)[-1]
    return None


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
    handlers = _handlers(model)
    ctx = EventContext(model, p)
    for _, row in ev.iterrows():
        amount = row.get("amount")
        amount = None if amount is None or pd.isna(amount) else float(amount)
        duration = row.get("duration")
        duration = 0.0 if duration is None or pd.isna(duration) else float(duration)
        item = EventRow(float(row["day"]), str(row["kind"]), amount, duration, row)
        if item.kind in handlers:
            handlers[item.kind](ctx, item)
        elif item.kind in NO_MODEL_EFFECT:
            ctx.ignored.append(f"{item.label} ({NO_MODEL_EFFECT[item.kind]})")
        elif (owner := _owner(item.kind)) is not None:
            ctx.ignored.append(f"{item.label} (model has no {owner} component)")
        else:
            raise InputError(
                f"unknown event kind '{item.kind}'",
                column="kind",
                fix="see carthema.data events kinds",
            )

    rows, periods = ctx.rows, ctx.periods
    for name, spans in periods.items():
        idx = model.index("input", name)
        for t_switch in sorted({t for a, b, _ in spans for t in (a, b)}):
            level = sum(v for a, b, v in spans if a <= t_switch < b)
            rows.append((t_switch, SET_INPUT, idx, level, -1))

    rows.sort(key=lambda r: r[0])
    ignored, notes = ctx.ignored, ctx.notes
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
