"""Plan prediction over parameter draws and the engraftment window."""

from __future__ import annotations

import numpy as np
import pytest

from carthema import get_model, simulate, typical_course, with_boost
from carthema.fitting.engraftment import neutrophil_engraftment
from carthema.fitting.plans import Plan, plain_summary, predict_plan, scan_window
from carthema.models.virtual import draw_parameters


@pytest.fixture(scope="module")
def setup():
    m = get_model("full")
    draws = draw_parameters(m, 12, np.random.default_rng(5))
    # Poor marrow reserve so that a boost matters.
    draws[:, m.index("param", "hsc_regen")] = 0.005
    return m, draws


def test_plan_prediction_matches_simulating_each_draw(setup):
    m, draws = setup
    res = predict_plan(m, draws, typical_course(), Plan(day=40.0, dose=5e6), horizon=160.0)
    times = []
    for p in draws:
        ev = with_boost(typical_course(), 40.0, 5e6, source="allogeneic", cd34_selected=True)
        traj = simulate(
            ev,
            params=dict(zip(m.param_names, p, strict=True)),
            days=160,
            method="auto",
            rtol=1e-7,
            atol=1e-9,
        )
        times.append(neutrophil_engraftment(traj.t, traj["anc"], reference=40.0).time)
    times = np.array(times, dtype=float)
    assert res["neutrophil"]["p_within_30d"] == pytest.approx(np.mean(times <= 30))
    assert res["neutrophil"]["p_never"] == pytest.approx(np.mean(np.isnan(times)))
    assert res["neutrophil"]["median_days"] == pytest.approx(np.nanmedian(times))


def test_boost_beats_no_boost_for_poor_reserve(setup):
    m, draws = setup
    none = predict_plan(m, draws, typical_course(), Plan(), reference=40.0, horizon=160.0)
    boost = predict_plan(m, draws, typical_course(), Plan(day=40.0, dose=5e6), horizon=160.0)
    assert boost["neutrophil"]["p_within_30d"] > none["neutrophil"]["p_within_30d"]
    assert boost["days_anc_lt_0.5"]["median"] < none["days_anc_lt_0.5"]["median"]
    assert "chimerism_day30" in boost and "chimerism_day30" not in none


def test_window_requires_probability_and_cart_limit(setup):
    m, draws = setup
    table, summary = scan_window(
        m, draws, typical_course(), [20.0, 40.0, 60.0], dose=5e6, threshold=0.5, cart_limit=500.0
    )
    ok = (
        (table["neutrophil_p_within_30d"] >= 0.5)
        & (table["cart_at_reference_median"] < 500)
        & (table["neutrophil_p_already"] < 0.5)
    )
    assert list(table["in_window"]) == list(ok)
    if ok.any():
        assert summary["window_first_day"] == table.loc[ok, "boost_day"].min()
        assert summary["recommended_day"] == summary["window_first_day"]
    lines = plain_summary(summary)
    assert lines and "day" in lines[0]
