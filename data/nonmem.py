"""Import a NONMEM-style data set (ID, TIME, DV, MDV, EVID, AMT, CMT, BLQ/LLOQ).

A NONMEM data set carries no names or units: compartment numbers stand for whatever the
modeller chose. The caller says what each CMT means with ``cmt_map``; each value is
either a name or a dict with details:

- an analyte: ``"anc"`` or ``{"analyte": "cart_copies", "unit": "copies/ug DNA",
  "compartment": "blood", "lloq": 50}``
- an event kind (for dose records): ``"cart_infusion"`` or ``{"kind": "stem_cell_boost",
  "unit": "10^6 cells/kg", "source": "allogeneic", "cd34_selected": "yes"}``
- a period kind (``gcsf``, ``tpo_agonist``): each dose record starts a period that lasts
  ``duration`` days, with AMT the amount per day: ``{"kind": "gcsf", "unit":
  "ug/kg/day", "duration": 1}`` (one record a day, as NONMEM usually has it) or
  ``"duration": 10`` (one record for a 10-day course). A period kind without
  ``duration`` is refused.

Keys of the dict form: ``analyte``/``kind`` (or ``name``), ``unit``, ``compartment``,
``lloq`` (observations); ``drug``, ``source``, ``cd34_selected``, ``cd3_per_kg``,
``mnc_per_kg``, ``duration`` (doses). Any other key is refused, so that a misspelt
``durations`` is not silently ignored.

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

- ADDL/II: ``1 + ADDL`` doses, II apart (II in the unit of TIME). A negative ADDL or II
  is refused, and so is ADDL > 999 (more than 1000 doses from one record is a typo, not
  a treatment history).

Below the limit: a censoring flag column -- ``BLQ``, ``CENS`` (Monolix), ``BQL`` or
``BLOQ``, at most one of them -- decides: 1 = below the limit, 0 = quantified (CENS=-1,
above an upper limit, is refused: carthema has no upper-limit censoring). Without a flag
column a row is below the limit when DV < LLOQ. The limit of a below-limit row is, in
order: the row's ``LLOQ`` (``LLOQ=0`` or empty means no limit on that row), the ``lloq``
of its CMT in ``cmt_map``, else its DV when DV > 0 -- the Monolix/M3 coding, in which a
censored row carries the limit in DV (such rows are listed in
``observations.attrs["nonmem_notes"]``). The DV of a below-limit row is not kept as a
measurement: ``value`` is NaN and ``lloq`` holds the limit. ``LIMIT`` is read as Monolix
defines it: the *other* end of a censored interval, which for a below-limit row is 0 (or
empty); a positive LIMIT (interval censoring) is refused, and LIMIT without CENS is
refused as ambiguous (rename it LLOQ if it holds the quantification limit).

Records that are not data, as NONMEM reads them: IGNORE=# (the default: a record whose
first character is ``#``) and IGNORE=C when the first column is named ``C`` (a record
whose first field starts with C); other characters with ``ignore`` (``--ignore``).
They are listed in ``observations.attrs["nonmem_skipped_rows"]``.

Day 0 is the first CAR-T infusion: a first ``cart_infusion`` record not at TIME 0 is
refused unless ``time_zero`` (``--time-zero``) says where day 0 is.

Other columns (covariates such as WT) are carried as a per-patient table, each
patient's first non-missing value (a covariate that changes within a patient is noted):
``observations.attrs["nonmem_covariates"]``, written as ``covariates.csv`` in the format
``fit-population --covariates`` reads. Their names are in
``observations.attrs["nonmem_ignored_columns"]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
import pandas as pd

from carthema.data.analytes import get_analyte
from carthema.data.errors import InputError
from carthema.data.events import get_event_kind
from carthema.data.loaders import (
    check_output_folder,
    read_table_text,
    write_folder_atomically,
)
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
    "CENS",
    "BQL",
    "BLOQ",
    "LLOQ",
    "LIMIT",
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
_EVENT_COLUMN = {
    "patient": "ID",
    "day": "TIME",
    "amount": "AMT",
    "kind": "CMT",
    "unit": "CMT",
    "duration": "CMT",
    "drug": "CMT",
    "source": "CMT",
    "cd34_selected": "CMT",
    "cd3_per_kg": "CMT",
    "mnc_per_kg": "CMT",
}
# columns whose value comes from the cmt_map entry of the row's CMT
_FROM_MAP = (
    "unit",
    "compartment",
    "analyte",
    "kind",
    "duration",
    "drug",
    "source",
    "cd34_selected",
    "cd3_per_kg",
    "mnc_per_kg",
)

Spec = str | Mapping[str, object]

# Censoring flag columns, in the order they are looked for (1 = below the limit).
FLAG_COLUMNS = ("BLQ", "CENS", "BQL", "BLOQ")
# More than this many doses from one record (1 + ADDL) is refused.
MAX_DOSES_PER_RECORD = 1000

_OBS_KEYS = ("analyte", "name", "unit", "compartment", "lloq")
# Dose keys of a cmt_map entry copied onto each event of the record.
_DOSE_EXTRAS = ("drug", "source", "cd34_selected", "cd3_per_kg", "mnc_per_kg", "duration")
_DOSE_KEYS = (
    "kind",
    "name",
    "unit",
    "drug",
    "source",
    "cd34_selected",
    "cd3_per_kg",
    "mnc_per_kg",
    "duration",
)


def check_cmt_map(mapping: object, source: str = "cmt_map") -> dict[int, Spec]:
    """A CMT map with integer keys, every value a name or a dict of known keys.

    Keys may be ints or strings holding an int (JSON object keys are strings). Raises
    :class:`InputError` naming ``source`` and the bad entry.
    """
    if not isinstance(mapping, Mapping) or not mapping:
        raise InputError(
            "the CMT map is not a non-empty object of CMT number -> analyte or event kind.",
            file=source,
            fix='write e.g. {"1": "cart_infusion", "2": {"analyte": "cart_copies", '
            '"compartment": "blood"}, "3": "anc"}.',
        )
    out: dict[int, Spec] = {}
    for key, value in mapping.items():
        try:
            c = int(str(key).strip())
        except ValueError:
            raise InputError(
                f"key '{key}' is not a CMT number.",
                file=source,
                fix="use the compartment numbers of the CMT column as keys.",
            ) from None
        if isinstance(value, str):
            out[c] = value
            continue
        if not isinstance(value, Mapping):
            raise InputError(
                f"CMT {c}: {value!r} is neither a name nor an object.",
                file=source,
                fix='write a name ("anc") or an object ({"analyte": "anc", "unit": "cells/uL"}).',
            )
        keys = set(map(str, value))
        allowed = _DOSE_KEYS if "kind" in keys else _OBS_KEYS if "analyte" in keys else None
        if allowed is None:
            allowed = tuple(dict.fromkeys(_OBS_KEYS + _DOSE_KEYS))
            if "name" not in keys:
                raise InputError(
                    f"CMT {c} names neither an analyte nor an event kind.",
                    file=source,
                    fix='add "analyte": NAME (observations) or "kind": NAME (doses).',
                )
        unknown = sorted(keys - set(allowed))
        if unknown:
            raise InputError(
                f"CMT {c}: unknown key '{unknown[0]}'.",
                file=source,
                fix=f"use only: {', '.join(allowed)} (see docs/nonmem.md).",
            )
        out[c] = dict(value)
    return out


def check_time_zero(time_zero: float | None) -> None:
    """Refuse a ``--time-zero`` that is not a finite number (nan, inf)."""
    if time_zero is not None and not np.isfinite(time_zero):
        raise InputError(
            f"--time-zero {time_zero} is not a finite number.",
            fix="give the TIME of the first CAR-T infusion (e.g. --time-zero 5), or leave "
            "--time-zero out when the CAR-T infusion is at TIME 0.",
        )


def _ignore_marks(path: str | Path, extra: str | Iterable[str]) -> tuple[str, ...]:
    """The IGNORE characters: NONMEM's default ``#``, ``C`` when the first column of
    the file is named C (the data set's own comment flag), and ``extra``."""
    marks = ["#"]
    try:
        with open(path, encoding="utf-8-sig") as fh:
            head = fh.readline()
    except (OSError, UnicodeDecodeError):
        head = ""  # Parquet, or unreadable: read_table_text says so
    first = head.split(",")[0].split("\t")[0].strip().strip('"').upper()
    if first == "C":
        marks.append("C")
    for m in [extra] if isinstance(extra, str) else extra:
        if len(m) != 1 or m.isspace() or m in ",;":
            raise InputError(
                f"--ignore '{m}' is not one character.",
                fix="give the character that starts a record to ignore, e.g. --ignore C "
                "(NONMEM's IGNORE=C) or --ignore @ (records starting with a letter or @).",
            )
        if m not in marks:
            marks.append(m)
    return tuple(marks)


def _ignored(line: str, marks: tuple[str, ...]) -> bool:
    """Whether a record is ignored under NONMEM's IGNORE=c for ``c`` in ``marks``: its
    first character is c (``@``: its first non-blank character is a letter or @)."""
    head = line.lstrip()
    if not head:
        return False
    if "@" in marks and (head[0].isalpha() or head[0] == "@"):
        return True
    return line[:1] in marks or head[0] in marks


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
    time_zero: float | None = None,
    ignore: str | Iterable[str] = (),
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
        The TIME of the first CAR-T infusion (day 0), in ``time_unit``. Without it, a
        data set whose first CAR-T infusion is not at TIME 0 is refused (days would be
        counted from the wrong origin); with it, an ID whose first CAR-T infusion is not
        then is listed in ``observations.attrs["nonmem_notes"]``.
    ignore:
        Characters that mark records to ignore, besides NONMEM's default ``#`` and
        ``C`` when the first column is named C (NONMEM's IGNORE=c: a record whose first
        character is c is not data; ``@`` ignores records whose first non-blank
        character is a letter or @). Ignored records are listed in
        ``observations.attrs["nonmem_skipped_rows"]``.

    Returns
    -------
    (observations, events), validated exactly like :func:`read_observations` and
    :func:`read_events`; an empty events table if the file has no dose records. The
    other columns (covariates such as WT) are in ``observations.attrs
    ["nonmem_covariates"]``: one row per patient (see :func:`covariate_table`).
    """
    # The steps run in this order so that a file with several problems is refused for
    # the same (first) one every time.
    cmt_map = check_cmt_map(cmt_map, "cmt_map")
    if dose_map is not None:
        dose_map = check_cmt_map(dose_map, "dose_map")
    check_time_zero(time_zero)
    table, skipped = _read_records(path, _ignore_marks(path, ignore), time_unit)
    records = _parse_records(table, time_unit, time_zero)
    censoring = _parse_censoring(table)
    split = _split_records(table, records, censoring, cmt_map, dose_map, skipped)
    # doses first: a dose error is reported even in a data set without observations
    if split.ev_rows:
        # ADDL expands one record into several events: validate them under unique row
        # numbers and name the record (and which dose of it) in an error
        ev_text = _text_frame(split.ev_rows, range(1, len(split.ev_rows) + 1))
        ev = _remap(
            lambda: validate_events_text(ev_text, table.where), _EVENT_COLUMN, split.ev_index
        )
    else:
        ev = _empty_events()
    split.notes.extend(_day_zero_notes(table, records, split, time_zero))
    if not split.obs_rows:
        table.fail(None, "EVID", "the data set has no observation records.", "check EVID/MDV.")
    obs_text = _text_frame(split.obs_rows, split.obs_index)
    obs = _remap(
        lambda: validate_observations_text(obs_text, table.where),
        {**_OBS_COLUMN, "blq": censoring.name},
    )
    covariates, changing = _covariates(table.text, records.patient, table.covariate_columns)
    obs.attrs["nonmem_covariates"] = covariates
    obs.attrs["nonmem_ignored_columns"] = table.covariate_columns
    obs.attrs["nonmem_skipped_rows"] = split.skipped
    obs.attrs["nonmem_notes"] = split.notes + changing
    obs.attrs["nonmem_dose_records"] = len(set(split.ev_index))
    return obs, ev


@dataclass
class _Table:
    """The data records as text (index: record number) and the file they came from;
    every refusal names the file, the record and the NONMEM column."""

    text: pd.DataFrame
    where: str
    #: Columns that are not NONMEM's: covariates, carried per patient.
    covariate_columns: list[str]

    def fail(self, row: int | None, column: str | None, problem: str, fix: str) -> NoReturn:
        raise InputError(problem, file=self.where, row=row, column=column, fix=fix)

    def fail_first(
        self, bad: pd.Series, column: str, problem: Callable[[int], str], fix: str
    ) -> None:
        """Refuse the first record where ``bad`` holds; ``problem(record)`` says why."""
        if bad.any():
            r = int(bad[bad].index[0])
            self.fail(r, column, problem(r), fix)

    def numeric(self, col: str, *, default: float | None, integer: bool = False) -> pd.Series:
        """Column ``col`` as floats: empty cells (and an absent column) are ``default``
        (NaN when None); text, infinities and, with ``integer``, fractions are refused."""
        text = self.text
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
        kind = "an integer" if integer else "a number"
        self.fail_first(
            bad, col, lambda r: f"{col} '{raw.loc[r]}' is not {kind}.", f"write {kind} in {col}."
        )
        if default is not None:
            num = num.fillna(default)
        return num.astype(float)


def _read_records(
    path: str | Path, marks: tuple[str, ...], time_unit: str
) -> tuple[_Table, list[tuple[int, str]]]:
    """The file's data records (comment records blanked, blank records dropped, column
    names upper-case) and the comment records skipped; refuses a file without the
    required columns or without data."""
    where = str(path)
    text = read_table_text(path, ignore_line=lambda line: _ignored(line, marks))
    dropped = list(text.attrs.get("ignored_rows", []))
    text.columns = [str(c).strip().upper() for c in text.columns]
    if len(text.columns):  # Parquet, or a CSV whose first field is quoted
        first = text.iloc[:, 0].astype(str).map(lambda v: _ignored(v.strip('"'), marks))
        for r in text.index[first.to_numpy(dtype=bool)]:
            text.loc[r, :] = ""
            dropped.append(int(r))
    skipped: list[tuple[int, str]] = [
        (r, f"IGNORE={'/'.join(marks)}: a comment record, not data") for r in sorted(dropped)
    ]
    not_data = {"C"} if text.columns[0] == "C" else set()
    covariates = [c for c in text.columns if c not in NONMEM_COLUMNS and c not in not_data]
    table = _Table(text, where, covariates)
    for col in ("ID", "TIME", "DV", "CMT"):
        if col not in text.columns:
            table.fail(
                0, col, f"required NONMEM column '{col}' is missing.", f"add a '{col}' column."
            )
    if "EVID" not in text.columns and "MDV" not in text.columns:
        table.fail(0, "EVID", "neither EVID nor MDV is present.", "add an EVID (or MDV) column.")
    if time_unit not in ("day", "hour"):
        raise InputError(
            f"time_unit '{time_unit}' is not 'day' or 'hour'.", fix="pass 'day' or 'hour'."
        )
    table.text = text[~text.apply(lambda c: c.astype(str).str.strip() == "").all(axis=1)]
    if table.text.empty:
        table.fail(1, None, "the table has a header but no data rows.", "add at least one row.")
    return table, skipped


@dataclass
class _Records:
    """The NONMEM columns that say what each record is, one value per record."""

    patient: pd.Series  # ID as text; "1" and "1.0" are the same individual
    time: pd.Series  # TIME, in the file's time unit
    day: pd.Series  # days after time_zero (day 0 = the first CAR-T infusion)
    hours_per_unit: float  # 24 when TIME is in hours, else 1: TIME / this = days
    cmt: pd.Series
    mdv: pd.Series
    amt: pd.Series
    evid: pd.Series
    addl: pd.Series
    ii: pd.Series  # dosing interval, in the file's time unit


def _parse_records(table: _Table, time_unit: str, time_zero: float | None) -> _Records:
    """ID, TIME, CMT, MDV, AMT, EVID, ADDL, II parsed and checked: dosing records
    carthema can represent, and NONMEM's own record order."""
    text = table.text
    rid = text["ID"].astype(str).str.strip()
    table.fail_first(
        rid.str.lower().isin(MISSING_MARKERS), "ID", lambda r: "ID is empty.",
        "give every record an ID.",
    )  # fmt: skip
    idnum = _number(text["ID"])
    # "1" and "1.0" are the same NONMEM individual
    patient = rid.where(
        ~(idnum.notna() & (idnum == np.round(idnum))), idnum.map(lambda v: f"{v:.0f}")
    )
    time = table.numeric("TIME", default=None)
    table.fail_first(
        time.isna(), "TIME", lambda r: "TIME is empty.", "give the time of every record."
    )
    cmt = table.numeric("CMT", default=None, integer=True)
    mdv = table.numeric("MDV", default=0.0, integer=True)
    amt = table.numeric("AMT", default=None)
    if "EVID" in text.columns:
        evid = table.numeric("EVID", default=0.0, integer=True)
    else:
        evid = pd.Series(np.where((mdv == 1) & (amt > 0), 1.0, 0.0), index=text.index)
    addl = table.numeric("ADDL", default=0.0, integer=True)
    ii = table.numeric("II", default=0.0)
    hours_per_unit = 24.0 if time_unit == "hour" else 1.0
    records = _Records(
        patient=patient,
        time=time,
        day=(time - (time_zero or 0.0)) / hours_per_unit,
        hours_per_unit=hours_per_unit,
        cmt=cmt,
        mdv=mdv,
        amt=amt,
        evid=evid,
        addl=addl,
        ii=ii,
    )
    _check_dosing(table, records)
    _check_record_order(table, records)
    return records


