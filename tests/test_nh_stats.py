"""Natural-history statistics on hand-made daily series (expectations written by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carthema.clinical.population.statistics import (
    DEFINITIONS,
    applicable_rows,
    load_calibration_rows,
    per_patient,
    summarise,
    weighted_median,
)

DAYS = np.arange(-2.0, 91.0)


def _series(base: float, lows: dict[tuple[int, int], float], days=DAYS) -> np.ndarray:
    x = np.full(days.size, base)
    for (a, b), v in lows.items():
        x[(days >= a) & (days <= b)] = v
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


LONG = np.arange(-7.0, 181.0)


def _long(base: float, lows: dict[tuple[int, int], float]) -> np.ndarray:
    return _series(base, lows, LONG)


def test_counts_on_fixed_days():
    # ANC 0.7 on days 25-28, 0.4 on days 29-30, 0.9 on day 90, 0.3 on day 180;
    # platelets 30 on day 28, 10 on day 56, 45 on day 90
    anc = _long(3.0, {(25, 28): 0.7, (29, 30): 0.4, (90, 90): 0.9, (180, 180): 0.3})
    plt_ = _long(200.0, {(28, 28): 30.0, (56, 56): 10.0, (90, 90): 45.0})
    v = per_patient(LONG, anc[None], plt_[None])
    want_true = {
        "p_anc_lt_1_d28",
        "p_anc_lt_1_d30",
        "p_anc_lt_0.5_d30",
        "p_anc_lt_1_d90",
        "p_anc_lt_1_d180",
        "p_anc_lt_0.5_d180",
        "p_plt_lt_50_d28",
        "p_plt_lt_20_d56",
        "p_plt_lt_50_d56",
        "p_plt_lt_50_d90",
    }
    day_keys = [k for k in v if k.startswith(("p_anc_lt_", "p_plt_lt_")) and "_d" in k]
    assert len(day_keys) == 2 * 6 + 2 * 4
    for k in day_keys:
        assert bool(v[k][0]) == (k in want_true), k


def test_recovery_day_after_the_nadir():
    one = _long(3.0, {(3, 9): 0.2, (5, 5): 0.05})  # nadir day 5, >= 0.5 from day 10
    # below 0.5 on days 3-20 but for 2 days up (10-11): 2 days up is no recovery
    blip = _long(3.0, {(3, 20): 0.2, (10, 11): 0.8})
    blip[LONG == 15] = 0.1  # nadir day 15 -> recovery day 21
    never_low = _long(3.0, {})
    never_up = _long(0.3, {})
    late_nadir = _long(3.0, {(3, 9): 0.2, (40, 45): 0.01})  # nadir day 40 -> day 46
    anc = np.stack([one, blip, never_low, never_up, late_nadir])
    v = per_patient(LONG, anc, np.full_like(anc, 200.0))
    np.testing.assert_array_equal(v["median_day_anc_recovery"], [10.0, 21.0, np.nan, np.nan, 46.0])
    # the median is over those who recover
    assert summarise(v)["median_day_anc_recovery"] == 21.0


def test_icaht_fractions_and_grade_distributions():
    # grades (early neutrophil): 0, 2 (7 days), 3 (14 days), 4 (31 days)
    anc = np.stack(
        [
            _long(3.0, {}),
            _long(3.0, {(0, 6): 0.3}),
            _long(3.0, {(0, 13): 0.3}),
            _long(3.0, {(0, 30): 0.3, (40, 41): 0.4}),  # late: 2 tests <= 0.5 -> 3
        ]
    )
    plt_ = np.stack(
        [
            _long(200.0, {(5, 5): 15.0}),  # early T-ICAHT 3
            _long(200.0, {}),
            _long(200.0, {(40, 60): 10.0}),  # late T-ICAHT 4
            _long(200.0, {(70, 70): 90.0}),  # late T-ICAHT 1
        ]
    )
    s = summarise(per_patient(LONG, anc, plt_))
    assert s["icaht_early_grade_dist"] == [0.25, 0.0, 0.25, 0.25, 0.25]
    assert s["p_early_icaht_ge3"] == 0.5
    assert s["icaht_late_grade_dist"] == [0.75, 0.0, 0.0, 0.25, 0.0]
    assert s["p_late_icaht_ge3"] == 0.25
    assert s["ticaht_early_grade_dist"] == [0.75, 0.0, 0.0, 0.25, 0.0]
    assert s["p_early_ticaht_ge3"] == 0.25
    assert s["ticaht_late_grade_dist"] == [0.5, 0.25, 0.0, 0.0, 0.25]
    assert s["p_late_ticaht_ge3"] == 0.25


def test_statistics_past_the_last_day_are_left_out():
    days = np.arange(-7.0, 61.0)
    v = per_patient(days, np.ones((2, days.size)), np.full((2, days.size), 200.0))
    assert "p_anc_lt_1_d30" in v and "p_early_icaht_ge3" in v
    assert not {"p_anc_lt_1_d90", "p_plt_lt_50_d90", "p_late_icaht_ge3"} & set(v)
    assert set(per_patient(LONG, np.ones((1, LONG.size)), np.ones((1, LONG.size)))) == set(
        DEFINITIONS
    )


def test_calibration_rows_of_both_files():
    t = load_calibration_rows()
    assert len(t) == 40 + 8
    assert set(t["statistic"]) <= set(DEFINITIONS)
    assert set(t.loc[t["statistic"].str.startswith("median"), "tolerance"]) == {3.0}
    assert set(t.loc[~t["statistic"].str.startswith("median"), "tolerance"]) == {0.10}
    logue = t[(t["file"] == "natural_history_more.csv") & (t["csv_row"] == 9)].iloc[0]
    assert (logue["product"], logue["disease"], logue["statistic"], logue["value"]) == (
        "axi-cel",
        "lbcl",
        "p_anc_lt_1_d180",
        0.119,
    )


@pytest.mark.parametrize(
    ("product", "disease", "hematotox", "rows"),
    [
        # the pooled LBCL simulation: Table 2 pooled rows 2-9 and the pooled ICAHT row 7
        (
            None,
            "lbcl",
            None,
            {("natural_history.csv", r) for r in range(2, 10)} | {("natural_history_more.csv", 7)},
        ),
        (
            "axi-cel",
            "lbcl",
            None,
            {("natural_history.csv", r) for r in range(18, 26)}
            | {("natural_history_more.csv", 8), ("natural_history_more.csv", 9)},
        ),
        (None, "lbcl", "low", {("natural_history.csv", r) for r in range(34, 42)}),
        (
            "tisa-cel",
            "b-all",
            None,
            {("natural_history_more.csv", 2), ("natural_history_more.csv", 3)},
        ),
        ("brexu-cel", "mcl", None, {("natural_history_more.csv", 6)}),
        ("liso-cel", "lbcl", None, set()),
        (None, "lbcl", 3, set()),
        ("axi-cel", "lbcl", "high", set()),
    ],
)
def test_applicable_rows(product, disease, hematotox, rows):
    t = applicable_rows(product, disease, hematotox)
    assert set(zip(t["file"], t["csv_row"], strict=True)) == rows


# The project's calibration folder, ../shared/calibration of the checkout (or of a folder
# above it, for a worktree); absent from an installed copy.
SHARED = next(
    (
        p / "shared" / "calibration"
        for p in Path(__file__).resolve().parents[1:4]
        if (p / "shared" / "calibration").is_dir()
    ),
    Path("/nonexistent"),
)


@pytest.mark.skipif(not SHARED.is_dir(), reason="the project's shared calibration folder")
@pytest.mark.parametrize("name", ["natural_history.csv", "natural_history_more.csv"])
def test_bundled_copies_equal_the_shared_files(name):
    bundled = Path(__file__).resolve().parents[1] / "data" / "calibration" / name
    assert bundled.read_bytes() == (SHARED / name).read_bytes()
