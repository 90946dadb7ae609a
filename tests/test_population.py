"""Hierarchical population fits (fitting/population.py, ``carthema fit-population``)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from carthema.clinical.trial import read_population
from carthema.data.errors import InputError
from carthema.fitting.build import build_model
from carthema.fitting.data import prepare_patient
from carthema.fitting.population import (
    build_population_model,
    design_matrix,
    fit_population,
    parse_effects,
)
from carthema.models.model import get_model
from carthema.models.scenarios import typical_course
from carthema.models.simulate import simulate
from carthema.models.virtual import _observe

#: Dense-ish qPCR schedule (days after the CAR-T infusion).
QPCR_DAYS = (1, 2, 4, 7, 9, 11, 14, 17, 21, 28, 35, 42, 56, 90, 120, 180)
FREE = ("cart_alpha", "cart_f_dose")


def _cohort(n: int, mu: dict, omega: dict, seed: int):
    """``n`` virtual patients of the ``cart`` model: log p ~ Normal(mu, omega) for the
    parameters in ``mu`` (others at defaults), a dose drawn from 0.5-5e6 CAR+ cells/kg
    as in :func:`carthema.models.virtual.make_virtual_cohort`, simulated with
    :func:`carthema.simulate` and observed with the generator's assay noise and LLOQ
    (:func:`carthema.models.virtual._observe`)."""
    rng = np.random.default_rng(seed)
    obs, evs, truth = [], [], []
    for i in range(n):
        pid = f"P{i + 1:03d}"
        lp = {k: mu[k] + omega[k] * rng.standard_normal() for k in mu}
        dose = float(np.exp(rng.uniform(np.log(0.5e6), np.log(5e6))))
        ev = typical_course(patient=pid, cart_dose=round(dose, -4))
        tr = simulate(
            ev,
            components="cart",
            params={k: float(np.exp(v)) for k, v in lp.items()},
            t_out=np.array(QPCR_DAYS, float),
        )
        assert tr.ok
        for d, v in zip(QPCR_DAYS, tr["cart_copies"], strict=True):
            obs.append(_observe(pid, float(d), "cart_copies", float(v), rng))
        evs.append(ev)
        truth.append({"patient": pid, **lp})
    return pd.DataFrame(obs), pd.concat(evs, ignore_index=True), pd.DataFrame(truth)


def _log_defaults() -> dict[str, float]:
    return {q.name: float(np.log(q.default)) for q in get_model("cart").params}


@pytest.fixture(scope="module")
def small():
    d0 = _log_defaults()
    return _cohort(4, {k: d0[k] for k in FREE}, {k: 0.3 for k in FREE}, seed=7)


# ---------------------------------------------------------------------------------------
# Fast tests
# ---------------------------------------------------------------------------------------
def test_likelihood_is_the_sum_of_single_patient_likelihoods(small):
    """The population model's data terms equal the single-patient models' at the same
    log-parameters (same PatientData, Op, residual and M3 terms)."""
    obs, ev, _ = small
    model = get_model("cart")
    data = [prepare_patient(model, obs, ev, p) for p in sorted(obs["patient"].unique())]
    pop = build_population_model(data, FREE)
    M = pop.pymc_model
    rng = np.random.default_rng(0)
    point = {
        "mu_z": rng.normal(size=2) * 0.3,
        "omega_log__": np.log([0.3, 0.4]),
        "eta": rng.normal(size=(4, 2)),
        "sigma_log__": np.log([0.5]),
    }
    outs = M.replace_rvs_by_values([M.observedlogp + M.potentiallogp, M["log_params"]])
    lp, theta = M.compile_fn(outs, inputs=M.value_vars, on_unused_input="ignore", mode="NUMBA")(
        point
    )
    total = 0.0
    for d, row in zip(data, theta, strict=True):
        fm = build_model(d, FREE)
        m1 = fm.pymc_model
        out1 = m1.replace_rvs_by_values([m1.observedlogp + m1.potentiallogp])[0]
        f1 = m1.compile_fn(out1, inputs=m1.value_vars, on_unused_input="ignore", mode="NUMBA")
        total += float(f1({"z": (row - fm.prior_mu) / fm.prior_sd, "sigma_log__": np.log([0.5])}))
    assert np.isfinite(lp)
    assert lp == pytest.approx(total, rel=1e-10, abs=1e-8)


def test_covariate_design_and_effect_shapes(small):
    obs, ev, _ = small
    model = get_model("cart")
    ids = sorted(obs["patient"].unique())
    data = [prepare_patient(model, obs, ev, p) for p in ids]
    cov = pd.DataFrame(
        {
            "patient": ids,
            "reserve": [1.0, 2.0, 4.0, 5.0],
            "age_group": ["adult", "child", "child", "adult"],
        }
    )
    X = design_matrix(cov, ids, FREE, "reserve:cart_alpha;age_group:cart_alpha,cart_f_dose")
    assert X.columns == ("reserve", "age_group[child]")
    assert X.x.shape == (4, 2)
    np.testing.assert_allclose(X.x.mean(axis=0), 0.0, atol=1e-12)
    assert X.labels == (
        "reserve:cart_alpha",
        "age_group[child]:cart_alpha",
        "age_group[child]:cart_f_dose",
    )
    pop = build_population_model(data, FREE, covariates=cov, effects={"reserve": ["cart_alpha"]})
    M = pop.pymc_model
    assert M.named_vars_to_dims["beta"] == ("effect",)
    assert list(M.coords["effect"]) == ["reserve:cart_alpha"]
    assert M.named_vars_to_dims["log_params"] == ("patient", "param")
    rng = np.random.default_rng(1)
    point = {
        "mu_z": rng.normal(size=2),
        "omega_log__": np.log([0.2, 0.5]),
        "beta_z": np.array([0.7]),
        "eta": rng.normal(size=(4, 2)),
        "sigma_log__": np.log([0.5]),
    }
    outs = M.replace_rvs_by_values([M["mu"], M["omega"], M["beta"], M["log_params"]])
    mu, omega, beta, theta = M.compile_fn(
        outs, inputs=M.value_vars, on_unused_input="ignore", mode="NUMBA"
    )(point)
    # beta is per unit of the covariate: prior SD / covariate SD * beta_z.
    assert beta[0] == pytest.approx(pop.prior_sd[0] / np.std([1.0, 2, 4, 5]) * 0.7)
    x = np.array([1.0, 2, 4, 5]) - 3.0
    expect = mu[None, :] + omega[None, :] * point["eta"]
    expect[:, 0] += x * beta[0]
    np.testing.assert_allclose(theta, expect, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patients": ["P001", "P999", "P002"]}, "unknown patient"),
        ({"patients": ["P001", "P002"]}, "at least 3 patients"),
        ({"patients": "P001,P001,P002"}, "listed twice"),
        ({"sampler": "numpyro"}, "unknown sampler"),
        ({"components": "nope"}, "unknown component set"),
        (
            {"covariates": pd.DataFrame({"patient": ["P001", "P002", "P003"], "a": [1, 2, 3]})},
            "no row for patient",
        ),  # fmt: skip
        (
            {
                "covariates": pd.DataFrame(
                    {"patient": ["P001", "P002", "P003", "P004"], "a": [1, 1, 1, 1]}
                )
            },
            "same value",
        ),  # fmt: skip
        (
            {
                "covariates": pd.DataFrame(
                    {"patient": ["P001", "P002", "P003", "P004"], "a": [1, None, 2, 3]}
                )
            },
            "missing for patient",
        ),  # fmt: skip
        ({"covariates": pd.DataFrame({"id": ["P001"], "a": [1]})}, "no 'patient' column"),
        (
            {
                "covariates": pd.DataFrame(
                    {"patient": ["P001", "P002", "P003", "P004"], "a": [1, 2, 3, 4]}
                ),
                "effects": "a:cart_beta",
            },
            "not a free parameter",
        ),  # fmt: skip
        ({"free": "cart_rho,cart_nope"}, "unknown free parameter"),
    ],
)
def test_bad_inputs_raise_input_error(small, kwargs, match):
    obs, ev, _ = small
    kw = {"free": FREE, "sampler": "map", "draws": 10}
    kw.update(kwargs)
    with pytest.raises(InputError, match=match):
        fit_population(obs, ev, **kw)


def test_parse_effects():
    assert parse_effects("a:x,y; b:z") == {"a": ("x", "y"), "b": ("z",)}
    assert parse_effects(None) is None
    with pytest.raises(InputError, match="no ':'"):
        parse_effects("a")


@pytest.mark.slow
def test_cli_map_writes_a_population_file_virtual_trials_read(small, tmp_path):
    """``carthema fit-population --sampler map`` end to end; its population.json is read
    by :func:`read_population` (the virtual-trial input)."""
    from carthema.cli import main

    obs, ev, _ = small
    obs.to_csv(tmp_path / "obs.csv", index=False)
    ev.to_csv(tmp_path / "ev.csv", index=False)
    ids = sorted(obs["patient"].unique())
    pd.DataFrame({"patient": ids, "reserve": [0.5, 1.0, 2.0, 3.0]}).to_csv(
        tmp_path / "cov.csv", index=False
    )
    out = tmp_path / "pop"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "fit-population",
                str(tmp_path / "obs.csv"),
                "--events",
                str(tmp_path / "ev.csv"),
                "--out",
                str(out),
                "--free",
                ",".join(FREE),
                "--covariates",
                str(tmp_path / "cov.csv"),
                "--effects",
                "reserve:cart_alpha",
                "--sampler",
                "map",
                "--draws",
                "50",
                "--seed",
                "1",
            ]
        )
    assert exc.value.code == 0
    for name in ("population.nc", "population_summary.csv", "population.json", "vpc.png"):
        assert (out / name).exists()
    # az.loo works on population.nc: one log-likelihood entry per used observation
    import arviz as az

    idata = az.from_netcdf(out / "population.nc")
    assert idata.log_likelihood["y"].shape == (1, 50, len(obs))
    with warnings.catch_warnings():
        # 50 Laplace draws of 4 patients: Pareto k runs high; only that az.loo runs on
        # the file is checked here (its numbers: tests/test_vpc.py, test_workflow.py).
        warnings.simplefilter("ignore", UserWarning)
        assert np.isfinite(az.loo(idata).elpd_loo)
    vpc = pd.read_csv(out / "vpc.csv")
    assert vpc["n_obs"].sum() == len(obs) and set(vpc["analyte"]) == {"cart_copies"}
    assert (vpc["sim_p50_q05"] <= vpc["sim_p50_q95"]).all()
    mu, omega = read_population(str(out / "population.json"))
    assert set(mu) == set(FREE) and set(omega) == set(FREE)
    assert all(np.isfinite(v) for v in mu.values()) and all(v > 0 for v in omega.values())
    pop = json.loads((out / "population.json").read_text())
    assert set(pop["beta"]) == {"reserve:cart_alpha"}
    table = pd.read_csv(out / "population_summary.csv")
    assert set(table["quantity"]) == {"mu", "omega", "beta", "sigma"}
    assert (table["q05"] <= table["median"]).all() and (table["median"] <= table["q95"]).all()


# ---------------------------------------------------------------------------------------
# Recovery
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_recovers_population_means_and_spreads():
    """30 virtual patients with known population means and spreads; nutpie (short run).

    The truth is placed away from the priors so that a fit that ignored the data would
    fail: mu is shifted from the literature default by -0.3 (alpha) and +0.5 (f_dose)
    on the log scale, and the spreads (0.15, 0.8) differ from the half-normal prior
    medians (0.34, 0.34). Asserted:

    - every true mu lies within 2 posterior SDs of the posterior median (about a 95 %
      interval: with two parameters a 90 % interval misses one in five runs by design),
      and the default (prior mean) lies outside the 90 % interval;
    - every posterior median of omega is within 35 % of the true omega. With 30 patients
      the sample SD alone scatters by about omega / sqrt(60), 13 %; 35 % allows that plus
      the shrinkage of noisy individual estimates (about 2.7 standard errors). The run
      (2 x (800 + 400)) gives stable medians but not stable 90 % tails of omega, so its
      interval is not asserted;
    - the prior median of omega lies outside that tolerance band.

    Measured (seed 3, 2026-12-05): mu(alpha) -2.178, true -2.133; mu(f_dose) -12.81,
    true -12.62; omega(alpha) 0.105, true 0.15; omega(f_dose) 0.647, true 0.8. With the
    earlier short run (2 x (300 + 200)) omega(alpha) came out 0.096-0.098 (seeds 3 and
    4; the code before this change gave 0.0975 too with today's packages): too few
    tuning steps for the non-centred funnel, so the run is longer.
    """
    d0 = _log_defaults()
    mu = {"cart_alpha": d0["cart_alpha"] - 0.3, "cart_f_dose": d0["cart_f_dose"] + 0.5}
    omega = {"cart_alpha": 0.15, "cart_f_dose": 0.8}
    obs, ev, _truth = _cohort(30, mu, omega, seed=1)
    res = fit_population(
        obs,
        ev,
        components="cart",
        free=FREE,
        sampler="nutpie",
        tune=800,
        draws=400,
        chains=2,
        seed=3,
        truth={"mu": mu, "omega": omega},
    )
    s = res.summary().set_index(["quantity", "name"])
    for name in FREE:
        m = s.loc[("mu", name)]
        assert abs(m["median"] - mu[name]) <= 2.0 * m["sd"], (name, m[["median", "sd"]])
        assert not (m["q05"] <= d0[name] <= m["q95"]), name
        o = s.loc[("omega", name)]
        assert abs(o["median"] / omega[name] - 1.0) < 0.35, (name, o["median"])
        assert not (abs(o["prior_median"] / omega[name] - 1.0) < 0.35), name
    assert res.diagnostics.divergences == 0