def _check_dosing(table: _Table, rec: _Records) -> None:
    """Refuse negative ADDL or II, ADDL beyond :data:`MAX_DOSES_PER_RECORD`, zero-order
    and steady-state doses (RATE, SS) and reset records (EVID 3/4)."""
    for col, v in (("ADDL", rec.addl), ("II", rec.ii)):
        table.fail_first(
            v < 0,
            col,
            lambda r, col=col, v=v: f"{col} {v.loc[r]:g} is negative.",
            "give ADDL (additional doses) >= 0 and II (the interval between them) >= 0.",
        )
    addl = rec.addl
    table.fail_first(
        addl + 1 > MAX_DOSES_PER_RECORD,
        "ADDL",
        lambda r: (
            f"ADDL {addl.loc[r]:g} would expand one record into {addl.loc[r] + 1:g} "
            f"doses (more than {MAX_DOSES_PER_RECORD})."
        ),
        "check ADDL; write a long course of a G-CSF or TPO agonist as one period "
        "(duration in cmt_map) rather than thousands of doses.",
    )
    for col in ("RATE", "SS"):
        v = table.numeric(col, default=0.0)
        table.fail_first(
            v != 0,
            col,
            lambda r, col=col, v=v: (
                f"{col} is {v.loc[r]:g}; carthema has no zero-order or steady-state doses."
            ),
            "write each dose as a bolus record (RATE=0, SS=0), or a G-CSF/TPO period "
            "in an events file.",
        )
    evid = rec.evid
    table.fail_first(
        ~evid.isin([0, 1, 2]),
        "EVID",
        lambda r: f"EVID {evid.loc[r]:g} is not supported (0 observation, 1 dose, 2 other).",
        "remove reset records (EVID 3/4); carthema histories start at the first event.",
    )


