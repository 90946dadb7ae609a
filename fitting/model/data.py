"""One patient's observations and events turned into the arrays a fit needs.

What is used and what is not
----------------------------
- Analytes the model has an observable for are used (``cart_copies`` in blood,
  ``b_cells``, ``marrow_blasts``, ``anc``, ``platelets``, ``chimerism_cd15``).
- Unsorted donor chimerism (``chimerism``, whole blood or marrow) is used as myeloid
  (CD15+) chimerism, with a note: after engraftment myeloid cells dominate unsorted
  samples, but T-cell chimerism can lag, so this over-states the donor share early on.
- Everything else (MRD, WBC, lymphocytes, CRP, ...; CAR-T copies in marrow) is listed in
  :attr:`PatientData.unused` with the reason, never dropped silently.
- Observations more than ``history_days`` before the first event are listed as unused:
  the model starts at the untreated steady state before the course, so earlier disease
  history (previous lines of therapy) is not modelled.

Below-limit values
------------------
Rows flagged ``blq`` enter the likelihood as left-censored at their ``lloq`` (M3). A value
of exactly 0 on an analyte fitted on the log or logit scale (e.g. "0 % blasts") is read
as "below the detection limit" of :attr:`~carthema.fitting.model.priors.Residual.zero_limit`
and censored there, with a note.

Times
-----
The solver gets the sorted unique observation days; it starts at
``t0 = min(first event, first used observation)`` from the untreated steady state. An
observation on an event's day is the value before that event (blood drawn before the
infusion), the solver's pre-event convention.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carthema.data.errors import InputError
from carthema.fitting.model.priors import RESIDUALS
from carthema.models.events import SolverEvents, build_events
from carthema.models.model import Model

#: Data-layer analytes read as a model observable, with the approximation stated.
ANALYTE_MAP: dict[str, tuple[str, str]] = {
    "chimerism": (
        "chimerism_cd15",
        "unsorted donor chimerism used as myeloid (CD15+) chimerism: myeloid cells dominate "
        "unsorted samples after engraftment, but T-cell chimerism may lag",
    ),
}

#: Order of likelihood scales in the row arrays (rows are sorted by scale).
SCALES = ("log", "logit", "identity")

#: Default: observations up to this many days before the first event are used.
HISTORY_DAYS = 30.0


@dataclass(frozen=True)
class PatientData:
    """Everything about one patient that the likelihood needs.

    Attributes
    ----------
    patient:
        Patient identifier.
    model:
        The model fitted.
    p_fixed:
        Parameter vector (natural scale) holding the values of the non-free parameters.
    t0:
        Start of the solve (days).
    times:
        Sorted unique observation days (the solver's output times).
    events:
        Solver events of the patient.
    rows:
        Used observations, one per row, sorted by likelihood scale: patient, day,
        analyte (data), observable (model), value, lloq, censored, limit (the censoring
        limit), scale, t_idx, o_idx, note.
    unused:
        Observations not used, with a ``reason`` column.
    notes:
        Plain-words notes (approximations, ignored events).
    """

    patient: str
    model: Model
    p_fixed: np.ndarray
    t0: float
    times: np.ndarray
    events: SolverEvents
    rows: pd.DataFrame
    unused: pd.DataFrame
    notes: tuple[str, ...] = field(default=())

    # ---- arrays for the likelihood
    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def t_idx(self) -> np.ndarray:
        return self.rows["t_idx"].to_numpy(np.int64)

    @property
    def o_idx(self) -> np.ndarray:
        return self.rows["o_idx"].to_numpy(np.int64)

    @property
    def censored(self) -> np.ndarray:
        return self.rows["censored"].to_numpy(bool)

    @property
    def observables(self) -> tuple[str, ...]:
        """Model observables with at least one used row, in model order."""
        used = set(self.rows["observable"])
        return tuple(o for o in self.model.obs_names if o in used)

    def scale_slices(self) -> dict[str, slice]:
        """Row range of each likelihood scale (rows are sorted by scale)."""
        out = {}
        scale = self.rows["scale"].to_numpy()
        for s in SCALES:
            idx = np.flatnonzero(scale == s)
            if idx.size:
                out[s] = slice(int(idx[0]), int(idx[-1]) + 1)
        return out

    def transformed(self) -> np.ndarray:
        """Observed value (uncensored rows) or censoring limit (censored rows), on each
        row's likelihood scale."""
        v = np.where(self.censored, self.rows["limit"], self.rows["value"]).astype(float)
        return transform_np(v, self.rows["scale"].to_numpy(), self.rows["floor"].to_numpy())


def transform_np(x: np.ndarray, scale: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Values on their likelihood scale (numpy); see :func:`carthema.fitting.model.likelihood`."""
    x = np.asarray(x, dtype=float)
    out = np.array(x, dtype=float)
    lg = scale == "log"
    out[lg] = np.log(np.maximum(x[lg], 0.0) + floor[lg])
    lt = scale == "logit"
    f = np.clip(x[lt] / 100.0, 0.0, 1.0)
    out[lt] = np.log(f + floor[lt] / 100.0) - np.log(1.0 - f + floor[lt] / 100.0)
    return out


def patients_in(observations: pd.DataFrame) -> list[str]:
    return sorted(observations["patient"].astype(str).unique().tolist())


def prepare_patient(
    model: Model,
    observations: pd.DataFrame,
    events: pd.DataFrame | None,
    patient: str | None,
    p_fixed: np.ndarray | None = None,
    *,
    history_days: float = HISTORY_DAYS,
) -> PatientData:
    """Select one patient and build the fit's arrays.

    Parameters
    ----------
    model:
        Model to fit.
    observations, events:
        Validated data-layer tables (may hold several patients).
    patient:
        Patient identifier; may be ``None`` when the observations hold one patient.
    p_fixed:
        Values of the parameters that are not fitted (default: model defaults).
    history_days:
        Use observations from ``history_days`` before the first event on.
    """
    if observations is None or len(observations) == 0:
        raise InputError("the observations table is empty", fix="give at least one observation")
    from carthema.data.patients import select_patient

    patient = select_patient(observations, patient)
    obs = observations[observations["patient"].astype(str) == patient].copy()
    p = model.default_params() if p_fixed is None else np.asarray(p_fixed, float).copy()
    sev = build_events(model, _patient_events(events, patient), p)
    notes: list[str] = _ignored_notes(sev.ignored) + list(sev.notes)
    first_event = sev.first_time
    used_rows, unused_rows, approximations = _sort_observations(
        model, obs, patient, first_event, history_days
    )
    notes += _observation_notes(used_rows, approximations)
    unused = pd.DataFrame(unused_rows, columns=UNUSED_COLUMNS)
    if not used_rows:
        _refuse_no_usable(model, patient, unused)
    rows, times = _index_rows(model, used_rows)
    t0 = float(times[0]) if first_event is None else min(float(times[0]), float(first_event))
    return PatientData(
        patient=patient,
        model=model,
        p_fixed=p,
        t0=t0,
        times=times,
        events=sev,
        rows=rows,
        unused=unused,
        notes=_collapse(notes),
    )


#: Columns of :attr:`PatientData.unused` (the observation's own fields and the reason).
UNUSED_COLUMNS = [
    "patient",
    "day",
    "analyte",
    "value",
    "unit",
    "compartment",
    "lloq",
    "blq",
    "reason",
]


def _patient_events(events: pd.DataFrame | None, patient: str) -> pd.DataFrame | None:
    """The rows of ``patient`` in ``events`` (None without events); refuses a patient
    with none when the table has rows."""
    if events is None or not len(events):
        return None
    mine = events[events["patient"].astype(str) == patient]
    if len(mine) == 0:
        raise InputError(
            f"no events for patient '{patient}'",
            column="patient",
            fix="the events table must hold this patient's treatments (at least the "
            "CAR-T infusion)",
        )
    return mine


def _sort_observations(
    model: Model,
    obs: pd.DataFrame,
    patient: str,
    first_event: float | None,
    history_days: float,
) -> tuple[list[dict], list[dict], dict[str, str]]:
    """The patient's observations as (rows the fit uses, rows it does not with the
    reason, analytes read as an approximate observable with why)."""
    used_rows, unused_rows = [], []
    start = -np.inf if first_event is None else first_event - history_days
    approximations: dict[str, str] = {}
    for _, r in obs.iterrows():
        analyte = str(r["analyte"])
        compartment = str(r.get("compartment", "blood"))
        day = float(r["day"])
        rec = {
            "patient": patient,
            "day": day,
            "analyte": analyte,
            "value": r["value"],
            "unit": r.get("unit"),
            "compartment": compartment,
            "lloq": r.get("lloq"),
            "blq": bool(r.get("blq", False)),
        }
        observable = analyte
        if analyte in ANALYTE_MAP and ANALYTE_MAP[analyte][0] in model.obs_names:
            observable, why = ANALYTE_MAP[analyte]
            approximations[analyte] = why
        if observable not in model.obs_names:
            unused_rows.append(
                {**rec, "reason": f"the '{model.name}' model has no observable for {analyte}"}
            )
            continue
        if observable == "cart_copies" and compartment != "blood":
            unused_rows.append(
                {**rec, "reason": "CAR-T copies are modelled in blood only (marrow not modelled)"}
            )
            continue
        if day < start:
            unused_rows.append(
                {
                    **rec,
                    "reason": f"more than {history_days:g} days before the first event (day "
                    f"{first_event:g}); earlier disease history is not modelled",
                }
            )
            continue
        used_rows.append(_used_row(rec, observable))
    return used_rows, unused_rows, approximations


def _used_row(rec: dict, observable: str) -> dict:
    """An observation the fit uses, on its residual scale: a 0 on a log or logit scale
    becomes censored below the scale's zero limit, 100 % on the logit scale 99.9 %."""
    res = RESIDUALS[observable]
    censored = rec["blq"]
    limit = float(rec["lloq"]) if censored else np.nan
    note = ""
    value = float(rec["value"]) if pd.notna(rec["value"]) else np.nan
    if not censored and res.scale in ("log", "logit") and value <= 0.0:
        censored, limit = True, res.zero_limit
        note = f"reported 0: taken as below {res.zero_limit:g} {rec['unit']}"
    if not censored and res.scale == "logit" and value >= 100.0:
        value = 99.9
        note = "reported 100 %: taken as 99.9 % on the logit scale"
    return {
        **rec,
        "value": value,
        "observable": observable,
        "censored": censored,
        "limit": limit,
        "scale": res.scale,
        "floor": res.floor,
        "note": note,
    }


def _observation_notes(used_rows: list[dict], approximations: dict[str, str]) -> list[str]:
    """Notes on how observations were read: approximate observables, zeros censored."""
    notes = [f"{analyte}: {why}" for analyte, why in approximations.items()]
    n_zero = sum(1 for r in used_rows if r["note"].startswith("reported 0"))
    if n_zero:
        notes.append(
            f"{n_zero} observation(s) reported as 0 on a log or logit scale were treated as "
            "below the detection limit (M3-censored), not dropped"
        )
    return notes


def _refuse_no_usable(model: Model, patient: str, unused: pd.DataFrame) -> None:
    """Refuse a patient none of whose observations the model can use, with why."""
    reasons = sorted(set(unused["reason"])) if len(unused) else []
    raise InputError(
        f"patient '{patient}' has no observations the '{model.name}' model can use"
        + (f" ({'; '.join(reasons[:3])})" if reasons else ""),
        fix="fit a component set that has these analytes (see --components), or add "
        f"observations of {', '.join(model.obs_names)}",
    )


def _index_rows(model: Model, used_rows: list[dict]) -> tuple[pd.DataFrame, np.ndarray]:
    """The used rows ordered by scale, observable and day, with their observable and
    time indices; and the unique observation times (days)."""
    rows = pd.DataFrame(used_rows)
    rows["scale_order"] = rows["scale"].map({s: i for i, s in enumerate(SCALES)})
    rows["o_idx"] = [model.index("obs", o) for o in rows["observable"]]
    rows = rows.sort_values(["scale_order", "o_idx", "day"], kind="stable").reset_index(drop=True)
    times = np.unique(rows["day"].to_numpy(float))
    rows["t_idx"] = np.searchsorted(times, rows["day"].to_numpy(float))
    rows = rows.drop(columns="scale_order")
    return rows, times


def _ignored_notes(ignored) -> list[str]:
    """'kind on day D (reason)' labels grouped by kind: one line per kind."""
    groups: dict[tuple[str, str], list[str]] = {}
    other = []
    for label in ignored:
        m = re.match(r"^(\S+) on day (\S+) \((.*)\)$", label)
        if m is None:
            other.append(f"event not modelled: {label}")
            continue
        kind, day, why = m.groups()
        days = groups.setdefault((kind, why), [])
        if day not in days:
            days.append(day)
    out = [
        f"event not modelled: {kind} on day{'s' if len(d) > 1 else ''} {', '.join(d)} ({why})"
        for (kind, why), d in groups.items()
    ]
    return out + other


def _collapse(notes: list[str]) -> tuple[str, ...]:
    """Identical notes once, with a count."""
    counts: dict[str, int] = {}
    for n in notes:
        counts[n] = counts.get(n, 0) + 1
    return tuple(n if k == 1 else f"{n} (x{k})" for n, k in counts.items())
