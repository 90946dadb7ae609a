"""Plan prediction over parameter draws and the engraftment window."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from carthema import get_model, simulate, typical_course, with_boost
from carthema.fitting.engraftment import neutrophil_engraftment
from carthema.fitting.plans import (
    Plan,
    plain_summary,
    predict_plan,
    scan_window,
    window_decision,
)
from carthema.models.scenarios import POOR_RESERVE
from carthema.models.virtual import draw_parameters


@pytest.fixture(scope="module")
def setup():
    m = get_model("full")
    draws = draw_parameters(m, 12, np.random.default_rng(5))
    # Poor marrow reserve so that a boost matters.
    for name, value in POOR_RESERVE.items():
        draws[:, m.index("param", name)] = value
    return m, draws


def _anc(m, p, events, days):
    traj = simulate(
        events,
        params=dict(zip(m.param_names, p, strict=True)),
        days=days,
        method="auto",
        rtol=1e-7,
        atol=1e-9,
    )
    return traj.t, traj["anc"]


def test_plan_prediction_matches_simulating_each_draw(setup):
    """The summary equals the one written out from per-draw simulations: all draws share
    one censoring time, so the Kaplan-Meier estimates are plain fractions of the draws
    not already engrafted and the median is an order statistic."""
    m, draws = setup
    res = predict_plan(m, draws, typical_course(), Plan(day=40.0, dose=5e6), horizon=160.0)
    ev = with_boost(typical_course(), 40.0, 5e6, source="allogeneic", cd34_selected=True)
    per = [neutrophil_engraftment(*_anc(m, p, ev, 160), reference=40.0) for p in draws]
    already = np.array([bool(e.already) for e in per])
    censored = np.array([bool(e.censored) for e in per])
    times = np.array([float(e.time) for e in per])[~already]
    n = (~already).sum()
    assert res["neutrophil"]["p_already"] == pytest.approx(already.mean())
    assert res["neutrophil"]["n_draws"] == len(draws)
    assert res["neutrophil"]["p_within_30d"] == pytest.approx(np.sum(times <= 30) / n)
    assert res["neutrophil"]["p_never"] == pytest.approx(censored.sum() / n)
    ordered = np.sort(np.where(np.isnan(times), np.inf, times))
    median = ordered[math.ceil(0.5 * n) - 1]
    want = None if np.isinf(median) else median
    assert res["neutrophil"]["median_days"] == want


def test_boost_beats_no_boost_for_poor_reserve(setup):
    m, draws = setup
    none = predict_plan(m, draws, typical_course(), Plan(), reference=40.0, horizon=160.0)
    boost = predict_plan(m, draws, typical_course(), Plan(day=40.0, dose=5e6), horizon=160.0)
    assert boost["neutrophil"]["p_within_30d"] > none["neutrophil"]["p_within_30d"]
    assert boost["days_anc_lt_0.5"]["median"] < none["days_anc_lt_0.5"]["median"]
    assert "chimerism_day30" in boost and "chimerism_day30" not in none


def _day(day, p, cart, saved_n, saved_p, already):
    return {
        "boost_day": day,
        "neutrophil_p_within_30d": p,
        "cart_at_reference_median": cart,
        "neutropenia_days_saved_median": saved_n,
        "thrombocytopenia_days_saved_median": saved_p,
        "neutrophil_p_already": already,
        "no_boost_neutrophil_p_within_30d": 0.1,
    }


def test_window_decision_by_hand():
    """Each day fails (or passes) one criterion, chosen by hand; threshold 0.8, CAR-T
    limit 1000."""
    table = pd.DataFrame(
        [
            _day(20, 0.90, 5000.0, 5.0, 2.0, 0.0),  # CAR-T too high
            _day(30, 0.90, 100.0, 5.0, 0.0, 0.1),  # in: saves neutropenia days
            _day(40, 0.80, 10.0, 0.0, 3.0, 0.2),  # in: p exactly at threshold, platelets
            _day(50, 0.70, 10.0, 4.0, 4.0, 0.3),  # probability too low
            _day(60, 0.95, 10.0, 0.0, 0.0, 0.4),  # saves nothing
            _day(70, 0.95, 10.0, 2.0, 1.0, 0.6),  # most draws already engrafted
            _day(80, 0.90, 10.0, 1.0, 1.0, 0.5),  # half already: not "most not already"
            _day(90, None, 10.0, 3.0, 3.0, 0.0),  # probability undefined (all censored)
            _day(100, 0.90, 10.0, np.nan, 1.0, 0.1),  # in: neutropenia unknown, platelets
        ]
    )
    out, summary = window_decision(table, threshold=0.8, cart_limit=1000.0)
    assert out["in_window"].tolist() == [False, True, True, False, False, False, False, False, True]
    assert out["boost_helps"].tolist() == [True, True, True, True, False, True, True, True, True]
    assert out["already_recovered"].tolist() == [False] * 5 + [True, True, False, False]
    assert summary["window_first_day"] == 30.0 and summary["window_last_day"] == 100.0
    assert summary["n_days_in_window"] == 3
    assert summary["recommended_day"] == 30.0
    assert summary["recommended_p_engraftment"] == 0.9
    assert summary["recommended_neutropenia_days_saved_median"] == 5.0
    assert summary["recommended_no_boost_p_engraftment"] == 0.1
    assert summary["days_no_benefit"] == [60.0]
    assert summary["days_over_cart_limit"] == [20.0]
    assert summary["first_day_already_recovered"] == 70.0
    text = " ".join(plain_summary(summary))
    assert "between day 30 and day 100" in text
    assert "saves a median of 5 days with ANC < 0.5 G/L" in text
    assert "without a boost, the same draws: 10%" in text
    assert "day 60 saves no days" in text and "day 20 the predicted CAR-T" in text


def test_window_decision_with_no_day_in_the_window():
    table = pd.DataFrame([_day(30, 0.5, 10.0, 5.0, 5.0, 0.0), _day(40, 0.9, 10.0, 0.0, 0.0, 0.0)])
    out, summary = window_decision(table, threshold=0.8)
    assert not out["in_window"].any()
    assert summary["window_first_day"] is None and summary["recommended_day"] is None
    assert "No boost day" in " ".join(plain_summary(summary))


def test_scan_window_compares_with_the_same_draws_without_a_boost(setup):
    """The days saved and the no-boost probability in the table equal those computed from
    one simulation per draw with and without the boost."""
    m, draws = setup
    day = 40.0
    table, summary = scan_window(
        m, draws, typical_course(), [7.0, day], dose=5e6, threshold=0.4, cart_limit=500.0
    )
    ev_boost = with_boost(typical_course(), day, 5e6, source="allogeneic", cd34_selected=True)
    saved, none_30 = [], []
    for p in draws:
        t, with_ = _anc(m, p, ev_boost, day + 120)
        t0, without = _anc(m, p, typical_course(), day + 120)
        assert np.array_equal(t, t0)
        after = t >= day
        saved.append(np.sum(without[after] < 0.5) - np.sum(with_[after] < 0.5))
        none_30.append(neutrophil_engraftment(t0, without, reference=day))
    row = table[table["boost_day"] == day].iloc[0]
    assert row["neutropenia_days_saved_median"] == pytest.approx(np.median(saved))
    # Poor marrow reserve: the boost saves days of neutropenia.
    assert row["neutropenia_days_saved_median"] > 0
    already = np.array([bool(e.already) for e in none_30])
    hits = np.array([bool(e.time <= 30) for e in none_30])[~already]
    assert row["no_boost_neutrophil_p_already"] == pytest.approx(already.mean())
    assert row["no_boost_neutrophil_p_within_30d"] == pytest.approx(hits.mean())
    # Day 7 is at the CAR-T expansion peak: excluded by the 500 copies/ug limit.
    assert summary["days_over_cart_limit"] == [7.0]
    assert not table.loc[table["boost_day"] == 7.0, "in_window"].item()
