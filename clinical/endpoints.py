"""Engraftment with the clinical definitions (DESIGN section 6), one implementation for
every path: the boost prediction (:func:`carthema.clinical.plans.predict_plan`), the window
scan, the no-boost baseline and the virtual trial all call :func:`lineage_engraftment`
and :func:`engraftment_summary`.

Criteria (daily values; times counted from a *reference* day, the boost or CAR-T day 0)
---------------------------------------------------------------------------------------
- neutrophil engraftment: the first of 3 consecutive days with ANC > 0.5 G/L, none of
  them on G-CSF (days on G-CSF never count: the count is supported, not the patient's
  own);
- ANC > 1.0 G/L without G-CSF (``anc_gt_1``): the same with 1.0 G/L (the criterion
  Mullanfiroze et al. 2022 report after a stem-cell boost);
- platelet engraftment: the first of 3 consecutive days with platelets > 20 G/L, each with
  no platelet transfusion in the 7 days before it (the day of a transfusion and the 7
  days after it do not count);
- days of severe neutropenia (ANC < 0.5 G/L) and thrombocytopenia (< 50 and < 20 G/L):
  :func:`days_below`.

A day *qualifies* when the count is above the threshold and unsupported; a day is *below*
when the count is not above the threshold (``value <= threshold``), supported or not.

Already engrafted, dips and the nadir
-------------------------------------
- A series is **already engrafted** when a qualifying 3-day run starts on the reference
  day itself AND no day in the 14 days after it (reference + 1 ... reference + 14) is
  below the threshold. Such a series has no time to engraftment (``time`` NaN,
  ``already`` True): summaries count it in ``p_already`` and never as 0 days.
- Otherwise engraftment is the first qualifying run that starts after the series' first
  day below the threshold on or after the reference day. For a series below the
  threshold on the reference day this is simply the first qualifying run from the
  reference day on, and a later second dip does not undo it (the first engraftment
  counts). For a series above the threshold on the reference day that then falls below
  it (a boost given before the nadir, or a second dip within 14 days), a run before that
  fall is the tail of the earlier course, not engraftment: engraftment is the first run
  after the fall. This is what keeps "a boost before the platelet nadir" from scoring
  100 %. Example: above on the reference day and the next two, below on day +3, above
  from day +9 on: engraftment day +9, time 9.
- On G-CSF on the reference day, the supported count says nothing about the patient's
  own: the first fall is searched from the first day off G-CSF. The cells made under
  G-CSF take the post-mitotic transit (days) to leave the marrow, so a supported count
  just above or below the threshold can stay above it for a few days after the stop and
  then fall (a G-CSF-dependent patient): engraftment is the first run after that fall,
  and the few days of the G-CSF tail are not engraftment.
- A series that is never below the threshold from the reference day on, but has no
  qualifying run on the reference day (it is supported by G-CSF or a recent transfusion),
  engrafts on its first qualifying run.
- Counted from CAR-T day 0 instead of a boost (the no-boost baseline, the virtual trial),
  the counts are usually still normal on day 0 and the nadir after lymphodepletion may
  come later than 14 days (a late platelet fall): there "already engrafted" means never
  below the threshold during follow-up (``stable=None``, :data:`FROM_CART`), so every
  series that becomes cytopenic is timed from its first fall. All else is the same.
- A series without a qualifying run by the end of follow-up is *censored* (``time`` NaN,
  ``censored`` True) at ``follow_up``: the last day on which a 3-day run can still start,
  minus the reference. When follow-up is shorter than 14 days after the reference, the
  "no fall" check of already engrafted uses the days there are.

Summaries
---------
:func:`engraftment_summary` estimates the distribution of the time to engraftment with a
(weighted) Kaplan-Meier curve over all series that are not already engrafted, censored
at the end of follow-up: ``median_days``, ``q05``, ``q95`` (None when the curve never
reaches the quantile, i.e. it lies beyond the horizon), ``p_within_14d``,
``p_within_30d``, ``p_within_60d``, ``p_never`` (not engrafted by the horizon), all among
series not already engrafted; ``p_already`` (fraction of all series already engrafted) and
``n_draws``.

All functions take arrays whose last axis is days, so a whole posterior predictive of
shape (draws, days) is handled at once.

It stays one module (about 550 lines, most of them this docstring and the definitions'
own): it is the one home of every engraftment definition and threshold, which the
summaries (Kaplan-Meier over the same :class:`Engraftment` records) and every caller
read together; split, a threshold and the rule that uses it would live apart.
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
STABLE = 14  # days after a boost without a fall, for "already engrafted"
#: ``stable`` when counting from CAR-T day 0 (no-boost baseline, virtual trial): the
#: whole follow-up, so "already engrafted" means never below the threshold.
FROM_CART = None
WITHIN = (14, 30, 60)  # days: the p_within_<d>d entries of a summary


@dataclass(frozen=True)
class Engraftment:
    """Time to a criterion for each series (shape = the leading axes of the input).

    Attributes
    ----------
    day:
        Day of the first qualifying day (days since CAR-T); NaN when censored or already
        engrafted.
    time:
        ``day - reference``; NaN when censored or already engrafted.
    censored:
        True when the criterion was not met within follow-up.
    already:
        True when the series was already engrafted on the reference day (see the module
        docstring); such a series has no time. The reference day is the first day of the
        series on or after ``reference``.
    follow_up:
        The censoring time (days from the reference): the last day a qualifying run can
        start within the series, minus the reference.
    """

    day: np.ndarray
    time: np.ndarray
    censored: np.ndarray
    already: np.ndarray
    follow_up: float


def _daily(days: np.ndarray) -> np.ndarray:
    days = np.asarray(days, dtype=float)
    if days.ndim != 1 or days.size == 0:
        raise ValueError("days must be a non-empty 1-D array")
    if np.any(np.diff(days) != 1.0):
        raise ValueError("engraftment criteria need one value per consecutive day")
    return days


def _reference_index(days: np.ndarray, reference: float, n: int) -> int:
    """Index of the first day on or after ``reference``."""
    i0 = int(np.searchsorted(days, reference, side="left"))
    if i0 + n > days.size:
        raise ValueError(f"follow-up ends before {n} days from the reference day {reference:g}")
    return i0


def gcsf_mask(days: np.ndarray, gcsf: Sequence[tuple[float, float]]) -> np.ndarray:
    """True on days inside any G-CSF period [start, end)."""
    days = np.asarray(days, dtype=float)
    mask = np.zeros(days.shape, dtype=bool)
    for start, end in gcsf:
        mask |= (days >= start) & (days < end)
    return mask


def transfusion_mask(days: np.ndarray, transfusions: Sequence[float]) -> np.ndarray:
    """True on the day of each platelet transfusion and the :data:`TRANSFUSION_FREE` days
    after it (days with a transfusion in the 7 days before)."""
    days = np.asarray(days, dtype=float)
    mask = np.zeros(days.shape, dtype=bool)
    for t in transfusions:
        mask |= (days >= t) & (days <= t + TRANSFUSION_FREE)
    return mask


def first_sustained(
    days: np.ndarray,
    ok: np.ndarray,
    *,
    reference: float,
    n: int = CONSECUTIVE,
) -> Engraftment:
    """First day from ``reference`` on that starts a run of ``n`` consecutive ``ok`` days
    (a plain search: no "already engrafted", no nadir rule; see :func:`engraftment`).

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
    return Engraftment(
        day=day,
        time=day - reference,
        censored=~hit,
        already=np.zeros(hit.shape, dtype=bool),
        follow_up=float(days[-1] - (n - 1) - reference),
    )


