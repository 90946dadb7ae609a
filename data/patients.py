"""Which patients of a table a command works on: one selection, one set of messages.

Used by the single-patient fit (:func:`carthema.fitting.model.data.prepare_patient`), the
population fit, the cohort fit and the commands that read one patient's tables.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from .errors import InputError


def _ids(table: pd.DataFrame | Iterable[str], order: str) -> list[str]:
    if isinstance(table, pd.DataFrame):
        if "patient" not in table.columns:
            raise InputError("missing required column", column="patient")
        col = table["patient"].astype(str)
    else:
        col = [str(p) for p in table]
    ids = list(dict.fromkeys(col))
    return sorted(ids) if order == "sorted" else ids


def _listing(ids: list[str], n: int = 20) -> str:
    return ", ".join(ids[:n]) + (", ..." if len(ids) > n else "")


def select_patients(
    table: pd.DataFrame | Iterable[str],
    requested: str | Iterable[str] | None = None,
    *,
    order: str = "sorted",
    duplicates: str = "refuse",
    where: str = "the observations",
    file: str | None = None,
) -> list[str]:
    """The patients to work on, from a table's ``patient`` column (or a list of ids).

    ``requested``: ids (a list or a comma-separated string; blanks ignored), or ``None``
    for every patient of the table. ``order``: ``"sorted"`` (by id) or ``"table"`` (first
    appearance). ``duplicates``: ``"refuse"`` an id requested twice, or ``"drop"`` the
    repeats. ``where`` and ``file`` name the table in messages. Raises
    :class:`InputError` for an unknown id, a repeated one (when refused) or no patient.
    """
    available = _ids(table, order)
    if requested is None:
        ids = available
    else:
        if isinstance(requested, str):
            requested = requested.split(",")
        ids = [str(p).strip() for p in requested if str(p).strip()]
        known = set(available)
        unknown = list(dict.fromkeys(p for p in ids if p not in known))
        if unknown:
            raise InputError(
                f"unknown patient{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(p) for p in unknown[:5])} not in {where}",
                file=file,
                column="patient",
                fix=f"patients are: {_listing(available)}",
            )
        dup = sorted({p for p in ids if ids.count(p) > 1})
        if dup and duplicates == "refuse":
            raise InputError(f"patient(s) {', '.join(dup)} listed twice", column="patient")
        ids = list(dict.fromkeys(ids))
    if not ids:
        raise InputError(f"no patients in {where}", file=file, fix="the table is empty")
    return ids


def select_patient(
    table: pd.DataFrame | Iterable[str],
    patient: str | None = None,
    *,
    where: str = "the observations",
    file: str | None = None,
) -> str:
    """One patient: ``patient`` (checked against the table) or, when ``None``, the only
    patient of the table. Raises :class:`InputError` for an unknown id or for a table of
    several patients without a choice."""
    if patient is None:
        ids = _ids(table, "sorted")
        if len(ids) > 1:
            raise InputError(
                f"{where} hold {len(ids)} patients ({_listing(ids, 5)})",
                file=file,
                column="patient",
                fix="choose one with --patient ID",
            )
        if not ids:
            raise InputError(f"no patients in {where}", file=file, fix="the table is empty")
        return ids[0]
    return select_patients(table, [str(patient)], where=where, file=file)[0]
