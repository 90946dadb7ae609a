"""Plan prediction over parameter draws and the engraftment window."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from carthema import BoostPlan, get_model, simulate, typical_course, with_boost
from carthema.clinical.endpoints import neutrophil_engraftment
from carthema.clinical.plans import (
    Plan,
    plain_summary,
    plot_window,
    predict_plan,
    scan_window,
    window_decision,
)
from carthema.models.scenarios import POOR_RESERVE
from carthema.models.virtual import draw_parameters

#: The graft these tests scan: CD34-selected cells of a new donor, 5e6 CD34+/kg.
ALLO_SELECTED = BoostPlan(None, 5e6, "allogeneic", cd34_selected=True)


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
    not already recovered and the median is an order statistic."""
    m, draws = setup
    res = predict_plan(
        m, draws, typical_course(), Plan(40.0, 5e6, "allogeneic", cd34_selected=True), horizon=160.0
    )
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
    boost = predict_plan(
        m, draws, typical_course(), Plan(40.0, 5e6, "allogeneic", cd34_selected=True), horizon=160.0
    )
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
            _day(70, 0.95, 10.0, 2.0, 1.0, 0.6),  # most draws already recovered
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
        m, draws, typical_course(), [7.0, day], graft=ALLO_SELECTED, threshold=0.4, cart_limit=500.0
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


def _marks_without_legend(ax) -> list[str]:
    """Marks (lines, bands, shaded spans) of ``ax`` that have no legend entry: neither
    their own label nor the look (colour, style, hatch) of a mark that has one."""
    legend = ax.get_legend()
    shown = {t.get_text() for t in legend.get_texts()} if legend is not None else set()

    def look(art) -> tuple:
        if hasattr(art, "get_linestyle") and hasattr(art, "get_marker"):
            return ("line", str(art.get_color()), art.get_linestyle(), art.get_marker())
        face = art.get_facecolor()
        return ("area", tuple(np.round(np.ravel(face)[:4], 3)), art.get_hatch())

    arts = [*ax.lines, *ax.collections, *ax.patches]
    looks = {look(a) for a in arts if a.get_label() in shown}
    return [a.get_label() for a in arts if a.get_label() not in shown and look(a) not in looks]


def _hand_window():
    table = pd.DataFrame(
        [
            _day(20, 0.90, 5000.0, 5.0, 2.0, 0.0),  # CAR-T too high
            _day(30, 0.90, 100.0, 5.0, 0.0, 0.1),  # in
            _day(40, 0.95, 10.0, 0.0, 0.0, 0.2),  # saves nothing
            _day(50, 0.95, 10.0, 2.0, 1.0, 0.6),  # most already recovered
        ]
    )
    return window_decision(table, threshold=0.8, cart_limit=1000.0)


def _hand_bands(days: np.ndarray, boost: bool) -> dict:
    course = {"anc": np.linspace(0.1, 3.0, days.size), "platelets": np.linspace(5, 150, days.size)}
    band = {k: (v / 2, v, v * 2) for k, v in course.items()}
    out = {"days": days, "no_boost": {k: (v[0] / 2, v[1] / 2, v[2] / 2) for k, v in band.items()}}
    return {**out, **band} if boost else out


#: A patient's data in data-layer form: ANC measured on 3 days and below its limit of
#: 0.1 G/L on 2; platelets on 2 days; a marrow value and another analyte not drawn.
OBSERVED = pd.DataFrame(
    {
        "patient": "p",
        "day": [-3.0, 7.0, 14.0, 21.0, 28.0, 7.0, 28.0, 30.0, 14.0],
        "analyte": ["anc"] * 5 + ["platelets"] * 2 + ["anc", "wbc"],
        "value": [2.5, 0.3, np.nan, np.nan, 1.1, 40.0, 90.0, 9.9, 3.0],
        "compartment": ["blood"] * 7 + ["marrow", "blood"],
        "lloq": [np.nan, np.nan, 0.1, 0.1, np.nan, np.nan, np.nan, np.nan, np.nan],
        "blq": [False, False, True, True, False, False, False, False, False],
    }
)