def engraftment(
    days: np.ndarray,
    values: np.ndarray,
    *,
    reference: float,
    threshold: float,
    excluded: np.ndarray | None = None,
    n: int = CONSECUTIVE,
    stable: int | None = STABLE,
    own_from_end_of: np.ndarray | None = None,
) -> Engraftment:
    """Engraftment of ``values`` (last axis: days) above ``threshold`` from ``reference``,
    with the "already engrafted" and nadir rules of the module docstring.

    ``excluded`` (days axis) marks days that cannot qualify (supported counts).
    ``own_from_end_of`` (days axis, G-CSF days): when the reference day is one of them,
    the first fall is searched from the first day after them (see the module docstring).
    ``stable``: days after the reference without a fall for "already engrafted"
    (:data:`STABLE`; None: the whole follow-up, see :data:`FROM_CART`).
    """
    days = _daily(days)
    x = np.asarray(values, dtype=float)
    if x.shape[-1] != days.size:
        raise ValueError("values must have one entry per day on their last axis")
    i0 = _reference_index(days, reference, n)
    above = x > threshold
    below = ~above
    ok = above if excluded is None else above & ~np.asarray(excluded, dtype=bool)
    run = np.lib.stride_tricks.sliding_window_view(ok, n, axis=-1).all(axis=-1)
    n_starts = run.shape[-1]
    hi = None if stable is None else i0 + stable + 1
    already = run[..., i0] & ~below[..., i0:hi].any(axis=-1)
    # First day below the threshold on or after the reference (none: the reference day);
    # on support at the reference, on or after the first day off it.
    start = np.full(x.shape[:-1], i0)
    if own_from_end_of is not None:
        sup = np.broadcast_to(np.asarray(own_from_end_of, dtype=bool), x.shape)[..., i0:]
        off = ~sup
        start = np.where(sup[..., 0] & off.any(axis=-1), i0 + off.argmax(axis=-1), i0)
    k_all = np.arange(days.size)
    after = below & (k_all >= start[..., None])
    first_below = np.where(after.any(axis=-1), after.argmax(axis=-1), start)
    k = np.arange(n_starts)
    # A run cannot start on a day below the threshold, so "after the first fall" and
    # "from the first fall on" are the same.
    cand = run & (k >= first_below[..., None])
    hit = cand.any(axis=-1) & ~already
    idx = cand.argmax(axis=-1)
    day = np.where(hit, days[idx], np.nan)
    return Engraftment(
        day=day,
        time=day - reference,
        censored=~hit & ~already,
        already=already,
        follow_up=float(days[n_starts - 1] - reference),
    )


