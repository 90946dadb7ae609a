"""Row-by-row validation of an events table (:func:`validate_events_text`), in the one
fixed order of :mod:`carthema.data.validate`, whose day and patient rules it shares: the
kind, its amount and unit (converted to the kind's canonical unit, within its plausible
range), duration, the kind-specific columns (drug, graft source, CD34 selection, CD3+ and
MNC doses) and duplicates. One :class:`~carthema.data.errors.InputError` for the first
bad row, naming file, row, column and fix."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import pandas as pd

from carthema.data import plausibility as P
from carthema.data import units as U
from carthema.data.events import (
    EVENT_KINDS,
    KIND_SPECIFIC_COLUMNS,
    SOURCES,
    get_event_kind,
    suggest_event_kinds,
)
from carthema.data.schema import EVENT_COLUMNS, EVENT_REQUIRED, check_events
from carthema.data.textframe import (
    TextTable,
    numbers,
    open_table,
    suggest,
    text_column,
    yes_no,
)
from carthema.data.validate import (
    canonical_table,
    check_day,
    check_patient,
    opt_text,
    refuse_duplicated,
    refuse_unknown,
)


def _kind_units(kind_units: Iterable[str]) -> str:
    """Accepted spellings of an event kind's units (every unit of the same dimension)."""
    dims = {U.parse_unit(s).dimension for s in kind_units}
    return U.describe(U.spellings(tuple(U.symbols_of_dimension(dims))))


