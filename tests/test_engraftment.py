"""The one engraftment definition, on hand-made daily series with expectations written
out by hand, and the Kaplan-Meier helpers against lifelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carthema.clinical.endpoints import (
    FROM_CART,
    Engraftment,
    anc_recovery_without_gcsf,
    days_below,
    engraftment_summary,
    first_sustained,
    kaplan_meier,
    km_quantile,
    lineage_engraftment,
    neutrophil_engraftment,
    platelet_engraftment,
    support_from_events,
)

DAYS = np.arange(30.0, 60.0)  # follow-up: days 30..59; a run can start on day 57 at the latest
REF = 34.0


def _series(pairs, default):
    v = np.full(DAYS.size, default, dtype=float)
    for day, value in pairs:
        v[DAYS == day] = value
    return v


def _above(first, last, value, default):
    return _series([(d, value) for d in range(first, last + 1)], default)


# -- the criteria -----------------------------------------------------------------------


def test_first_of_three_consecutive_days_counts_from_the_boost():
    anc = _series([(d, 0.8) for d in range(40, 60)], 0.1)
    anc[DAYS == 41] = 0.4  # a one-day dip resets the run
    res = neutrophil_engraftment(DAYS, anc, reference=REF)
    assert res.day == 42.0 and res.time == 8.0
    assert not res.censored and not res.already


def test_threshold_is_strictly_greater_than():
    anc = _series([(d, 0.5) for d in range(35, 60)], 0.1)
    assert neutrophil_engraftment(DAYS, anc, reference=REF).censored


def test_already_engrafted_has_no_time():
    # Above 0.5 from the boost day through the whole follow-up.
    res = neutrophil_engraftment(DAYS, np.full(DAYS.size, 1.0), reference=REF)
    assert res.already and not res.censored
    assert np.isnan(res.time) and np.isnan(res.day)


def test_already_engrafted_needs_14_days_without_a_fall():
    # Above on days 34..48 (the boost day and the 14 after it), below from day 49: the
    # fall comes after the 14 days, so the draw is already engrafted.
    late = _above(30, 48, 1.0, 0.2)
    assert neutrophil_engraftment(DAYS, late, reference=REF).already
    # Falling on day 48 (boost + 14) is within the 14 days: not already engrafted, and
    # with no qualifying run after the fall, censored.
    early = _above(30, 47, 1.0, 0.2)
    res = neutrophil_engraftment(DAYS, early, reference=REF)
    assert not res.already and res.censored


def test_boost_before_the_nadir_counts_from_the_recovery_after_the_fall():
    # Above on the boost day (34) and days 35-36 (a qualifying run starts on day 34),
    # below from day 37 (+3) to 42 (+8), above from day 43 (+9) on.
    anc = _series([(d, 0.2) for d in range(37, 43)], 0.9)
    res = neutrophil_engraftment(DAYS, anc, reference=REF)
    assert not res.already and not res.censored
    assert res.day == 43.0 and res.time == 9.0
    # The same for platelets: a boost given before the platelet nadir does not score
    # "engrafted at once".
    plt = _series([(d, 8.0) for d in range(37, 43)], 40.0)
    res = platelet_engraftment(DAYS, plt, reference=REF)
    assert not res.already and res.time == 9.0


def test_second_dip_keeps_the_first_engraftment():
    # Below on the boost day, engrafts on day 39 (+5; days 39-43 above), dips on days
    # 44-48, recovers from day 54: the first engraftment counts.
    anc = _series([(d, 0.7) for d in (*range(39, 44), *range(54, 60))], 0.2)
    res = neutrophil_engraftment(DAYS, anc, reference=REF)
    assert res.day == 39.0 and res.time == 5.0 and not res.already
    assert days_below(DAYS, anc, 0.5, start=REF) == (60 - 34) - 5 - 6


def test_gcsf_days_never_count():
    # ANC 0.8 every day, on G-CSF on days 30-39 ([30, 40)): the boost day is supported,
    # nothing falls below 0.5, the first unsupported run starts on day 40: 6 days.
    anc = np.full(DAYS.size, 0.8)
    res = neutrophil_engraftment(DAYS, anc, reference=REF, gcsf=[(30.0, 40.0)])
    assert res.day == 40.0 and res.time == 6.0 and not res.already
    # Without G-CSF the same counts are already engrafted.
    assert neutrophil_engraftment(DAYS, anc, reference=REF).already
    # G-CSF-supported 0.8 until day 39, then off G-CSF the ANC falls (days 40-44) and
    # recovers from day 45: engraftment on day 45 (time 11).
    anc = _series([(d, 0.2) for d in range(40, 45)], 0.8)
    res = neutrophil_engraftment(DAYS, anc, reference=REF, gcsf=[(30.0, 40.0)])
    assert res.day == 45.0 and res.time == 11.0


def test_gcsf_tail_then_fall_is_not_engraftment():
    """A G-CSF-dependent course: supported 0.45 on the boost day (G-CSF until day 34),
    the G-CSF-made cells keep the count at 0.55 on days 35-38, it falls to 0.3 on days
    39-44 and recovers from day 45. The first fall is searched from the first day off
    G-CSF: engraftment on day 45 (time 11), not the tail run from day 35."""
    anc = _series([(REF, 0.45), *((d, 0.55) for d in range(35, 39)),
                   *((d, 0.3) for d in range(39, 45))], 0.8)  # fmt: skip
    res = neutrophil_engraftment(DAYS, anc, reference=REF, gcsf=[(30.0, REF + 1.0)])
    assert res.day == 45.0 and res.time == 11.0
    # The same counts without G-CSF: below on the boost day, so the first run (day 35).
    assert neutrophil_engraftment(DAYS, anc, reference=REF).day == 35.0
    # Off G-CSF and never falling again: the first unsupported run (day 35).
    anc = _series([(REF, 0.45)], 0.8)
    res = neutrophil_engraftment(DAYS, anc, reference=REF, gcsf=[(30.0, REF + 1.0)])
    assert res.day == 35.0 and res.time == 1.0


def test_anc_gt_1_ignores_days_on_gcsf():
    anc = _series([(d, 1.5) for d in range(36, 60)], 0.3)
    res = anc_recovery_without_gcsf(DAYS, anc, reference=REF, gcsf=[(30.0, 45.0)])
    assert res.day == 45.0 and res.time == 11.0
    plain = neutrophil_engraftment(DAYS, anc, reference=REF, threshold=1.0)
    assert plain.day == 36.0


def test_platelets_need_seven_transfusion_free_days():
    plt = _series([(d, 30.0) for d in range(38, 60)], 10.0)
    res = platelet_engraftment(DAYS, plt, reference=REF, transfusions=[40.0])
    # Days 40..47 lie within 7 days of the transfusion; 48 is the first clean day.
    assert res.day == 48.0 and res.time == 14.0
    assert platelet_engraftment(DAYS, plt, reference=REF).day == 38.0


def test_transfusion_supported_count_on_the_boost_day_is_not_already_engrafted():
    # Platelets 50 from day 30 on, after a transfusion on day 30: days 30..37 are
    # supported (the day itself and the 7 after), day 38 is the first qualifying day.
    plt = np.full(DAYS.size, 50.0)
    res = platelet_engraftment(DAYS, plt, reference=REF, transfusions=[30.0])
    assert not res.already and res.day == 38.0 and res.time == 4.0
    # A transfusion on day 27 covers days 27..34: the boost day is still supported.
    res = platelet_engraftment(DAYS, plt, reference=REF, transfusions=[27.0])
    assert res.day == 35.0 and not res.already
    # One on day 26 covers 26..33: the boost day qualifies, nothing falls: already.
    assert platelet_engraftment(DAYS, plt, reference=REF, transfusions=[26.0]).already


def test_from_cart_day_0_a_late_fall_is_timed_not_already_engrafted():
    # Counting from day 30 (as from CAR-T day 0): platelets above 20 until day 49, below
    # on days 50-52, above from 53. With the 14-day rule of a boost this is already
    # engrafted; counted from CAR-T (stable=None) it engrafts on day 53, 23 days on.
    plt = _series([(50, 10.0), (51, 10.0), (52, 10.0)], 40.0)
    assert platelet_engraftment(DAYS, plt, reference=30.0).already
    res = platelet_engraftment(DAYS, plt, reference=30.0, stable=FROM_CART)
    assert not res.already and res.day == 53.0 and res.time == 23.0
    # Never below: already engrafted (never cytopenic).
    flat = np.full(DAYS.size, 40.0)
    assert platelet_engraftment(DAYS, flat, reference=30.0, stable=FROM_CART).already


def test_censored_at_the_horizon():
    res = neutrophil_engraftment(DAYS, np.full(DAYS.size, 0.3), reference=REF)
    assert res.censored and np.isnan(res.time) and not res.already
    # The last day a 3-day run can start is day 57: follow-up 57 - 34 = 23 days.
    assert res.follow_up == 23.0
    # Two qualifying days at the end of follow-up are not enough; three are.
    assert neutrophil_engraftment(DAYS, _above(58, 59, 0.9, 0.3), reference=REF).censored
    assert neutrophil_engraftment(DAYS, _above(57, 59, 0.9, 0.3), reference=REF).time == 23.0


def test_days_before_the_reference_do_not_count():
    anc = _series([(30, 0.9), (31, 0.9), (32, 0.9), (33, 0.9), (35, 0.9), (36, 0.9)], 0.2)
    assert neutrophil_engraftment(DAYS, anc, reference=REF).censored
    # From day 30 a run starts on the reference day, but the ANC falls on day 34 (within
    # 14 days) and never qualifies again: not already engrafted, censored.
    res = neutrophil_engraftment(DAYS, anc, reference=30.0)
    assert not res.already and res.censored


def test_vectorised_over_draws_matches_one_by_one():
    rng = np.random.default_rng(0)
    draws = rng.uniform(0.0, 1.0, size=(80, DAYS.size))
    # Some draws high from the start (already engrafted or dipping later).
    draws[:20] += 0.45
    ok = draws > 0.3
    res = first_sustained(DAYS, ok, reference=REF)
    full = neutrophil_engraftment(DAYS, draws, reference=REF, gcsf=[(50.0, 53.0)])
    assert full.already.any() and (~full.already & ~full.censored).any()
    for i in range(80):
        one = first_sustained(DAYS, ok[i], reference=REF)
        assert (np.isnan(one.day) and np.isnan(res.day[i])) or one.day == res.day[i]
        e = neutrophil_engraftment(DAYS, draws[i], reference=REF, gcsf=[(50.0, 53.0)])
        assert e.already == full.already[i] and e.censored == full.censored[i]
        assert (np.isnan(e.day) and np.isnan(full.day[i])) or e.day == full.day[i]
    counts = days_below(DAYS, draws, 0.5, start=40.0, end=50.0)
    np.testing.assert_array_equal(counts, (draws[:, 10:21] < 0.5).sum(axis=1))


def test_lineage_engraftment_reads_support_from_events():
    events = pd.DataFrame(
        {
            "day": [0.0, 30.0, 33.0],
            "kind": ["cart_infusion", "gcsf", "platelet_transfusion"],
            "duration": [0.0, 10.0, 0.0],
        }
    )
    gcsf, transfusions = support_from_events(events)
    assert gcsf == [(30.0, 40.0)] and transfusions == [33.0]
    res = lineage_engraftment(
        DAYS,
        reference=REF,
        anc=np.full(DAYS.size, 1.5),
        platelets=np.full(DAYS.size, 50.0),
        gcsf=gcsf,
        transfusions=transfusions,
    )
    assert set(res) == {"neutrophil", "anc_gt_1", "platelet"}
    assert res["neutrophil"].time == 6.0 and res["anc_gt_1"].time == 6.0  # off G-CSF day 40
    assert res["platelet"].time == 7.0  # transfusion on 33 covers 33..40, first clean 41


# -- summaries and Kaplan-Meier ---------------------------------------------------------


def _made(times, n_already, n_censored, follow_up=23.0):
    """An Engraftment of hand-picked times (draws engrafting), already-engrafted and
    censored draws."""
    t = np.array([*times, *[np.nan] * (n_already + n_censored)], dtype=float)
    already = np.array([False] * len(times) + [True] * n_already + [False] * n_censored)
    censored = np.array([False] * (len(times) + n_already) + [True] * n_censored)
    return Engraftment(day=t + REF, time=t, censored=censored, already=already,
                       follow_up=follow_up)  # fmt: skip


def test_summary_by_hand():
    # 10 draws: 2 already engrafted; 8 others engraft at 2, 4, 4, 6, 8, 10 days or are
    # censored at 23 (2 draws). Kaplan-Meier over the 8:
    #   t=2: 8 at risk, 1 event  S = 7/8
    #   t=4: 7 at risk, 2 events S = 7/8 * 5/7 = 5/8
    #   t=6: 5 at risk, 1 event  S = 4/8
    #   t=8: 4 at risk, 1 event  S = 3/8
    #   t=10: 3 at risk, 1 event S = 2/8, then 2 censored at 23.
    s = engraftment_summary(_made([2, 4, 4, 6, 8, 10], 2, 2))
    assert s["median_days"] == 6.0  # first S <= 0.5
    assert s["q05"] == 2.0  # first S <= 0.95
    assert s["q95"] is None  # S never reaches 0.05 by the horizon
    assert s["p_within_14d"] == pytest.approx(0.75)
    assert s["p_within_30d"] is None  # 30 days lie past the 23 days of follow-up
    assert s["p_never"] == pytest.approx(0.25)
    assert s["p_already"] == pytest.approx(0.2)
    assert s["n_draws"] == 10
    # Already-engrafted draws are not 0 days: adding more of them leaves the times alone.
    more = engraftment_summary(_made([2, 4, 4, 6, 8, 10], 30, 2))
    assert more["median_days"] == 6.0 and more["p_within_14d"] == pytest.approx(0.75)
    assert more["p_already"] == pytest.approx(30 / 38)


def test_summary_probabilities_compare_exactly_with_a_threshold():
    # 15 of 30 engraft, at days 1..15: the Kaplan-Meier product is 0.5 up to rounding;
    # the summary gives 0.5, so "P >= 0.5" holds as it should.
    s = engraftment_summary(_made(list(range(1, 16)), 0, 15))
    assert s["p_within_30d"] is None and s["p_within_14d"] == pytest.approx(14 / 30)
    s = engraftment_summary(_made(list(range(1, 16)), 0, 15, follow_up=40.0))
    assert s["p_within_30d"] >= 0.5 and s["p_never"] <= 0.5
    assert s["median_days"] == 15.0


def test_summary_with_weights_and_when_all_are_already_engrafted():
    # Weight 3 on the draw engrafting at 2 days, 1 on the one at 10, 0 on the rest:
    # S(2) = 1 - 3/4 = 1/4; S(10) = 0.
    e = _made([2, 10, 5], 1, 0)
    s = engraftment_summary(e, weights=[3.0, 1.0, 0.0, 1.0])
    assert s["median_days"] == 2.0 and s["q95"] == 10.0
    assert s["p_within_14d"] == pytest.approx(1.0) and s["p_never"] == pytest.approx(0.0)
    assert s["p_within_30d"] == pytest.approx(1.0)  # the curve reached 0: known past 23
    assert s["p_already"] == pytest.approx(1.0 / 5.0)
    s = engraftment_summary(_made([], 4, 0))
    assert s["p_already"] == 1.0 and s["median_days"] is None and s["p_never"] is None


def test_summary_of_series_end_to_end():
    # Draw 0 already engrafted, draw 1 before the nadir (time 9), draw 2 censored.
    rows = [
        np.full(DAYS.size, 1.0),
        _series([(d, 0.2) for d in range(37, 43)], 0.9),
        np.full(DAYS.size, 0.2),
    ]
    s = engraftment_summary(neutrophil_engraftment(DAYS, np.array(rows), reference=REF))
    assert s["p_already"] == pytest.approx(1 / 3)
    # Over the 2 others: S(9) = 1/2, censored at 23 with S = 1/2.
    assert s["median_days"] == 9.0 and s["q95"] is None
    assert s["p_within_14d"] == pytest.approx(0.5) and s["p_never"] == pytest.approx(0.5)


def test_kaplan_meier_by_hand_with_ties_and_censoring():
    km = kaplan_meier([3, 3, 5, 5, 7], [True, False, True, True, False])
    # t=3: 5 at risk, 1 event (the censoring at 3 comes after it): S = 4/5;
    # t=5: 3 at risk, 2 events: S = 4/5 * 1/3; t=7: censored.
    np.testing.assert_allclose(km.survival, [0.8, 0.8 / 3, 0.8 / 3])
    np.testing.assert_allclose(km.at_risk, [5, 3, 1])
    assert km.at(2.9) == 1.0 and km.at(3.0) == pytest.approx(0.8)
    assert km_quantile(km, 0.2) == 3.0 and km_quantile(km, 0.5) == 5.0
    assert km_quantile(km, 0.8) is None


@pytest.mark.filterwarnings("ignore:It looks like your weights")
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kaplan_meier_matches_lifelines(seed, weighted):
    from lifelines import KaplanMeierFitter
    from lifelines.utils import qth_survival_time

    rng = np.random.default_rng(seed)
    n = 200
    t_event = rng.exponential(20.0, n)
    t_cens = rng.uniform(5.0, 60.0, n)
    time = np.minimum(t_event, t_cens)
    event = t_event <= t_cens
    if seed == 2:  # daily data: many ties
        time = np.ceil(time)
    # End on a censored draw, as at a horizon. (With non-integer weights and an event as
    # the very last time, lifelines 0.30 leaves S at its previous value where the
    # estimate is 0: one at risk, one event; the hand-made tests cover S reaching 0.)
    time, event = np.append(time, time.max() + 1.0), np.append(event, False)
    w = rng.uniform(0.2, 3.0, n + 1) if weighted else None
    km = kaplan_meier(time, event, w)
    kmf = KaplanMeierFitter().fit(time, event_observed=event, weights=w)
    grid = np.linspace(0.0, time.max(), 97)
    ours = np.array([km.at(g) for g in grid])
    theirs = kmf.survival_function_at_times(grid).to_numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    for p in (0.05, 0.25, 0.5, 0.75, 0.95):
        # lifelines forms the product through logs: where S hits the target exactly
        # (190/200 = 0.95) it may land a rounding error above it; allow for that.
        ref = qth_survival_time(1.0 - p + 1e-9, kmf.survival_function_)
        got = km_quantile(km, p)
        if np.isinf(ref):
            assert got is None
        else:
            assert got == pytest.approx(ref)


def test_sustained_recovery_is_undone_by_a_later_dip():
    """By hand: a biphasic series (up on day 1, down on day 4, up from day 5 to the end)
    recovers for good on day 5, not day 1; a series never below is already recovered; one
    that falls again at the end is not sustained (censored); one that rises on day 9 of 11
    has its 3 days left. G-CSF days do not count as recovered."""
    from carthema.clinical.endpoints import lineage_sustained, sustained_recovery

    days = np.arange(0.0, 12.0)
    x = np.array(
        [
            [0.1, 0.6, 0.7, 0.8, 0.2, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9],
            [1.0] * 12,
            [0.1, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.6, 0.2],
            [0.1] * 9 + [0.6, 0.7, 0.8],
        ]
    )
    r = sustained_recovery(days, x, reference=0.0, threshold=0.5)
    np.testing.assert_array_equal(r.day, [5.0, np.nan, np.nan, 9.0])
    np.testing.assert_array_equal(r.already, [False, True, False, False])
    np.testing.assert_array_equal(r.censored, [False, False, True, False])
    # G-CSF on days 0-6: the first series' recovery counts from day 7, the second's too.
    g = lineage_sustained(days, reference=0.0, anc=x, gcsf=[(0.0, 7.0)])["neutrophil"]
    np.testing.assert_array_equal(g.day, [7.0, 7.0, np.nan, 9.0])