def neutrophil_engraftment(
    days: np.ndarray,
    anc: np.ndarray,
    *,
    reference: float,
    gcsf: Sequence[tuple[float, float]] = (),
    threshold: float = ANC_ENGRAFT,
    stable: int | None = STABLE,
) -> Engraftment:
    """First of 3 consecutive days with ANC > ``threshold`` G/L, none on G-CSF (``gcsf``:
    periods [start, end) in days), with the rules of the module docstring."""
    days = _daily(days)
    on_gcsf = gcsf_mask(days, gcsf)
    return engraftment(
        days,
        anc,
        reference=reference,
        threshold=threshold,
        excluded=on_gcsf,
        stable=stable,
        own_from_end_of=on_gcsf,
    )


def anc_recovery_without_gcsf(
    days: np.ndarray,
    anc: np.ndarray,
    *,
    reference: float,
    gcsf: Sequence[tuple[float, float]] = (),
    stable: int | None = STABLE,
) -> Engraftment:
    """First of 3 consecutive days with ANC > 1.0 G/L, none of them on G-CSF."""
    return neutrophil_engraftment(
        days, anc, reference=reference, gcsf=gcsf, threshold=ANC_RECOVERED, stable=stable
    )


def platelet_engraftment(
    days: np.ndarray,
    platelets: np.ndarray,
    *,
    reference: float,
    transfusions: Sequence[float] = (),
    stable: int | None = STABLE,
) -> Engraftment:
    """First of 3 consecutive days with platelets > 20 G/L, each without a platelet
    transfusion in the preceding 7 days (a transfusion on the day itself also excludes
    it), with the rules of the module docstring."""
    days = _daily(days)
    return engraftment(
        days,
        platelets,
        reference=reference,
        threshold=PLT_ENGRAFT,
        excluded=transfusion_mask(days, transfusions),
        stable=stable,
    )


def support_from_events(events) -> tuple[list[tuple[float, float]], list[float]]:
    """G-CSF periods [day, day + duration) and platelet-transfusion days of an events
    table (columns ``day``, ``kind``, ``duration``)."""
    g = events[events["kind"] == "gcsf"]
    gcsf = [(float(d), float(d) + float(n)) for d, n in zip(g["day"], g["duration"], strict=True)]
    transfusions = [float(d) for d in events.loc[events["kind"] == "platelet_transfusion", "day"]]
    return gcsf, transfusions


def lineage_engraftment(
    days: np.ndarray,
    *,
    reference: float,
    anc: np.ndarray | None = None,
    platelets: np.ndarray | None = None,
    gcsf: Sequence[tuple[float, float]] = (),
    transfusions: Sequence[float] = (),
    stable: int | None = STABLE,
) -> dict[str, Engraftment]:
    """The three clinical criteria at once: "neutrophil" and "anc_gt_1" (when ``anc`` is
    given) and "platelet" (when ``platelets`` is given). Every path that reports
    engraftment goes through here: with ``stable`` = :data:`STABLE` from a boost day,
    with :data:`FROM_CART` (None) from CAR-T day 0."""
    out: dict[str, Engraftment] = {}
    if anc is not None:
        kw = {"reference": reference, "gcsf": gcsf, "stable": stable}
        out["neutrophil"] = neutrophil_engraftment(days, anc, **kw)
        out["anc_gt_1"] = anc_recovery_without_gcsf(days, anc, **kw)
    if platelets is not None:
        out["platelet"] = platelet_engraftment(
            days, platelets, reference=reference, transfusions=transfusions, stable=stable
        )
    return out


