"""Plausibility ranges: values no patient or assay can give, refused on load.

A value outside its range is almost never a real result: it is a unit slip (an ANC of
900 labelled G/L is 900 cells/uL), an exponent typo (1e300), or a date or a time in
hours written as a day. :mod:`carthema.data.validate` refuses such a value on load with
the likely cause (the unit that would make it plausible, where one does).

The bounds are deliberately wide -- at or beyond the most extreme values seen in
clinical practice -- so that they catch mistakes, not unusual patients. Each states its
reasoning in ``reason`` (reference ranges, label doses, assay arithmetic); none is a
fitted or cited statistic. They are in the canonical unit of the analyte or event kind
(see :mod:`carthema.data.analytes` and :mod:`carthema.data.events`):
``ANALYTE_RANGES`` for observations, ``EVENT_RANGES`` for event amounts, ``DAY_LIMIT``
for the day of any row and the duration of a period, ``GRAFT_CELLS_LIMIT`` for the
CD3+/MNC content of a boost. :func:`describe` prints them as a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from carthema.data import units as U


@dataclass(frozen=True)
class Range:
    """Plausible values of one quantity, in ``unit``.

    Attributes
    ----------
    low, high:
        Smallest and largest plausible value (``low`` may be 0: no lower bound beyond
        the sign checks done elsewhere).
    unit:
        The canonical unit the bounds are in.
    typical:
        A usual value, used to guess which unit a refused value was really in.
    reason:
        Where the bounds come from (physiology, assay, label dose), in plain words.
    """

    low: float
    high: float
    unit: str
    typical: float
    reason: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


# Cell concentrations: the reference ranges quoted are the usual adult ones (ANC 1.5-8,
# platelets 150-400, lymphocytes 1-4, WBC 4-11 G/L).
ANALYTE_RANGES: dict[str, Range] = {
    "anc": Range(
        0.0,
        100.0,
        "G/L",
        3.0,
        "normal 1.5-8 G/L; leukemoid reactions rarely exceed 50-100 G/L",
    ),
    "platelets": Range(
        0.0,
        3000.0,
        "G/L",
        200.0,
        "normal 150-400 G/L; extreme thrombocytosis rarely exceeds 2000 G/L",
    ),
    "lymphocytes": Range(
        0.0,
        1000.0,
        "G/L",
        1.5,
        "normal 1-4 G/L; only CLL with hyperleukocytosis reaches several hundred G/L",
    ),
    "wbc": Range(
        0.0,
        1000.0,
        "G/L",
        6.0,
        "normal 4-11 G/L; hyperleukocytic leukaemia rarely exceeds 500 G/L",
    ),
    "b_cells": Range(
        0.0,
        1.0e6,
        "cells/uL",
        100.0,
        "normal CD19+ B cells 100-500 cells/uL; 10^6 cells/uL (1000 G/L) exceeds any "
        "leukaemic count",
    ),
    "cart_copies": Range(
        0.0,
        1.0e7,
        "copies/ug DNA",
        1.0e3,
        "1 ug of genomic DNA is about 150,000 diploid cells (6.6 pg DNA per cell); with "
        "every cell CAR+ at a vector copy number of about 60 that is 10^7 copies/ug, far "
        "above reported peaks (10^4-10^6 copies/ug)",
    ),
    "marrow_blasts": Range(0.0, 100.0, "%", 5.0, "a percentage of marrow cells"),
    "mrd": Range(0.0, 100.0, "%", 0.01, "a percentage of cells"),
    "chimerism": Range(0.0, 100.0, "% donor", 50.0, "a percentage of cells"),
    "chimerism_cd3": Range(0.0, 100.0, "% donor", 50.0, "a percentage of cells"),
    "chimerism_cd15": Range(0.0, 100.0, "% donor", 50.0, "a percentage of cells"),
    "haemoglobin": Range(
        20.0,
        250.0,
        "g/L",
        110.0,
        "normal 120-170 g/L; below 20 g/L (2 g/dL) is barely compatible with life and "
        "polycythaemia rarely exceeds 230 g/L",
    ),
    "crp": Range(
        0.0,
        1000.0,
        "mg/L",
        10.0,
        "normal < 5 mg/L; severe sepsis and CRS rarely exceed 500 mg/L",
    ),
    "ferritin": Range(
        0.0,
        1.0e6,
        "ug/L",
        500.0,
        "normal 20-300 ug/L; HLH and severe CRS reach 10^4-10^5 ug/L",
    ),
    "il6": Range(
        0.0,
        1.0e6,
        "pg/mL",
        10.0,
        "normal < 7 pg/mL; severe CRS reaches 10^3-10^5 pg/mL",
    ),
    "ldh": Range(
        0.0,
        1.0e5,
        "U/L",
        300.0,
        "normal 120-250 U/L; massive tumour lysis or haemolysis reaches 10^4 U/L",
    ),
}

# Event amounts, by (kind, canonical unit) -- a kind with two dimensions of unit (G-CSF
# in ug/kg/day or dose/day) has a range for each.
EVENT_RANGES: dict[tuple[str, str], Range] = {
    ("cart_infusion", "cells/kg"): Range(
        1.0e3,
        1.0e9,
        "cells/kg",
        1.0e6,
        "label and trial doses are 10^5-10^7 CAR+ cells/kg; 10^9/kg would be 7x10^10 "
        "cells in an adult, beyond any manufactured product",
    ),
    ("stem_cell_boost", "cells/kg"): Range(
        1.0e3,
        1.0e9,
        "cells/kg",
        3.0e6,
        "CD34+ boosts and grafts are 10^5-10^7 CD34+ cells/kg",
    ),
    ("lymphodepletion", "mg/m2"): Range(
        0.0,
        5000.0,
        "mg/m2",
        30.0,
        "fludarabine 25-30 and cyclophosphamide 250-1000 mg/m2 a day; even myeloablative "
        "cyclophosphamide is about 2000 mg/m2 a day",
    ),
    ("gcsf", "ug/kg/day"): Range(
        0.0,
        100.0,
        "ug/kg/day",
        5.0,
        "filgrastim 5-10 ug/kg/day, mobilisation up to 16-20",
    ),
    ("gcsf", "dose/day"): Range(0.0, 10.0, "dose/day", 1.0, "one or two doses a day"),
    ("platelet_transfusion", "units"): Range(
        0.0, 50.0, "units", 1.0, "one event is one day's units; a few a day at most"
    ),
    ("rbc_transfusion", "units"): Range(
        0.0, 50.0, "units", 2.0, "one event is one day's units; a few a day at most"
    ),
    ("tpo_agonist", "mg/day"): Range(
        0.0, 1000.0, "mg/day", 50.0, "eltrombopag at most 150 mg/day, avatrombopag 60"
    ),
    ("tpo_agonist", "ug/kg/week"): Range(
        0.0, 100.0, "ug/kg/week", 3.0, "romiplostim at most 10 ug/kg/week"
    ),
    ("tpo_agonist", "dose/day"): Range(0.0, 10.0, "dose/day", 1.0, "one dose a day"),
    ("tocilizumab", "mg/kg"): Range(
        0.0, 50.0, "mg/kg", 8.0, "8 mg/kg (12 mg/kg under 30 kg), at most 800 mg a dose"
    ),
    ("corticosteroid", "mg"): Range(
        0.0,
        10000.0,
        "mg",
        10.0,
        "methylprednisolone pulses are at most 1000 mg, given up to twice a day",
    ),
    ("plasma_exchange", "mL"): Range(
        0.0, 20000.0, "mL", 3000.0, "one exchange is 1-1.5 plasma volumes, 3-5 L in an adult"
    ),
}

# |day| of any observation or event, and the length of a period.
DAY_LIMIT = 7305.0
DAY_REASON = (
    "more than 20 years from the first CAR-T infusion (day 0): likely a date, or a "
    "time in hours or minutes, written as a day"
)
# cd3_per_kg / mnc_per_kg of a boost.
GRAFT_CELLS_LIMIT = 1.0e10
GRAFT_CELLS_REASON = (
    "a marrow harvest holds about 2-4x10^8 nucleated cells/kg and an apheresis product "
    "about 10^9 cells/kg"
)


def _alternatives(written: str, dimension_units: list[str]) -> list[str]:
    """Units of the same dimension other than ``written`` (canonical symbols)."""
    here = U.parse_unit(written)
    return [s for s in dimension_units if here is None or s != here.symbol]


def likely_unit(value: float, written: str, rng: Range, candidates: list[str]) -> str | None:
    """The unit among ``candidates`` that would put ``value`` inside ``rng``, nearest
    (on a log scale) to the typical value; None if no unit does."""
    best: tuple[float, str] | None = None
    base = U.parse_unit(rng.unit)
    for sym in _alternatives(written, candidates):
        u = U.parse_unit(sym)
        if u is None or base is None or u.dimension != base.dimension:
            continue
        canon = value * u.factor / base.factor
        if canon <= 0 or not rng.contains(canon):
            continue
        dist = abs(math.log10(canon) - math.log10(rng.typical))
        if best is None or dist < best[0]:
            best = (dist, sym)
    return None if best is None else best[1]


def _in_unit(value: float, written: str, unit: str) -> float:
    """``value`` written in ``written``, expressed in ``unit`` (same dimension)."""
    return value * U.parse_unit(written).factor / U.parse_unit(unit).factor


def out_of_range(
    what: str,
    value: float,
    written_unit: str,
    canonical: float,
    rng: Range,
    candidates: list[str],
) -> tuple[str, str]:
    """(problem, fix) for a value outside its plausible range.

    ``what`` names the quantity ("anc", "cart_infusion amount"), ``value`` is as written
    in ``written_unit`` and ``canonical`` is the same in ``rng.unit``.
    """
    side = "above" if canonical > rng.high else "below"
    bound = rng.high if side == "above" else rng.low
    problem = (
        f"{what} {value:g} {written_unit} is {side} the plausible "
        f"{'maximum' if side == 'above' else 'minimum'} of {bound:g} {rng.unit} "
        f"({rng.reason})."
    )
    alt = likely_unit(value, written_unit, rng, candidates)
    if alt is not None:
        as_alt = _in_unit(value, alt, rng.unit)
        fix = (
            f"{value:g} looks like {alt} (= {as_alt:g} {rng.unit}), not {written_unit}: "
            f"correct the unit of this row to {alt}, or correct the value."
        )
    elif value != 0 and (abs(math.log10(abs(value))) > 30):
        fix = "this is not a measured or given amount: check for an exponent typo."
    else:
        fix = "check the value and its unit (an exponent typo, a log10 value, or another unit)."
    return problem, fix


# The boost day of a prediction (predict-boost --day).
BOOST_DAY_LIMIT = 730.0
BOOST_DAY_REASON = (
    "a boost day more than 2 years after CAR-T: the calibrated population describes "
    "the first year after the infusion, and each prediction simulates every day up to "
    "the boost for thousands of virtual patients"
)

# The ANC (G/L) that a run of neutropenic days ending on the boost day contradicts, and
# the shortest such run (days) that is checked: ANC < 0.5 G/L for a week does not turn
# into >= 1 G/L on the day the run ends without G-CSF or a mistake.
RECOVERED_ANC = 1.0
NEUTROPENIA_RUN_DAYS = 7.0


def check_option_value(
    option: str,
    value: float | None,
    rng: Range,
    *,
    candidates: tuple[str, ...] = (),
    what: str = "",
) -> float | None:
    """Refuse a command-line number outside ``rng`` (the same ranges as for files), one
    line naming the option, the range's reason and the likely fix (the unit that would
    make the value plausible, among ``candidates``); None passes through.

    ``value`` is in ``rng.unit``; ``what`` describes it in the message."""
    from carthema.data.errors import InputError

    if value is None:
        return None
    v = float(value)
    label = f"{option} {value:g}" + (f" ({what})" if what else "")
    if not math.isfinite(v):
        raise InputError(f"{label} is not a finite number.", fix=f"give {option} a number.")
    if rng.contains(v):
        return v
    problem, fix = out_of_range(option, v, rng.unit, v, rng, list(candidates))
    alt = likely_unit(v, rng.unit, rng, list(candidates))
    if alt is not None:  # the option's own unit is fixed: say the number to give instead
        as_canon = _in_unit(v, alt, rng.unit)
        fix = (
            f"{v:g} looks like {alt} (= {as_canon:g} {rng.unit}); give {option} in "
            f"{rng.unit}: {option} {as_canon:g}."
        )
    raise InputError(problem, fix=fix)


def describe() -> str:
    """The ranges as a plain-text table."""
    lines = ["analyte / event kind        low          high         unit  -- reason"]
    for name, r in ANALYTE_RANGES.items():
        lines.append(f"{name:<27} {r.low:<12g} {r.high:<12g} {r.unit}  -- {r.reason}")
    for (kind, _), r in EVENT_RANGES.items():
        lines.append(f"{kind:<27} {r.low:<12g} {r.high:<12g} {r.unit}  -- {r.reason}")
    lines.append(f"{'day (any row)':<27} {-DAY_LIMIT:<12g} {DAY_LIMIT:<12g} d  -- {DAY_REASON}")
    return "\n".join(lines)