def validate_events_text(text: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a text frame of events; return the canonical table.

    See :mod:`carthema.data.events` for the kinds and :mod:`carthema.data.schema` for
    the columns. Amounts are converted to the kind's canonical unit (cells/kg, mg/m2, ...).
    """
    t = open_table(text, source, EVENT_COLUMNS, EVENT_REQUIRED)
    patient = check_patient(t)
    day = check_day(t)
    kind = _check_kind(t)
    spec = kind.map(get_event_kind)
    amount = _check_amount(t, spec)
    unit_raw, parsed, target = _check_unit(t, spec, amount)
    factor = _canonical_factor(parsed, target)
    _refuse_implausible_amount(t, spec, amount, unit_raw, parsed, target, factor)
    duration = _check_duration(t, spec)
    present = _refuse_inapplicable_columns(t, spec)
    drug = _check_drug(t, spec, present["drug"])
    graft_source, cd34 = _check_graft(t, kind, present["source"])
    cd3, mnc = _check_graft_doses(t)
    refuse_duplicated(
        t,
        {"patient": patient, "day": day, "kind": kind, "drug": drug},
        lambda k: f"{k['kind']}{' ' + k['drug'] if k['drug'] else ''}",
        "write one row per event; if two were given on one day, sum their amounts.",
    )
    out = pd.DataFrame(
        {
            "patient": patient.astype(str),
            "day": day.astype(float),
            "kind": kind.astype(str),
            "amount": (amount * factor).astype(float),
            "unit": opt_text(target.fillna("")),
            "duration": duration.astype(float),
            "drug": opt_text(drug),
            "source": opt_text(graft_source),
            "cd34_selected": cd34.astype("boolean"),
            "cd3_per_kg": cd3.astype(float),
            "mnc_per_kg": mnc.astype(float),
        }
    )
    return canonical_table(
        t, out, ["patient", "day", "kind"], ("unit", "drug", "source", "note"), check_events
    )


def _check_kind(t: TextTable) -> pd.Series:
    """The kind column: required, one of :data:`~carthema.data.events.EVENT_KINDS`;
    returns the lower-cased names."""
    kind_raw = text_column(t, "kind", required=True, fix="give every event a kind.")
    return refuse_unknown(
        t, "kind", kind_raw, EVENT_KINDS, suggest_event_kinds, "event kind", "kinds"
    )


def _check_amount(t: TextTable, spec: pd.Series) -> pd.Series:
    """The amount column: a number > 0, given where the kind needs one."""
    amount = numbers(t, "amount", required=False, what="amount", fix_missing="")
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
    return amount


def _check_unit(
    t: TextTable, spec: pd.Series, amount: pd.Series
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The unit column: given exactly where an amount is, a unit of the kind's dimension.
    Returns the unit as written, as parsed (None where empty) and the kind's canonical
    unit of that dimension (None where empty)."""
    unit_raw = text_column(t, "unit", required=False, fix="")
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
    target = _target_units(spec, parsed)
    t.refuse_first(
        target == "",
        "unit",
        lambda r: (
            f"unit '{unit_raw.loc[r]}' is not a unit of {spec.loc[r].name} "
            f"({spec.loc[r].description})."
        ),
        lambda r: f"write one of: {_kind_units(spec.loc[r].units)}.",
    )
    return unit_raw, parsed, target


def _target_units(spec: pd.Series, parsed: pd.Series) -> pd.Series:
    """Per row, the kind's canonical unit of the parsed unit's dimension: None where no
    unit is given, "" where the kind has no unit of that dimension."""
    target: list[str | None] = []
    for k, u in zip(spec, parsed, strict=True):
        if u is None:
            target.append(None)
            continue
        match = [sym for sym in k.units if U.parse_unit(sym).dimension == u.dimension]
        target.append(match[0] if match else "")
    return pd.Series(target, index=spec.index, dtype=object)


def _canonical_factor(parsed: pd.Series, target: pd.Series) -> pd.Series:
    """Per row, the factor taking an amount in the parsed unit to the target unit (1
    where no unit is given)."""
    return pd.Series(
        [
            u.factor / U.parse_unit(tg).factor if u is not None else 1.0
            for u, tg in zip(parsed, target, strict=True)
        ],
        index=parsed.index,
        dtype=float,
    )


def _refuse_implausible_amount(
    t: TextTable,
    spec: pd.Series,
    amount: pd.Series,
    unit_raw: pd.Series,
    parsed: pd.Series,
    target: pd.Series,
    factor: pd.Series,
) -> None:
    """Plausibility: an amount outside the kind's range
    (:data:`carthema.data.plausibility.EVENT_RANGES`) is a slip; the message names the
    likely unit."""
    canonical = amount * factor
    outside = pd.Series(
        [
            not np.isnan(c) and not P.EVENT_RANGES[(k.name, tg)].contains(c)
            for k, tg, c in zip(spec, target, canonical, strict=True)
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
            P.EVENT_RANGES[(spec.loc[r].name, target.loc[r])],
            U.symbols_of_dimension({parsed.loc[r].dimension}),
        ),
    )


def _check_duration(t: TextTable, spec: pd.Series) -> pd.Series:
    """The duration column (days): within 20 years, not negative, > 0 for a period and
    absent for a one-day event."""
    duration = numbers(t, "duration", required=False, what="duration", fix_missing="")
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
    return duration


def _refuse_inapplicable_columns(t: TextTable, spec: pd.Series) -> dict[str, pd.Series]:
    """The kind-specific columns: a value where it does not apply is refused, not
    ignored. Returns each column as text ('' where empty)."""
    present = {c: text_column(t, c, required=False, fix="") for c in KIND_SPECIFIC_COLUMNS}
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
    return present


def _check_drug(t: TextTable, spec: pd.Series, drug_raw: pd.Series) -> pd.Series:
    """The drug column: given where the kind needs one, one of the kind's drugs.
    Returns the lower-cased names ('' where empty)."""
    drug = drug_raw.str.lower()
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
        close = suggest(drug.loc[row], k.drugs)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return (
            f"unknown {k.name} drug '{drug_raw.loc[row]}'.",
            f"{hint}Write one of: {', '.join(k.drugs)}.",
        )

    t.refuse_first(~ok, "drug", unknown_drug)
    return drug


def _check_graft(
    t: TextTable, kind: pd.Series, source_raw: pd.Series
) -> tuple[pd.Series, pd.Series]:
    """The graft's source and CD34 selection: required for a stem_cell_boost, a known
    source. Returns the lower-cased source ('' where empty) and the yes/no flag."""
    is_boost = kind == "stem_cell_boost"
    source_col = source_raw.str.lower()
    t.refuse_first(
        is_boost & (source_col == ""),
        "source",
        "stem_cell_boost needs its source.",
        f"write one of: {', '.join(SOURCES)}.",
    )
    t.refuse_first(
        (source_col != "") & ~source_col.isin(list(SOURCES)),
        "source",
        lambda r: f"unknown source '{source_raw.loc[r]}'.",
        f"write one of: {', '.join(SOURCES)}.",
    )
    cd34 = yes_no(t, "cd34_selected", default=None)
    t.refuse_first(
        is_boost & cd34.isna(),
        "cd34_selected",
        "stem_cell_boost needs to say whether the graft was CD34-selected.",
        "write yes or no.",
    )
    return source_col, cd34


def _check_graft_doses(t: TextTable) -> tuple[pd.Series, pd.Series]:
    """The CD3+ and mononuclear cell doses of a graft (cells/kg): not negative, within
    :data:`carthema.data.plausibility.GRAFT_CELLS_LIMIT`."""
    cd3 = numbers(t, "cd3_per_kg", required=False, what="cd3_per_kg", fix_missing="")
    mnc = numbers(t, "mnc_per_kg", required=False, what="mnc_per_kg", fix_missing="")
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
    return cd3, mnc
