"""Engraftment metrics on hand-made daily series."""

from __future__ import annotations

import numpy as np

from carthema.fitting.engraftment import (
    anc_recovery_without_gcsf,
    days_below,
    first_sustained,
    neutrophil_engraftment,
    platelet_engraftment,
)

DAYS = np.arange(30.0, 60.0)


def _series(pairs, default):
    v = np.full(DAYS.size, default, dtype=float)
    for day, value in pairs:
        v[DAYS == day] = value
    return v


def test_first_of_three_consecutive_days_counts_from_the_boost():
    anc = _series([(d, 0.8) for d in range(40, 60)], 0.1)
    anc[DAYS == 41] = 0.4  # a one-day dip resets the run
    res = neutrophil_engraftment(DAYS, anc, reference=34.0)
    assert res.day == 42.0 and res.time == 8.0 and not res.censored


def test_threshold_is_strictly_greater_than():
    anc = _series([(d, 0.5) for d in range(35, 60)], 0.1)
    assert neutrophil_engraftment(DAYS, anc, reference=34.0).censored


def test_recovery_then_second_dip_keeps_the_first_engraftment():
    anc = _series([(36, 0.6), (37, 0.7), (38, 0.9), (39, 0.7)], 0.2)
    res = neutrophil_engraftment(DAYS, anc, reference=34.0)
    assert res.day == 36.0
    assert days_below(DAYS, anc, 0.5, start=34.0) == (60 - 34) - 4


def test_never_engrafting_within_follow_up_is_censored_not_missing():
    res = neutrophil_engraftment(DAYS, np.full(DAYS.size, 0.3), reference=34.0)
    assert bool(res.censored) and np.isnan(res.time)
    # Two qualifying days at the end of follow-up are not enough.
    anc = _series([(58, 0.9), (59, 0.9)], 0.3)
    assert neutrophil_engraftment(DAYS, anc, reference=34.0).censored


def test_days_before_the_reference_do_not_count():
    anc = _series([(30, 0.9), (31, 0.9), (32, 0.9), (33, 0.9), (35, 0.9), (36, 0.9)], 0.2)
    assert neutrophil_engraftment(DAYS, anc, reference=34.0).censored
    assert neutrophil_engraftment(DAYS, anc, reference=30.0).day == 30.0


def test_platelets_need_seven_transfusion_free_days():
    plt = _series([(d, 30.0) for d in range(38, 60)], 10.0)
    res = platelet_engraftment(DAYS, plt, reference=34.0, transfusions=[40.0])
    # Days 40..47 lie within 7 days of the transfusion; 48 is the first clean day.
    assert res.day == 48.0
    assert platelet_engraftment(DAYS, plt, reference=34.0).day == 38.0


def test_anc_recovery_without_gcsf_ignores_days_on_gcsf():
    anc = _series([(d, 1.5) for d in range(36, 60)], 0.3)
    res = anc_recovery_without_gcsf(DAYS, anc, reference=34.0, gcsf=[(30.0, 45.0)])
    assert res.day == 45.0
    plain = neutrophil_engraftment(DAYS, anc, reference=34.0, threshold=1.0)
    assert plain.day == 36.0


def test_vectorised_over_draws_matches_one_by_one():
    rng = np.random.default_rng(0)
    draws = rng.uniform(0.0, 1.0, size=(50, DAYS.size))
    ok = draws > 0.3
    res = first_sustained(DAYS, ok, reference=34.0)
    for i in range(50):
        one = first_sustained(DAYS, ok[i], reference=34.0)
        assert (np.isnan(one.day) and np.isnan(res.day[i])) or one.day == res.day[i]
    counts = days_below(DAYS, draws, 0.5, start=40.0, end=50.0)
    np.testing.assert_array_equal(counts, (draws[:, 10:21] < 0.5).sum(axis=1))
