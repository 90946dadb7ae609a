"""Goodness of fit of a single-patient fit, and the likelihood records pharmacometricians
expect.

:func:`predictive_checks`: per observation the population prediction PRED (the model at
the prior medians), the individual prediction IPRED (posterior median of the model
value), residuals on the analyte's likelihood scale (log for counts and copies) and the
PIT: the fraction of posterior predictive draws below the observation (randomised within
``[0, P(y < limit)]`` for censored values). For a model that describes the data the PIT
values are uniform on (0, 1) (:func:`pit_summary`, :func:`pit_line`).

:func:`pointwise_loglik` (every used observation, censored ones with their M3 term),
:func:`log_likelihood_group` (for ``az.loo``) and :func:`map_criteria` (-2LL, AIC, BIC at
the MAP).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from carthema.fitting.model.priors import RESIDUALS


# ---------------------------------------------------------------------------------------
# Goodness of fit: PRED, IPRED, residuals, PIT
# ---------------------------------------------------------------------------------------
def to_scale(x: np.ndarray, scale: str, floor: float) -> np.ndarray:
    """Values on an analyte's likelihood scale (as the likelihood transforms them)."""
    x = np.asarray(x, dtype=float)
    if scale == "log":
        return np.log(np.maximum(x, 0.0) + floor)
    if scale == "logit":
        f, e = np.clip(x / 100.0, 0.0, 1.0), floor / 100.0
        return np.log(f + e) - np.log(1.0 - f + e)
    return x


def pit_values(
    observed: np.ndarray, predictive: np.ndarray, censored: np.ndarray | None = None, seed=0
) -> np.ndarray:
    """Probability integral transform: for observation ``i`` the fraction of the
    predictive draws ``predictive[:, i]`` below ``observed[i]`` (ties split). A censored
    observation (``observed`` = its limit) gets a uniform draw in ``[0, P(y < limit)]``.
    Uniform on (0, 1) when the predictive distribution is right."""
    observed = np.asarray(observed, dtype=float)
    pred = np.asarray(predictive, dtype=float)
    below = np.mean(pred < observed[None, :], axis=0)
    ties = np.mean(pred == observed[None, :], axis=0)
    pit = below + 0.5 * ties
    if censored is not None and np.any(censored):
        rng = np.random.default_rng(seed)
        c = np.asarray(censored, dtype=bool)
        pit[c] = rng.uniform(0.0, 1.0, c.sum()) * (below[c] + ties[c])
    return pit


def pit_summary(pit: np.ndarray) -> dict:
    """Uniformity of PIT values: count, Kolmogorov-Smirnov p-value against U(0, 1) and
    the fraction outside the central 90 % predictive interval (want about 0.10)."""
    from scipy import stats

    pit = np.asarray(pit, dtype=float)
    pit = pit[np.isfinite(pit)]
    if pit.size == 0:
        return {"n": 0, "ks_p": np.nan, "outside_90": np.nan}
    return {
        "n": int(pit.size),
        "ks_p": float(stats.kstest(pit, "uniform").pvalue),
        "outside_90": float(np.mean((pit < 0.05) | (pit > 0.95))),
    }


def pit_line(summary: dict) -> str:
    """The PIT summary in words."""
    if not summary["n"]:
        return "PIT: no observations"
    verdict = (
        "not uniform: the predictive distribution misses the data"
        if summary["ks_p"] < 0.01
        else "consistent with uniform"
    )
    return (
        f"PIT residuals of {summary['n']} observations: {summary['outside_90']:.0%} outside "
        f"the 90 % predictive interval (want about 10 %), KS p = {summary['ks_p']:.2g}: "
        f"{verdict}"
    )


