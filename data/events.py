"""The event-kind catalogue: treatments in a patient's history and how they are written.

One row of the events table is one event. ``day`` is the day it starts (day 0 = first
CAR-T infusion). A *bolus* kind happens on one day; a *period* kind (G-CSF, TPO agonist)
lasts ``duration`` days, covering ``[day, day + duration)``, with ``amount`` given per day.

========================  ==========================  ====================================
kind                      amount (canonical unit)     other columns
========================  ==========================  ====================================
cart_infusion             CAR+ cells/kg               duration optional: the stated total
                                                      was split over ``[day, day +
                                                      duration)`` in parts not stated
lymphodepletion           mg/m2 (that day's dose)     drug (required)
stem_cell_boost           CD34+ cells/kg              source (autologous|prior-donor|
                                                      allogeneic; :mod:`~carthema.data.boost`),
                                                      cd34_selected (yes|no) required;
                                                      cd3_per_kg, mnc_per_kg optional
gcsf                      ug/kg/day or dose/day       duration (days) required
platelet_transfusion      units                       -
rbc_transfusion           units                       -
tpo_agonist               mg/day, ug/kg/week, dose/d  duration required; amount, drug
                          (optional)                  optional
tocilizumab               mg/kg                       -
corticosteroid            mg                          drug (required)
plasma_exchange           mL (volume exchanged)       -
========================  ==========================  ====================================
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass

from carthema.data.boost import (
    GRAFT_COLUMNS,
    SOURCES,  # noqa: F401  (the graft sources, re-exported)
)

# Written values accepted in ``cd34_selected`` (and any yes/no column).
YES_NO: dict[str, bool] = {
    "yes": True,
    "y": True,
    "true": True,
    "1": True,
    "no": False,
    "n": False,
    "false": False,
    "0": False,
}


def parse_yes_no(
    value: object,
    *,
    file: str | None = None,
    row: int | None = None,
    column: str = "selected",
    default: bool | None = None,
) -> bool:
    """A yes/no cell as a bool: the words of :data:`YES_NO` (any case), a bool, or the
    numbers 1 and 0; an empty cell is ``default`` (refused when None). Anything else
    (a typo such as ``yse``) is refused with an :class:`InputError`, not read as no."""
    from carthema.data.errors import InputError

    empty = value is None or (isinstance(value, float) and math.isnan(value))
    if empty or str(value).strip() == "":
        if default is not None:
            return default
        raise InputError("empty", file=file, row=row, column=column, fix="write yes or no")
    if isinstance(value, numbers.Number) and value in (0, 1):
        return bool(value)
    text = str(value).strip()
    if text.lower() in YES_NO:
        return YES_NO[text.lower()]
    raise InputError(
        f"'{text}' is not yes or no",
        file=file,
        row=row,
        column=column,
        fix="write yes/no (or true/false, 1/0)",
    )


@dataclass(frozen=True)
class EventKind:
    """One kind of event.

    Attributes
    ----------
    name:
        Identifier used in the ``kind`` column.
    units:
        Canonical unit symbols an amount may be converted to (the first one of the same
        dimension as the written unit is used; see :mod:`carthema.data.units`).
    amount_required:
        An event of this kind without an amount is refused.
    period:
        True if ``duration`` (days, > 0) is required.
    split_allowed:
        True if a bolus kind may carry a ``duration`` meaning the stated total was given
        over several days (CAR-T split infusions).
    drugs:
        Accepted values of ``drug``; empty tuple means the column does not apply.
    drug_required:
        Whether ``drug`` must be given.
    columns:
        Optional columns that apply to this kind (others must be empty).
    """

    name: str
    units: tuple[str, ...]
    description: str
    amount_required: bool = True
    period: bool = False
    split_allowed: bool = False
    drugs: tuple[str, ...] = ()
    drug_required: bool = False
    columns: tuple[str, ...] = ()


LYMPHODEPLETION_DRUGS = (
    "fludarabine",
    "cyclophosphamide",
    "bendamustine",
    "cytarabine",
    "etoposide",
    "ifosfamide",
)
CORTICOSTEROIDS = ("dexamethasone", "methylprednisolone", "prednisolone", "prednisone")
TPO_AGONISTS = ("eltrombopag", "romiplostim", "avatrombopag", "hetrombopag")

EVENT_KINDS: dict[str, EventKind] = {
    k.name: k
    for k in [
        EventKind(
            "cart_infusion",
            ("cells/kg",),
            "CAR-T cell infusion, CAR+ cells per kg body weight",
            split_allowed=True,
        ),
        EventKind(
            "lymphodepletion",
            ("mg/m2",),
            "lymphodepleting chemotherapy, one drug's dose on one day (mg/m2)",
            drugs=LYMPHODEPLETION_DRUGS,
            drug_required=True,
        ),
        EventKind(
            "stem_cell_boost",
            ("cells/kg",),
            "stem-cell boost / HSC infusion without conditioning, CD34+ cells per kg",
            columns=("source", "cd34_selected", "cd3_per_kg", "mnc_per_kg"),
        ),
        EventKind(
            "gcsf",
            ("ug/kg/day", "dose/day"),
            "G-CSF period; amount per day (ug/kg/day, or dose/day when only the "
            "number of standard doses is known)",
            period=True,
        ),
        EventKind(
            "platelet_transfusion",
            ("units",),
            "platelet transfusion, number of units",
        ),
        EventKind(
            "rbc_transfusion",
            ("units",),
            "red-cell transfusion, number of units",
        ),
        EventKind(
            "tpo_agonist",
            ("mg/day", "ug/kg/week", "dose/day"),
            "thrombopoietin-receptor agonist period",
            amount_required=False,
            period=True,
            drugs=TPO_AGONISTS,
        ),
        EventKind(
            "tocilizumab",
            ("mg/kg",),
            "tocilizumab (anti-IL-6 receptor) dose, mg/kg",
        ),
        EventKind(
            "corticosteroid",
            ("mg",),
            "corticosteroid dose on one day, mg",
            drugs=CORTICOSTEROIDS,
            drug_required=True,
        ),
        EventKind(
            "plasma_exchange",
            ("mL",),
            "plasma exchange, volume exchanged (mL)",
        ),
    ]
}

# Columns that only some kinds use: the validator refuses a value in them for any other
# kind, so that a misplaced value is not silently ignored.
KIND_SPECIFIC_COLUMNS: tuple[str, ...] = ("drug", *GRAFT_COLUMNS)


def event_kind_names() -> list[str]:
    """Names accepted in the ``kind`` column."""
    return list(EVENT_KINDS)


def get_event_kind(name: str) -> EventKind | None:
    """The catalogue entry for ``name`` (case-insensitive), or None."""
    return EVENT_KINDS.get(str(name).strip().lower())


_KIND_SYNONYMS = {
    "car-t": "cart_infusion",
    "cart": "cart_infusion",
    "car_t": "cart_infusion",
    "infusion": "cart_infusion",
    "ld": "lymphodepletion",
    "flu": "lymphodepletion",
    "cy": "lymphodepletion",
    "fludarabine": "lymphodepletion",
    "cyclophosphamide": "lymphodepletion",
    "boost": "stem_cell_boost",
    "scb": "stem_cell_boost",
    "hsc": "stem_cell_boost",
    "hsct": "stem_cell_boost",
    "g-csf": "gcsf",
    "filgrastim": "gcsf",
    "platelets": "platelet_transfusion",
    "rbc": "rbc_transfusion",
    "eltrombopag": "tpo_agonist",
    "romiplostim": "tpo_agonist",
    "dexamethasone": "corticosteroid",
    "steroid": "corticosteroid",
    "pex": "plasma_exchange",
}


def suggest_event_kinds(name: str, n: int = 3) -> list[str]:
    """Kinds close to an unknown ``name``, for error messages."""
    key = str(name).strip().lower()
    out = [_KIND_SYNONYMS[key]] if key in _KIND_SYNONYMS else []
    for close in difflib.get_close_matches(key, list(EVENT_KINDS), n=n, cutoff=0.5):
        if close not in out:
            out.append(close)
    return out[:n]
