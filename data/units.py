"""All unit handling of carthema in one place.

Every unit a user may write is listed here once, with its dimension and its factor to
that dimension's base unit. Converting ``value`` from unit ``a`` to unit ``b`` of the same
dimension is ``value * factor(a) / factor(b)``. Nothing else in the package multiplies
by 1000 or 10 to change units.

Examples (the numbers tested in ``tests/test_data_units.py``):

- 1500 cells/uL == 1.5 G/L (1 G/L = 10^9 cells/L = 1000 cells/uL = 1 cell/nL)
- 9 g/dL == 90 g/L (haemoglobin)
- 5 mg/dL == 50 mg/L (CRP)
- 500 ng/mL == 500 ug/L (ferritin)

Unit spellings are matched exactly first (``G/L`` giga-cells per litre and ``g/L``
grams per litre differ only in case), then case-insensitively when that is unambiguous,
or when the quantity leaves one reading (``g/l`` of an ANC can only be G/L, of
haemoglobin only g/L: ``parse_unit(text, allowed=...)``). The micro sign (``µ``/``μ``),
``mcg``/``mcL``, superscript digits and a multiplication sign before a power of ten
(``x 10^9/L``, ``x10E9/L``, ``×10^9/L``) are normalised first.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass

from carthema.data.errors import InputError


@dataclass(frozen=True)
class Unit:
    """A unit: its canonical spelling, dimension and factor to the dimension's base."""

    symbol: str
    dimension: str
    factor: float


# Dimension base units (factor 1):
#   cell_concentration: G/L (10^9 cells/L)     mass_concentration: g/L
#   copies_per_dna:     copies/ug DNA          percent: %
#   enzyme_activity:    U/L                    cells_per_kg: cells/kg
#   dose_per_area:      mg/m2                  dose_per_kg: mg/kg
#   mass:               mg                     dose_rate_per_kg: ug/kg/day
#   dose_count_rate:    dose/day               transfusion: units
#   volume:             mL                     mass_rate: mg/day
#   weekly_dose_per_kg: ug/kg/week
_CANONICAL: dict[str, tuple[str, float]] = {
    # symbol: (dimension, factor)
    "G/L": ("cell_concentration", 1.0),
    "cells/uL": ("cell_concentration", 1e-3),
    "cells/L": ("cell_concentration", 1e-9),
    "g/L": ("mass_concentration", 1.0),
    "g/dL": ("mass_concentration", 10.0),
    "mg/dL": ("mass_concentration", 1e-2),
    "mg/L": ("mass_concentration", 1e-3),
    "ug/L": ("mass_concentration", 1e-6),
    "pg/mL": ("mass_concentration", 1e-9),
    "copies/ug DNA": ("copies_per_dna", 1.0),
    "%": ("percent", 1.0),
    "% donor": ("percent", 1.0),
    "U/L": ("enzyme_activity", 1.0),
    "cells/kg": ("cells_per_kg", 1.0),
    "10^6 cells/kg": ("cells_per_kg", 1e6),
    "mg/m2": ("dose_per_area", 1.0),
    "mg/kg": ("dose_per_kg", 1.0),
    "mg": ("mass", 1.0),
    "g": ("mass", 1e3),
    "ug/kg/day": ("dose_rate_per_kg", 1.0),
    "dose/day": ("dose_count_rate", 1.0),
    "units": ("transfusion", 1.0),
    "mL": ("volume", 1.0),
    "L": ("volume", 1e3),
    "mg/day": ("mass_rate", 1.0),
    "ug/kg/week": ("weekly_dose_per_kg", 1.0),
}

# Other spellings users write, mapped to a canonical symbol above (same meaning exactly).
_ALIASES: dict[str, str] = {
    # cell concentrations: 1 G/L = 10^9/L = 10^3/uL = 1/nL
    "10^9/L": "G/L",
    "x10^9/L": "G/L",
    "10E9/L": "G/L",
    "10e9/L": "G/L",
    "10*9/L": "G/L",
    "Gpt/L": "G/L",
    "/nL": "G/L",
    "cells/nL": "G/L",
    "10^3/uL": "G/L",
    "x10^3/uL": "G/L",
    "K/uL": "G/L",
    "/uL": "cells/uL",
    "cells/mm3": "cells/uL",
    "/mm3": "cells/uL",
    "cells/mm^3": "cells/uL",
    "/mm^3": "cells/uL",
    # mass concentrations
    "ng/mL": "ug/L",
    "ng/L": "pg/mL",
    # CAR transgene
    "copies/ug": "copies/ug DNA",
    "copies/ug gDNA": "copies/ug DNA",
    "copies/ugDNA": "copies/ug DNA",
    # percentages
    "percent": "%",
    "%donor": "% donor",
    # activity
    "IU/L": "U/L",
    # doses
    "/kg": "cells/kg",
    "10^6/kg": "10^6 cells/kg",
    "x10^6/kg": "10^6 cells/kg",
    "x10^6 cells/kg": "10^6 cells/kg",
    "mg/m^2": "mg/m2",
    "ug/kg/d": "ug/kg/day",
    "dose": "dose/day",
    "doses/day": "dose/day",
    "dose/d": "dose/day",
    "unit": "units",
    "mg/d": "mg/day",
}