@pytest.mark.parametrize("with_window", [True, False])
def test_window_plot_shows_observed_data_no_boost_course_and_a_legend_for_every_mark(
    with_window,
):
    """The course panels hold the no-boost course, the boost band only when a day is in
    the window, and the patient's blood counts (3 measured ANC values, 2 below the limit
    drawn at it, 2 platelet values; the marrow row and the WBC are not drawn); the top
    panel shades the day excluded by the CAR-T limit; every mark has a legend entry."""
    import matplotlib.pyplot as plt

    table, summary = _hand_window()
    if not with_window:
        table["in_window"] = False
        summary = {**summary, "window_first_day": None, "recommended_day": None}
    days = np.arange(-5.0, 121.0)
    fig = plot_window(table, summary, None, bands=_hand_bands(days, with_window), observed=OBSERVED)
    try:
        top, saved, anc, plt_ax = fig.axes
        for ax in fig.axes:
            assert _marks_without_legend(ax) == []
        top_labels = {t.get_text() for t in top.get_legend().get_texts()}
        assert "excluded: CAR-T above 1000 copies/ug" in top_labels
        assert "excluded: most draws already recovered" in top_labels
        assert "neutrophils already recovered on the boost day" in top_labels
        assert not any("engrafted" in t for t in top_labels)  # own counts recover
        anc_lines = {ln.get_label(): ln for ln in anc.lines}
        plt_lines = {ln.get_label(): ln for ln in plt_ax.lines}
        assert list(anc_lines["observed (3)"].get_xdata()) == [-3.0, 7.0, 28.0]
        assert list(anc_lines["observed (3)"].get_ydata()) == [2.5, 0.3, 1.1]
        opened = anc_lines["observed below the limit, at the limit (2)"]
        assert list(opened.get_xdata()) == [14.0, 21.0] and list(opened.get_ydata()) == [0.1, 0.1]
        assert list(plt_lines["observed (2)"].get_xdata()) == [7.0, 28.0]
        assert list(plt_lines["observed (2)"].get_ydata()) == [40.0, 90.0]
        assert not any("below the limit" in label for label in plt_lines)
        for ax in (anc, plt_ax):
            labels = {t.get_text() for t in ax.get_legend().get_texts()}
            assert {"no boost: median", "no boost: 90% band"} <= labels
            assert ("boost: median" in labels) is with_window
    finally:
        plt.close(fig)


def test_counterfactual_intervals_and_recovery_by_day_60_from_per_draw_simulations(setup):
    """The window's counterfactual columns: the 90 % interval of the days saved and the
    no-boost recovery by 60 days and P(never) equal those computed from one simulation per
    draw with and without the boost."""
    m, draws = setup
    day = 40.0
    table, _ = scan_window(m, draws, typical_course(), [day], graft=ALLO_SELECTED, threshold=0.0)
    ev_boost = with_boost(typical_course(), day, 5e6, source="allogeneic", cd34_selected=True)
    saved_n, saved_p, none = [], [], []
    for p in draws:
        t, with_ = _anc(m, p, ev_boost, day + 120)
        _, without = _anc(m, p, typical_course(), day + 120)
        plt_with = simulate(ev_boost, params=dict(zip(m.param_names, p, strict=True)),
                            days=day + 120, rtol=1e-7, atol=1e-9)["platelets"]  # fmt: skip
        plt_without = simulate(typical_course(), params=dict(zip(m.param_names, p, strict=True)),
                               days=day + 120, rtol=1e-7, atol=1e-9)["platelets"]  # fmt: skip
        after = t >= day
        saved_n.append(np.sum(without[after] < 0.5) - np.sum(with_[after] < 0.5))
        saved_p.append(np.sum(plt_without[after] < 20) - np.sum(plt_with[after] < 20))
        none.append(neutrophil_engraftment(t, without, reference=day))
    row = table.iloc[0]
    for key, saved in (("neutropenia", saved_n), ("thrombocytopenia", saved_p)):
        q05, q95 = np.quantile(saved, [0.05, 0.95])
        assert row[f"{key}_days_saved_q05"] == pytest.approx(q05)
        assert row[f"{key}_days_saved_q95"] == pytest.approx(q95)
    timed = [e for e in none if not bool(e.already)]
    by60 = np.mean([bool(e.time <= 60) for e in timed])
    never = np.mean([bool(e.censored) for e in timed])
    assert row["no_boost_neutrophil_p_within_60d"] == pytest.approx(by60)
    assert row["no_boost_neutrophil_p_never"] == pytest.approx(never)


