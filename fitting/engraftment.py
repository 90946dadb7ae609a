"""Engraftment metrics with the clinical definitions (DESIGN section 6).

- neutrophil engraftment: the first of 3 consecutive days with ANC > 0.5 G/L (days on
  G-CSF do not count when ``exclude_gcsf`` is set);
- platelet engraftment: the first of 3 consecutive days with platelets > 20 G/L and no
  platelet transfusion in the 7 days before each of them;
- ANC > 1.0 G/L without G-CSF: the first of 3 consecutive days above 1.0 G/L, none on
  G-CSF (the criterion Mullanfiroze et al. 2022 report after a stem-cell boost);
- days of severe neutropenia (ANC < 0.5 G/L) and thrombocytopenia (< 50 and < 20 G/L).

All functions take daily values, arrays whose last axis is days (so a whole posterior
predictive of shape (draws, days) is handled at once). Times are counted from a
reference day (the boost, or CAR-T day 0). A series that never meets a criterion within
follow-up is *censored*: the time is NaN and ``censored`` is True, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ANC_ENGRAFT = 0.5  # G/L
ANC_RECOVERED = 1.0  # G/L
PLT_ENGRAFT = 20.0  # G/L
PLT_SEVERE = 50.0  # G/L
CONSECUTIVE = 3  # days
TRANSFUSION_FREE = 7  # days before each qualifying platelet count


@dataclass(frozen=True)
class Engraftment:
    """Time to a criterion for each series (shape = the leading axes of the input).

    Attributes
    ----------
    day:
        Day of the first qualifying day (days since CAR-T); NaN when censored.
    time:
        ``day - reference``; NaN when censored.
    censored:
        True when the criterion was not met within follow-up.
    """

    day: np.ndarray
    time: np.ndarray
    censored: np.ndarray


def _daily(days: np.ndarray) -> np.ndarray:
    days = np.asarray(days, dtype=float)
    if days.ndim != 1 or days.size == 0:
        raise ValueError("days must be a non-empty 1-D array")
    if np.any(np.diff(days) != 1.0):
        raise ValueError("engraftment criteria need one value per consecutive day")
    return days


def _mask_days(days: np.ndarray, periods: Sequence[tuple[float, float]], before: float = 0.0):
    """True on days inside any [start - before, end) period."""
    mask = np.zeros(days.shape, dtype=bool)
    for start, end in periods:
        mask |= (days >= start) & (days < end + before)
    return mask


def first_sustained(
    days: np.ndarray,
    ok: np.ndarray,
    *,
    reference: float,
    n: int = CONSECUTIVE,
) -> Engraftment:
    """First day from ``reference`` on that starts a run of ``n`` consecutive ``ok`` days.

    ``ok`` has days on its last axis. Days before ``reference`` do not count.
    """
    days = _daily(days)
    ok = np.asarray(ok, dtype=bool) & (days >= reference)
    if ok.shape[-1] < n:
        hit = np.zeros(ok.shape[:-1], dtype=bool)
        idx = np.zeros(ok.shape[:-1], dtype=int)
    else:
        run = np.lib.stride_tricks.sliding_window_view(ok, n, axis=-1).all(axis=-1)
        hit, idx = run.any(axis=-1), run.argmax(axis=-1)
    day = np.where(hit, days[idx], np.nan)
    return Engraftment(day=day, time=day - reference, censored=~hit)


def neutrophil_engraftment(
    days: np.ndarray,
    anc: np.ndarray,
    *,
    reference: float,
    gcsf: Sequence[tuple[float, float]] = (),
    exclude_gcsf: bool = False,
    threshold: float = ANC_ENGRAFT,
) -> Engraftment:
    """First of 3 consecutive days with ANC > ``threshold`` G/L from ``reference``.

    ``gcsf`` lists G-CSF periods [start, end) in days; with ``exclude_gcsf`` days on
    G-CSF do not count.
    """
    days = _daily(days)
    ok = np.asarray(anc, dtype=float) > threshold
    if exclude_gcsf:
        ok &= ~_mask_days(days, gcsf)
    return first_sustained(days, ok, reference=reference)


def anc_recovery_without_gcsf(
    days: np.ndarray, anc: np.ndarray, *, reference: float, gcsf: Sequence[tuple[float, float]] = ()
) -> Engraftment:
    """First of 3 consecutive days with ANC > 1.0 G/L, none of them on G-CSF."""
    return neutrophil_engraftment(
        days, anc, reference=reference, gcsf=gcsf, exclude_gcsf=True, threshold=ANC_RECOVERED
    )


def platelet_engraftment(
    days: np.ndarray,
    platelets: np.ndarray,
    *,
    reference: float,
    transfusions: Sequence[float] = (),
) -> Engraftment:
    """First of 3 consecutive days with platelets > 20 G/L, each without a platelet
    transfusion in the preceding 7 days (a transfusion on the day itself also excludes it).
    """
    days = _daily(days)
    ok = np.asarray(platelets, dtype=float) > PLT_ENGRAFT
    recent = np.zeros(days.shape, dtype=bool)
    for t in transfusions:
        recent |= (days >= t) & (days <= t + TRANSFUSION_FREE)
    return first_sustained(days, ok & ~recent, reference=reference)


def days_below(
    days: np.ndarray,
    values: np.ndarray,
    threshold: float,
    *,
    start: float,
    end: float | None = None,
) -> np.ndarray:
    """Number of days in [start, end] with values below ``threshold`` (severe cytopenia)."""
    days = _daily(days)
    window = (days >= start) & (days <= (days[-1] if end is None else end))
    return (np.asarray(values, dtype=float) < threshold)[..., window].sum(axis=-1)
