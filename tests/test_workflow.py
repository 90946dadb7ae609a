"""Issue 11: results whole or absent (fit folder swap, consistency checks, cohort lock),
goodness-of-fit diagnostics with known answers (PIT, misfit), eta-shrinkage, and a report
that puts trust signals first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest

from carthema.cli import main as cli_main
from carthema.data import load_example
from carthema.data.atomic import LOCK_NAME, FolderLock, swap_folder
from carthema.data.errors import InputError
from carthema.fitting import fit
from carthema.fitting.diagnostics import pit_summary, pit_values
from carthema.fitting.fitdir import load_fit
from carthema.fitting.priors import RESIDUALS

PATIENT = "VP001"


# ---------------------------------------------------------------------------------------
# PIT and misfit: known answers
# ---------------------------------------------------------------------------------------
def test_pit_is_uniform_for_the_right_predictive_and_not_for_a_too_narrow_one():
    rng = np.random.default_rng(0)
    draws = rng.normal(0.0, 1.0, (4000, 300))
    right = pit_summary(pit_values(rng.normal(0.0, 1.0, 300), draws))
    assert right["ks_p"] > 0.01 and 0.04 < right["outside_90"] < 0.17
    wide = pit_summary(pit_values(rng.normal(0.0, 3.0, 300), draws))  # data 3x noisier
    assert wide["ks_p"] < 1e-6 and wide["outside_90"] > 0.4


def _cart_data(noise_factor: float, seed: int = 3):
    """CAR-T copies of VP001 simulated at its true parameters, observed daily on days
    7-120 with log-normal noise ``noise_factor`` x the typical residual SD (0.56)."""
    import carthema

    ex = load_example("synthetic")
    ev = ex.events[ex.events["patient"] == PATIENT].reset_index(drop=True)
    t = ex.tables["parameters"]
    t = t[t["patient"] == PATIENT]
    names = set(carthema.get_model("cart").param_names)
    truth = {n: v for n, v in zip(t["name"], t["value"].astype(float), strict=True) if n in names}
    tr = carthema.simulate(ev, components="cart", days=120, params=truth)
    days = np.arange(7.0, 121.0)
    true = np.array([tr.obs[int(np.argmax(tr.t == d)), 0] for d in days])
    sd = noise_factor * RESIDUALS["cart_copies"].typical_sd
    value = true * np.exp(np.random.default_rng(seed).normal(0.0, sd, days.size))
    obs = pd.DataFrame(
        {
            "patient": PATIENT,
            "day": days,
            "analyte": "cart_copies",
            "value": value,
            "unit": "copies/ug DNA",
            "compartment": "blood",
            "lloq": 0.01,
            "blq": False,
        }
    )
    return obs, ev, truth


@pytest.fixture(scope="module")
def well_specified():
    obs, ev, truth = _cart_data(1.0)
    return fit(obs, ev, PATIENT, "cart", sampler="map", draws=400, seed=1, params=truth)


def test_well_specified_fit_has_uniform_pit_and_no_misfit(well_specified):
    r = well_specified
    assert not any(w.startswith("misfit") for w in r.diagnostics.warnings)
    pit = r.pit()
    assert pit["n"] == 114
    assert pit["ks_p"] > 0.01, pit
    assert 0.02 < pit["outside_90"] < 0.2, pit
    checks = r.checks()
    for col in ("pred", "ipred", "ires", "iwres", "pit", "pi05", "pi95"):
        assert checks[col].notna().all(), col
    # IWRES of a well-specified fit: about standard normal.
    assert 0.7 < checks["iwres"].std() < 1.3
    assert r.report()[0].startswith("trust: ")


def test_three_times_the_residual_sd_triggers_the_misfit_warning():
    obs, ev, truth = _cart_data(3.0)
    r = fit(obs, ev, PATIENT, "cart", sampler="map", draws=400, seed=1, params=truth)
    misfit = [w for w in r.diagnostics.warnings if w.startswith("misfit")]
    assert len(misfit) == 1 and "cart_copies" in misfit[0]
    lines = r.report()
    # Trust signals come first, before anything else of the report.
    assert lines[0].startswith("trust: 1 problem")
    assert any("misfit" in line for line in lines[:5])


# ---------------------------------------------------------------------------------------
# Fit folder: checked before work, written whole, refused when its parts disagree
# ---------------------------------------------------------------------------------------
def test_fit_out_is_checked_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "fit.json").write_text(json.dumps({"patient": "SOMEONE"}))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    for out, says in (
        (a_file, "is a file"),
        (other, "SOMEONE"),
        (junk, "not the output of an earlier `carthema fit`"),
    ):
        with pytest.raises(SystemExit) as e:
            cli_main(["fit", "example:han2022", "--sampler", "map", "--out", str(out)])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1
    assert (junk / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def han_fit(tmp_path_factory):
    out = tmp_path_factory.mktemp("han") / "fit"
    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "example:han2022", "--sampler", "map", "--draws", "100", "--seed", "1",
                  "--out", str(out)])  # fmt: skip
    assert e.value.code == 0
    return out


def test_fit_folder_has_diagnostics_and_trust(han_fit):
    for name in ("residuals.csv", "diagnostics.png", "ipred.png", "fit.json", "run.json"):
        assert (han_fit / name).stat().st_size > 0
    meta = json.loads((han_fit / "fit.json").read_text())
    assert meta["trust"][0].startswith("trust: ") and "ks_p" in meta["pit"]
    summary = pd.read_csv(han_fit / "summary.csv")
    assert {"information", "sd_ratio"} <= set(summary.columns)
    assert "shrinkage" not in summary.columns  # the single-patient figure is not shrinkage


def test_refit_leaves_no_stale_file(han_fit, tmp_path, capsys):
    out = tmp_path / "fit"
    shutil.copytree(han_fit, out)
    (out / "window").mkdir()
    (out / "window" / "window.csv").write_text("stale")
    (out / "old_plot.png").write_text("stale")
    with pytest.raises(SystemExit) as e:
        cli_main(["fit", "example:han2022", "--sampler", "map", "--draws", "50", "--seed", "2",
                  "--out", str(out), "--no-plots"])  # fmt: skip
    assert e.value.code == 0
    assert not (out / "window").exists() and not (out / "old_plot.png").exists()
    assert (out / "posterior.nc").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no leftovers


def test_window_refuses_a_folder_whose_parts_disagree(han_fit, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(han_fit, mixed)
    obs = pd.read_csv(mixed / "observations.csv").assign(patient="VP002")
    obs.to_csv(mixed / "observations.csv", index=False)
    with pytest.raises(InputError, match="observations.csv holds patient"):
        load_fit(mixed)
    truncated = tmp_path / "truncated"
    shutil.copytree(han_fit, truncated)
    data = (truncated / "posterior.nc").read_bytes()
    (truncated / "posterior.nc").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="posterior.nc cannot be read") as e:
        load_fit(truncated)
    assert "refit" in e.value.message
    other = tmp_path / "other_posterior"
    shutil.copytree(han_fit, other)
    meta = json.loads((other / "fit.json").read_text())
    meta["patient"] = "VP002"
    (other / "fit.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="holds patient"):
        load_fit(other)


def test_swap_folder_keeps_the_old_folder_when_writing_fails(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), swap_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("killed midway")
    assert (target / "old.txt").read_text() == "old" and not (target / "new.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# ---------------------------------------------------------------------------------------
# fit-cohort lock
# ---------------------------------------------------------------------------------------
def test_cohort_lock_refuses_a_second_run_and_takes_over_a_dead_one(tmp_path):
    with FolderLock(tmp_path, "fit-cohort"):
        held = json.loads((tmp_path / LOCK_NAME).read_text())
        assert held["pid"] == os.getpid()
        with pytest.raises(InputError, match=f"pid {os.getpid()}"):
            FolderLock(tmp_path, "fit-cohort").acquire()
        ex = load_example("synthetic")
        from carthema.fitting.cohort import fit_cohort

        with pytest.raises(InputError, match="is writing to this folder"):
            fit_cohort(ex.observations, ex.events, tmp_path, sampler="map")
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    import socket

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    with FolderLock(tmp_path, "fit-cohort"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


# ---------------------------------------------------------------------------------------
# Population eta-shrinkage: a known answer
# ---------------------------------------------------------------------------------------
def test_population_shrinkage_is_one_minus_sd_eta_over_omega():
    from carthema.fitting.population import PopulationResult

    n_pat, omega = 40, 0.5
    rng = np.random.default_rng(0)
    m = rng.normal(size=n_pat)
    m = (m - m.mean()) / m.std(ddof=1) * 0.6  # SD over patients of mean eta_std: 0.6
    noise = rng.normal(size=(1, 100, n_pat, 1))
    noise = np.concatenate([noise, -noise], axis=1)  # mean exactly zero per patient
    eta = m[None, None, :, None] + noise
    idata = az.from_dict(
        posterior={"eta": eta, "omega": np.full((1, 200, 1), omega)},
        dims={"eta": ["patient", "param"], "omega": ["param"]},
        coords={"param": ["cart_rho"], "patient": [f"P{i}" for i in range(n_pat)]},
    )
    r = PopulationResult(idata, None, None, "nutpie", {}, {})
    sh = r.shrinkage().set_index("name")
    assert sh.loc["cart_rho", "shrinkage"] == pytest.approx(1.0 - 0.6, abs=1e-9)


# ---------------------------------------------------------------------------------------
# Report: trust first, readable headers
# ---------------------------------------------------------------------------------------
def test_report_puts_warnings_before_the_recommendation(tmp_path):
    from carthema.clinical.report import Section, write_report

    table = pd.DataFrame({"boost_day": [30.0], "neutrophil_p_within_30d": [0.9]})
    text = write_report(
        tmp_path / "r.html",
        "X",
        ["RECOMMENDATION: boost on day 30"],
        [Section("Window", tables=[table]), Section("Diagnostics", warnings=["R-hat 1.02"])],
    ).read_text()
    assert text.index("Can this result be trusted?") < text.index("RECOMMENDATION")
    assert text.index("R-hat 1.02") < text.index("RECOMMENDATION")
    assert "P(ANC &gt; 0.5 within 30 d)" in text and "neutrophil_p_within_30d" not in text


# ---------------------------------------------------------------------------------------
# Records pharmacometricians expect (issue 20, item 5)
# ---------------------------------------------------------------------------------------
def test_pointwise_loglik_matches_scipy_at_the_truth(well_specified):
    """The pointwise log-likelihood at the true parameters equals scipy's normal log
    density of log(observed) around log(model) from an independent tight solve."""
    from scipy import stats

    import carthema
    from carthema.fitting.diagnostics import pointwise_loglik

    r = well_specified
    fm = r.fit_model
    obs, ev, truth = _cart_data(1.0)
    theta = np.log([truth[n] for n in fm.free])[None, :]
    sd = 0.4
    ll = pointwise_loglik(fm, theta, {"cart_copies": np.array([sd])})[0]
    tr = carthema.simulate(ev, components="cart", days=120, params=truth, rtol=1e-10, atol=1e-12)
    rows = fm.data.rows.reset_index(drop=True)
    f = np.array([tr.obs[int(np.argmax(tr.t == d)), 0] for d in rows["day"]])
    floor = rows["floor"].to_numpy(float)
    want = stats.norm.logpdf(np.log(rows["value"].to_numpy(float) + floor), np.log(f + floor), sd)
    # The fit's solver tolerance (not the reference's) sets the agreement: 1e-4 in log L.
    np.testing.assert_allclose(ll, want, rtol=1e-4, atol=1e-4)


def test_az_loo_works_on_the_fit_folder(well_specified, tmp_path):
    """posterior.nc has a log_likelihood group, one entry per used observation, so that
    az.loo runs on the file (a censored value that every draw puts below its limit has
    log L = 0 in every draw, which PSIS cannot weigh; this fit has none)."""
    well_specified.save(tmp_path / "fit", plot=False)
    idata = az.from_netcdf(tmp_path / "fit" / "posterior.nc")
    n_obs = idata.carthema_observations.sizes["row"]
    assert idata.log_likelihood["y"].shape == (1, 400, n_obs) and n_obs == 114
    # arviz warns when any point has Pareto k > 0.62; the share of such points is what
    # this test checks itself, on the line below.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Estimated shape parameter of Pareto", UserWarning)
        loo = az.loo(idata, pointwise=True)
    assert np.isfinite(loo.elpd_loo) and (loo.pareto_k < 0.7).mean() > 0.9
    # elpd_loo is at most the in-sample log pointwise predictive density.
    lppd = np.log(np.exp(idata.log_likelihood["y"].values[0]).mean(axis=0)).sum()
    assert loo.elpd_loo <= lppd + 1e-9


def test_map_records_in_the_fit_folder(han_fit):
    """fit.json has -2LL, AIC and BIC at the MAP and the correlation matrix; summary.csv
    the RSE %; run.json the run record; no NaN in the JSON."""
    idata = az.from_netcdf(han_fit / "posterior.nc")
    n_obs = idata.carthema_observations.sizes["row"]
    assert idata.log_likelihood["y"].shape == (1, 100, n_obs)
    meta = json.loads((han_fit / "fit.json").read_text())
    crit = meta["criteria"]
    k, n = crit["n_parameters"], crit["n_observations"]
    assert n == n_obs and k == len(meta["free"]) + int(idata.posterior.sizes.get("analyte", 0))
    assert crit["aic"] == pytest.approx(crit["minus_2ll"] + 2 * k)
    assert crit["bic"] == pytest.approx(crit["minus_2ll"] + k * np.log(n))
    c = np.array(meta["correlation"]["matrix"])
    assert c.shape[0] == c.shape[1] and np.allclose(np.diag(c), 1.0) and np.allclose(c, c.T)
    summary = pd.read_csv(han_fit / "summary.csv")
    rse = summary["rse_pct"].dropna()
    assert len(rse) and (rse > 0).all()
    run = json.loads((han_fit / "run.json").read_text())
    assert run["seed"] == 1 and run["packages"]["numpy"] == np.__version__
    assert run["inputs"][0]["path"] == "example:han2022"
    assert all(len(f["sha256"]) == 64 for f in run["inputs"][0]["files"])
    assert "NaN" not in (han_fit / "fit.json").read_text()
