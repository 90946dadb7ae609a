"""Single-patient fits: likelihood against an independent scipy reference, the ODE Op's
gradient against finite differences, failed solves as rejected draws, samplers, seeds,
parameter recovery on synthetic patients and the ``carthema fit`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from carthema.cli import main as cli_main
from carthema.data import load_example
from carthema.data.errors import InputError
from carthema.fitting import build_patient_model, fit, prepare_patient
from carthema.fitting.priors import DEFAULT_FREE, RESIDUALS
from carthema.models.model import get_model

from scipy_reference import observe_all, reference_solve

PATIENT = "VP001"


@pytest.fixture(scope="module")
def synthetic():
    return load_example("synthetic")


@pytest.fixture(scope="module")
def fm_full(synthetic):
    return build_patient_model(synthetic.observations, synthetic.events, PATIENT, "full")


def _reference_loglik(fm, theta: np.ndarray, sigma: dict[str, float]) -> float:
    """Observation log-likelihood written from scratch: scipy solve_ivp (DOP853, rtol
    1e-12) for the states, scipy.stats for the densities, M3 for censored rows."""
    data = fm.data
    model = data.model
    p = data.p_fixed.copy()
    for name, th in zip(fm.free, theta, strict=True):
        p[model.index("param", name)] = np.exp(th)
    Y = reference_solve(model, p, data.events, data.times, data.t0)
    obs = observe_all(model, p, Y)
    rows = data.rows
    total = 0.0
    for i, r in enumerate(rows.itertuples()):
        f = obs[r.t_idx, r.o_idx]
        s = sigma[r.observable]
        floor = RESIDUALS[r.observable].floor
        y = r.limit if r.censored else r.value
        if r.scale == "log":
            mu, g = np.log(max(f, 0.0) + floor), np.log(y + floor)
        elif r.scale == "logit":
            fr, yr, e = min(max(f / 100, 0), 1), min(max(y / 100, 0), 1), floor / 100
            mu = np.log(fr + e) - np.log(1 - fr + e)
            g = np.log(yr + e) - np.log(1 - yr + e)
        else:
            mu, g = f, y
        total += stats.norm.logcdf(g, mu, s) if r.censored else stats.norm.logpdf(g, mu, s)
        assert i < len(rows)
    return float(total)


def _point(fm, rng):
    """A random unconstrained point near the prior median."""
    m = fm.pymc_model
    z = rng.normal(0.0, 0.5, len(fm.free))
    point = {"z": z}
    sigma = dict(fm.sigma_fixed)
    if fm.sigma_free:
        s = np.array([RESIDUALS[a].typical_sd for a in fm.sigma_free]) * rng.uniform(
            0.7, 1.5, len(fm.sigma_free)
        )
        point["sigma_log__"] = np.log(s)
        sigma.update(zip(fm.sigma_free, s, strict=True))
    assert set(point) == {v.name for v in m.value_vars}
    return point, fm.theta_from_z(z), sigma


def test_loglik_matches_independent_scipy_reference(fm_full):
    """The observation terms of the PyMC log-density (normal on each analyte's scale plus
    the M3 below-limit probability) equal a from-scratch scipy computation at random
    parameter points, to the solver tolerance of the fit (rtol 1e-5)."""
    m = fm_full.pymc_model
    assert fm_full.data.censored.sum() > 0, "the patient has below-limit rows"
    obs_terms = m.compile_logp(vars=[m["obs"], m["blq_loglik"]], mode="NUMBA")
    rng = np.random.default_rng(3)
    for _ in range(3):
        point, theta, sigma = _point(fm_full, rng)
        got = float(obs_terms(point))
        want = _reference_loglik(fm_full, theta, sigma)
        assert got == pytest.approx(want, rel=1e-4, abs=1e-2)


def test_censored_rows_enter_as_m3_not_dropped(synthetic):
    """Every blq observation of an analyte the model observes is a censored row at its
    LLOQ; none is dropped or replaced by LLOQ/2."""
    obs = synthetic.observations
    mine = obs[(obs["patient"] == PATIENT) & obs["blq"]]
    data = prepare_patient(get_model("full"), obs, synthetic.events, PATIENT)
    cen = data.rows[data.rows["censored"]]
    used_blq = mine[mine["analyte"].isin(set(data.rows["analyte"]))]
    assert len(used_blq) > 0
    assert len(cen) >= len(used_blq)
    merged = used_blq.merge(cen, on=["day", "analyte"], suffixes=("", "_row"))
    assert len(merged) == len(used_blq)
    assert np.allclose(merged["limit"], merged["lloq"])
    assert len(data.rows) + len(data.unused) == int((obs["patient"] == PATIENT).sum())


def test_gradient_matches_finite_differences(fm_full):
    """The gradient through the ODE Op (forward sensitivities) equals central finite
    differences of the compiled log-density."""
    m = fm_full.pymc_model
    logp = m.compile_logp(mode="NUMBA")
    dlogp = m.compile_dlogp(mode="NUMBA")
    rng = np.random.default_rng(11)
    point, _, _ = _point(fm_full, rng)
    g = dlogp(point)
    h = 1e-5
    names = [v.name for v in m.value_vars]
    fd = []
    for n in names:
        for i in range(np.size(point[n])):
            up = {k: np.array(v, dtype=float, copy=True) for k, v in point.items()}
            dn = {k: np.array(v, dtype=float, copy=True) for k, v in point.items()}
            up[n][i] += h
            dn[n][i] -= h
            fd.append((logp(up) - logp(dn)) / (2 * h))
    fd = np.array(fd)
    assert np.allclose(g, fd, rtol=2e-3, atol=1e-3)


def test_failed_solve_is_a_rejected_draw(synthetic):
    """A solve that hits its step limit gives log-density -inf and a zero gradient; no
    exception reaches the caller."""
    fm = build_patient_model(synthetic.observations, synthetic.events, PATIENT, "cart", max_steps=5)
    m = fm.pymc_model
    point = m.initial_point()
    assert float(m.compile_logp(mode="NUMBA")(point)) == -np.inf
    g = m.compile_dlogp(mode="NUMBA")(point)
    assert not np.any(np.isnan(g))


def test_extreme_parameters_do_not_raise(fm_full):
    """An absurd draw (rates e^+-30 times the prior median) is rejected or evaluated, not
    raised. At z = -30 the solve succeeds: the solver term is 0, the observation terms
    equal the from-scratch scipy computation and the prior of z is the standard normal's.
    At z = +30 (stiff beyond the step limit) the solve fails: the solver term alone makes
    the log-density -inf, and the gradient has no NaN."""
    m = fm_full.pymc_model
    logp = m.compile_logp(mode="NUMBA")
    dlogp = m.compile_dlogp(mode="NUMBA")
    solver_ok = m.compile_logp(vars=[m["solver_ok"]], mode="NUMBA")
    obs_terms = m.compile_logp(vars=[m["obs"], m["blq_loglik"]], mode="NUMBA")
    start = m.initial_point()
    sigma = dict(fm_full.sigma_fixed)
    sigma.update(zip(fm_full.sigma_free, np.exp(start["sigma_log__"]), strict=True))
    low = {**start, "z": np.full(len(fm_full.free), -30.0)}
    assert float(solver_ok(low)) == 0.0
    want = _reference_loglik(fm_full, fm_full.theta_from_z(low["z"]), sigma)
    assert float(obs_terms(low)) == pytest.approx(want, rel=1e-4)
    z_prior = m.compile_logp(vars=[m["z"]], mode="NUMBA")
    assert float(z_prior(low)) == pytest.approx(stats.norm.logpdf(low["z"]).sum(), rel=1e-12)
    high = {**start, "z": np.full(len(fm_full.free), 30.0)}
    assert float(solver_ok(high)) == -np.inf
    assert float(logp(high)) == -np.inf
    assert not np.any(np.isnan(dlogp(high)))


def test_jax_op_matches_numba_op(fm_full):
    """The JAX (diffrax) implementation of the Op gives the numba log-density."""
    pytest.importorskip("jax")
    m = fm_full.pymc_model
    point, _, _ = _point(fm_full, np.random.default_rng(5))
    a = float(m.compile_logp(mode="NUMBA")(point))
    b = float(m.compile_logp(mode="JAX")(point))
    assert b == pytest.approx(a, rel=1e-4)


def test_bad_fit_settings_are_refused(synthetic):
    obs, ev = synthetic.observations, synthetic.events
    with pytest.raises(InputError, match="unknown sampler"):
        fit(obs, ev, PATIENT, sampler="stan")
    with pytest.raises(InputError, match="unknown free parameter 'cart_rhoo'"):
        fit(obs, ev, PATIENT, free="cart_rhoo", sampler="map")
    with pytest.raises(InputError, match="unknown component set"):
        fit(obs, ev, PATIENT, components="liver", sampler="map")


def test_map_is_reproducible_with_a_seed(synthetic):
    obs, ev = synthetic.observations, synthetic.events
    a = fit(obs, ev, PATIENT, "cart", sampler="map", draws=50, seed=4)
    b = fit(obs, ev, PATIENT, "cart", sampler="map", draws=50, seed=4)
    assert np.array_equal(a.idata.posterior["z"].values, b.idata.posterior["z"].values)
    assert a.settings["seed"] == 4


def _truth(synthetic, patient: str) -> dict[str, float]:
    t = synthetic.tables["parameters"]
    t = t[t["patient"].astype(str) == patient]
    return dict(zip(t["name"].astype(str), t["value"].astype(float), strict=True))


@pytest.mark.slow
def test_nutpie_recovers_synthetic_patient(synthetic, tmp_path):
    """nutpie (numba Op) on a synthetic patient of the full model: chains agree, no
    divergences, and the true parameters fall inside the 90 % intervals for most
    parameters (coverage expected ~90 %: at least 8 of the 10 defaults). Target acceptance
    0.9, as the divergence warning advises: at 0.8 the regenerated synthetic patient (model
    with the marrow neutrophil reserve) gave 2 divergences in 2 x 300 draws."""
    truth = _truth(synthetic, PATIENT)
    r = fit(
        synthetic.observations,
        synthetic.events,
        PATIENT,
        sampler="nutpie",
        draws=300,
        tune=300,
        chains=2,
        seed=7,
        truth=truth,
        target_accept=0.9,
    )
    d = r.diagnostics
    assert d.divergences == 0
    assert d.max_rhat < 1.05
    assert d.min_ess_bulk > 100
    s = r.summary().set_index("name")
    params = s[s["kind"] == "parameter"]
    assert list(params.index) == list(DEFAULT_FREE["full"])
    # Calibration of one posterior: the truths' z-scores on the log scale, (log truth -
    # log median) / posterior log-SD, are about standard normal, so their sum of squares
    # follows chi-square with 10 degrees of freedom. The 0.999 quantile bounds it (a biased
    # or overconfident posterior exceeds it; a calibrated one, once in 1,000 runs). The
    # earlier "8 of 10 inside the 90 % interval" fails 7 % of calibrated runs.
    z = (np.log(params["true"]) - np.log(params["median"])) / params["post_sd_log"]
    assert float((z**2).sum()) < stats.chi2.ppf(0.999, len(z)), z.round(2).to_dict()
    assert int(params["true_in_90"].sum()) >= 6  # Binomial(10, 0.9): P(< 6) = 0.002
    # Well-informed parameters are pinned near the truth.
    for name in ("anc0", "plt0", "cart_rho"):
        assert params.loc[name, "median"] == pytest.approx(truth[name], rel=0.15)
    paths = r.save(tmp_path)
    for key in ("posterior", "summary", "plot"):
        assert paths[key].exists() and paths[key].stat().st_size > 0


@pytest.mark.slow
def test_map_laplace_coverage_over_synthetic_patients(synthetic):
    """MAP + Laplace on the five bundled virtual patients (full model): the 90 %
    intervals cover the truth for most of the 50 parameter values. For the full NUTS
    recovery study see benchmarks/fit.py."""
    hits, total = 0, 0
    for pid in sorted(synthetic.observations["patient"].unique()):
        r = fit(
            synthetic.observations,
            synthetic.events,
            pid,
            sampler="map",
            draws=400,
            seed=1,
            truth=_truth(synthetic, pid),
        )
        s = r.summary()
        s = s[s["kind"] == "parameter"]
        hits += int(s["true_in_90"].sum())
        total += len(s)
    # Binomial(50, 0.9): fewer than 39 hits has probability < 0.5 %.
    assert total == 50
    assert hits >= 39, f"{hits}/{total}"


def test_cli_fit_han2022_map(tmp_path, capsys):
    """``carthema fit`` on the sparse bundled case writes its outputs and says how much
    the data inform each parameter."""
    out = tmp_path / "han"
    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "example:han2022", "--sampler", "map", "--draws", "200", "--seed", "1",
                  "--out", str(out)])  # fmt: skip
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "prior SD" in text and "data information" in text
    for name in ("posterior.nc", "summary.csv", "ipred.png", "priors.csv", "run.json"):
        assert (out / name).stat().st_size > 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(DEFAULT_FREE["full"]) <= set(summary["name"])


def test_cli_fit_bad_input_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["fit", str(tmp_path / "missing.csv"), "--events", str(tmp_path / "e.csv"),
                  "--out", str(tmp_path)])  # fmt: skip
    assert e.value.code == 2
    assert "missing.csv" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["nutpie-jax", "numpyro", "pymc"])
def test_other_samplers_run_from_the_map_start(synthetic, sampler):
    """Each optional sampler runs a (short) fit of the small CAR-T model with MAP starts
    and returns draws near the nutpie/MAP answer."""
    obs, ev = synthetic.observations, synthetic.events
    # One process: PyMC forks worker processes, which JAX (imported by other tests) warns about.
    r = fit(obs, ev, PATIENT, "cart", sampler=sampler, draws=30, tune=30, chains=2, seed=2,
            cores=1)  # fmt: skip
    post = r.idata.posterior
    assert post.sizes["chain"] == 2 and post.sizes["draw"] == 30
    ref = fit(obs, ev, PATIENT, "cart", sampler="map", draws=200, seed=2).summary()
    got = r.summary().set_index("name")
    rho = ref.set_index("name").loc["cart_rho"]
    assert got.loc["cart_rho", "median"] == pytest.approx(rho["median"], rel=0.2)
    assert r.timings["grad_evals"] > 0
