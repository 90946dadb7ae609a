"""Import a NONMEM-style data set (ID, TIME, DV, MDV, EVID, AMT, CMT, BLQ/LLOQ).

A NONMEM data set carries no names or units: compartment numbers stand for whatever the
modeller chose. The caller says what each CMT means with ``cmt_map``; each value is
either a name or a dict with details:

- an analyte: ``"anc"`` or ``{"analyte": "cart_copies", "unit": "copies/ug DNA",
  "compartment": "blood", "lloq": 50}``
- an event kind (for dose records): ``"cart_infusion"`` or ``{"kind": "stem_cell_boost",
  "unit": "10^6 cells/kg", "source": "allogeneic", "cd34_selected": "yes"}``

A plain name means DV or AMT is already in the analyte's or kind's canonical unit
(see :mod:`carthema.data.analytes` and :mod:`carthema.data.events`). If one CMT number
is used both for doses and observations, give the dose meaning in ``dose_map``.

Record types, following NONMEM:

- EVID=0 and MDV=0: an observation. EVID=0 and MDV=1: an observation row with no
  usable DV -- kept as below-limit if BLQ=1 (or DV < LLOQ when there is no BLQ column),
  otherwise not imported and listed in ``observations.attrs["nonmem_skipped_rows"]``.
- EVID=1 (or, without an EVID column, MDV=1 with AMT > 0): a dose -> one event; ADDL/II
  are expanded into the additional doses.
- EVID=2 (other-type event, e.g. a covariate change): not imported, listed as above.
- EVID=3/4 (reset), RATE != 0 (zero-order input) and SS != 0 (steady state) are refused:
  carthema has no equivalent.

Below the limit: the BLQ flag (1 = below) decides; without a BLQ column a row is below
the limit when DV < LLOQ (the usual M3 coding). The DV of a below-limit row is a
placeholder (0, LLOQ/2, LLOQ ...) in most data sets, so it is not kept: ``value`` is NaN
and ``lloq`` holds the limit. Other columns (covariates such as WT) are not imported;
their names are listed in ``observations.attrs["nonmem_ignored_columns"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from carthema.data.analytes import get_analyte
from carthema.data.errors import InputError
from carthema.data.events import get_event_kind
from carthema.data.loaders import read_table_text
from carthema.data.schema import EVENT_SCHEMA
from carthema.data.validate import (
    MISSING_MARKERS,
    to_text_frame,
    validate_events_text,
    validate_observations_text,
)

NONMEM_COLUMNS = (
    "ID",
    "TIME",
    "DV",
    "MDV",
    "EVID",
    "AMT",
    "CMT",
    "BLQ",
    "LLOQ",
    "ADDL",
    "II",
    "RATE",
    "SS",
)

# carthema column -> NONMEM column, to name the user's column in error messages
_OBS_COLUMN = {
    "patient": "ID",
    "day": "TIME",
    "value": "DV",
    "lloq": "LLOQ",
    "blq": "BLQ",
    "analyte": "CMT",
    "unit": "CMT",
    "compartment": "CMT",
}
_EVENT_COLUMN = {"patient": "ID", "day": "TIME", "amount": "AMT", "kind": "CMT", "unit": "CMT"}

Spec = str | Mapping[str, object]


def _spec(value: Spec) -> dict[str, object]:
    return {"name": value} if isinstance(value, str) else dict(value)


def _number(s: pd.Series) -> pd.Series:
    txt = s.astype(str).str.strip()
    return pd.to_numeric(txt.where(~txt.str.lower().isin(MISSING_MARKERS)), errors="coerce")


def read_nonmem(
    path: str | Path,
    cmt_map: Mapping[int, Spec],
    *,
    dose_map: Mapping[int, Spec] | None = None,
    time_unit: Literal["day", "hour"] = "day",
    time_zero: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Import a NONMEM-style data set as (observations, events) in canonical units.

    Parameters
    ----------
    path:
        CSV or Parquet file with NONMEM columns (case-insensitive).
    cmt_map:
        CMT number -> analyte (observation records) or event kind (dose records); see
        the module docstring for the dict form with unit, compartment, lloq, drug,
        source, cd34_selected, cd3_per_kg, mnc_per_kg.
    dose_map:
        CMT number -> event kind for dose records, where a CMT is also an observation
        compartment in ``cmt_map``.
    time_unit:
        Unit of TIME: ``"day"`` or ``"hour"`` (divided by 24).
    time_zero:
        The TIME of the first CAR-T infusion (day 0), in ``time_unit``.

    Returns
    -------
    (observations, events), validated exactly like :func:`read_observations` and
    :func:`read_events`; an empty events table if the file has no dose records.
    """
    where = str(path)
    text = read_table_text(path)
    text.columns = [str(c).strip().upper() for c in text.columns]
    ignored = [c for c in text.columns if c not in NONMEM_COLUMNS]

    def fail(row: int | None, column: str | None, problem: str, fix: str) -> None:
        raise InputError(problem, file=where, row=row, column=column, fix=fix)

    for col in ("ID", "TIME", "DV", "CMT"):
        if col not in text.columns:
            fail(0, col, f"required NONMEM column '{col}' is missing.", f"add a '{col}' column.")
    if "EVID" not in text.columns and "MDV" not in text.columns:
        fail(0, "EVID", "neither EVID nor MDV is present.", "add an EVID (or MDV) column.")
    if time_unit not in ("day", "hour"):
        raise InputError(
            f"time_unit '{time_unit}' is not 'day' or 'hour'.", fix="pass 'day' or 'hour'."
        )
    text = text[~text.apply(lambda c: c.astype(str).str.strip() == "").all(axis=1)]
    if text.empty:
        fail(1, None, "the table has a header but no data rows.", "add at least one row.")

    def numeric(col: str, *, default: float | None, integer: bool = False) -> pd.Series:
        if col not in text.columns:
            return pd.Series(
                default if default is not None else np.nan, index=text.index, dtype=float
            )
        raw = text[col].astype(str).str.strip()
        num = _number(text[col])
        empty = raw.str.lower().isin(MISSING_MARKERS)
        bad = (~empty & num.isna()) | (~empty & ~np.isfinite(num.fillna(0)))
        if integer:
            bad |= ~empty & num.notna() & (num != np.round(num))
        if bad.any():
            r = int(bad[bad].index[0])
            kind = "an integer" if integer else "a number"
            fail(r, col, f"{col} '{raw.loc[r]}' is not {kind}.", f"write {kind} in {col}.")
        if default is not None:
            num = num.fillna(default)
        return num.astype(float)

    rid = text["ID"].astype(str).str.strip()
    row = rid[rid.str.lower().isin(MISSING_MARKERS)]
    if not row.empty:
        fail(int(row.index[0]), "ID", "ID is empty.", "give every record an ID.")
    idnum = _number(text["ID"])
    # "1" and "1.0" are the same NONMEM individual
    patient = rid.where(
        ~(idnum.notna() & (idnum == np.round(idnum))), idnum.map(lambda v: f"{v:.0f}")
    )
    time = numeric("TIME", default=None)
    if time.isna().any():
        r = int(time[time.isna()].index[0])
        fail(r, "TIME", "TIME is empty.", "give the time of every record.")
    cmt = numeric("CMT", default=None, integer=True)
    mdv = numeric("MDV", default=0.0, integer=True)
    amt = numeric("AMT", default=None)
    if "EVID" in text.columns:
        evid = numeric("EVID", default=0.0, integer=True)
    else:
        evid = pd.Series(np.where((mdv == 1) & (amt > 0), 1.0, 0.0), index=text.index)
    addl = numeric("ADDL", default=0.0, integer=True)
    ii = numeric("II", default=0.0)
    for col in ("RATE", "SS"):
        v = numeric(col, default=0.0)
        if (v != 0).any():
            r = int(v[v != 0].index[0])
            fail(
                r,
                col,
                f"{col} is {v.loc[r]:g}; carthema has no zero-order or steady-state doses.",
                "write each dose as a bolus record (RATE=0, SS=0), or a G-CSF/TPO period "
                "in an events file.",
            )
    bad = ~evid.isin([0, 1, 2])
    if bad.any():
        r = int(bad[bad].index[0])
        fail(
            r,
            "EVID",
            f"EVID {evid.loc[r]:g} is not supported (0 observation, 1 dose, 2 other).",
            "remove reset records (EVID 3/4); carthema histories start at the first event.",
        )

    # NONMEM's own rules: one block of records per individual, time not decreasing
    block = patient.ne(patient.shift())
    seen: set[str] = set()
    for r, p, new in zip(text.index, patient, block, strict=True):
        if new and p in seen:
            fail(
                int(r),
                "ID",
                f"ID {p} appears again after other IDs (NONMEM would read a new individual).",
                "sort the data set by ID, then TIME.",
            )
        seen.add(p)
    back = (time.diff() < 0) & ~block
    if back.any():
        r = int(back[back].index[0])
        fail(
            r,
            "TIME",
            f"TIME goes backwards within ID {patient.loc[r]}.",
            "sort each ID's records by TIME.",
        )

    day = (time - time_zero) / (24.0 if time_unit == "hour" else 1.0)
    has_blq = "BLQ" in text.columns
    has_lloq = "LLOQ" in text.columns
    blq_flag = numeric("BLQ", default=0.0, integer=True)
    if has_blq:
        bad = ~blq_flag.isin([0, 1])
        if bad.any():
            r = int(bad[bad].index[0])
            fail(
                r,
                "BLQ",
                f"BLQ {blq_flag.loc[r]:g} is not 0 or 1.",
                "write 1 (below the limit) or 0.",
            )
    lloq_col = numeric("LLOQ", default=None)
    dv = numeric("DV", default=None)

    obs_rows: list[dict[str, object]] = []
    obs_index: list[int] = []
    ev_rows: list[dict[str, object]] = []
    ev_index: list[int] = []
    skipped: list[tuple[int, str]] = []
    for r in text.index:
        e = int(evid.loc[r])
        c = int(cmt.loc[r]) if not np.isnan(cmt.loc[r]) else None
        if e == 2:
            skipped.append((int(r), "EVID=2 (other-type event)"))
            continue
        if c is None:
            fail(int(r), "CMT", "CMT is empty.", "give the compartment number of every record.")
        if e == 1:
            spec_src = dose_map if dose_map is not None and c in dose_map else cmt_map
            if c not in spec_src:
                fail(
                    int(r),
                    "CMT",
                    f"dose record in CMT {c}, which is not in cmt_map.",
                    f"map CMT {c} to an event kind (e.g. cmt_map={{{c}: 'cart_infusion'}}).",
                )
            spec = _spec(spec_src[c])
            name = str(spec.get("kind", spec.get("name", "")))
            kind = get_event_kind(name)
            if kind is None:
                fail(
                    int(r),
                    "CMT",
                    f"dose record in CMT {c}, which cmt_map maps to '{name}', not an event kind.",
                    "map dose compartments to an event kind (or use dose_map for a CMT "
                    "that is also observed).",
                )
            n_doses = 1 + int(addl.loc[r])
            if n_doses > 1 and ii.loc[r] <= 0:
                fail(int(r), "II", "ADDL is set but II is not > 0.", "give the dosing interval II.")
            step = ii.loc[r] / (24.0 if time_unit == "hour" else 1.0)
            for k in range(n_doses):
                rec = {
                    "patient": patient.loc[r],
                    "day": float(day.loc[r] + k * step),
                    "kind": kind.name,
                    "amount": amt.loc[r],
                    "unit": spec.get("unit", kind.units[0]),
                }
                for extra in (
                    "drug",
                    "source",
                    "cd34_selected",
                    "cd3_per_kg",
                    "mnc_per_kg",
                    "duration",
                ):
                    if extra in spec:
                        rec[extra] = spec[extra]
                ev_rows.append(rec)
                ev_index.append(int(r))
            continue
        # observation record
        below = (
            (blq_flag.loc[r] == 1) if has_blq else bool(has_lloq and dv.loc[r] < lloq_col.loc[r])
        )
        if mdv.loc[r] == 1 and not below:
            skipped.append((int(r), "MDV=1 observation record"))
            continue
        if c not in cmt_map:
            fail(
                int(r),
                "CMT",
                f"observation record in CMT {c}, which is not in cmt_map.",
                f"map CMT {c} to an analyte (e.g. cmt_map={{{c}: 'anc'}}).",
            )
        spec = _spec(cmt_map[c])
        name = str(spec.get("analyte", spec.get("name", "")))
        analyte = get_analyte(name)
        if analyte is None:
            fail(
                int(r),
                "CMT",
                f"observation record in CMT {c}, which cmt_map maps to '{name}', not an analyte.",
                "map observed compartments to an analyte; doses need EVID=1.",
            )
        lloq = (
            lloq_col.loc[r]
            if has_lloq and not np.isnan(lloq_col.loc[r])
            else spec.get("lloq", np.nan)
        )
        if below and has_lloq is False and "lloq" not in spec:
            fail(
                int(r),
                "BLQ",
                "BLQ=1 but the data set has no LLOQ column and cmt_map gives no lloq.",
                f"add an LLOQ column, or give {{'analyte': '{analyte.name}', 'lloq': ...}} "
                "in cmt_map.",
            )
        obs_rows.append(
            {
                "patient": patient.loc[r],
                "day": float(day.loc[r]),
                "analyte": analyte.name,
                # a below-limit DV is a placeholder, not a measurement
                "value": np.nan if below else dv.loc[r],
                "unit": spec.get("unit", analyte.canonical_unit),
                "compartment": spec.get("compartment", analyte.default_compartment or ""),
                "lloq": lloq,
                "blq": bool(below),
            }
        )
        obs_index.append(int(r))

    # doses first: a dose error is reported even in a data set without observations
    if ev_rows:
        ev_text = _text_frame(ev_rows, ev_index)
        ev = _remap(lambda: validate_events_text(ev_text, where), _EVENT_COLUMN)
    else:
        ev = _empty_events()
    if not obs_rows:
        fail(None, "EVID", "the data set has no observation records.", "check EVID/MDV.")
    obs_text = _text_frame(obs_rows, obs_index)
    obs = _remap(lambda: validate_observations_text(obs_text, where), _OBS_COLUMN)
    obs.attrs["nonmem_ignored_columns"] = ignored
    obs.attrs["nonmem_skipped_rows"] = skipped
    return obs, ev


def _text_frame(rows: list[dict[str, object]], index: list[int]) -> pd.DataFrame:
    return to_text_frame(pd.DataFrame(rows), rows=index)


def _remap(call, columns: Mapping[str, str]) -> pd.DataFrame:
    """Run a validator; name the NONMEM column (DV, TIME, CMT ...) in its error."""
    try:
        return call()
    except InputError as exc:
        col = columns.get(exc.column or "", exc.column)
        fix = exc.fix
        if col == "CMT" and exc.column in ("unit", "compartment", "analyte", "kind"):
            fix = f"give '{exc.column}' for this CMT in cmt_map ({exc.fix})"
        raise InputError(exc.problem, file=exc.file, row=exc.row, column=col, fix=fix) from None


def _empty_events() -> pd.DataFrame:
    """A canonical events table with no rows (a data set without dose records)."""
    cols: dict[str, pd.Series] = {}
    for name, col in EVENT_SCHEMA.columns.items():
        if name == "cd34_selected":
            dtype = "boolean"
        elif str(col.dtype).startswith("float"):
            dtype = "float64"
        else:
            dtype = "str"
        cols[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(cols)
