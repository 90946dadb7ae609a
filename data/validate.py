"""Row-by-row validation of observation, event and outcome tables.

Every check stops at the first bad row and raises one :class:`InputError` naming the
file, the 1-based data row (header = row 0), the column and the fix. Checks run in a
fixed order (columns, then each column left to right, then cross-column and cross-row
rules), so the same file always gives the same message. Nothing is dropped or guessed:
a value that cannot be read exactly is refused. The only rows skipped are blank lines.

The validators work on a *text frame*: every cell a string, ``""`` when empty, and the
index holding each row's 1-based number in the file. The readers in
:mod:`carthema.data.loaders` build it from CSV and Parquet; :func:`to_text_frame` builds
it from an in-memory DataFrame, so tables made in code get the same checks.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from carthema.data import plausibility as P
from carthema.data import units as U
from carthema.data.analytes import ANALYTES, COMPARTMENTS, suggest_analytes
from carthema.data.errors import InputError
from carthema.data.events import (
    EVENT_KINDS,
    KIND_SPECIFIC_COLUMNS,
    SOURCES,
    YES_NO,
    get_event_kind,
    suggest_event_kinds,
)
from carthema.data.schema import (
    EVENT_COLUMNS,
    EVENT_REQUIRED,
    OBSERVATION_COLUMNS,
    OBSERVATION_KEY,
    OBSERVATION_REQUIRED,
    OUTCOME_COLUMNS,
    check_events,
    check_observations,
)

# Cell contents that mean "no value" (compared case-insensitively). "." is NONMEM's.
MISSING_MARKERS: frozenset[str] = frozenset({"", "na", "nan", "n/a", "null", "none", "."})


# ----------------------------------------------------------------------------- text frames
def _cell_text(x: object) -> str:
    """One cell as text, exactly: floats in shortest round-trip form, missing as ''."""
    if x is None or x is pd.NA or x is pd.NaT:
        return ""
    if isinstance(x, bool | np.bool_):
        return "true" if x else "false"
    if isinstance(x, float | np.floating):
        if math.isnan(x):
            return ""
        return str(float(x))
    if isinstance(x, int | np.integer):
        return str(int(x))
    return str(x).strip()


def to_text_frame(df: pd.DataFrame, rows: Iterable[int] | None = None) -> pd.DataFrame:
    """Copy of ``df`` with every cell as text and the index set to 1-based row numbers.

    ``rows`` gives each row's number in its file; by default rows are numbered 1..n in
    order (header = row 0), which is also how Parquet rows are reported.
    """
    out = pd.DataFrame(
        {str(c): [_cell_text(x) for x in df[c].tolist()] for c in df.columns},
        dtype=object,
    )
    out.index = pd.Index(list(rows) if rows is not None else range(1, len(df) + 1))
    return out


# A message, or a function of the bad row's number that writes it (see refuse_first).
Message = str | Callable[[int], str] | Callable[[int], tuple[str, str]]


class _Table:
    """A text frame being validated, with the name of the file it came from."""

    def __init__(self, text: pd.DataFrame, source: str) -> None:
        self.source = source
        self.df = text

    @property
    def df(self) -> pd.DataFrame:
        return self._df

    @df.setter
    def df(self, value: pd.DataFrame) -> None:
        # stripped columns are computed once per column (a million-row table is read by
        # several checks); a new frame (rows dropped, columns renamed) starts afresh
        self._df = value
        self._cols: dict[str, pd.Series] = {}
        self._missing: dict[str, pd.Series] = {}

    def fail(self, row: int | None, column: str | None, problem: str, fix: str) -> None:
        raise InputError(problem, file=self.source, row=row, column=column, fix=fix)

    def first(self, mask: pd.Series) -> int | None:
        """Row number of the first True in ``mask`` (None if none)."""
        hits = mask[mask.to_numpy(dtype=bool)]
        return None if hits.empty else int(hits.index[0])

    def refuse_first(
        self,
        mask: pd.Series,
        column: str | None,
        problem: Message,
        fix: Message | None = None,
    ) -> None:
        """Refuse the first row where ``mask`` is True; do nothing if there is none.

        The one place where "find the first bad row, then fail" is written. ``problem``
        and ``fix`` are text, or functions of the bad row's number that return the text
        (so a message can quote that row's cells). For messages that need some working
        out, ``problem`` may instead return ``(problem, fix)`` with ``fix`` left None.
        """
        row = self.first(mask)
        if row is None:
            return
        said = problem(row) if callable(problem) else problem
        if isinstance(said, tuple):
            said, fix = said
        how = fix(row) if callable(fix) else fix
        self.fail(row, column, said, how or "")

    def col(self, name: str) -> pd.Series:
        """The column as stripped text (the same Series on every call: do not modify)."""
        if name not in self._cols:
            self._cols[name] = _per_unique(self.df[name], lambda u: u.astype(str).str.strip())
        return self._cols[name]

    def missing(self, name: str) -> pd.Series:
        if name not in self._missing:
            marks = _per_unique(self.col(name), lambda u: u.str.lower().isin(MISSING_MARKERS))
            self._missing[name] = marks.astype(bool)
        return self._missing[name]


def _lookup(s: pd.Series, table: dict) -> pd.Series:
    """``s.map(table)``, computed once per distinct value of ``s``."""
    return _per_unique(s, lambda u: u.map(table))


def _per_unique(s: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``fn`` (a vectorised text operation) of each distinct cell of ``s``, spread back
    over the rows: a column of a million rows holds few distinct units, analytes or
    patients, and hashing each cell is much cheaper than a string operation on it."""
    codes, uniques = pd.factorize(s.to_numpy(dtype=object), use_na_sentinel=False)
    done = fn(pd.Series(uniques, dtype=object)).to_numpy()
    return pd.Series(done[codes], index=s.index, dtype=done.dtype)


def _earlier_row(keyframe: pd.DataFrame, row: int) -> int:
    """Row number of the first record with the same key as ``row``."""
    same = (keyframe == keyframe.loc[row]).all(axis=1)
    return int(same[same].index[0])


def _suggest(word: str, pool: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(word, list(pool), n=3, cutoff=0.6)


def _normalise_columns(t: _Table, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    """Lower-case and strip column names; refuse duplicated, unknown or missing columns."""
    names = [str(c).strip().lower() for c in t.df.columns]
    seen: set[str] = set()
    for raw, name in zip(t.df.columns, names, strict=True):
        # read_csv renames a repeated header "day" to "day.1"; catch both spellings.
        base = re.sub(r"\.\d+$", "", name) if name not in allowed else name
        if name in seen or (base != name and base in allowed):
            t.fail(
                0,
                base,
                f"column '{base}' appears more than once in the header.",
                "keep one column of each name.",
            )
        seen.add(name)
        if name not in allowed:
            close = _suggest(name, allowed)
            hint = f"did you mean '{close[0]}'? " if close else ""
            t.fail(
                0,
                str(raw),
                f"unknown column '{raw}'.",
                f"{hint}Allowed columns: {', '.join(allowed)}; put free text in 'note'.",
            )
    t.df.columns = names
    for name in required:
        if name not in names:
            t.fail(
                0,
                name,
                f"required column '{name}' is missing (header has: {', '.join(names)}).",
                f"add a '{name}' column; required columns are {', '.join(required)}.",
            )


def _drop_blank_rows(t: _Table) -> None:
    """Blank lines are not records: drop rows whose every cell is empty."""
    if t.df.empty:
        return
    blank = np.logical_and.reduce([t.col(c).eq("").to_numpy(bool) for c in t.df.columns])
    if blank.any():
        t.df = t.df[~blank]


def _require_rows(t: _Table) -> None:
    if t.df.empty:
        t.fail(1, None, "the table has a header but no data rows.", "add at least one row.")


def _text(t: _Table, name: str, *, required: bool, fix: str) -> pd.Series:
    """A text column, stripped; '' where empty. Refuses empty cells if ``required``."""
    if name not in t.df.columns:
        return pd.Series("", index=t.df.index, dtype=object)
    s = t.col(name)
    if required:
        t.refuse_first(
            t.missing(name),
            name,
            f"'{name}' is empty.",
            fix,
        )
    return s.where(~t.missing(name), "")


def _numbers(
    t: _Table,
    name: str,
    *,
    required: bool,
    what: str,
    fix_missing: str,
    hint: str = "",
) -> pd.Series:
    """A numeric column as float (NaN where empty). Refuses text and non-finite numbers."""
    if name not in t.df.columns:
        return pd.Series(np.nan, index=t.df.index, dtype=float)
    s = t.col(name)
    missing = t.missing(name)
    if required:
        t.refuse_first(
            missing,
            name,
            f"{what} is empty.",
            fix_missing,
        )
    # Decimal commas and thousands separators are refused, not reinterpreted.
    num = pd.to_numeric(s.where(~missing), errors="coerce").astype(float)
    bad = ~missing & num.isna()

    def not_a_number(row: int) -> tuple[str, str]:
        raw = s.loc[row]
        extra = hint
        if re.fullmatch(r"[<>]=?\s*[-+0-9.eE]+", raw):
            extra = (
                "write a below-limit result as an empty value with blq=true and the "
                "limit in lloq (e.g. value='', blq=true, lloq=50). "
            )
        elif re.fullmatch(r"[-+]?[0-9]{1,3},[0-9]{3}", raw):
            # 1,200: a thousands separator (1200) or a decimal comma (1.2) - not guessed
            whole, frac = raw.lstrip("+").split(",")
            extra = (
                f"'{raw}' reads as {whole}{frac} (a thousands separator) or as "
                f"{whole}.{frac.rstrip('0') or '0'} (a decimal comma): which is it? "
            )
        elif re.fullmatch(r"[-+]?[0-9]{1,3}(,[0-9]{3}){2,}", raw):
            extra = f"write {raw.replace(',', '')} without thousands separators. "
        elif re.fullmatch(r"[-+]?[0-9]+,[0-9]+", raw):
            extra = "use a dot as the decimal separator. "
        return f"{what} '{raw}' is not a number.", f"{extra}Write a plain number."

    t.refuse_first(bad, name, not_a_number)
    nonfinite = ~missing & ~np.isfinite(num.fillna(0.0))
    t.refuse_first(
        nonfinite,
        name,
        lambda r: f"{what} '{s.loc[r]}' is not a finite number.",
        "write a finite number (an empty cell where there is no value).",
    )
    return num


def _yes_no(t: _Table, name: str, *, default: bool | None) -> pd.Series:
    """A yes/no column as bool (``default`` where empty; None keeps pd.NA)."""
    if name not in t.df.columns:
        return pd.Series(default if default is not None else pd.NA, index=t.df.index)
    s = t.col(name).str.lower()
    missing = t.missing(name)
    bad = ~missing & ~s.isin(list(YES_NO))
    t.refuse_first(
        bad,
        name,
        lambda r: f"'{t.col(name).loc[r]}' is not a yes/no value.",
        "write yes, no, true, false, 1 or 0.",
    )
    out = s.map(YES_NO)
    fill = default if default is not None else pd.NA
    return out.where(~missing, fill)


def _check_day(t: _Table) -> pd.Series:
    day = _numbers(
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


def _check_patient(t: _Table) -> pd.Series:
    return _text(t, "patient", required=True, fix="give every row a patient identifier.")


def _analyte_units(symbols: Iterable[str]) -> str:
    """Accepted spellings of an analyte's units, for a message."""
    return U.describe(U.spellings(tuple(symbols)))


def _kind_units(kind_units: Iterable[str]) -> str:
    """Accepted spellings of an event kind's units (every unit of the same dimension)."""
    dims = {U.parse_unit(s).dimension for s in kind_units}
    return U.describe(U.spellings(tuple(U.symbols_of_dimension(dims))))


# ---------------------------------------------------------------------------- observations
def validate_observations_text(text: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a text frame of observations; return the canonical table.

    See :mod:`carthema.data.schema` for the columns. Values and limits are converted to
    each analyte's canonical unit. Rows where ``blq`` is true may have an empty value
    (stored as NaN; ``lloq`` keeps the limit).
    """
    t = _Table(text.copy(), source)
    _normalise_columns(t, OBSERVATION_COLUMNS, OBSERVATION_REQUIRED)
    _drop_blank_rows(t)
    _require_rows(t)

    patient = _check_patient(t)
    day = _check_day(t)

    # analyte
    analyte_raw = _text(t, "analyte", required=True, fix="name the analyte of every row.")
    analyte = analyte_raw.str.lower()
    unknown = ~analyte.isin(list(ANALYTES))

    def unknown_analyte(row: int) -> tuple[str, str]:
        close = suggest_analytes(analyte_raw.loc[row])
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return (
            f"unknown analyte '{analyte_raw.loc[row]}'.",
            f"{hint}Known analytes: {', '.join(ANALYTES)}.",
        )

    t.refuse_first(unknown, "analyte", unknown_analyte)

    # compartment: empty -> the analyte's default, where it has exactly one meaning
    comp_raw = _text(t, "compartment", required=False, fix="")
    comp = comp_raw.str.lower()
    bad = (comp != "") & ~comp.isin(list(COMPARTMENTS))
    t.refuse_first(
        bad,
        "compartment",
        lambda r: f"unknown compartment '{comp_raw.loc[r]}'.",
        f"write one of: {', '.join(COMPARTMENTS)}.",
    )
    default = _lookup(analyte, {a: ANALYTES[a].default_compartment or "" for a in ANALYTES})
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

    # unit
    unit_raw = _text(
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
    # caught by the plausibility ranges below, with the likely unit named.

    # blq flag, value, lloq
    blq = _yes_no(t, "blq", default=False).astype(bool)
    value = _numbers(
        t,
        "value",
        required=False,
        what="value",
        fix_missing="",
    )
    lloq = _numbers(
        t,
        "lloq",
        required=False,
        what="lloq",
        fix_missing="",
    )
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
    is_count = _lookup(analyte, {a: ANALYTES[a].count for a in ANALYTES})
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
    upper = _lookup(analyte, {a: ANALYTES[a].upper or np.inf for a in ANALYTES}).astype(float)
    base = {a: U.parse_unit(ANALYTES[a].canonical_unit).factor for a in ANALYTES}
    factor = pd.Series(
        np.array([u.factor for u in parsed], dtype=float) / _lookup(analyte, base).to_numpy(float),
        index=t.df.index,
        dtype=float,
    )
    t.refuse_first(
        value * factor > upper,
        "value",
        lambda r: (
            f"value {value.loc[r]:g} is above {upper.loc[r]:g} "
            f"{ANALYTES[analyte.loc[r]].canonical_unit}, impossible for {analyte.loc[r]}."
        ),
        "a percentage must lie between 0 and 100.",
    )

    # plausibility: a value (or limit) no patient or assay can give is a slip
    for col, series in (("value", value), ("lloq", lloq)):
        canonical = series * factor
        low = _lookup(analyte, {a: r.low for a, r in P.ANALYTE_RANGES.items()}).astype(float)
        high = _lookup(analyte, {a: r.high for a, r in P.ANALYTE_RANGES.items()}).astype(float)
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

    # duplicated record
    keyframe = pd.DataFrame(
        {"patient": patient, "day": day, "analyte": analyte, "compartment": comp}
    )
    dup = keyframe.duplicated(keep="first")

    def duplicated(row: int) -> str:
        k = keyframe.loc[row]
        earlier = _earlier_row(keyframe, row)
        return (
            f"duplicated record: patient {k['patient']}, day {k['day']:g}, {k['analyte']} "
            f"in {k['compartment']} already appears on row {earlier}."
        )

    t.refuse_first(
        dup,
        "day",
        duplicated,
        "keep one measurement per patient, day, analyte and compartment "
        "(use fractional days for repeated measurements on one day).",
    )

    note = _text(t, "note", required=False, fix="")
    out = pd.DataFrame(
        {
            "patient": patient.astype(str),
            "day": day.astype(float),
            "analyte": analyte.astype(str),
            "value": (value * factor).astype(float),
            "unit": _lookup(analyte, {a: ANALYTES[a].canonical_unit for a in ANALYTES}).astype(str),
            "compartment": comp.astype(str),
            "lloq": (lloq * factor).astype(float),
            "blq": blq.astype(bool),
            "note": note.astype(object).where(note != "", np.nan),
        }
    )
    out = _sort(out, ["patient", "day", "analyte", "compartment"])
    out["note"] = out["note"].where(out["note"].notna(), None)  # text already
    out.attrs["source"] = source
    return check_observations(out, source)


# ---------------------------------------------------------------------------------- events
def validate_events_text(text: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a text frame of events; return the canonical table.

    See :mod:`carthema.data.events` for the kinds and :mod:`carthema.data.schema` for
    the columns. Amounts are converted to the kind's canonical unit (cells/kg, mg/m2, ...).
    """
    t = _Table(text.copy(), source)
    _normalise_columns(t, EVENT_COLUMNS, EVENT_REQUIRED)
    _drop_blank_rows(t)
    _require_rows(t)

    patient = _check_patient(t)
    day = _check_day(t)

    kind_raw = _text(t, "kind", required=True, fix="give every event a kind.")
    kind = kind_raw.str.lower()

    def unknown_kind(row: int) -> tuple[str, str]:
        close = suggest_event_kinds(kind_raw.loc[row])
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        return (
            f"unknown event kind '{kind_raw.loc[row]}'.",
            f"{hint}Known kinds: {', '.join(EVENT_KINDS)}.",
        )

    t.refuse_first(~kind.isin(list(EVENT_KINDS)), "kind", unknown_kind)
    spec = kind.map(get_event_kind)

    # amount and unit
    amount = _numbers(t, "amount", required=False, what="amount", fix_missing="")
    needs = spec.map(lambda k: k.amount_required)
    t.refuse_first(
        needs & amount.isna(),
        "amount",
        lambda r: f"{spec.loc[r].name} event has no amount.",
        lambda r: (
            f"give the amount in {' or '.join(spec.loc[r].units)} ({spec.loc[r].description})."
        ),
    )
    t.refuse_first(
        amount.notna() & (amount <= 0),
        "amount",
        lambda r: f"amount {amount.loc[r]:g} is not positive.",
        "give a dose > 0; leave out events that did not happen.",
    )
    unit_raw = _text(t, "unit", required=False, fix="")
    t.refuse_first(
        amount.notna() & (unit_raw == ""),
        "unit",
        "amount is given without a unit.",
        lambda r: f"write the unit of {spec.loc[r].name}: {_kind_units(spec.loc[r].units)}.",
    )
    t.refuse_first(
        amount.isna() & (unit_raw != ""),
        "unit",
        lambda r: f"unit '{unit_raw.loc[r]}' is given but amount is empty.",
        "give the amount, or leave the unit empty too.",
    )
    kind_unit = functools.cache(lambda u, k: U.parse_unit(u, k.units) if u else None)
    parsed = pd.Series(
        [kind_unit(u, k) for u, k in zip(unit_raw, spec, strict=True)],
        index=t.df.index,
        dtype=object,
    )
    t.refuse_first(
        (unit_raw != "") & parsed.isna(),
        "unit",
        lambda r: f"unknown unit '{unit_raw.loc[r]}'.",
        lambda r: (
            f"write one of the units of {spec.loc[r].name}: {_kind_units(spec.loc[r].units)}."
        ),
    )
    target: list[str | None] = []
    for k, u in zip(spec, parsed, strict=True):
        if u is None:
            target.append(None)
            continue
        match = [sym for sym in k.units if U.parse_unit(sym).dimension == u.dimension]
        target.append(match[0] if match else "")
    target_s = pd.Series(target, index=t.df.index, dtype=object)
    t.refuse_first(
        target_s == "",
        "unit",
        lambda r: (
            f"unit '{unit_raw.loc[r]}' is not a unit of {spec.loc[r].name} "
            f"({spec.loc[r].description})."
        ),
        lambda r: f"write one of: {_kind_units(spec.loc[r].units)}.",
    )
    factor = pd.Series(
        [
            u.factor / U.parse_unit(tg).factor if u is not None else 1.0
            for u, tg in zip(parsed, target_s, strict=True)
        ],
        index=t.df.index,
        dtype=float,
    )

    canonical = amount * factor
    outside = pd.Series(
        [
            not np.isnan(c) and not P.EVENT_RANGES[(k.name, tg)].contains(c)
            for k, tg, c in zip(spec, target_s, canonical, strict=True)
        ],
        index=t.df.index,
    )
    t.refuse_first(
        outside,
        "amount",
        lambda r: P.out_of_range(
            f"{spec.loc[r].name} amount",
            float(amount.loc[r]),
            unit_raw.loc[r],
            float(canonical.loc[r]),
            P.EVENT_RANGES[(spec.loc[r].name, target_s.loc[r])],
            U.symbols_of_dimension({parsed.loc[r].dimension}),
        ),
    )

    # duration
    duration = _numbers(t, "duration", required=False, what="duration", fix_missing="")
    t.refuse_first(
        duration > P.DAY_LIMIT,
        "duration",
        lambda r: f"duration {duration.loc[r]:g} days is more than 20 years.",
        "give the number of days the period lasted (not an end date).",
    )
    t.refuse_first(
        duration < 0,
        "duration",
        lambda r: f"duration {duration.loc[r]:g} is negative.",
        "give days >= 0.",
    )
    is_period = spec.map(lambda k: k.period)
    t.refuse_first(
        is_period & (duration.isna() | (duration <= 0)),
        "duration",
        lambda r: f"{spec.loc[r].name} is a period and needs a duration in days (> 0).",
        lambda r: f"give the number of days the {spec.loc[r].name} period lasted.",
    )
    takes_duration = spec.map(lambda k: k.period or k.split_allowed)
    t.refuse_first(
        ~takes_duration & duration.notna() & (duration > 0),
        "duration",
        lambda r: f"duration does not apply to {spec.loc[r].name} (a one-day event).",
        "write one row per day the event happened, with that day's amount.",
    )

    # kind-specific columns: a value where it does not apply is refused, not ignored
    present = {c: _text(t, c, required=False, fix="") for c in KIND_SPECIFIC_COLUMNS}
    for col in KIND_SPECIFIC_COLUMNS:
        applies = spec.map(lambda k, c=col: (c == "drug" and bool(k.drugs)) or c in k.columns)
        users = [
            k.name for k in EVENT_KINDS.values() if (col == "drug" and k.drugs) or col in k.columns
        ]
        t.refuse_first(
            ~applies & (present[col] != ""),
            col,
            lambda r, c=col: f"'{c}' does not apply to {spec.loc[r].name}.",
            f"leave it empty; it is used by {', '.join(users)}.",
        )

    drug = present["drug"].str.lower()
    t.refuse_first(
        spec.map(lambda k: k.drug_required) & (drug == ""),
        "drug",
        lambda r: f"{spec.loc[r].name} needs the drug.",
        lambda r: f"write one of: {', '.join(spec.loc[r].drugs)}.",
    )
    ok = pd.Series(
        [d == "" or d in k.drugs for d, k in zip(drug, spec, strict=True)], index=t.df.index
    )

    def unknown_drug(row: int) -> tuple[str, str]:
        k = spec.loc[row]
        close = _suggest(drug.loc[row], k.drugs)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return (
            f"unknown {k.name} drug '{present['drug'].loc[row]}'.",
            f"{hint}Write one of: {', '.join(k.drugs)}.",
        )

    t.refuse_first(~ok, "drug", unknown_drug)

    is_boost = kind == "stem_cell_boost"
    source_col = present["source"].str.lower()
    t.refuse_first(
        is_boost & (source_col == ""),
        "source",
        "stem_cell_boost needs its source.",
        f"write one of: {', '.join(SOURCES)}.",
    )
    t.refuse_first(
        (source_col != "") & ~source_col.isin(list(SOURCES)),
        "source",
        lambda r: f"unknown source '{present['source'].loc[r]}'.",
        f"write one of: {', '.join(SOURCES)}.",
    )
    cd34 = _yes_no(t, "cd34_selected", default=None)
    t.refuse_first(
        is_boost & cd34.isna(),
        "cd34_selected",
        "stem_cell_boost needs to say whether the graft was CD34-selected.",
        "write yes or no.",
    )
    cd3 = _numbers(t, "cd3_per_kg", required=False, what="cd3_per_kg", fix_missing="")
    mnc = _numbers(t, "mnc_per_kg", required=False, what="mnc_per_kg", fix_missing="")
    for name, s in (("cd3_per_kg", cd3), ("mnc_per_kg", mnc)):
        t.refuse_first(
            s < 0,
            name,
            lambda r, name=name, s=s: f"{name} {s.loc[r]:g} is negative.",
            "give cells/kg >= 0.",
        )
        t.refuse_first(
            s > P.GRAFT_CELLS_LIMIT,
            name,
            lambda r, name=name, s=s: (
                f"{name} {s.loc[r]:g} is above the plausible maximum "
                f"of {P.GRAFT_CELLS_LIMIT:g} cells/kg ({P.GRAFT_CELLS_REASON})."
            ),
            "give cells per kg body weight (not per product, not 10^6 cells/kg).",
        )

    # duplicated record: same patient, day, kind and drug
    keyframe = pd.DataFrame({"patient": patient, "day": day, "kind": kind, "drug": drug})

    def duplicated(row: int) -> str:
        k = keyframe.loc[row]
        return (
            f"duplicated record: patient {k['patient']}, day {k['day']:g}, {k['kind']}"
            f"{' ' + k['drug'] if k['drug'] else ''} already appears on row "
            f"{_earlier_row(keyframe, row)}."
        )

    t.refuse_first(
        keyframe.duplicated(keep="first"),
        "day",
        duplicated,
        "write one row per event; if two were given on one day, sum their amounts.",
    )

    note = _text(t, "note", required=False, fix="")

    def _opt_text(s: pd.Series) -> pd.Series:
        return s.astype(object).where(s != "", None)

    out = pd.DataFrame(
        {
            "patient": patient.astype(str),
            "day": day.astype(float),
            "kind": kind.astype(str),
            "amount": (amount * factor).astype(float),
            "unit": _opt_text(target_s.fillna("")),
            "duration": duration.astype(float),
            "drug": _opt_text(drug),
            "source": _opt_text(source_col),
            "cd34_selected": cd34.astype("boolean"),
            "cd3_per_kg": cd3.astype(float),
            "mnc_per_kg": mnc.astype(float),
            "note": _opt_text(note),
        }
    )
    out = _sort(out, ["patient", "day", "kind"])
    for c in ("unit", "drug", "source", "note"):
        out[c] = out[c].astype("str").where(out[c].notna(), None)
    out.attrs["source"] = source
    return check_events(out, source)


# -------------------------------------------------------------------------------- outcomes
def validate_outcomes_text(text: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate an outcomes table (patient, outcome, day, source_quote).

    Outcomes are stated clinical results that are not measurements: engraftment days,
    "MRD negative", "full donor chimerism". ``day`` may be empty when the source gives
    none; ``source_quote`` is the sentence the outcome is read from.
    """
    t = _Table(text.copy(), source)
    _normalise_columns(t, OUTCOME_COLUMNS + ("note",), OUTCOME_COLUMNS)
    _drop_blank_rows(t)
    _require_rows(t)
    patient = _check_patient(t)
    outcome = _text(t, "outcome", required=True, fix="name the outcome.")
    day = _numbers(t, "day", required=False, what="day", fix_missing="")
    quote = _text(t, "source_quote", required=True, fix="quote the sentence it comes from.")
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
    return validate_events_text(to_text_frame(df), source)


def validate_outcomes(df: pd.DataFrame, source: str = "<outcomes>") -> pd.DataFrame:
    """Validate an outcomes table built in code (rows numbered 1..n in order)."""
    return validate_outcomes_text(to_text_frame(df), source)


def _natural_key(s: str) -> tuple:
    """Sort key putting patient '2' before '10' (numbers by value, then text)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s) if p)


def _sort(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """``df`` sorted by ``by`` (patients in natural order), stable; one copy of ``df``."""
    order = {p: i for i, p in enumerate(sorted(df["patient"].unique(), key=_natural_key))}
    keys = pd.DataFrame({"_p": _lookup(df["patient"], order).to_numpy()})
    for c in by[1:]:
        keys[c] = df[c].to_numpy()
    perm = keys.sort_values(list(keys.columns), kind="stable").index.to_numpy()
    return df.take(perm).reset_index(drop=True)


__all__ = [
    "MISSING_MARKERS",
    "OBSERVATION_KEY",
    "to_text_frame",
    "validate_events",
    "validate_events_text",
    "validate_observations",
    "validate_observations_text",
    "validate_outcomes",
    "validate_outcomes_text",
]