def test_window_job_solves_the_no_boost_course_once(setup, monkeypatch):
    """Scan, transplant signals, recovery from day 0 and the bands share one no-boost
    solve of the draws (they were four)."""
    from carthema.clinical import plans

    m, draws = setup
    calls = []
    real = plans.simulate_plan

    def counting(model, P, events, plan, *, horizon, **kwargs):
        calls.append(plan.day)
        return real(model, P, events, plan, horizon=horizon, **kwargs)

    monkeypatch.setattr(plans, "simulate_plan", counting)
    res = plans.window_job(
        m, draws, typical_course(), [30.0, 40.0], graft=ALLO_SELECTED, threshold=0.0
    ).result
    assert calls.count(None) == 1
    assert res["recommended"] is not None
    rec = res["recommended"]
    assert set(rec["no_boost"]) >= {"neutrophil", "platelet"}
    assert set(rec["neutropenia_days_saved"]) >= {"median", "q05", "q95"}
    assert set(rec["p_never"]) >= {"neutrophil", "platelet"}
    assert any("saves against no boost" in line for line in res["summary_lines"])


def test_window_carries_the_cd3_dose_of_an_unselected_allogeneic_graft(setup):
    """An unselected graft from a new donor with its CD3+ dose: every plan the window
    draws (the scan and the recommended day's bands) carries the dose. Before the fix the
    bands dropped it and the model refused the graft for lacking a CD3+ dose."""
    m, draws = setup
    scan_u = plans_window_job(m, draws, cd3=1e7)
    res = scan_u.result
    assert res["plan"]["cd3_per_kg"] == 1e7
    assert res["window"]["recommended_day"] == 40.0
    # The donor T cells of the unselected graft clear host haematopoiesis (gvh_kill):
    # donor myeloid chimerism 30 days after the boost is higher than with a selected graft.
    scan_s = plans_window_job(m, draws, cd3=None)
    selected = scan_s.result
    rec_u = scan_u.table.iloc[0]["chimerism_day30_median"]
    rec_s = scan_s.table.iloc[0]["chimerism_day30_median"]
    assert selected["plan"]["cd3_per_kg"] is None
    assert rec_u > rec_s


def plans_window_job(m, draws, *, cd3):
    from carthema.clinical.plans import window_job

    return window_job(
        m, draws, typical_course(), [40.0],
        graft=BoostPlan(None, 5e6, "allogeneic", cd34_selected=cd3 is None, cd3_per_kg=cd3),
        threshold=0.0, cart_limit=1e9,
    )  # fmt: skip


def test_new_donor_graft_lost_by_day_60_once_host_t_cells_recover():
    """The plan summary reports the share of draws whose new-donor graft is lost 60 days
    after the boost (donor myeloid chimerism < 5 %): small during the lymphodepletion of
    the first month after CAR-T, most draws a year later (host T cells recovered;
    drawn recovery rates). An autologous plan has no such entry."""
    from carthema.clinical.population.graft import draw_graft

    m = get_model("full")
    base = m.default_params().copy()
    for name, value in POOR_RESERVE.items():
        base[m.index("param", name)] = value
    P = draw_graft(m, np.tile(base, (100, 1)), np.random.default_rng(4))
    lost = {}
    for day in (30.0, 365.0):
        plan = Plan(day, 3e6, "allogeneic", cd34_selected=True)
        lost[day] = predict_plan(m, P, typical_course(), plan)["p_graft_lost_day60"]
    assert lost[30.0] <= 0.3 and lost[365.0] >= 0.5
    auto = predict_plan(m, P[:5], typical_course(), Plan(day=30.0, source="autologous"))
    assert "p_graft_lost_day60" not in auto