def _normalise(text: str) -> str:
    """Spelling clean-up that never changes meaning: micro sign, mcg, superscripts, spaces."""
    s = str(text).strip()
    s = s.replace("µ", "u").replace("μ", "u")
    s = re.sub(r"mc(?=[gLl]\b|[gLl]/)", "u", s)  # mcg -> ug, cells/mcL -> cells/uL
    s = s.replace("²", "2").replace("³", "3").replace("⁹", "^9").replace("⁶", "^6")
    s = s.replace("×", "x")
    s = re.sub(r"^x\s*(?=10)", "", s)  # "x 10^9/L", "x10E9/L": the power of ten itself
    s = re.sub(r"\s*/\s*", "/", s)  # "cells / uL" -> "cells/uL"
    s = re.sub(r"\s+", " ", s)
    return s


def _lookup_table() -> dict[str, str]:
    table = {sym: sym for sym in _CANONICAL}
    table.update(_ALIASES)
    return table


_TABLE = _lookup_table()


def known_units() -> list[str]:
    """All accepted unit spellings (canonical symbols and aliases)."""
    return sorted(_TABLE)


def spellings(symbols: list[str] | tuple[str, ...]) -> list[str]:
    """Accepted spellings of the given canonical symbols: the symbols, then aliases."""
    out = list(symbols)
    out += [alias for alias, sym in _ALIASES.items() if sym in symbols and alias not in out]
    return out


def symbols_of_dimension(dimensions: set[str]) -> list[str]:
    """Canonical symbols whose dimension is in ``dimensions`` (e.g. cells/kg, 10^6 cells/kg)."""
    return [sym for sym, (dim, _) in _CANONICAL.items() if dim in dimensions]


def describe(spelling_list: list[str], limit: int = 6) -> str:
    """A short list of unit spellings for a message ("G/L, cells/uL, ... or 10^9/L")."""
    shown = spelling_list[:limit]
    more = len(spelling_list) - len(shown)
    return ", ".join(shown) + (f" (and {more} equivalent spellings)" if more > 0 else "")


def parse_unit(text: str, allowed: tuple[str, ...] | list[str] | None = None) -> Unit | None:
    """The :class:`Unit` a spelling stands for, or None (see :func:`_parse_unit`); cached,
    as a table of a million rows holds a handful of spellings."""
    return _parse_unit(str(text), None if allowed is None else tuple(allowed))


@functools.lru_cache(maxsize=4096)
def _parse_unit(text: str, allowed: tuple[str, ...] | None = None) -> Unit | None:
    """The :class:`Unit` a spelling stands for, or None if it is not a known unit.

    Exact match first; then a case-insensitive match, accepted only if every spelling
    that matches case-insensitively means the same unit, or, given ``allowed`` (the
    canonical symbols of the quantity measured), the same unit among those of
    ``allowed``'s dimensions: ``G/L`` is never confused with ``g/L``, but ``g/l`` of a
    cell count is G/L and of haemoglobin g/L.
    """
    s = _normalise(text)
    symbol = _TABLE.get(s)
    if symbol is None:
        matches = {sym for spelling, sym in _TABLE.items() if spelling.lower() == s.lower()}
        if len(matches) > 1 and allowed:
            dims = {_CANONICAL[a][0] for a in allowed if a in _CANONICAL}
            matches = {m for m in matches if _CANONICAL[m][0] in dims}
        if len(matches) == 1:
            symbol = matches.pop()
    if symbol is None:
        return None
    dim, factor = _CANONICAL[symbol]
    return Unit(symbol, dim, factor)


def canonical_symbol(text: str) -> str | None:
    """The canonical symbol of a unit spelling (``"/nL"`` -> ``"G/L"``), or None."""
    unit = parse_unit(text)
    return None if unit is None else unit.symbol


def conversion_factor(from_unit: str, to_unit: str) -> float:
    """Factor ``f`` such that ``value[to_unit] = value[from_unit] * f``.

    Raises :class:`InputError` if either unit is unknown or the dimensions differ.
    """
    a = parse_unit(from_unit)
    b = parse_unit(to_unit)
    if a is None or b is None:
        bad = from_unit if a is None else to_unit
        raise InputError(
            f"unknown unit '{bad}'.",
            fix=f"use one of: {', '.join(suggest_units(bad))}.",
        )
    if a.dimension != b.dimension:
        raise InputError(
            f"cannot convert '{from_unit}' ({a.dimension}) to '{to_unit}' ({b.dimension}).",
            fix="check the unit.",
        )
    return a.factor / b.factor


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """Convert one value between units of the same dimension (e.g. cells/uL -> G/L)."""
    return value * conversion_factor(from_unit, to_unit)


def suggest_units(text: str, allowed: list[str] | None = None, n: int = 4) -> list[str]:
    """Close spellings to an unknown unit, for error messages."""
    pool = list(allowed) if allowed else known_units()
    close = difflib.get_close_matches(_normalise(text), pool, n=n, cutoff=0.4)
    return close or pool[:n]
