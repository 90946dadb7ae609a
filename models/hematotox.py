"""CAR-HEMATOTOX score (Rejeski et al. 2021): baseline marrow reserve and inflammation.

The score sums five laboratory values taken before lymphodepletion (about day -5):

============  ==========  ==========================  ========
item          unit        range                       points
============  ==========  ==========================  ========
platelets     G/L         > 175                       0
                          75 - 175 (both included)    1
                          < 75                        2
ANC           G/L         >= 1.2                      0
                          < 1.2                       1
haemoglobin   g/dL        >= 9.0                      0
                          < 9.0                       1
CRP           mg/dL       < 3.0                       0
                          >= 3.0                      1
ferritin      ng/mL       < 650                       0
                          650 - 2000 (both included)  1
                          > 2000                      2
============  ==========  ==========================  ========

Total 0-7; 0-1 is "low" risk, >= 2 "high" risk of prolonged neutropenia.

What was verified, and where
----------------------------
The original paper is Rejeski K, Perez A, Sesques P, et al. "CAR-HEMATOTOX: a model for
CAR T-cell-related hematologic toxicity in relapsed/refractory large B-cell lymphoma",
Blood 2021;138(24):2499-2513, doi:10.1182/blood.2020010543 (PMC8893508). Read through the
project's search tools (stored public copies of the pages):

* the paper's abstract (https://pmc.ncbi.nlm.nih.gov/articles/PMC8893508 and
  ashpublications.org/blood/article/138/24/2499): "We created the CAR-HEMATOTOX model,
  which included markers associated with hematopoietic reserve (eg, platelet count,
  hemoglobin, and ANC) and baseline inflammation (eg, C-reactive protein and ferritin)"
  -- the five items, confirmed;
* https://www.european-mcl.net/home/scores-car-hematotox-286.html (a score page that cites
  Rejeski 2021): "Determined prior to lymphodepleting chemotherapy (e.g. day -5), the
  CAR-HEMATOTOX score comprises five markers of hematotoxicity with additional weighting
  of the baseline platelet count and ferritin levels. The score discriminates between a
  high (CAR-HEMATOTOX score >=2) and low (CAR-HEMATOTOX score 0-1) risk" -- timing, the
  double weight (0-2 points) of platelets and ferritin, and the low/high split, confirmed;
  the same split ("HTlow (score 0-1) and HThigh (score >= 2)") is used in "The
  CAR-HEMATOTOX score as a prognostic model of toxicity and response in patients
  receiving BCMA-directed CAR-T for relapsed/refractory multiple myeloma", J Hematol Oncol
  2023, doi:10.1186/s13045-023-01465-x.

NOT verified in the primary paper: the numerical cut-offs. The paper's score figure/table
was not in the stored copies reachable here. The cut-offs above are the ones recalled by
two independent readers in ../shared/calibration/README.md, and a third, independent
public implementation (a FHIRPath encoding of "the Rejeski 2021 per-item thresholds")
lists exactly the same values, including closed ranges 75-175 and 650-2000. Two other
public implementations found on GitHub use different items and cut-offs altogether (ANC
>= 1.5 / 0.5-1.5 / < 0.5 with a maximum of 10; ANC > 1.0 / 0.5-1.0 / < 0.5, haemoglobin
> 10 / 8-10 / < 8): they are not the published score, which is why this module does not
follow them. A reader with the paper should check its score figure/table against the table
above before this is used for patients.

Boundary conventions chosen (and why)
-------------------------------------
The recalled table writes ranges "75-175" and "650-2000" and one-sided cut-offs ">= 1.2",
"< 3.0" and so on. We take the written ranges as closed: platelets exactly 75 or 175 G/L
score 1; ferritin exactly 650 or 2000 ng/mL score 1. ANC exactly 1.2 G/L and haemoglobin
exactly 9.0 g/dL score 0; CRP exactly 3.0 mg/dL scores 1. This is the literal reading of
the recalled table, it agrees with the independent FHIRPath implementation, and at a
boundary it gives the point to the middle category (never to the extreme one), so a
laboratory rounding to a boundary cannot jump a patient two points. Laboratories report
these values with at most one decimal (G/L, g/dL, mg/dL) or as integers (ferritin), so the
choice only matters for values lying exactly on a cut-off.

Units
-----
Platelets and ANC in G/L (10^9/L, = 10^3/uL), haemoglobin in g/dL, CRP in mg/dL, ferritin
in ng/mL (= ug/L). Values that are almost surely in another unit (platelets 150000 given
per uL, haemoglobin 120 given in g/L, CRP 30 given in mg/L...) are refused with an
:class:`~carthema.data.errors.InputError` that names the fix; pass ``check_units=False`` to
score an extreme but genuine value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.errors import InputError

#: Cut-offs used (see the module docstring for what was verified and the boundary rules).
CUTOFFS = {
    "platelets": {"unit": "G/L", "0 if >": 175.0, "2 if <": 75.0},
    "anc": {"unit": "G/L", "1 if <": 1.2},
    "hemoglobin": {"unit": "g/dL", "1 if <": 9.0},
    "crp": {"unit": "mg/dL", "1 if >=": 3.0},
    "ferritin": {"unit": "ng/mL", "1 if >=": 650.0, "2 if >": 2000.0},
}

#: Largest value accepted per item before a unit error is assumed, with the likely fix.
#: Platelets above 2000 G/L, ANC above 100 G/L, haemoglobin above 25 g/dL and CRP above
#: 25 mg/dL (250 mg/L) are not seen before lymphodepletion; they are what the usual
#: values look like in the other common units.
_PLAUSIBLE_MAX = {
    "platelets": (
        2000.0,
        "give platelets in G/L (10^9/L); a count per uL (e.g. 150000) divided by 1000 is G/L",
    ),
    "anc": (
        100.0,
        "give the ANC in G/L (10^9/L); cells per uL (e.g. 1500) divided by 1000 are G/L",
    ),
    "hemoglobin": (
        25.0,
        "give haemoglobin in g/dL; a value in g/L (e.g. 120) divided by 10 is g/dL",
    ),
    "crp": (
        25.0,
        "give CRP in mg/dL; a value in mg/L (e.g. 30) divided by 10 is mg/dL",
    ),
    "ferritin": (
        1e6,
        "give ferritin in ng/mL (= ug/L)",
    ),
}

_UNITS = {k: v["unit"] for k, v in CUTOFFS.items()}


@dataclass(frozen=True)
class HematotoxScore:
    """CAR-HEMATOTOX points per item, their total (0-7) and the risk group."""

    platelets: int
    anc: int
    hemoglobin: int
    crp: int
    ferritin: int
    total: int
    group: str  # "low" (0-1) or "high" (>= 2)

    @property
    def high(self) -> bool:
        return self.group == "high"


def _as_array(name: str, value, check_units: bool) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InputError(
            f"{name} must be a number in {_UNITS[name]}, got {value!r}.",
            column=name,
            fix=f"give {name} as a number in {_UNITS[name]}",
        ) from None
    if not np.all(np.isfinite(arr)):
        raise InputError(
            f"{name} has a missing or non-finite value ({value!r}); the score needs all "
            "five values before lymphodepletion.",
            column=name,
            fix=f"give the measured {name} in {_UNITS[name]}",
        )
    if np.any(arr < 0):
        raise InputError(
            f"{name} is negative ({arr.min():g} {_UNITS[name]}).",
            column=name,
            fix=f"give the measured {name} in {_UNITS[name]} (a count or concentration >= 0)",
        )
    if check_units:
        limit, fix = _PLAUSIBLE_MAX[name]
        if np.any(arr > limit):
            raise InputError(
                f"{name} = {arr.max():g} is not a plausible value in {_UNITS[name]} "
                f"(above {limit:g}); it looks like another unit.",
                column=name,
                fix=fix + " (or pass check_units=False for a genuine extreme value)",
            )
    return arr


def hematotox_points(
    platelets,
    anc,
    hemoglobin,
    crp,
    ferritin,
    *,
    check_units: bool = True,
) -> dict[str, np.ndarray]:
    """Vectorised CAR-HEMATOTOX points.

    Arguments broadcast against each other (scalars or numpy arrays). Returns a dict of
    integer arrays: ``platelets``, ``anc``, ``hemoglobin``, ``crp``, ``ferritin`` (points
    per item), ``total`` (0-7) and a boolean array ``high`` (total >= 2).

    Units: platelets and ANC in G/L, haemoglobin in g/dL, CRP in mg/dL, ferritin in ng/mL.
    Raises :class:`~carthema.data.errors.InputError` for negative, missing or non-finite
    values, and (unless ``check_units=False``) for values that look like another unit.
    """
    plt_ = _as_array("platelets", platelets, check_units)
    anc_ = _as_array("anc", anc, check_units)
    hb = _as_array("hemoglobin", hemoglobin, check_units)
    crp_ = _as_array("crp", crp, check_units)
    fer = _as_array("ferritin", ferritin, check_units)
    plt_, anc_, hb, crp_, fer = np.broadcast_arrays(plt_, anc_, hb, crp_, fer)

    # Closed middle ranges: 75 <= plt <= 175 -> 1; 650 <= ferritin <= 2000 -> 1.
    p_plt = np.where(plt_ > 175.0, 0, np.where(plt_ >= 75.0, 1, 2))
    p_anc = np.where(anc_ >= 1.2, 0, 1)
    p_hb = np.where(hb >= 9.0, 0, 1)
    p_crp = np.where(crp_ < 3.0, 0, 1)
    p_fer = np.where(fer < 650.0, 0, np.where(fer <= 2000.0, 1, 2))
    total = p_plt + p_anc + p_hb + p_crp + p_fer
    return {
        "platelets": p_plt,
        "anc": p_anc,
        "hemoglobin": p_hb,
        "crp": p_crp,
        "ferritin": p_fer,
        "total": total,
        "high": total >= 2,
    }


def hematotox(
    platelets: float,
    anc: float,
    hemoglobin: float,
    crp: float,
    ferritin: float,
    *,
    check_units: bool = True,
) -> HematotoxScore:
    """CAR-HEMATOTOX score of one patient (values before lymphodepletion).

    Parameters
    ----------
    platelets:
        Platelet count, G/L (10^9/L).
    anc:
        Absolute neutrophil count, G/L.
    hemoglobin:
        Haemoglobin, g/dL.
    crp:
        C-reactive protein, mg/dL.
    ferritin:
        Serum ferritin, ng/mL.
    check_units:
        Refuse values that look like another unit (default True).

    Returns
    -------
    HematotoxScore
        Points per item, total (0-7) and group ``"low"`` (0-1) or ``"high"`` (>= 2).

    For arrays of patients use :func:`hematotox_points`.

    Examples
    --------
    >>> hematotox(platelets=110, anc=0.95, hemoglobin=10.1, crp=4.2, ferritin=540).total
    3
    """
    pts = hematotox_points(platelets, anc, hemoglobin, crp, ferritin, check_units=check_units)
    if pts["total"].ndim != 0:
        raise InputError(
            "hematotox() scores one patient; got arrays.",
            fix="use hematotox_points(...) for several patients at once",
        )
    total = int(pts["total"])
    return HematotoxScore(
        platelets=int(pts["platelets"]),
        anc=int(pts["anc"]),
        hemoglobin=int(pts["hemoglobin"]),
        crp=int(pts["crp"]),
        ferritin=int(pts["ferritin"]),
        total=total,
        group="high" if total >= 2 else "low",
    )


__all__ = ["CUTOFFS", "HematotoxScore", "hematotox", "hematotox_points"]


def parse_hematotox(value: str | int | None) -> str | int | None:
    """What ``--hematotox`` (every command) and the ``hematotox`` argument of the API
    accept: a score 0-7 (``int``), or the group ``"low"`` (score 0-1) or ``"high"``
    (score >= 2, Rejeski et al. 2021); ``None`` for everyone. Raises :class:`InputError`
    for anything else."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("low", "high"):
        return text
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    raise InputError(
        f"CAR-HEMATOTOX must be a score 0-7 or the group low or high, got '{value}'",
        column="hematotox",
        fix="give the score 0-7, or low (score 0-1) or high (score >= 2) (Rejeski et al. 2021)",
    )
