"""Per-patient summary of validated observation and event tables (pure pandas)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from carthema.data.analytes import ANALYTES


@dataclass
class DataSummary:
    """What a data set holds, per patient.

    Attributes
    ----------
    patients:
        One row per patient: patient, n_observations, n_analytes, first_day, last_day,
        n_events.
    analytes:
        One row per patient, analyte and compartment: unit (canonical), n, n_blq,
        first_day, last_day.
    events:
        One row per event: patient, day, kind, amount, unit, duration, detail (drug,
        source, CD34 selection, CD3+ and MNC doses, as text).
    """

    patients: pd.DataFrame
    analytes: pd.DataFrame
    events: pd.DataFrame

    def to_records(self) -> dict[str, list[dict[str, object]]]:
        """The three tables as lists of plain dicts (for JSON or tests)."""
        return {
            "patients": self.patients.to_dict("records"),
            "analytes": self.analytes.to_dict("records"),
            "events": self.events.to_dict("records"),
        }


def _detail(ev: dict) -> str:
    parts: list[str] = []
    for col in ("drug", "source"):
        v = ev.get(col)
        if isinstance(v, str) and v:
            parts.append(v)
    sel = ev.get("cd34_selected")
    if sel is not None and sel is not pd.NA and not (isinstance(sel, float) and np.isnan(sel)):
        parts.append("CD34-selected" if bool(sel) else "not CD34-selected")
    for col, label in (("cd3_per_kg", "CD3+"), ("mnc_per_kg", "MNC")):
        v = ev.get(col)
        if v is not None and not pd.isna(v):
            parts.append(f"{label} {v:.3g}/kg")
    return ", ".join(parts)


def summarize(obs: pd.DataFrame | None, events: pd.DataFrame | None = None) -> DataSummary:
    """Summarise canonical observation and event tables per patient.

    Days are days since the first CAR-T infusion; units are the canonical ones the
    loaders return. Either table may be None or empty.
    """
    obs = obs if obs is not None else pd.DataFrame(columns=["patient", "day", "analyte"])
    events = events if events is not None else pd.DataFrame(columns=["patient", "day", "kind"])

    if len(obs):
        g = obs.groupby(["patient", "analyte", "compartment"], sort=False)
        analytes = g.agg(
            unit=("unit", "first"),
            n=("day", "size"),
            n_blq=("blq", "sum"),
            first_day=("day", "min"),
            last_day=("day", "max"),
        ).reset_index()
        analytes["n_blq"] = analytes["n_blq"].astype(int)
        # analytes in catalogue order (CAR-T, counts, marrow, chimerism, chemistry)
        rank = {name: i for i, name in enumerate(ANALYTES)}
        patient_rank = {p: i for i, p in enumerate(dict.fromkeys(obs["patient"]))}
        analytes = (
            analytes.assign(
                _p=analytes["patient"].map(patient_rank), _a=analytes["analyte"].map(rank)
            )
            .sort_values(["_p", "_a", "compartment"], kind="stable")
            .drop(columns=["_p", "_a"])
            .reset_index(drop=True)
        )
    else:
        analytes = pd.DataFrame(
            columns=[
                "patient",
                "analyte",
                "compartment",
                "unit",
                "n",
                "n_blq",
                "first_day",
                "last_day",
            ]
        )

    if len(events):
        ev = events.copy()
        ev["detail"] = [_detail(r) for r in ev.to_dict("records")]
        ev_table = ev[
            ["patient", "day", "kind", "amount", "unit", "duration", "detail"]
        ].reset_index(drop=True)
    else:
        ev_table = pd.DataFrame(
            columns=["patient", "day", "kind", "amount", "unit", "duration", "detail"]
        )

    # patients in the order the tables list them (the loaders sort them naturally); one
    # groupby per table, so the cost grows with the rows, not rows x patients
    order = pd.unique(
        pd.concat([obs["patient"], events["patient"]], ignore_index=True).to_numpy(object)
    )
    patients = pd.DataFrame({"patient": order})
    idx = pd.Index(order)
    o = obs.groupby("patient", sort=False)
    e = events.groupby("patient", sort=False)
    n_obs = o.size().reindex(idx, fill_value=0).to_numpy(int)
    n_analytes = o["analyte"].nunique().reindex(idx, fill_value=0).to_numpy(int)
    n_events = e.size().reindex(idx, fill_value=0).to_numpy(int)

    def days(g, how: str) -> np.ndarray:
        return g["day"].agg(how).astype(float).reindex(idx).to_numpy(float)

    patients["n_observations"] = n_obs
    patients["n_analytes"] = n_analytes
    patients["first_day"] = np.fmin(days(o, "min"), days(e, "min"))
    patients["last_day"] = np.fmax(days(o, "max"), days(e, "max"))
    patients["n_events"] = n_events
    return DataSummary(patients=patients, analytes=analytes, events=ev_table)
