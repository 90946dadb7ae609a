"""The parsed records of a NONMEM data set (:mod:`carthema.data.nonmem_records`) as
carthema's rows: each record sorted into events or an observation row through the CMT
map (:func:`split_records`), day 0 checked (:func:`day_zero_notes`) and the other
columns carried per patient (:func:`covariate_table`). Steps of
:func:`carthema.data.nonmem.read_nonmem`, after the records are parsed; every refusal
names the file, the record and the NONMEM column (:class:`NonmemTable`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from carthema.data.analytes import get_analyte
from carthema.data.boost import GRAFT_COLUMNS
from carthema.data.events import get_event_kind
from carthema.data.nonmem_records import (
    Censoring,
    NonmemTable,
    RecordColumns,
    Spec,
)
from carthema.data.textframe import MISSING_MARKERS

# Dose keys of a cmt_map entry copied onto each event of the record.
_DOSE_EXTRAS = ("drug", *GRAFT_COLUMNS, "duration")


def _spec(value: Spec) -> dict[str, object]:
    return {"name": value} if isinstance(value, str) else dict(value)


@dataclass
class SplitRecords:
    """The records sorted into observation rows and event rows (in carthema's columns,
    with the record each came from), skipped records and notes."""

    skipped: list[tuple[int, str]]
    obs_rows: list[dict[str, object]] = field(default_factory=list)
    obs_index: list[int] = field(default_factory=list)
    ev_rows: list[dict[str, object]] = field(default_factory=list)
    ev_index: list[int] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)


def split_records(
    table: NonmemTable,
    rec: RecordColumns,
    cens: Censoring,
    cmt_map: Mapping[int, Spec],
    dose_map: Mapping[int, Spec] | None,
    skipped: list[tuple[int, str]],
) -> SplitRecords:
    """Each record -> events (a dose, expanded by ADDL), an observation row, or a
    skipped record (EVID=2, MDV=1 without a below-limit flag)."""
    split = SplitRecords(skipped=skipped)
    for r in table.df.index:
        e = int(rec.evid.loc[r])
        c = int(rec.cmt.loc[r]) if not np.isnan(rec.cmt.loc[r]) else None
        if e == 2:
            split.skipped.append((int(r), "EVID=2 (other-type event)"))
            continue
        if c is None:
            table.fail(
                int(r), "CMT", "CMT is empty.", "give the compartment number of every record."
            )
        if e == 1:
            events = _dose_events(table, rec, int(r), c, cmt_map, dose_map)
            split.ev_rows.extend(events)
            split.ev_index.extend([int(r)] * len(events))
            continue
        below = cens.below(r)
        if rec.mdv.loc[r] == 1 and not below:
            split.skipped.append((int(r), "MDV=1 observation record"))
            continue
        split.obs_rows.append(
            _observation(table, rec, cens, int(r), c, below, cmt_map, split.notes)
        )
        split.obs_index.append(int(r))
    return split


def _cmt_entry(
    table: NonmemTable,
    r: int,
    c: int,
    mapping: Mapping[int, Spec],
    *,
    record: str,
    target: tuple[str, str, Callable[[str], object], str],
    fix: str,
) -> tuple[dict[str, object], Any]:
    """The map entry of record ``r``'s CMT ``c`` and what it names. ``target``: what the
    entry must name (e.g. "an event kind"), its key in the dict form, the lookup that
    returns it (None when the name is not one) and an example name for the message."""
    what, key, lookup, example = target
    if c not in mapping:
        table.fail(
            r,
            "CMT",
            f"{record} record in CMT {c}, which is not in the CMT map (--cmt-map).",
            f'map CMT {c} to {what} in --cmt-map (e.g. {{"{c}": "{example}"}}).',
        )
    spec = _spec(mapping[c])
    name = str(spec.get(key, spec.get("name", "")))
    found = lookup(name)
    if found is None:
        table.fail(
            r,
            "CMT",
            f"{record} record in CMT {c}, which --cmt-map maps to '{name}', not {what}.",
            fix,
        )
    return spec, found


def _dose_events(
    table: NonmemTable,
    rec: RecordColumns,
    r: int,
    c: int,
    cmt_map: Mapping[int, Spec],
    dose_map: Mapping[int, Spec] | None,
) -> list[dict[str, object]]:
    """The events of dose record ``r`` in CMT ``c``: ``1 + ADDL`` doses, II apart (days
    after day 0), of the event kind its CMT maps to."""
    spec, kind = _cmt_entry(
        table,
        r,
        c,
        dose_map if dose_map is not None and c in dose_map else cmt_map,
        record="dose",
        target=("an event kind", "kind", get_event_kind, "cart_infusion"),
        fix="map dose compartments to an event kind (or use dose_map for a CMT that is also "
        "observed).",
    )
    n_doses = 1 + int(rec.addl.loc[r])
    if n_doses > 1 and rec.ii.loc[r] <= 0:
        table.fail(r, "II", "ADDL is set but II is not > 0.", "give the dosing interval II.")
    step = rec.ii.loc[r] / rec.hours_per_unit
    extras = {k: spec[k] for k in _DOSE_EXTRAS if k in spec}
    return [
        {
            "patient": rec.patient.loc[r],
            "day": float(rec.day.loc[r] + k * step),
            "kind": kind.name,
            "amount": rec.amt.loc[r],
            "unit": spec.get("unit", kind.units[0]),
            **extras,
        }
        for k in range(n_doses)
    ]


def _observation(
    table: NonmemTable,
    rec: RecordColumns,
    cens: Censoring,
    r: int,
    c: int,
    below: bool,
    cmt_map: Mapping[int, Spec],
    notes: list[tuple[int, str]],
) -> dict[str, object]:
    """The observation row of record ``r`` in CMT ``c``, its limit found in the order the
    module docstring gives (a limit taken from DV is noted in ``notes``)."""
    spec, analyte = _cmt_entry(
        table,
        r,
        c,
        cmt_map,
        record="observation",
        target=("an analyte", "analyte", get_analyte, "anc"),
        fix="map observed compartments to an analyte; doses need EVID=1.",
    )
    dv, flag_name = cens.dv.loc[r], cens.name
    row_lloq = cens.lloq.loc[r]
    lloq = row_lloq if cens.has_lloq and not np.isnan(row_lloq) else spec.get("lloq", np.nan)
    if below and cens.flag_column is not None and not np.isnan(float(lloq)) and dv > float(lloq):
        table.fail(
            r,
            "DV",
            f"{flag_name}=1 marks the record as below the limit, but DV {dv:g} is "
            f"above its limit {float(lloq):g} (a quantified value would be discarded).",
            f"set {flag_name}=0 if DV {dv:g} was measured, or write the limit "
            f"(or 0) in DV if it was below {float(lloq):g}.",
        )
    if below and np.isnan(float(lloq)):
        if not np.isnan(dv) and dv > 0:
            # Monolix/M3 coding: a censored row carries the limit in DV
            lloq = dv
            notes.append((r, "below-limit row: LLOQ taken from DV (DV = LLOQ coding)"))
        else:
            table.fail(
                r,
                flag_name,
                f"{flag_name}=1 but the row gives no limit: no LLOQ (or LLOQ=0), no lloq "
                "in cmt_map, and DV is not a limit (> 0).",
                f"add an LLOQ column, or give {{'analyte': '{analyte.name}', 'lloq': ...}} "
                "in cmt_map, or write the limit in DV (the Monolix/M3 coding).",
            )
    return {
        "patient": rec.patient.loc[r],
        "day": float(rec.day.loc[r]),
        "analyte": analyte.name,
        # a below-limit DV is a placeholder, not a measurement
        "value": np.nan if below else dv,
        "unit": spec.get("unit", analyte.canonical_unit),
        "compartment": spec.get("compartment", analyte.default_compartment or ""),
        "lloq": lloq,
        "blq": bool(below),
    }


def day_zero_notes(
    table: NonmemTable, rec: RecordColumns, split: SplitRecords, time_zero: float | None
) -> list[tuple[int, str]]:
    """Day 0 is the first CAR-T infusion: a data set whose TIME counts from elsewhere
    would silently shift every day. Without ``time_zero`` an ID whose first CAR-T
    infusion is not at TIME 0 is refused; with it, such an ID is noted."""
    first_cart: dict[str, int] = {}
    for event, r in zip(split.ev_rows, split.ev_index, strict=True):
        if event["kind"] == "cart_infusion":
            first_cart.setdefault(str(event["patient"]), r)
    notes: list[tuple[int, str]] = []
    unit = "hours" if rec.hours_per_unit == 24.0 else "days"
    for p_id, r in first_cart.items():
        d0 = float(rec.day.loc[r])
        if d0 == 0.0:
            continue
        if time_zero is None:
            t = rec.time.loc[r]
            table.fail(
                r,
                "TIME",
                f"the first CAR-T infusion of ID {p_id} is at TIME {t:g}, not 0; "
                "carthema counts days from the CAR-T infusion (day 0).",
                f"pass --time-zero {t:g} (time_zero=) if TIME counts from another "
                "origin, or shift each ID's TIME so that its CAR-T infusion is at 0.",
            )
        notes.append(
            (
                r,
                f"first CAR-T infusion not at day 0 after --time-zero (ID {p_id}: "
                f"{d0:g} days; TIME in {unit})",
            )  # fmt: skip
        )
    return notes


def covariate_table(
    text: pd.DataFrame, patient: pd.Series, columns: list[str]
) -> tuple[pd.DataFrame, list[tuple[int, str]]]:
    """One row per patient (``patient`` and one text column per covariate column: the
    format ``fit-population --covariates`` reads), each patient's first non-missing
    value; and a note for each covariate that changes within a patient (the table holds
    the first, baseline value)."""
    if not columns:
        return pd.DataFrame({"patient": pd.Series([], dtype=str)}), []
    vals = text[columns].astype(str).apply(lambda c: c.str.strip())
    vals = vals.where(~vals.apply(lambda c: c.str.lower().isin(MISSING_MARKERS)))
    vals.insert(0, "patient", patient.to_numpy())
    grouped = vals.groupby("patient", sort=False)
    table = grouped.first().reset_index().fillna("")
    notes: list[tuple[int, str]] = []
    counts = grouped.nunique()
    for c in columns:
        for p_id in counts.index[counts[c] > 1]:
            mine = vals.loc[vals["patient"] == p_id, c].dropna()
            r = int(mine.index[(mine != mine.iloc[0]).to_numpy()][0])
            notes.append(
                (
                    r,
                    f"covariate {c} changes within ID {p_id}; covariates.csv holds the "
                    "first (baseline) value",
                )  # fmt: skip
            )
    return table, notes
