"""Ready-made event tables for common courses (same columns as the data layer's events)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from carthema.data.boost import BoostPlan
from carthema.data.schema import EVENT_COLUMNS as SCHEMA_EVENT_COLUMNS

#: The columns of the event tables built here: those of the events schema
#: (:data:`carthema.data.schema.EVENT_COLUMNS`, in its order) less the two a scenario
#: never fills (the boost's MNC dose and a free-text note).
EVENT_COLUMNS = [c for c in SCHEMA_EVENT_COLUMNS if c not in ("mnc_per_kg", "note")]


def _row(
    patient: str,
    day: float,
    kind: str,
    amount: float,
    unit: str,
    duration: float | None = None,
    **extra,
) -> dict:
    r = {c: None for c in EVENT_COLUMNS}
    r.update(
        patient=patient,
        day=float(day),
        kind=kind,
        amount=float(amount),
        unit=unit,
        duration=None if duration is None else float(duration),
        **extra,
    )
    return r


def typical_course(
    *,
    patient: str = "typical",
    cart_dose: float = 3.1e6,
    cart_days: Sequence[float] = (0.0,),
    ld_days: Sequence[float] = (-5.0, -4.0, -3.0),
    fludarabine: float = 30.0,
    cyclophosphamide: float = 500.0,
) -> pd.DataFrame:
    """A tisagenlecleucel-like course.

    Fludarabine 30 mg/m2 and cyclophosphamide 500 mg/m2 on days -5..-3 and CAR-T on day
    0 at the ELIANA median dose 3.1e6 CAR+ cells/kg (Maude et al. 2018), split evenly
    over ``cart_days`` when several are given.
    """
    rows = []
    for d in ld_days:
        rows.append(_row(patient, d, "lymphodepletion", fludarabine, "mg/m2", drug="fludarabine"))
        rows.append(
            _row(patient, d, "lymphodepletion", cyclophosphamide, "mg/m2", drug="cyclophosphamide")
        )
    for d in cart_days:
        rows.append(_row(patient, d, "cart_infusion", cart_dose / len(cart_days), "cells/kg"))
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def with_boost(
    events: pd.DataFrame,
    day: float,
    cd34_per_kg: float,
    *,
    source: str = "allogeneic",
    cd34_selected: bool = True,
    cd3_per_kg: float | None = None,
) -> pd.DataFrame:
    """``events`` plus one stem-cell boost (CD34+ cells/kg) on ``day``."""
    return with_plan(events, BoostPlan(day, cd34_per_kg, source, cd34_selected, cd3_per_kg))


def with_plan(events: pd.DataFrame, plan: BoostPlan) -> pd.DataFrame:
    """``events`` plus the ``stem_cell_boost`` row of ``plan`` (unchanged without a day)."""
    if plan.day is None:
        return events
    patient = str(events["patient"].iloc[0]) if len(events) else "patient"
    extra: dict = {
        "source": plan.source.value,
        "cd34_selected": "yes" if plan.cd34_selected else "no",
    }
    if plan.cd3_per_kg is not None:
        extra["cd3_per_kg"] = plan.cd3_per_kg
    if plan.mnc_per_kg is not None:
        extra["mnc_per_kg"] = plan.mnc_per_kg
    boost = _row(patient, plan.day, "stem_cell_boost", plan.cd34_per_kg, "cells/kg", **extra)
    # From records, not concat: concat with all-empty columns changes dtype rules.
    cols = list(events.columns) if len(events.columns) else list(EVENT_COLUMNS)
    cols += [c for c in extra if c not in cols]  # never drop a dose the plan states
    records = events.to_dict("records") + [{c: boost.get(c) for c in cols}]
    out = pd.DataFrame.from_records(records, columns=cols)
    return out.sort_values("day", kind="stable").reset_index(drop=True)


#: Parameter overrides of an illustrative poor-reserve patient: little stem-cell mass and
#: fitness and a strong, slowly resolving delayed injury (the aplastic phenotype). Values
#: lie inside each parameter's plausible range; they are an example, not a fit. With the
#: two-stage delayed injury (late_rate per stage) the former one-stage 0.02/d built up so
#: slowly that the first recovery lasted past day 21; at 0.05/d the ANC stays below 0.5
#: G/L from day 21 to day 90 (tests/test_model_core.py).
POOR_RESERVE = {"hsc_mass": 0.1, "hsc_regen": 0.003, "late_supp": 20.0, "late_rate": 0.05}

#: Parameter overrides that make the conditioning of :func:`emptied_marrow_transplant`
#: myeloablative: a stem-cell kill rate of 0.4/d per unit intensity (busulfan- or
#: melphalan-like), where flu/cy's own is small (``ld_kill_hsc`` default). It leaves
#: about 1e-15 of the stem cells; a deterministic model regrows from any remnant, and at
#: 0.3/d the 3e-12 left regrew to ANC > 0.5 G/L in 28 days once CD34+ progenitors turn
#: over daily (``mpp_rate``). A device for emptying the marrow, not a fitted value.
MYELOABLATIVE = {"ld_kill_hsc": 0.4}


def emptied_marrow_transplant(
    cd34_per_kg: float,
    *,
    source: str = "autologous",
    patient: str = "transplant",
    cd3_per_kg: float | None = None,
) -> pd.DataFrame:
    """A graft of ``cd34_per_kg`` on day 0 into an emptied marrow.

    Conditioning stands in as cyclophosphamide 2000 mg/m2/day on days -24..-3 (intensity
    4 for 22 days); simulated with the parameter overrides :data:`MYELOABLATIVE` it empties
    the stem-cell and progenitor pools and blood counts of the model, as a myeloablative
    regimen does, so that engraftment times can be compared with
    conventional transplants (``graft_kinetics.csv``). It is a device for that
    comparison, not a clinical regimen.
    """
    rows = [_row(patient, -24.0, "lymphodepletion", 2000.0, "mg/m2", 22.0, drug="cyclophosphamide")]
    ev = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    return with_boost(
        ev, 0.0, cd34_per_kg, source=source, cd34_selected=cd3_per_kg is None, cd3_per_kg=cd3_per_kg
    )
