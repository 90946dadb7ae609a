"""Text frames and the checks every column of a data table shares.

A *text frame* holds every cell as a string (``""`` when empty) with the index holding
each row's 1-based number in its file (:func:`to_text_frame`). :class:`TextTable` is one
being validated: every refusal names the file, the row, the column and the fix, and
"find the first bad row, then fail" is written once (:meth:`TextTable.refuse_first`).
The column checks (:func:`numbers`, :func:`yes_no`, :func:`text_column`,
:func:`normalise_columns`, ...) refuse what cannot be read exactly; nothing is guessed.
The per-table validators are in :mod:`carthema.data.validate`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from carthema.data.errors import InputError
from carthema.data.events import YES_NO

# Cell contents that mean "no value" (compared case-insensitively). "." is NONMEM's.
MISSING_MARKERS: frozenset[str] = frozenset({"", "na", "nan", "n/a", "null", "none", "."})


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


class TextTable:
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
            self._cols[name] = per_unique(self.df[name], lambda u: u.astype(str).str.strip())
        return self._cols[name]

    def missing(self, name: str) -> pd.Series:
        if name not in self._missing:
            marks = per_unique(self.col(name), lambda u: u.str.lower().isin(MISSING_MARKERS))
            self._missing[name] = marks.astype(bool)
        return self._missing[name]


def lookup(s: pd.Series, table: dict) -> pd.Series:
    """``s.map(table)``, computed once per distinct value of ``s``."""
    return per_unique(s, lambda u: u.map(table))


def per_unique(s: pd.Series, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``fn`` (a vectorised text operation) of each distinct cell of ``s``, spread back
    over the rows: a column of a million rows holds few distinct units, analytes or
    patients, and hashing each cell is much cheaper than a string operation on it."""
    codes, uniques = pd.factorize(s.to_numpy(dtype=object), use_na_sentinel=False)
    done = fn(pd.Series(uniques, dtype=object)).to_numpy()
    return pd.Series(done[codes], index=s.index, dtype=done.dtype)


def earlier_row(keyframe: pd.DataFrame, row: int) -> int:
    """Row number of the first record with the same key as ``row``."""
    same = (keyframe == keyframe.loc[row]).all(axis=1)
    return int(same[same].index[0])


def suggest(word: str, pool: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(word, list(pool), n=3, cutoff=0.6)


def normalise_columns(t: TextTable, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
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
            close = suggest(name, allowed)
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


def drop_blank_rows(t: TextTable) -> None:
    """Blank lines are not records: drop rows whose every cell is empty."""
    if t.df.empty:
        return
    blank = np.logical_and.reduce([t.col(c).eq("").to_numpy(bool) for c in t.df.columns])
    if blank.any():
        t.df = t.df[~blank]


def require_rows(t: TextTable) -> None:
    if t.df.empty:
        t.fail(1, None, "the table has a header but no data rows.", "add at least one row.")


def open_table(
    text: pd.DataFrame, source: str, allowed: tuple[str, ...], required: tuple[str, ...]
) -> TextTable:
    """A text frame read from ``source`` as a :class:`TextTable` that every table's
    validation starts from: columns normalised (:func:`normalise_columns`), blank rows
    dropped, and at least one data row."""
    t = TextTable(text.copy(), source)
    normalise_columns(t, allowed, required)
    drop_blank_rows(t)
    require_rows(t)
    return t


def text_column(t: TextTable, name: str, *, required: bool, fix: str) -> pd.Series:
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


def numbers(
    t: TextTable,
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


def yes_no(t: TextTable, name: str, *, default: bool | None) -> pd.Series:
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