def sustained_recovery(
    days: np.ndarray,
    values: np.ndarray,
    *,
    reference: float,
    threshold: float,
    excluded: np.ndarray | None = None,
    n: int = CONSECUTIVE,
) -> Engraftment:
    """Sustained recovery of ``values`` (last axis: days) above ``threshold`` from
    ``reference``: the first day from which every day to the end of follow-up is above
    it (and not ``excluded``: supported counts), at least ``n`` days before the end.
    Unlike :func:`engraftment` (the first qualifying run), a later fall undoes it: a
    biphasic course that recovers, dips and recovers again is sustained from the second
    recovery. Never below (and never supported) from the reference on: ``already``; no
    such run by the end: censored (not sustained by the horizon)."""
    days = _daily(days)
    x = np.asarray(values, dtype=float)
    if x.shape[-1] != days.size:
        raise ValueError("values must have one entry per day on their last axis")
    i0 = _reference_index(days, reference, n)
    ok = x > threshold
    if excluded is not None:
        ok = ok & ~np.asarray(excluded, dtype=bool)
    bad = ~ok[..., i0:]
    m = bad.shape[-1]
    any_bad = bad.any(axis=-1)
    start = np.where(any_bad, m - np.argmax(bad[..., ::-1], axis=-1), 0)  # after the last bad
    hit = any_bad & (m - start >= n)
    idx = np.minimum(i0 + start, days.size - 1)
    day = np.where(hit, days[idx], np.nan)
    return Engraftment(
        day=day,
        time=day - reference,
        censored=~hit & any_bad,
        already=~any_bad,
        follow_up=float(days[-1] - (n - 1) - reference),
    )


def lineage_sustained(
    days: np.ndarray,
    *,
    reference: float,
    anc: np.ndarray | None = None,
    platelets: np.ndarray | None = None,
    gcsf: Sequence[tuple[float, float]] = (),
    transfusions: Sequence[float] = (),
) -> dict[str, Engraftment]:
    """:func:`sustained_recovery` of "neutrophil" (ANC > 0.5 G/L off G-CSF) and
    "platelet" (> 20 G/L, no transfusion in the 7 days before), the thresholds and
    support rules of :func:`lineage_engraftment`."""
    days = _daily(days)
    out: dict[str, Engraftment] = {}
    if anc is not None:
        out["neutrophil"] = sustained_recovery(
            days, anc, reference=reference, threshold=ANC_ENGRAFT, excluded=gcsf_mask(days, gcsf)
        )
    if platelets is not None:
        out["platelet"] = sustained_recovery(
            days, platelets, reference=reference, threshold=PLT_ENGRAFT,
            excluded=transfusion_mask(days, transfusions),
        )  # fmt: skip
    return out


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


# --------------------------------------------------------------------------------------
# Kaplan-Meier


@dataclass(frozen=True)
class KaplanMeier:
    """A (weighted) Kaplan-Meier curve: ``survival[i]`` = S(t) for ``time[i] <= t <
    time[i + 1]`` (S = 1 before ``time[0]``); ``time`` holds every distinct time, event
    or censoring."""

    time: np.ndarray
    survival: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray

    def at(self, t: float) -> float:
        """S(t), right-continuous (events at ``t`` included)."""
        i = np.searchsorted(self.time, t, side="right") - 1
        return 1.0 if i < 0 else float(self.survival[i])


