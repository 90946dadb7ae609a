"""Row-by-row validation of observation, event and outcome tables.

Every check stops at the first bad row and raises one :class:`InputError` naming the
file, the 1-based data row (header = row 0), the column and the fix. Checks run in a
fixed order (columns, then each column left to right, then cross-column and cross-row
rules), so the same file always gives the same message. Nothing is dropped or guessed:
a value that cannot be read exactly is refused. The only rows skipped are blank lines.

The validators work on a *text frame*: every cell a string, ``""`` when empty, and the
index holding each row's 1-based number in the file. The readers in
:mod:`carthema.data.loaders` build it from CSV and Parquet; :func:`to_text_frame` builds
it from an in-memory DataFrame, so tables made in code get the same checks. The text
frame and the checks every column shares (:class:`~carthema.data.textframe.TextTable`,
numbers, yes/no, column names) are in :mod:`carthema.data.textframe`; this module holds
the day and patient rules every table shares and the observation and outcome validators;
the events validator is :mod:`carthema.data.validate_events`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable

import numpy as np
import pandas as pd

from carthema.data import plausibility as P
from carthema.data import units as U
from carthema.data.analytes import ANALYTES, COMPARTMENTS, suggest_analytes
from carthema.data.schema import (
    OBSERVATION_COLUMNS,
    OBSERVATION_KEY,
    OBSERVATION_REQUIRED,
    OUTCOME_COLUMNS,
    check_observations,
)
from carthema.data.textframe import (
    MISSING_MARKERS,
    TextTable,
    earlier_row,
    lookup,
    numbers,
    open_table,
    text_column,
    to_text_frame,
    yes_no,
)


# ------------------------------------------------------------------ shared column checks
def check_day(t: TextTable) -> pd.Series:
    """The day column: a number of days since the first CAR-T infusion, within the
    plausible span (:data:`carthema.data.plausibility.DAY_LIMIT`)."""
    day = numbers(
        t,
        "day",
        required=True,
        what="day",
        fix_missing="give the day as a number of days since the first CAR-T infusion (day 0).",
        hint="day must be a number of days since the first CAR-T infusion, not a date. ",
    )
    t.refuse_first(
        day.abs() > P.DAY_LIMIT,
        "day",
        lambda r: f"day {day.loc[r]:g} is {P.DAY_REASON}.",
        "write the number of days since the first CAR-T infusion (day 0).",
    )
    return day


def refuse_unknown(
    t: TextTable,
    column: str,
    raw: pd.Series,
    known: Collection[str],
    suggest: Callable[[str], list[str]],
    what: str,
    whats: str,
) -> pd.Series:
    """Refuse the first row whose lower-cased ``raw`` value is not in ``known`` ("unknown
    ``what`` 'X'."), with the closest names of ``suggest`` and the list of ``known`` ones
    ("Known ``whats``: ..."); returns the lower-cased values."""
    low = raw.str.lower()

    def unknown(row: int) -> tuple[str, str]:
        close = suggest(raw.loc[row])
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return (f"unknown {what} '{raw.loc[row]}'.", f"{hint}Known {whats}: {', '.join(known)}.")

    t.refuse_first(~low.isin(list(known)), column, unknown)
    return low


def check_patient(t: TextTable) -> pd.Series:
    """The patient column: text, required in every row."""
    return text_column(t, "patient", required=True, fix="give every row a patient identifier.")


def _analyte_units(symbols: Iterable[str]) -> str:
    """Accepted spellings of an analyte's units, for a message."""
    return U.describe(U.spellings(tuple(symbols)))


def refuse_duplicated(
    t: TextTable, key: dict[str, pd.Series], record: Callable[[pd.Series], str], fix: str
) -> None:
    """Refuse the first row whose ``key`` (patient, day, then the table's own columns)
    repeats an earlier row's, naming that row. ``record`` words the rest of the key after
    "patient P, day D, "."""
    keyframe = pd.DataFrame(key)

    def duplicated(row: int) -> str:
        k = keyframe.loc[row]
        return (
            f"duplicated record: patient {k['patient']}, day {k['day']:g}, {record(k)} "
            f"already appears on row {earlier_row(keyframe, row)}."
        )

    t.refuse_first(keyframe.duplicated(keep="first"), "day", duplicated, fix)


def opt_text(s: pd.Series) -> pd.Series:
    """Text with None where empty."""
    return s.astype(object).where(s != "", None)


def canonical_table(
    t: TextTable,
    out: pd.DataFrame,
    by: list[str],
    optional_text: tuple[str, ...],
    check: Callable[[pd.DataFrame, str], pd.DataFrame],
) -> pd.DataFrame:
    """The validated columns ``out`` and the note (None where empty) as the canonical table:
    sorted by ``by`` (patients in natural order), the ``optional_text`` columns text or
    None, the file named in ``attrs["source"]``, checked against the schema by ``check``."""
    note = text_column(t, "note", required=False, fix="")
    out = sort_rows(out.assign(note=opt_text(note)), by)
    for c in optional_text:
        out[c] = out[c].astype("str").where(out[c].notna(), None)
    out.attrs["source"] = t.source
    return check(out, t.source)


# ---------------------------------------------------------------------------- observations
def validate_observations_text(text: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a text frame of observations; return the canonical table.

    See :mod:`carthema.data.schema` for the columns. Values and limits are converted to
    each analyte's canonical unit. Rows where ``blq`` is true may have an empty value
    (stored as NaN; ``lloq`` keeps the limit).
    """
    t = open_table(text, source, OBSERVATION_COLUMNS, OBSERVATION_REQUIRED)
    patient = check_patient(t)
    day = check_day(t)
    analyte = _check_analyte(t)
    comp = _check_compartment(t, analyte)
    unit_raw, unit = _check_unit(t, analyte)
    blq, value, lloq = _check_value_and_lloq(t)
    _refuse_negative(t, analyte, value)
    factor = _canonical_factor(analyte, unit)
    _refuse_above_upper(t, analyte, value, factor)
    _refuse_implausible(t, analyte, unit_raw, value, lloq, factor)
    refuse_duplicated(
        t,
        {"patient": patient, "day": day, "analyte": analyte, "compartment": comp},
        lambda k: f"{k['analyte']} in {k['compartment']}",
        "keep one measurement per patient, day, analyte and compartment "
        "(use fractional days for repeated measurements on one day).",
    )
    canonical_unit = lookup(analyte, {a: ANALYTES[a].canonical_unit for a in ANALYTES})
    out = pd.DataFrame(
        {
            "patient": patient.astype(str),
            "day": day.astype(float),
            "analyte": analyte.astype(str),
            "value": (value * factor).astype(float),
            "unit": canonical_unit.astype(str),
            "compartment": comp.astype(str),
            "lloq": (lloq * factor).astype(float),
            "blq": blq.astype(bool),
        }
    )
    return canonical_table(
        t, out, ["patient", "day", "analyte", "compartment"], (), check_observations
    )


def _check_analyte(t: TextTable) -> pd.Series:
    """The analyte column: required, one of :data:`~carthema.data.analytes.ANALYTES`;
    returns the lower-cased names."""
    analyte_raw = text_column(t, "analyte", required=True, fix="name the analyte of every row.")
    return refuse_unknown(
        t, "analyte", analyte_raw, ANALYTES, suggest_analytes, "analyte", "analytes"
    )


def _check_compartment(t: TextTable, analyte: pd.Series) -> pd.Series:
    """The compartment column: empty -> the analyte's default, where it has exactly one
    meaning; otherwise one the analyte is measured in. Returns the lower-cased names."""
    comp_raw = text_column(t, "compartment", required=False, fix="")
    comp = comp_raw.str.lower()
    bad = (comp != "") & ~comp.isin(list(COMPARTMENTS))
    t.refuse_first(
        bad,
        "compartment",
        lambda r: f"unknown compartment '{comp_raw.loc[r]}'.",
        f"write one of: {', '.join(COMPARTMENTS)}.",
    )
    default = lookup(analyte, {a: ANALYTES[a].default_compartment or "" for a in ANALYTES})
    comp = comp.where(comp != "", default)
    t.refuse_first(
        comp == "",
        "compartment",
        lambda r: (
            f"{analyte.loc[r]} is measured in blood and in marrow, and this row does not say which."
        ),
        "fill the 'compartment' column with blood or marrow.",
    )
    allowed = pd.Series(
        [c in ANALYTES[a].compartments for a, c in zip(analyte, comp, strict=True)],
        index=t.df.index,
    )
    t.refuse_first(
        ~allowed,
        "compartment",
        lambda r: f"{analyte.loc[r]} is not measured in {comp.loc[r]}.",
        lambda r: (
            f"use compartment {' or '.join(ANALYTES[analyte.loc[r]].compartments)}, "
            "or check the analyte."
        ),
    )
    return comp


def _check_unit(t: TextTable, analyte: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The unit column: required, a unit of the row's analyte. Returns the unit as
    written and as parsed (:class:`carthema.data.units` objects)."""
    unit_raw = text_column(
        t,
        "unit",
        required=True,
        fix="give the unit of every value (e.g. G/L, cells/uL, copies/ug DNA, %).",
    )
    # the analyte settles a case slip that alone is ambiguous (g/l: G/L or g/L)
    unit_of = functools.cache(lambda u, a: U.parse_unit(u, ANALYTES[a].units))
    parsed = pd.Series(
        [unit_of(u, a) for u, a in zip(unit_raw, analyte, strict=True)],
        index=t.df.index,
        dtype=object,
    )
    t.refuse_first(
        parsed.isna(),
        "unit",
        lambda r: f"unknown unit '{unit_raw.loc[r]}'.",
        lambda r: (
            f"write one of the units of {analyte.loc[r]}: "
            f"{_analyte_units(ANALYTES[analyte.loc[r]].units)}."
        ),
    )
    fits = pd.Series(
        [u.symbol in ANALYTES[a].units for a, u in zip(analyte, parsed, strict=True)],
        index=t.df.index,
    )
    t.refuse_first(
        ~fits,
        "unit",
        lambda r: (
            f"unit '{unit_raw.loc[r]}' is not a unit of {analyte.loc[r]} "
            f"({ANALYTES[analyte.loc[r]].description})."
        ),
        lambda r: f"write one of: {_analyte_units(ANALYTES[analyte.loc[r]].units)}.",
    )
    # Units may differ between rows of one analyte (a change of lab): every row is
    # labelled and converted on its own. A mislabelled row (cells/uL written as G/L) is
    # caught by the plausibility ranges (_refuse_implausible), with the likely unit named.
    return unit_raw, parsed


def _check_value_and_lloq(t: TextTable) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The blq flag, value and lloq columns, each on its own and against each other (a
    blq row gives the limit, a value below the limit is flagged blq). Returns ``(blq,
    value, lloq)`` in the row's unit."""
    blq = yes_no(t, "blq", default=False).astype(bool)
    value = numbers(t, "value", required=False, what="value", fix_missing="")
    lloq = numbers(t, "lloq", required=False, what="lloq", fix_missing="")
    t.refuse_first(
        value.isna() & ~blq,
        "value",
        "value is empty.",
        "give the measured value; if it was below the quantification limit, "
        "set blq=true and give the limit in lloq.",
    )
    t.refuse_first(
        lloq.notna() & (lloq <= 0),
        "lloq",
        lambda r: f"lloq {lloq.loc[r]:g} is not positive.",
        "give a limit > 0.",
    )
    t.refuse_first(
        blq & lloq.isna(),
        "lloq",
        "blq is set but lloq (the quantification limit) is empty.",
        "give the assay's lower limit of quantification in lloq, in the row's unit.",
    )
    t.refuse_first(
        blq & value.notna() & (value > lloq),
        "value",
        lambda r: f"value {value.loc[r]:g} is above lloq {lloq.loc[r]:g} but flagged blq.",
        "set blq=false if the value was quantified, or correct value or lloq.",
    )
    t.refuse_first(
        ~blq & value.notna() & lloq.notna() & (value < lloq),
        "blq",
        lambda r: f"value {value.loc[r]:g} is below lloq {lloq.loc[r]:g} but not flagged blq.",
        "set blq=true (the value is kept), or correct value or lloq.",
    )
    return blq, value, lloq


def _refuse_negative(t: TextTable, analyte: pd.Series, value: pd.Series) -> None:
    """Refuse a negative value (a below-limit result is written as blq with lloq)."""
    is_count = lookup(analyte, {a: ANALYTES[a].count for a in ANALYTES})
    t.refuse_first(
        value < 0,
        "value",
        lambda r: (
            f"value {value.loc[r]:g} is negative; "
            f"{'a count' if is_count.loc[r] else 'this analyte'} ({analyte.loc[r]}) "
            "cannot be below zero."
        ),
        "correct the value; write a below-limit result as blq=true with lloq.",
    )


def _canonical_factor(analyte: pd.Series, unit: pd.Series) -> pd.Series:
    """Per row, the factor taking a value in the row's unit to its analyte's canonical
    unit."""
    base = {a: U.parse_unit(ANALYTES[a].canonical_unit).factor for a in ANALYTES}
    return pd.Series(
        np.array([u.factor for u in unit], dtype=float) / lookup(analyte, base).to_numpy(float),
        index=analyte.index,
        dtype=float,
    )


def _refuse_above_upper(
    t: TextTable, analyte: pd.Series, value: pd.Series, factor: pd.Series
) -> None:
    """Refuse a value above the analyte's hard upper bound (a percentage above 100)."""
    upper = lookup(analyte, {a: ANALYTES[a].upper or np.inf for a in ANALYTES}).astype(float)
    t.refuse_first(
        value * factor > upper,
        "value",
        lambda r: (
            f"value {value.loc[r]:g} is above {upper.loc[r]:g} "
            f"{ANALYTES[analyte.loc[r]].canonical_unit}, impossible for {analyte.loc[r]}."
        ),
        "a percentage must lie between 0 and 100.",
    )


def _refuse_implausible(
    t: TextTable,
    analyte: pd.Series,
    unit_raw: pd.Series,
    value: pd.Series,
    lloq: pd.Series,
    factor: pd.Series,
) -> None:
    """Plausibility: a value (or limit) no patient or assay can give is a slip
    (:data:`carthema.data.plausibility.ANALYTE_RANGES`); the message names the likely
    unit."""
    for col, series in (("value", value), ("lloq", lloq)):
        canonical = series * factor
        low = lookup(analyte, {a: r.low for a, r in P.ANALYTE_RANGES.items()}).astype(float)
        high = lookup(analyte, {a: r.high for a, r in P.ANALYTE_RANGES.items()}).astype(float)
        outside = canonical.notna() & ((canonical < low) | (canonical > high))
        t.refuse_first(
            outside,
            col,
            lambda r, col=col, series=series, canonical=canonical: P.out_of_range(
                analyte.loc[r] if col == "value" else f"lloq of {analyte.loc[r]}",
                float(series.loc[r]),
                unit_raw.loc[r],
                float(canonical.loc[r]),
                P.ANALYTE_RANGES[analyte.loc[r]],
                list(ANALYTES[analyte.loc[r]].units),
            ),
        )


# -------------------------------------------------------------------------------- outcomes
def validate_outcomes_text(text: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate an outcomes table (patient, outcome, day, source_quote).

    Outcomes are stated clinical results that are not measurements: engraftment days,
    "MRD negative", "full donor chimerism". ``day`` may be empty when the source gives
    none; ``source_quote`` is the sentence the outcome is read from.
    """
    t = open_table(text, source, OUTCOME_COLUMNS + ("note",), OUTCOME_COLUMNS)
    patient = check_patient(t)
    outcome = text_column(t, "outcome", required=True, fix="name the outcome.")
    day = numbers(t, "day", required=False, what="day", fix_missing="")
    quote = text_column(t, "source_quote", required=True, fix="quote the sentence it comes from.")
    out = pd.DataFrame(
        {"patient": patient, "outcome": outcome, "day": day, "source_quote": quote},
    )
    for c in ("patient", "outcome", "source_quote"):
        out[c] = out[c].astype("str")
    return out.reset_index(drop=True)


# ----------------------------------------------------------------------------------- public
def validate_observations(df: pd.DataFrame, source: str = "<observations>") -> pd.DataFrame:
    """Validate an observation table built in code (rows numbered 1..n in order).

    Returns the canonical table: values in canonical units, sorted by patient and day.
    """
    return validate_observations_text(to_text_frame(df), source)


def validate_events(df: pd.DataFrame, source: str = "<events>") -> pd.DataFrame:
    """Validate an events table built in code (rows numbered 1..n in order)."""
    from carthema.data.validate_events import validate_events_text

    return validate_events_text(to_text_frame(df), source)


def validate_outcomes(df: pd.DataFrame, source: str = "<outcomes>") -> pd.DataFrame:
    """Validate an outcomes table built in code (rows numbered 1..n in order)."""
    return validate_outcomes_text(to_text_frame(df), source)


def _natural_key(s: str) -> tuple:
    """Sort key putting patient '2' before '10' (numbers by value, then text)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s) if p)


def sort_rows(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``df`` sorted by ``by`` (patients in natural order), stable; one copy of ``df``."""
    order = {p: i for i, p in enumerate(sorted(df["patient"].unique(), key=_natural_key))}
    keys = pd.DataFrame({"_p": lookup(df["patient"], order).to_numpy()})
    for c in by[1:]:
        keys[c] = df[c].to_numpy()
    perm = keys.sort_values(list(keys.columns), kind="stable").index.to_numpy()
    return df.take(perm).reset_index(drop=True)


__all__ = [
    "MISSING_MARKERS",
    "OBSERVATION_KEY",
    "to_text_frame",
    "validate_events",
    "validate_observations",
    "validate_observations_text",
    "validate_outcomes",
    "validate_outcomes_text",
]