def _check_record_order(table: _Table, rec: _Records) -> None:
    """NONMEM's own rules: one block of records per individual, TIME not decreasing
    within it."""
    patient = rec.patient
    block = patient.ne(patient.shift())
    seen: set[str] = set()
    for r, p, new in zip(table.text.index, patient, block, strict=True):
        if new and p in seen:
            table.fail(
                int(r),
                "ID",
                f"ID {p} appears again after other IDs (NONMEM would read a new individual).",
                "sort the data set by ID, then TIME.",
            )
        seen.add(p)
    table.fail_first(
        (rec.time.diff() < 0) & ~block,
        "TIME",
        lambda r: f"TIME goes backwards within ID {patient.loc[r]}.",
        "sort each ID's records by TIME.",
    )


@dataclass
class _Censoring:
    """DV and how each record's value is censored below a limit."""

    dv: pd.Series
    flag_column: str | None  # BLQ, CENS, BQL or BLOQ; None when the file has none
    flag: pd.Series  # 1 = below the limit (0 without a flag column)
    lloq: pd.Series  # the record's LLOQ, NaN where it gives none (or LLOQ=0)
    has_lloq: bool  # the file has an LLOQ column

    @property
    def name(self) -> str:
        """The column that marks a below-limit record, for messages."""
        return self.flag_column or "LLOQ"

    def below(self, r: int) -> bool:
        """Whether record ``r`` is below its limit: its flag, or without a flag column
        DV < LLOQ."""
        if self.flag_column is not None:
            return bool(self.flag.loc[r] == 1)
        lloq = self.lloq.loc[r]
        return bool(self.has_lloq and not np.isnan(lloq) and self.dv.loc[r] < lloq)