def kaplan_meier(
    time: np.ndarray, event: np.ndarray, weights: np.ndarray | None = None
) -> KaplanMeier:
    """Kaplan-Meier estimate of survival (here: not yet engrafted) from times, event
    indicators (False: censored at that time) and optional non-negative weights.

    At each distinct time t: S(t) = S(t-) (1 - d(t) / n(t)), with d the weight of events
    at t and n the weight of series with time >= t (events before censorings at ties).
    """
    time = np.asarray(time, dtype=float).ravel()
    event = np.asarray(event, dtype=bool).ravel()
    w = np.ones(time.size) if weights is None else np.asarray(weights, dtype=float).ravel()
    if not (time.size == event.size == w.size):
        raise ValueError("time, event and weights must have the same length")
    if np.any(~np.isfinite(time)) or np.any(w < 0) or np.any(~np.isfinite(w)):
        raise ValueError("times must be finite and weights finite and non-negative")
    ut, inv = np.unique(time, return_inverse=True)
    d = np.bincount(inv, weights=w * event, minlength=ut.size)
    total = np.bincount(inv, weights=w, minlength=ut.size)
    n = total[::-1].cumsum()[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where(n > 0, 1.0 - d / n, 1.0)
    return KaplanMeier(time=ut, survival=np.cumprod(factor), at_risk=n, events=d)


def km_quantile(km: KaplanMeier, p: float) -> float | None:
    """The ``p`` quantile of the time to event: the first time with S(t) <= 1 - p (as
    lifelines' ``percentile(1 - p)``); None when the curve never gets there (the quantile
    lies beyond the last time, e.g. the horizon)."""
    target = 1.0 - p + 1e-12
    hit = np.flatnonzero(km.survival <= target)
    return float(km.time[hit[0]]) if hit.size else None


def _open_beyond(km: KaplanMeier, t: float) -> bool:
    """True when S(t) is unknown: t lies past the last time and some series were still
    at risk (censored) there."""
    return km.time.size == 0 or (t > km.time[-1] and km.survival[-1] > 0)


def engraftment_summary(
    res: Engraftment,
    *,
    weights: np.ndarray | None = None,
    within: Sequence[int] = WITHIN,
) -> dict:
    """Summary of one criterion over draws (flattened leading axes) with optional weights.

    ``p_already`` and ``n_draws`` are over all draws; everything else comes from the
    Kaplan-Meier curve over the draws not already engrafted, censored at the end of
    follow-up: ``median_days``, ``q05``, ``q95`` (None beyond the horizon),
    ``p_within_<d>d`` (None when ``d`` lies past the follow-up), ``p_never``. With no
    draw left (all already engrafted), these are None.
    """
    already = np.asarray(res.already, dtype=bool).ravel()
    time = np.asarray(res.time, dtype=float).ravel()
    censored = np.asarray(res.censored, dtype=bool).ravel()
    w = np.ones(already.size) if weights is None else np.asarray(weights, dtype=float).ravel()
    if w.size != already.size:
        raise ValueError("one weight per draw")
    total = float(w.sum())
    out: dict = {"median_days": None, "q05": None, "q95": None}
    for d in within:
        out[f"p_within_{d}d"] = None
    out["p_never"] = None
    out["p_already"] = _prob(w[already].sum() / total) if total > 0 else None
    out["n_draws"] = int(already.size)
    keep = ~already & (w > 0)
    if not keep.any():
        return out
    t = np.where(censored, res.follow_up, time)[keep]
    km = kaplan_meier(t, ~censored[keep], w[keep])
    out["median_days"] = km_quantile(km, 0.5)
    out["q05"] = km_quantile(km, 0.05)
    out["q95"] = km_quantile(km, 0.95)
    for d in within:
        out[f"p_within_{d}d"] = None if _open_beyond(km, d) else _prob(1.0 - km.at(d))
    out["p_never"] = _prob(km.at(float(km.time[-1])))
    return out


def _prob(p: float) -> float:
    """A probability without the rounding of the Kaplan-Meier product (15 of 30 is 0.5,
    not 0.49999999999999994, when compared with a threshold)."""
    return round(float(p), 12)


# ---- thresholds and horizons of the window scan and the plan signals ----------------
# (used by :mod:`carthema.clinical.plans`, its text and its plot)
#: Donor myeloid chimerism (%) below which a new donor's graft counts as lost (rejected
#: or failed) 60 days after the boost (assumption: below the usual 5 % of mixed
#: chimerism that STR assays report reliably).
GRAFT_LOST = 5.0
#: Predicted CAR-T level below which persistence is considered lost (copies/ug DNA),
#: the consolidative-transplant signal of Jiang et al. 2020.
CART_LOSS = 30.0
#: B-cell count taken as B-cell recovery (cells/uL; about 10% of normal).
B_RECOVERY = 25.0
#: Reviews recommend a consolidative transplant within about 90 days of CAR-T.
TRANSPLANT_DAY_LIMIT = 90.0
#: Follow-up of the transplant signals (days since CAR-T).
SIGNALS_HORIZON = 180.0
#: Share of draws already recovered (own neutrophils) on the boost day at or above which the
#: day is reported as "already recovered" and left out of the window: the window needs
#: most draws (more than half) not already recovered.
ALREADY_RECOVERED = 0.5
#: Days after each candidate boost day over which engraftment and days saved are counted.
FOLLOW_UP = 120.0
#: Lineages of the counterfactual: engraftment key, observable, severe-cytopenia
#: threshold (G/L) and the JSON key of the days a boost saves below it.
DAYS_SAVED = (
    ("neutrophil", "anc", ANC_ENGRAFT, "neutropenia_days_saved"),
    ("platelet", "platelets", PLT_ENGRAFT, "thrombocytopenia_days_saved"),
)
