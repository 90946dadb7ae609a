"""How benchmarks/boost_calibration.py scores a discrete outcome: randomised PIT against the
raw coverage of the closed interval, checked on distributions whose answer is known."""

from __future__ import annotations

import numpy as np
from scipy.stats import binom

from carthema.clinical.boost.calibration import (
    central,
    content,
    covered,
    on_endpoint,
    pit,
    randomised_pit,
)
from carthema.clinical.endpoints import Engraftment, engraftment_summary

FOLLOW_UP = 117.0  # days: the last day a 3-day run can start after a 120-day horizon


def _records(times: np.ndarray, censored: np.ndarray | None = None) -> Engraftment:
    censored = np.zeros(times.size, bool) if censored is None else censored
    return Engraftment(
        day=np.where(censored, np.nan, times + 60.0),
        time=np.where(censored, np.nan, times),
        censored=censored,
        already=np.zeros(times.size, bool),
        follow_up=FOLLOW_UP,
    )


def test_calibrated_discrete_prediction_is_nominal_by_pit_and_above_it_by_closed_interval():
    # Engraftment day ~ 8 + Binomial(8, 0.5): nine whole days, the steps of a boost's
    # interval. Prediction and truth from the same distribution: calibrated by
    # construction.
    rng = np.random.default_rng(1)
    pmf = binom(8, 0.5)
    draws = 8.0 + pmf.rvs(20_000, random_state=rng)
    s = engraftment_summary(_records(draws))
    q05, q95 = s["q05"], s["q95"]
    # The interval as predict-boost reports it (Kaplan-Meier quantiles of whole days):
    # the first day whose cumulative probability reaches 5 % / 95 %.
    assert (q05, q95) == (8.0 + pmf.ppf(0.05), 8.0 + pmf.ppf(0.95)) == (10.0, 14.0)
    exact_mass = pmf.cdf(q95 - 8.0) - pmf.cdf(q05 - 8.0 - 1.0)  # P(10 <= T <= 14)
    assert exact_mass > 0.925  # the closed interval of a discrete law holds > 90 % (0.930)
    assert abs(content(draws, q05, q95) - exact_mass) < 0.01

    n = 4000
    truths = 8.0 + pmf.rvs(n, random_state=rng)
    summary = {"q05": q05, "q95": q95}
    raw = np.mean([covered(summary, (t, False)) for t in truths])
    u = np.array([pit(_records(draws), (t, False), rng) for t in truths])
    hits = np.mean([central(x) for x in u])
    # Binomial 99.9 % bands around the exact values.
    lo, hi = binom(n, 0.90).ppf([0.0005, 0.9995]) / n
    assert lo <= hits <= hi
    lo_raw, hi_raw = binom(n, exact_mass).ppf([0.0005, 0.9995]) / n
    assert lo_raw <= raw <= hi_raw and raw > hi  # raw coverage: above nominal by construction
    # The randomised PIT is uniform: each decile holds a tenth.
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    lo_d, hi_d = binom(n, 0.1).ppf([0.0005, 0.9995])
    assert np.all((counts >= lo_d) & (counts <= hi_d))
    # Ties: a truth on an endpoint is a whole step of probability.
    on_edge = np.mean([on_endpoint(summary, (t, False)) for t in truths])
    assert abs(on_edge - (pmf.pmf(2) + pmf.pmf(6))) < 0.03


def test_an_over_dispersed_prediction_shows_in_the_pit_not_only_the_interval():
    rng = np.random.default_rng(2)
    draws = rng.normal(20.0, 6.0, 20_000).round()  # predictive twice as wide as the truth
    truths = rng.normal(20.0, 3.0, 3000).round()
    u = np.array([randomised_pit(draws, t, rng) for t in truths])
    # Exact for continuous laws: P(|Z| * 3 < 6 * 1.645) = P(|Z| < 3.29) = 0.999.
    assert np.mean([central(x) for x in u]) > 0.99
    assert np.var(u) * 12.0 < 0.5  # variance of a uniform PIT is 1/12


def test_a_truth_censored_at_the_horizon_gets_a_pit_above_the_engrafted_share():
    rng = np.random.default_rng(3)
    times = np.array([5.0, 10.0, 20.0, 0.0])
    e = _records(times, censored=np.array([False, False, False, True]))
    u = [pit(e, (None, True), rng) for _ in range(200)]
    assert min(u) >= 0.75 and max(u) <= 1.0
    # The closed interval covers a censored truth only when it is open above.
    assert covered({"q05": 5.0, "q95": None}, (None, True))
    assert not covered({"q05": 5.0, "q95": 20.0}, (None, True))


def test_a_withheld_interval_is_not_scored_and_an_already_engrafted_truth_has_no_pit():
    assert covered({"q05": None, "q95": None, "withheld": "too few"}, (17.0, False)) is None
    assert pit(_records(np.array([3.0, 4.0])), ("already", False), np.random.default_rng(0)) is None
    assert central(None) is None
