"""The records of a NONMEM data set, parsed and checked: the steps of
:func:`carthema.data.nonmem.read_nonmem` (whose module docstring gives the format).

Read the records (IGNORE marks, blank records, required columns; :func:`read_records`),
parse the columns that say what each record is (:func:`parse_records`: ID, TIME, CMT,
MDV, AMT, EVID, ADDL, II, with NONMEM's record order), parse DV and its censoring
(:func:`parse_censoring`). Every refusal names the file, the record and the NONMEM
column (:class:`NonmemTable`). What the parsed records become (event and observation
rows, day 0, covariates) is :mod:`carthema.data.nonmem_rows`; the steps run in one fixed
order (:func:`carthema.data.nonmem.read_nonmem`), so that a file with several problems is
refused for the same, first one every time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.data.errors import InputError
from carthema.data.loaders import read_table_text
from carthema.data.textframe import MISSING_MARKERS, TextTable

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


Spec = str | Mapping[str, object]

# Censoring flag columns, in the order they are looked for (1 = below the limit).
FLAG_COLUMNS = ("BLQ", "CENS", "BQL", "BLOQ")
# More than this many doses from one record (1 + ADDL) is refused.
MAX_DOSES_PER_RECORD = 1000


def ignore_marks(path: str | Path, extra: str | Iterable[str]) -> tuple[str, ...]:
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


def _number(s: pd.Series) -> pd.Series:
    txt = s.astype(str).str.strip()
    return pd.to_numeric(txt.where(~txt.str.lower().isin(MISSING_MARKERS)), errors="coerce")


class NonmemTable(TextTable):
    """The data records as text (index: record number) and the file they came from
    (``source``); every refusal names the file, the record and the NONMEM column
    (:meth:`~carthema.data.textframe.TextTable.refuse_first`)."""

    def __init__(self, text: pd.DataFrame, source: str, covariate_columns: list[str]) -> None:
        super().__init__(text, source)
        #: Columns that are not NONMEM's: covariates, carried per patient.
        self.covariate_columns = covariate_columns

    def numeric(self, col: str, *, default: float | None, integer: bool = False) -> pd.Series:
        """Column ``col`` as floats: empty cells (and an absent column) are ``default``
        (NaN when None); text, infinities and, with ``integer``, fractions are refused."""
        text = self.df
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
        self.refuse_first(
            bad, col, lambda r: f"{col} '{raw.loc[r]}' is not {kind}.", f"write {kind} in {col}."
        )
        if default is not None:
            num = num.fillna(default)
        return num.astype(float)


def read_records(
    path: str | Path, marks: tuple[str, ...], time_unit: str
) -> tuple[NonmemTable, list[tuple[int, str]]]:
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
    table = NonmemTable(text, where, covariates)
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
    table.df = text[~text.apply(lambda c: c.astype(str).str.strip() == "").all(axis=1)]
    if table.df.empty:
        table.fail(1, None, "the table has a header but no data rows.", "add at least one row.")
    return table, skipped


@dataclass
class RecordColumns:
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


def parse_records(table: NonmemTable, time_unit: str, time_zero: float | None) -> RecordColumns:
    """ID, TIME, CMT, MDV, AMT, EVID, ADDL, II parsed and checked: dosing records
    carthema can represent, and NONMEM's own record order."""
    text = table.df
    rid = text["ID"].astype(str).str.strip()
    table.refuse_first(
        rid.str.lower().isin(MISSING_MARKERS), "ID", lambda r: "ID is empty.",
        "give every record an ID.",
    )  # fmt: skip
    idnum = _number(text["ID"])
    # "1" and "1.0" are the same NONMEM individual
    patient = rid.where(
        ~(idnum.notna() & (idnum == np.round(idnum))), idnum.map(lambda v: f"{v:.0f}")
    )
    time = table.numeric("TIME", default=None)
    table.refuse_first(
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
    records = RecordColumns(
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


def _check_dosing(table: NonmemTable, rec: RecordColumns) -> None:
    """Refuse negative ADDL or II, ADDL beyond :data:`MAX_DOSES_PER_RECORD`, zero-order
    and steady-state doses (RATE, SS) and reset records (EVID 3/4)."""
    for col, v in (("ADDL", rec.addl), ("II", rec.ii)):
        table.refuse_first(
            v < 0,
            col,
            lambda r, col=col, v=v: f"{col} {v.loc[r]:g} is negative.",
            "give ADDL (additional doses) >= 0 and II (the interval between them) >= 0.",
        )
    addl = rec.addl
    table.refuse_first(
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
        table.refuse_first(
            v != 0,
            col,
            lambda r, col=col, v=v: (
                f"{col} is {v.loc[r]:g}; carthema has no zero-order or steady-state doses."
            ),
            "write each dose as a bolus record (RATE=0, SS=0), or a G-CSF/TPO period "
            "in an events file.",
        )
    evid = rec.evid
    table.refuse_first(
        ~evid.isin([0, 1, 2]),
        "EVID",
        lambda r: f"EVID {evid.loc[r]:g} is not supported (0 observation, 1 dose, 2 other).",
        "remove reset records (EVID 3/4); carthema histories start at the first event.",
    )


def _check_record_order(table: NonmemTable, rec: RecordColumns) -> None:
    """NONMEM's own rules: one block of records per individual, TIME not decreasing
    within it."""
    patient = rec.patient
    block = patient.ne(patient.shift())
    seen: set[str] = set()
    for r, p, new in zip(table.df.index, patient, block, strict=True):
        if new and p in seen:
            table.fail(
                int(r),
                "ID",
                f"ID {p} appears again after other IDs (NONMEM would read a new individual).",
                "sort the data set by ID, then TIME.",
            )
        seen.add(p)
    table.refuse_first(
        (rec.time.diff() < 0) & ~block,
        "TIME",
        lambda r: f"TIME goes backwards within ID {patient.loc[r]}.",
        "sort each ID's records by TIME.",
    )


@dataclass
class Censoring:
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


def parse_censoring(table: NonmemTable) -> Censoring:
    """The censoring flag column (at most one), LLOQ and Monolix's LIMIT, checked, and
    DV."""
    text = table.df
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
            table.refuse_first(
                flag == -1,
                "CENS",
                lambda r: (
                    "CENS -1 marks a value above an upper limit; carthema has no "
                    "upper-limit censoring."
                ),
                "write the row as quantified at the limit (CENS=0), or leave it out.",
            )
        table.refuse_first(
            ~flag.isin([0, 1]),
            flag_col,
            lambda r: f"{flag_col} {flag.loc[r]:g} is not 0 or 1.",
            "write 1 (below the limit) or 0.",
        )
    lloq = table.numeric("LLOQ", default=None)
    table.refuse_first(
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
        table.refuse_first(
            (flag == 1) & (limit > 0),
            "LIMIT",
            lambda r: (
                f"LIMIT {limit.loc[r]:g} > 0: the value lies between LIMIT and DV "
                "(interval censoring), which carthema cannot represent."
            ),
            "set LIMIT to 0 or empty (below the limit DV), or write the row as quantified.",
        )
    return Censoring(
        dv=table.numeric("DV", default=None),
        flag_column=flag_col,
        flag=flag,
        lloq=lloq.where(lloq > 0),  # LLOQ=0 means no limit on that row
        has_lloq="LLOQ" in text.columns,
    )
