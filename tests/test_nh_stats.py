"""Natural-history statistics on hand-made daily series (expectations written by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from carthema.clinical.population.statistics import per_patient, summarise, weighted_median

DAYS = np.arange(-2.0, 91.0)


def _series(base: float, lows: dict[tuple[int, int], float]) -> np.ndarray:
    x = np.full(DAYS.size, base)
    for (a, b), v in lows.items():
        x[(DAYS >= a) & (DAYS <= b)] = v
    return x


def test_biphasic_course_counts_each_definition():
    # ANC < 0.5 on days 3-10 (8 days, 0.05 on days 5-8), recovers 11-24 (> 0.5 for 14
    # days), dips again 25-29 (0.3); platelets 40 on days 10-20.
    anc = _series(3.0, {(3, 10): 0.3, (5, 8): 0.05, (25, 29): 0.3})
    plt_ = _series(200.0, {(10, 20): 40.0})
    v = per_patient(DAYS, anc[None], plt_[None])
    assert v["p_anc_le_0.5"][0] and v["p_anc_le_0.1"][0]
    assert v["median_days_anc_lt_0.5_d0_60"][0] == 8 + 5
    assert v["p_anc_le_0.5_ge_7d"][0] and not v["p_anc_le_0.1_ge_7d"][0]  # 4 days <= 0.1
    assert not v["p_severe_neutropenia_ge_14d"][0]  # 13 days
    assert v["p_anc_le_1_after_d21"][0]
    assert v["p_biphasic"][0]
    assert v["median_day_anc_nadir"][0] == 5.0
    assert v["p_plt_lt_50"][0] and not v["p_plt_lt_20"][0]
    assert not v["p_anc_lt_1_d30"][0] and not v["p_anc_lt_0.5_d42"][0]
    assert not v["p_plt_lt_50_d30"][0]


def test_monophasic_and_never_neutropenic():
    one = _series(3.0, {(3, 9): 0.2})  # one dip only
    none = _series(3.0, {})
    flat_low = _series(0.4, {})  # below 0.5 throughout: no recovery, so not biphasic
    v = per_patient(DAYS, np.stack([one, none, flat_low]), np.full((3, DAYS.size), 200.0))
    np.testing.assert_array_equal(v["p_biphasic"], [False, False, False])
    np.testing.assert_array_equal(v["median_days_anc_lt_0.5_d0_60"], [7, 0, 61])
    np.testing.assert_array_equal(v["p_anc_lt_0.5_d42"], [False, False, True])


def test_recovery_of_two_days_is_not_a_recovery():
    # Above 0.5 for only two days between dips: still one episode, not biphasic.
    anc = _series(3.0, {(3, 9): 0.2, (12, 20): 0.2})
    anc[(DAYS == 10) | (DAYS == 11)] = 0.8
    v = per_patient(DAYS, anc[None], np.full((1, DAYS.size), 200.0))
    assert not v["p_biphasic"][0]


def test_summaries_and_weighted_median():
    v = {
        "p_anc_le_0.5": np.array([True, False, True, True]),
        "median_day_anc_nadir": np.array([4.0, 6.0, 8.0, 30.0]),
    }
    s = summarise(v)
    assert s["p_anc_le_0.5"] == 0.75 and s["median_day_anc_nadir"] == 7.0
    w = np.array([0.1, 0.1, 0.1, 0.7])
    assert summarise(v, w)["p_anc_le_0.5"] == pytest.approx(0.9)
    assert weighted_median(v["median_day_anc_nadir"], w) == 30.0
    assert weighted_median(np.array([1.0, 2.0, 3.0]), np.ones(3)) == 2.0


def test_short_series_are_refused():
    with pytest.raises(ValueError, match="days 0-60"):
        per_patient(np.arange(0.0, 30.0), np.ones((1, 30)), np.ones((1, 30)))
