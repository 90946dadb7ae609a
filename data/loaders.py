"""Read observation and event files (CSV or Parquet, chosen by extension).

``read_observations(path)`` and ``read_events(path)`` return validated tables in
canonical units, sorted by patient and day (see :mod:`carthema.data.schema`). Bad input
raises one :class:`InputError` naming the file, the 1-based data row (the header is
row 0; Parquet rows are numbered the same way), the column and the fix.

Every cell is read as text first, so that a value like ``1,5`` or ``<50`` is reported
exactly as written instead of being coerced by the CSV reader.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from carthema.data.atomic import check_out_folder, swap_folder
from carthema.data.errors import InputError
from carthema.data.textframe import to_text_frame
from carthema.data.validate import validate_observations_text, validate_outcomes_text
from carthema.data.validate_events import validate_events_text

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in CSV_SUFFIXES + PARQUET_SUFFIXES:
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def read_table_text(
    path: str | Path, ignore_line: Callable[[str], bool] | None = None
) -> pd.DataFrame:
    """Read a CSV/TSV or Parquet file as a text frame (index = 1-based data row numbers).

    ``ignore_line`` (CSV only): data lines for which it is true are read as empty rows
    (NONMEM's IGNORE=#, IGNORE=C: comment lines, whatever their number of fields), so
    that row numbers stay those of the file; their numbers are in
    ``attrs["ignored_rows"]`` and the caller drops empty rows.

    Raises :class:`InputError` for a missing file, an unknown extension, an empty file,
    a malformed CSV line or an unreadable Parquet file.
    """
    p = Path(path)
    where = str(path)
    if not p.exists():
        raise InputError(
            "file not found.",
            file=where,
            fix="check the path (relative paths are taken from the current directory).",
        )
    if p.is_dir():
        raise InputError("is a directory, not a file.", file=where, fix="give a file path.")
    suffix = _suffix(p)
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(p, where)
    if suffix in CSV_SUFFIXES:
        return _read_csv(p, where, sep="\t" if suffix == ".tsv" else ",", ignore_line=ignore_line)
    raise InputError(
        f"unknown file type '{p.suffix}'.",
        file=where,
        fix="save the table as .csv (comma-separated, header in the first line) or .parquet.",
    )


_SEPARATOR_NAMES = {
    ",": "a comma (,)",
    ";": "a semicolon (;)",
    "\t": "a tab",
    "|": "a vertical bar (|)",
    " ": "spaces",
}


def _check_separator(p: Path, where: str, sep: str) -> None:
    """Refuse a file whose header is split by another separator than ``sep``.

    Read with the wrong separator, a whole header becomes one column name (and a
    European CSV with ';' would otherwise be reported as "unknown column").
    """
    try:
        with p.open(encoding="utf-8-sig") as fh:
            header = next((line.rstrip("\r\n") for line in fh if line.strip()), "")
    except UnicodeDecodeError:
        return  # reported by the reader
    if sep in header:
        return
    for found in (";", "\t", "|", ",", " "):
        if found != sep and found in header.strip():
            expected = "tab-separated (.tsv)" if sep == "\t" else "comma-separated"
            other = (
                "rename the file to .tsv, or "
                if found == "\t" and p.suffix.lower() != ".tsv"
                else ""
            )
            raise InputError(
                f"the header is separated by {_SEPARATOR_NAMES[found]}, not by "
                f"{_SEPARATOR_NAMES[sep]}; carthema reads {expected} files.",
                file=where,
                row=0,
                fix=f"{other}save the table as comma-separated CSV (in a spreadsheet: "
                "CSV with comma as the field separator and a dot as the decimal separator).",
            )


def _blank_ignored(p: Path, ignore_line: Callable[[str], bool], rows: list[int]) -> io.StringIO:
    """The file's text with every ignored data line emptied (the header is kept); the
    ignored lines' row numbers are appended to ``rows``."""
    with open(p, encoding="utf-8-sig", newline="") as fh:
        lines = fh.read().splitlines(keepends=True)
    kept = lines[:1]
    for i, line in enumerate(lines[1:], start=1):
        if ignore_line(line.rstrip("\r\n")):
            rows.append(i)
            line = "\n"
        kept.append(line)
    return io.StringIO("".join(kept))


def _read_csv(
    p: Path, where: str, sep: str, ignore_line: Callable[[str], bool] | None = None
) -> pd.DataFrame:
    if p.stat().st_size == 0:
        raise InputError(
            "the file is empty (no header, no rows).",
            file=where,
            row=0,
            fix="write a header line and at least one data row.",
        )
    _check_separator(p, where, sep)
    ignored_rows: list[int] = []
    try:
        # skip_blank_lines=False keeps row numbers equal to file line numbers - 1
        raw = pd.read_csv(
            p if ignore_line is None else _blank_ignored(p, ignore_line, ignored_rows),
            sep=sep,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            encoding="utf-8-sig",
        )
    except pd.errors.EmptyDataError:
        raise InputError(
            "the file is empty (no header, no rows).",
            file=where,
            row=0,
            fix="write a header line and at least one data row.",
        ) from None
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m:
            line = int(m.group(2))
            raise InputError(
                f"row has {m.group(3)} fields but the header has {m.group(1)}.",
                file=where,
                row=line - 1,
                fix="check for an extra separator or an unquoted comma in a text cell.",
            ) from None
        raise InputError(
            f"not a readable CSV file ({str(exc).splitlines()[0]}).",
            file=where,
            fix="save the table as comma-separated text with a header line.",
        ) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text.", file=where, fix="save the file as UTF-8 CSV.") from None
    raw.index = pd.RangeIndex(1, len(raw) + 1)
    # every cell is already text (dtype=str, no NA markers) but for the fields of a
    # short row: fill those without copying a large table that has none
    if not all(pd.api.types.is_object_dtype(dt) for dt in raw.dtypes):  # a string dtype
        raw = raw.astype(object)
    if raw.isna().to_numpy().any():
        raw = raw.fillna("")
    raw.attrs["ignored_rows"] = ignored_rows
    return raw


def _read_parquet(p: Path, where: str) -> pd.DataFrame:
    try:
        raw = pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise InputError(
            f"not a readable Parquet file ({type(exc).__name__}: {str(exc).splitlines()[0]}).",
            file=where,
            fix="write it with pandas.DataFrame.to_parquet or save it as .csv.",
        ) from None
    if len(raw.columns) == 0:
        raise InputError(
            "the file is empty (no columns).",
            file=where,
            row=0,
            fix="write a table with a header and at least one row.",
        )
    return to_text_frame(raw.reset_index(drop=True))


def read_observations(path: str | Path) -> pd.DataFrame:
    """Read and validate an observation file; values in canonical units.

    Columns (see :mod:`carthema.data.schema`): patient, day, analyte, value, unit,
    compartment, lloq, blq, note. Units are converted to each analyte's canonical unit
    (counts G/L, B cells cells/uL, CAR-T copies/ug DNA, percentages %, haemoglobin g/L,
    CRP mg/L, ferritin ug/L, IL-6 pg/mL). Below-limit rows keep ``blq=True``; their value
    may be empty (NaN) with the limit in ``lloq``.
    """
    return validate_observations_text(read_table_text(path), str(path))


def read_events(path: str | Path) -> pd.DataFrame:
    """Read and validate an events file; amounts in canonical units.

    Columns: patient, day, kind, amount, unit, duration, drug, source, cd34_selected,
    cd3_per_kg, mnc_per_kg, note (see :mod:`carthema.data.events` for the kinds).
    CAR-T and boost doses are in cells/kg, lymphodepletion in mg/m2, G-CSF in ug/kg/day
    (or dose/day), transfusions in units, durations in days.
    """
    return validate_events_text(read_table_text(path), str(path))


def read_outcomes(path: str | Path) -> pd.DataFrame:
    """Read and validate an outcomes file (patient, outcome, day, source_quote)."""
    return validate_outcomes_text(read_table_text(path), str(path))


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV or Parquet (by extension), readable by the readers above."""
    p = Path(path)
    suffix = _suffix(p)
    if suffix in PARQUET_SUFFIXES:
        df.to_parquet(p, index=False)
    elif suffix in CSV_SUFFIXES:
        df.to_csv(p, index=False, sep="\t" if suffix == ".tsv" else ",")
    else:
        raise InputError(
            f"unknown file type '{p.suffix}'.", file=str(path), fix="use .csv or .parquet."
        )
    return p


def check_output_folder(
    out: str | Path,
    *,
    overwrite: bool = False,
    command: str = "import-nonmem",
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Refuse an output folder of a data command before any work is done: the
    output-folder contract of :func:`carthema.data.atomic.check_out_folder` (a file, a
    folder holding the ``inputs``, a non-empty folder that is not ``command``'s own
    earlier output unless ``overwrite``, a place that cannot be written). ``out`` may
    not exist yet (its parent is created)."""
    return check_out_folder(out, command, overwrite=overwrite, inputs=inputs)


def write_folder_atomically(
    out: str | Path,
    tables: dict[str, pd.DataFrame],
    *,
    overwrite: bool = False,
    command: str = "import-nonmem",
    inputs: Iterable[str | Path | None] = (),
) -> list[Path]:
    """Write ``tables`` (file name -> table) as the folder ``out``, whole or not at all.

    The files are written to a temporary folder beside ``out``; observation and event
    tables are read back through :func:`read_observations` / :func:`read_events` (so
    what is written is exactly what carthema reads); then the temporary folder is
    swapped in (:func:`carthema.data.atomic.swap_folder`). With ``overwrite`` an existing
    ``out`` is replaced as a whole, so no file of an earlier run survives beside the new
    ones; the folder's ``run.json`` names ``command``. Returns the paths written.
    """
    target = check_output_folder(out, overwrite=overwrite, command=command, inputs=inputs)
    with swap_folder(target, command) as tmp:
        for name, df in tables.items():
            write_table(df, tmp / name)
            readers = {"observations.csv": read_observations, "events.csv": read_events}
            if name in readers:
                back = readers[name](tmp / name)
                if len(back) != len(df):  # pragma: no cover - a bug, not a user error
                    raise RuntimeError(f"{name}: wrote {len(df)} rows, read back {len(back)}")
    return [target / name for name in tables]