def predictive_checks(result, *, n_draws: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per used observation of a fit: day, analyte, observed, censored, limit, scale,
    PRED (model at the prior medians), IPRED (posterior median of the model value), PI
    5-95 % (posterior predictive), IRES (residual on the likelihood scale: log for counts
    and copies), IWRES (IRES / posterior median residual SD), PIT."""
    from carthema.fitting.evaluation.predict import (
        add_noise,
        draw_matrix,
        sigma_draws,
        trajectories,
    )

    fm = result.fit_model
    data = fm.data
    rows = data.rows.reset_index(drop=True)
    t = np.asarray(data.times, dtype=float)
    lp, idx = draw_matrix(result.idata, n_draws, seed)
    status, traj = trajectories(fm, lp, t)
    good = status == 0
    st0, pop = trajectories(fm, np.asarray(fm.prior_mu, dtype=float)[None, :], t)
    sds = sigma_draws(fm, result.idata, idx)
    rng = np.random.default_rng(seed + 1)
    n = len(rows)
    pred = np.full(n, np.nan)
    ipred = np.full(n, np.nan)
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    pit = np.full(n, np.nan)
    ires = np.full(n, np.nan)
    iwres = np.full(n, np.nan)
    ti, oi = rows["t_idx"].to_numpy(int), rows["o_idx"].to_numpy(int)
    for a, grp in rows.groupby("observable", sort=False):
        k = grp.index.to_numpy()
        res = RESIDUALS[a]
        model_vals = traj[good][:, ti[k], oi[k]]  # (draws, rows)
        if st0[0] == 0:
            pred[k] = pop[0, ti[k], oi[k]]
        if not len(model_vals):
            continue
        ipred[k] = np.median(model_vals, axis=0)
        reps = max(1, 2000 // len(model_vals))
        noisy = add_noise(
            np.repeat(model_vals, reps, axis=0), a, np.repeat(sds[a][good], reps), rng
        )
        lo[k], hi[k] = np.quantile(noisy, [0.05, 0.95], axis=0)
        obs = grp["limit"].where(grp["censored"], grp["value"]).to_numpy(float)
        pit[k] = pit_values(obs, noisy, grp["censored"].to_numpy(bool), seed=seed)
        r = to_scale(obs, res.scale, res.floor) - to_scale(ipred[k], res.scale, res.floor)
        r[grp["censored"].to_numpy(bool)] = np.nan  # a censored value has no residual
        ires[k] = r
        iwres[k] = r / float(np.median(sds[a]))
    return pd.DataFrame(
        {
            "day": rows["day"].to_numpy(float),
            "analyte": rows["observable"].astype(str).to_numpy(),
            "observed": rows["value"].to_numpy(float),
            "censored": rows["censored"].to_numpy(bool),
            "limit": rows["limit"].to_numpy(float),
            "scale": rows["scale"].astype(str).to_numpy(),
            "pred": pred,
            "ipred": ipred,
            "pi05": lo,
            "pi95": hi,
            "ires": ires,
            "iwres": iwres,
            "pit": pit,
        }
    )


# ---------------------------------------------------------------------------------------
# Records pharmacometricians expect: pointwise log-likelihood, -2LL, AIC/BIC, RSE, correlation
# ---------------------------------------------------------------------------------------
def pointwise_loglik(fm, log_params: np.ndarray, sigma: dict[str, np.ndarray]) -> np.ndarray:
    """Log-likelihood of every used observation (censored ones with their M3 term) for
    each row of ``log_params`` (k, n_free), residual SDs ``sigma`` by analyte (k,):
    (k, n_obs), the terms :mod:`carthema.fitting.model.likelihood` sums. A draw whose solve
    fails gets -inf on every observation (a rejected draw)."""
    from carthema.fitting.evaluation.predict import trajectories
    from carthema.fitting.model.likelihood import loglik_numpy

    data = fm.data
    rows = data.rows.reset_index(drop=True)
    status, traj = trajectories(fm, log_params, np.asarray(data.times, dtype=float))
    ti, oi = rows["t_idx"].to_numpy(int), rows["o_idx"].to_numpy(int)
    analytes = rows["observable"].astype(str).to_numpy()
    out = np.full((log_params.shape[0], len(rows)), -np.inf)
    for k in np.flatnonzero(status == 0):
        sd = np.array([sigma[a][k] for a in analytes], dtype=float)
        out[k] = loglik_numpy(traj[k, ti, oi], sd, data)
    return out


def log_likelihood_group(fm, idata) -> xr.Dataset:
    """The ``log_likelihood`` group of a fit's InferenceData: ``y`` (chain, draw,
    observation), one entry per used observation, so that ``az.loo`` and
    ``az.compare`` work on ``posterior.nc``."""
    from carthema.fitting.evaluation.predict import draw_matrix, sigma_draws

    post = idata.posterior
    n_chain, n_draw = int(post.sizes["chain"]), int(post.sizes["draw"])
    lp, idx = draw_matrix(idata)
    ll = pointwise_loglik(fm, lp, sigma_draws(fm, idata, idx))
    return xr.Dataset(
        {"y": (("chain", "draw", "observation"), ll.reshape(n_chain, n_draw, -1))},
        coords={
            "chain": post["chain"].values,
            "draw": post["draw"].values,
            "observation": np.arange(ll.shape[1]),
        },
    )


def map_criteria(fm, map_res) -> dict:
    """-2 log-likelihood at the MAP point and AIC / BIC from it (k = free parameters +
    free residual SDs, n = used observations, censored ones included). The MAP is the
    posterior mode (priors included), not the maximum-likelihood estimate, so these are
    the likelihood's values at the MAP: compare them between fits of the same data."""
    point = map_res.point(map_res.x)
    theta = np.asarray(fm.prior_mu + fm.prior_sd * point["z"], dtype=float)[None, :]
    sigma = {a: np.array([v]) for a, v in fm.sigma_fixed.items()}
    if fm.sigma_free:
        for j, a in enumerate(fm.sigma_free):
            sigma[a] = np.exp(np.atleast_1d(point["sigma_log__"])[j : j + 1])
    ll = float(pointwise_loglik(fm, theta, sigma).sum())
    k = len(fm.free) + len(fm.sigma_free)
    n = int(fm.data.n)
    m2ll = -2.0 * ll
    return {
        "minus_2ll": m2ll,
        "aic": m2ll + 2.0 * k,
        "bic": m2ll + k * float(np.log(n)),
        "n_parameters": k,
        "n_observations": n,
        "note": "at the MAP (posterior mode, priors included), not the maximum-likelihood "
        "estimate; the log-likelihood of the transformed values (log scale for counts)",
    }
