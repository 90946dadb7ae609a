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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from carthema.data.boost import GRAFT_COLUMNS
from carthema.data.errors import InputError
from carthema.data.loaders import (
    check_output_folder,
    write_folder_atomically,
)
from carthema.data.nonmem_records import (
    Spec,
    ignore_marks,
    parse_censoring,
    parse_records,
    read_records,
)
from carthema.data.nonmem_rows import covariate_table, day_zero_notes, split_records
from carthema.data.schema import EVENT_SCHEMA
from carthema.data.textframe import to_text_frame
from carthema.data.validate import validate_observations_text
from carthema.data.validate_events import validate_events_text

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
    **dict.fromkeys(GRAFT_COLUMNS, "CMT"),
}
# columns whose value comes from the cmt_map entry of the row's CMT
_FROM_MAP = (
    "unit",
    "compartment",
    "analyte",
    "kind",
    "duration",
    "drug",
    *GRAFT_COLUMNS,
)

_OBS_KEYS = ("analyte", "name", "unit", "compartment", "lloq")
_DOSE_KEYS = (
    "kind",
    "name",
    "unit",
    "drug",
    *GRAFT_COLUMNS,
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
    table, skipped = read_records(path, ignore_marks(path, ignore), time_unit)
    records = parse_records(table, time_unit, time_zero)
    censoring = parse_censoring(table)
    split = split_records(table, records, censoring, cmt_map, dose_map, skipped)
    # doses first: a dose error is reported even in a data set without observations
    if split.ev_rows:
        # ADDL expands one record into several events: validate them under unique row
        # numbers and name the record (and which dose of it) in an error
        ev_text = _text_frame(split.ev_rows, range(1, len(split.ev_rows) + 1))
        ev = _remap(
            lambda: validate_events_text(ev_text, table.source), _EVENT_COLUMN, split.ev_index
        )
    else:
        ev = _empty_events()
    split.notes.extend(day_zero_notes(table, records, split, time_zero))
    if not split.obs_rows:
        table.fail(None, "EVID", "the data set has no observation records.", "check EVID/MDV.")
    obs_text = _text_frame(split.obs_rows, split.obs_index)
    obs = _remap(
        lambda: validate_observations_text(obs_text, table.source),
        {**_OBS_COLUMN, "blq": censoring.name},
    )
    covariates, changing = covariate_table(table.df, records.patient, table.covariate_columns)
    obs.attrs["nonmem_covariates"] = covariates
    obs.attrs["nonmem_ignored_columns"] = table.covariate_columns
    obs.attrs["nonmem_skipped_rows"] = split.skipped
    obs.attrs["nonmem_notes"] = split.notes + changing
    obs.attrs["nonmem_dose_records"] = len(set(split.ev_index))
    return obs, ev


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