def _parse_censoring(table: _Table) -> _Censoring:
    """The censoring flag column (at most one), LLOQ and Monolix's LIMIT, checked, and
    DV."""
    text = table.text
    flags = [c for c in FLAG_COLUMNS if c in text.columns]
    if len(flags) > 1:
        table.fail(
            0,
            flags[1],
            f"two censoring flag columns, {flags[0]} and {flags[1]}.",
            "keep one (1 = below the limit of quantification, 0 = quantified).",
        )
    flag_col = flags[0] if flags else None
    flag = table.numeric(flag_col or "BLQ", default=0.0, integer=True)
    if flag_col is not None:
        if flag_col == "CENS":
            table.fail_first(
                flag == -1,
                "CENS",
                lambda r: (
                    "CENS -1 marks a value above an upper limit; carthema has no "
                    "upper-limit censoring."
                ),
                "write the row as quantified at the limit (CENS=0), or leave it out.",
            )
        table.fail_first(
            ~flag.isin([0, 1]),
            flag_col,
            lambda r: f"{flag_col} {flag.loc[r]:g} is not 0 or 1.",
            "write 1 (below the limit) or 0.",
        )
    lloq = table.numeric("LLOQ", default=None)
    table.fail_first(
        lloq < 0,
        "LLOQ",
        lambda r: f"LLOQ {lloq.loc[r]:g} is negative.",
        "give the limit of quantification (> 0), or 0 / empty for no limit.",
    )
    limit = table.numeric("LIMIT", default=None)
    if "LIMIT" in text.columns:
        if flag_col != "CENS":
            table.fail(
                0,
                "LIMIT",
                "LIMIT without a CENS column: in Monolix coding LIMIT is the other end of "
                "a censored interval, not the limit of quantification.",
                "rename the column LLOQ if it holds the limit of quantification, or add "
                "the CENS column it belongs to.",
            )
        table.fail_first(
            (flag == 1) & (limit > 0),
            "LIMIT",
            lambda r: (
                f"LIMIT {limit.loc[r]:g} > 0: the value lies between LIMIT and DV "
                "(interval censoring), which carthema cannot represent."
            ),
            "set LIMIT to 0 or empty (below the limit DV), or write the row as quantified.",
        )
    return _Censoring(
        dv=table.numeric("DV", default=None),
        flag_column=flag_col,
        flag=flag,
        lloq=lloq.where(lloq > 0),  # LLOQ=0 means no limit on that row
        has_lloq="LLOQ" in text.columns,
    )


