"""Posterior trajectories and posterior predictive bands of a fit."""

from __future__ import annotations

import numpy as np

from carthema.fitting.model.build import FitModel
from carthema.fitting.model.priors import RESIDUALS
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import SolverOptions


def draw_matrix(idata, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flattened posterior draws of ``log_params`` (k, n_free) and their indices."""
    lp = idata.posterior["log_params"].values  # (chain, draw, n_free)
    flat = lp.reshape(-1, lp.shape[-1])
    idx = np.arange(flat.shape[0])
    if n is not None and n < flat.shape[0]:
        idx = np.sort(np.random.default_rng(seed).choice(flat.shape[0], n, replace=False))
    return flat[idx], idx


def trajectories(
    fm: FitModel, log_params: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Solve the model for each row of ``log_params`` (k, n_free) on times ``t``.

    Returns ``status`` (k,) and observables (k, n_t, n_obs); uses the solver's parallel
    population path. Times before the fit's ``t0`` are dropped by the caller.
    """
    s = fm.schedule
    P = np.tile(s.p_fixed, (log_params.shape[0], 1))
    P[:, s.free] = np.exp(log_params)
    sched = Schedule(
        np.ascontiguousarray(t, dtype=float),
        s.ev_t.copy(),
        s.ev_kind.copy(),
        s.ev_target.copy(),
        s.ev_value.copy(),
        s.ev_scale.copy(),
        float(s.t0),
        s.u0.copy(),
    )
    options = SolverOptions(fm.op.method, fm.op.rtol, fm.op.atol, fm.op.max_steps)
    sol = solve_batch(fm.model, P, sched, options)
    return sol.status, sol.obs


def sigma_draws(fm: FitModel, idata, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Residual SD per analyte for the selected flattened draws."""
    out = {a: np.full(idx.size, v) for a, v in fm.sigma_fixed.items()}
    if fm.sigma_free:
        sig = idata.posterior["sigma"].values.reshape(-1, len(fm.sigma_free))[idx]
        for j, a in enumerate(fm.sigma_free):
            out[a] = sig[:, j]
    return out


def add_noise(values: np.ndarray, analyte: str, sd: np.ndarray, rng) -> np.ndarray:
    """Predictive draws: the model value with residual noise on the analyte's scale.

    ``values`` (k, n_t), ``sd`` (k,).
    """
    res = RESIDUALS[analyte]
    eps = rng.standard_normal(values.shape) * sd[:, None]
    if res.scale == "log":
        return np.maximum(values, 0.0) * np.exp(eps)
    if res.scale == "logit":
        f = np.clip(values / 100.0, 1e-12, 1 - 1e-12)
        lg = np.log(f / (1 - f)) + eps
        return 100.0 / (1.0 + np.exp(-lg))
    # Identity scale is used for donor chimerism, a percentage: a measured value lies
    # in [0, 100] whatever the assay noise.
    return np.clip(values + eps, 0.0, 100.0)


def predictive_bands(
    fm: FitModel,
    idata,
    t: np.ndarray,
    *,
    n_draws: int = 200,
    seed: int = 0,
    noise: bool = True,
    n_noise: int = 4000,
) -> dict[str, dict[str, np.ndarray]]:
    """Median and 50 % / 90 % bands per observed analyte on times ``t``.

    Returns ``{analyte: {"t", "median", "q05", "q25", "q75", "q95"}}``; with ``noise`` the
    bands are posterior predictive (model + residual error), else of the model value.
    """
    lp, idx = draw_matrix(idata, n_draws, seed)
    status, obs = trajectories(fm, lp, t)
    good = status == 0
    rng = np.random.default_rng(seed + 1)
    sds = sigma_draws(fm, idata, idx)
    out = {}
    for a in fm.data.observables:
        j = fm.model.index("obs", a)
        vals = obs[good, :, j]
        if noise and len(vals):
            # Several noise replicates per trajectory: smoother predictive quantiles.
            reps = max(1, n_noise // len(vals))
            vals = add_noise(np.repeat(vals, reps, axis=0), a, np.repeat(sds[a][good], reps), rng)
        q = np.nanquantile(vals, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0) if len(vals) else None
        if q is None:
            continue
        out[a] = {
            "t": t,
            "q05": q[0],
            "q25": q[1],
            "median": q[2],
            "q75": q[3],
            "q95": q[4],
            "n_failed": int((~good).sum()),
        }
    return out