@dataclass
class _Split:
    """The records sorted into observation rows and event rows (in carthema's columns,
    with the record each came from), skipped records and notes."""

    skipped: list[tuple[int, str]]
    obs_rows: list[dict[str, object]] = field(default_factory=list)
    obs_index: list[int] = field(default_factory=list)
    ev_rows: list[dict[str, object]] = field(default_factory=list)
    ev_index: list[int] = field(default_factory=list)
    notes: list[tuple[int, str]] = field(default_factory=list)


def _split_records(
    table: _Table,
    rec: _Records,
    cens: _Censoring,
    cmt_map: Mapping[int, Spec],
    dose_map: Mapping[int, Spec] | None,
    skipped: list[tuple[int, str]],
) -> _Split:
    """Each record -> events (a dose, expanded by ADDL), an observation row, or a
    skipped record (EVID=2, MDV=1 without a below-limit flag)."""
    split = _Split(skipped=skipped)
    for r in table.text.index:
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
    table: _Table,
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
    table: _Table,
    rec: _Records,
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
    table: _Table,
    rec: _Records,
    cens: _Censoring,
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


def _day_zero_notes(
    table: _Table, rec: _Records, split: _Split, time_zero: float | None
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


def _covariates(
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


def _text_frame(rows: list[dict[str, object]], index: list[int]) -> pd.DataFrame:
    return to_text_frame(pd.DataFrame(rows), rows=index)


def _remap(call, columns: Mapping[str, str], records: list[int] | None = None) -> pd.DataFrame:
    """Run a validator; name the NONMEM column (DV, TIME, CMT ...) in its error, and
    the record (``records``: validated row k -> record number) of the row."""
    try:
        out = call()
    except InputError as exc:
        col = columns.get(exc.column or "", exc.column)
        fix = exc.fix
        row = exc.row
        problem = exc.problem
        if records is not None and row is not None and 1 <= row <= len(records):
            row = records[row - 1]
            nth = records[: exc.row].count(row)
            if records.count(row) > 1:
                problem = f"{problem} (dose {nth} of {records.count(row)} from ADDL)"
        if exc.column == "day" and "20 years" in exc.problem:
            fix = f"{fix} If TIME is in hours, import with time_unit='hour' (--time-unit hour)."
        if col == "CMT" and exc.column in _FROM_MAP:
            fix = f"give '{exc.column}' for this CMT in cmt_map (--cmt-map) ({exc.fix})"
        raise InputError(problem, file=exc.file, row=row, column=col, fix=fix) from None
    return out


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


@dataclass
class NonmemImport:
    """What :func:`import_nonmem` wrote, skipped and noted."""

    source: str
    out: Path
    observations: pd.DataFrame
    events: pd.DataFrame
    files: list[Path]
    skipped: list[tuple[int, str]]
    notes: list[tuple[int, str]]
    ignored_columns: list[str]
    dose_records: int
    covariates: pd.DataFrame | None = None

    def lines(self, examples: int = 5) -> list[str]:
        """The report, one line per reason: count and example rows."""
        obs, ev = self.observations, self.events
        out = [
            f"imported {self.source}: {len(obs)} observation(s) of "
            f"{obs['analyte'].nunique()} analyte(s) for {obs['patient'].nunique()} "
            f"patient(s); {len(ev)} event(s) from {self.dose_records} dose record(s)"
            + (" (ADDL expanded)" if len(ev) > self.dose_records else "")
        ]
        for verb, items in (("skipped", self.skipped), ("note", self.notes)):
            by_reason: dict[str, list[int]] = {}
            for row, reason in items:
                by_reason.setdefault(reason, []).append(row)
            for reason, rows in by_reason.items():
                shown = ", ".join(str(r) for r in rows[:examples])
                more = f", ... ({len(rows) - examples} more)" if len(rows) > examples else ""
                label = "row" if len(rows) == 1 else "rows"
                if verb == "skipped":
                    out.append(f"skipped {len(rows)} {label}: {reason} ({label} {shown}{more})")
                else:
                    out.append(f"note: {len(rows)} {label}: {reason} ({label} {shown}{more})")
        if self.ignored_columns:
            out.append(
                f"covariates: {', '.join(self.ignored_columns)} -> covariates.csv (one row "
                "per patient, each patient's first value; fit-population --covariates)"
            )
        if ev.empty:
            out.append("note: no dose records, so no events.csv (fit needs an events table)")
        out.append("wrote " + ", ".join(str(f) for f in self.files))
        return out


def read_cmt_map(path: str | Path | None, what: str = "--cmt-map") -> dict[int, Spec] | None:
    """Read a CMT map from a JSON file (see the module docstring); None for None."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise InputError(
            "file not found." if not p.exists() else "is not a file.",
            file=str(p),
            fix=f"give {what} a JSON file mapping CMT numbers to analytes or event kinds.",
        )
    try:
        mapping = json.loads(p.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise InputError(
            f"not valid JSON ({str(exc).splitlines()[0]}).",
            file=str(p),
            row=line,
            fix='write an object such as {"1": "cart_infusion", "2": "anc"} '
            "(double quotes, no trailing commas).",
        ) from None
    return check_cmt_map(mapping, str(p))


def import_nonmem(
    path: str | Path,
    cmt_map: Mapping[int, Spec],
    out: str | Path,
    *,
    dose_map: Mapping[int, Spec] | None = None,
    time_unit: Literal["day", "hour"] = "day",
    time_zero: float | None = None,
    ignore: str | Iterable[str] = (),
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> NonmemImport:
    """Import a NONMEM data set and write ``out/observations.csv`` and ``out/events.csv``.

    The files are carthema's own format (canonical units), readable by ``check-data``
    and ``fit``. ``out`` is written whole or not at all: the files go to a temporary
    folder beside it, are read back through the same validation, and the folder is
    then renamed into place. An existing non-empty ``out`` is refused unless
    ``overwrite``; then it is replaced as a whole (no stale file survives); a folder
    holding ``path`` or one of ``inputs`` (the maps) is never replaced.
    """
    inputs = (path, *inputs)
    target = check_output_folder(out, overwrite=overwrite, inputs=inputs)
    obs, ev = read_nonmem(
        path, cmt_map, dose_map=dose_map, time_unit=time_unit, time_zero=time_zero, ignore=ignore
    )
    tables = {"observations.csv": obs}
    if not ev.empty:
        tables["events.csv"] = ev
    covariates = obs.attrs.get("nonmem_covariates")
    if covariates is not None and len(covariates.columns) > 1:
        tables["covariates.csv"] = covariates
    files = write_folder_atomically(target, tables, overwrite=overwrite, inputs=inputs)
    return NonmemImport(
        source=str(path),
        out=target,
        observations=obs,
        events=ev,
        files=files,
        skipped=list(obs.attrs.get("nonmem_skipped_rows", [])),
        notes=list(obs.attrs.get("nonmem_notes", [])),
        ignored_columns=list(obs.attrs.get("nonmem_ignored_columns", [])),
        dose_records=int(obs.attrs.get("nonmem_dose_records", 0)),
        covariates=covariates,
    )
