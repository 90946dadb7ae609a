"""Binned, prediction-corrected visual predictive check (pcVPC) of a population.

Definition (Bergstrand, Hooker, Wallin, Karlsson 2011, AAPS J 13:143, "Prediction-corrected
visual predictive checks for diagnosing nonlinear mixed-effects models"):

- Observations are binned on time (days since CAR-T), per analyte; by default into bins
  holding about equal numbers of observations (:func:`time_bins`).
- Every observed value ``Y`` and every simulated value is normalised by the population
  prediction ``PRED`` (the typical patient: population means, covariates at the
  patient's own values, no between-patient deviation, no residual error) of its row:
  ``pcY = lb + (Y - lb) * (PRED_bin - lb) / (PRED - lb)`` with ``PRED_bin`` the median
  PRED of the bin and lower bound ``lb`` = 0 (counts, copies and percentages are
  positive), i.e. ``pcY = Y * PRED_bin / PRED`` (:func:`prediction_correct`). This removes
  the spread that differences in dose, schedule and covariates within a bin put into a
  plain VPC.
- The 5 %, 50 % and 95 % percentiles of the corrected observations in each bin are
  compared with the same percentiles of each of ``n_sim`` data sets simulated from the
  population on the observed design (each patient's own events and sampling days, new
  between-patient deviations, residual error); a simulated percentile's 90 % interval
  is the 5th-95th percentile over the ``n_sim`` data sets.

BLQ values: a value below its limit of quantification (observed rows flagged ``blq``,
and simulated values below that row's LLOQ) enters at its limit, in the observed and
the simulated data alike, so both sides are censored the same way; the low percentiles
of a bin where many values are BLQ then sit at the (corrected) limit. The fraction BLQ
per bin (observed, and the simulated 90 % interval) is in ``vpc.csv`` beside them.

For a population fit (:func:`population_vpc`) each simulated data set takes one
posterior draw of the population means, spreads, covariate effects and residual SDs.
For a cohort of single-patient fits (:func:`cohort_vpc`) the population is the pool of
every patient's posterior draws (equal weight per patient): each simulated patient gets
a draw from a patient picked at random, with that draw's residual SDs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carthema.fitting.evaluation.predict import add_noise, trajectories
from carthema.fitting.model.data import PatientData

#: Percentiles compared (per cent).
PERCENTILES = (5, 50, 95)
#: Default number of time bins per analyte and of simulated data sets.
N_BINS = 8
N_SIM = 200
#: Lower bound of the prediction correction (all observables are positive).
LOWER_BOUND = 0.0
#: Note written with the table.
BLQ_NOTE = (
    "BLQ values (observed and simulated) enter at their limit of quantification; "
    "fraction BLQ per bin in the frac_blq columns"
)


@dataclass
class PatientDesign:
    """What simulating one patient's observed design needs: its data rows, solver
    schedule (:class:`~carthema.fitting.op.ode_op.Schedule`), ODE Op settings and model
    (the attributes :func:`carthema.fitting.evaluation.predict.trajectories` reads)."""

    data: PatientData
    schedule: object
    op: object

    @property
    def model(self):
        return self.data.model


# ---------------------------------------------------------------------------------------
# The binning and the correction (pure numpy)
# ---------------------------------------------------------------------------------------
def time_bins(t: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin edges (days) with about equal numbers of observations per bin: quantiles of
    the observation times; fewer bins when times repeat (edges are unique)."""
    t = np.asarray(t, dtype=float)
    edges = np.unique(np.quantile(t, np.linspace(0.0, 1.0, max(1, n_bins) + 1)))
    if edges.size == 1:
        edges = np.array([edges[0], edges[0]])
    return edges


def assign_bins(t: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each time: ``edges[b] <= t < edges[b + 1]``, the last bin closed."""
    idx = np.searchsorted(edges, np.asarray(t, dtype=float), side="right") - 1
    return np.clip(idx, 0, len(edges) - 2)


def prediction_correct(
    y: np.ndarray, pred: np.ndarray, bins: np.ndarray, lower: float = LOWER_BOUND
) -> np.ndarray:
    """Prediction-corrected values ``lb + (y - lb) * (PRED_bin - lb) / (PRED - lb)``,
    ``PRED_bin`` the median of ``pred`` over the rows of each bin. ``y`` may carry
    leading axes (simulated data sets) over the rows."""
    pred = np.asarray(pred, dtype=float)
    med = np.empty_like(pred)
    for b in np.unique(bins):
        sel = bins == b
        med[sel] = np.median(pred[sel])
    with np.errstate(divide="ignore", invalid="ignore"):
        return lower + (np.asarray(y, dtype=float) - lower) * (med - lower) / (pred - lower)


def bin_percentiles(y: np.ndarray, bins: np.ndarray, n_bins: int) -> np.ndarray:
    """:data:`PERCENTILES` of ``y`` (..., n_rows) per bin: (..., n_bins, 3); NaN ignored
    (a bin with no finite value gives NaN)."""
    y = np.asarray(y, dtype=float)
    out = np.full((*y.shape[:-1], n_bins, len(PERCENTILES)), np.nan)
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: failed solves
                q = np.nanpercentile(y[..., sel], PERCENTILES, axis=-1)
            out[..., b, :] = np.moveaxis(q, 0, -1)
    return out


def vpc_table(
    design: pd.DataFrame,
    sims: np.ndarray,
    *,
    n_bins: int = N_BINS,
    edges: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """The pcVPC table from the observed design and the simulated data sets.

    ``design``: one row per observation with ``analyte``, ``time`` (days), ``observed``
    (BLQ rows at their limit), ``blq`` (bool), ``lloq`` (NaN: none) and ``pred`` (the
    population prediction); ``sims`` (n_sim, n_rows): simulated values of the same rows
    (NaN where a solve failed), BLQ applied here as for the observations. ``edges``
    (per analyte) overrides :func:`time_bins`.

    Columns: analyte, bin, t_low, t_high, t_median, n_obs, pred_median, then
    ``obs_p05/p50/p95`` and, for each percentile, ``sim_pXX_q05``, ``sim_pXX_median``,
    ``sim_pXX_q95`` (its 90 % interval over the data sets), ``obs_frac_blq``,
    ``sim_frac_blq_q05``, ``sim_frac_blq_q95``, ``obs_p50_inside`` (the observed median
    within its simulated interval)."""
    sims = np.asarray(sims, dtype=float)
    lloq = design["lloq"].to_numpy(float)
    has_lloq = np.isfinite(lloq)
    sim_blq = has_lloq & (sims < lloq)
    sims = np.where(sim_blq, lloq, sims)
    sim_blq = np.where(np.isfinite(sims), sim_blq, np.nan)
    rows = []
    for analyte, sub in design.groupby("analyte", sort=False):
        pos = np.flatnonzero((design["analyte"] == analyte).to_numpy())
        t = sub["time"].to_numpy(float)
        e = edges[analyte] if edges and analyte in edges else time_bins(t, n_bins)
        nb = len(e) - 1
        bins = assign_bins(t, e)
        pred = sub["pred"].to_numpy(float)
        pc_obs = prediction_correct(sub["observed"].to_numpy(float), pred, bins)
        pc_sim = prediction_correct(sims[:, pos], pred, bins)
        obs_q = bin_percentiles(pc_obs, bins, nb)
        sim_q = bin_percentiles(pc_sim, bins, nb)  # (n_sim, nb, 3)
        with np.errstate(all="ignore"):
            iv = np.nanpercentile(sim_q, [5, 50, 95], axis=0)  # (3, nb, 3)
        blq = sub["blq"].to_numpy(bool)
        for b in range(nb):
            sel = bins == b
            if not sel.any():
                continue
            frac_sim = np.nanmean(sim_blq[:, pos[sel]], axis=1)
            row = {
                "analyte": analyte,
                "bin": b + 1,
                "t_low": e[b],
                "t_high": e[b + 1],
                "t_median": float(np.median(t[sel])),
                "n_obs": int(sel.sum()),
                "pred_median": float(np.median(pred[sel])),
            }
            for j, p in enumerate(PERCENTILES):
                row[f"obs_p{p:02d}"] = obs_q[b, j]
            for j, p in enumerate(PERCENTILES):
                row[f"sim_p{p:02d}_q05"] = iv[0, b, j]
                row[f"sim_p{p:02d}_median"] = iv[1, b, j]
                row[f"sim_p{p:02d}_q95"] = iv[2, b, j]
            row["obs_frac_blq"] = float(blq[sel].mean())
            row["sim_frac_blq_q05"] = float(np.nanpercentile(frac_sim, 5))
            row["sim_frac_blq_q95"] = float(np.nanpercentile(frac_sim, 95))
            row["obs_p50_inside"] = bool(row["sim_p50_q05"] <= row["obs_p50"] <= row["sim_p50_q95"])
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# Simulating the observed design
# ---------------------------------------------------------------------------------------
def design_table(
    patients: Sequence[PatientDesign], pred_logp: Sequence[np.ndarray]
) -> pd.DataFrame:
    """One row per used observation of every patient (see :func:`vpc_table`), with its
    population prediction at the log-parameters ``pred_logp[i]`` (n_free,)."""
    parts = []
    for pd_, lp in zip(patients, pred_logp, strict=True):
        d = pd_.data
        rows = d.rows.reset_index(drop=True)
        status, traj = trajectories(pd_, np.atleast_2d(lp), np.asarray(d.times, dtype=float))
        pred = traj[0, d.t_idx, d.o_idx] if status[0] == 0 else np.full(len(rows), np.nan)
        cen = rows["censored"].to_numpy(bool)
        parts.append(
            pd.DataFrame(
                {
                    "patient": d.patient,
                    "analyte": rows["observable"].astype(str).to_numpy(),
                    "time": np.asarray(d.times, dtype=float)[d.t_idx],
                    "observed": np.where(cen, rows["limit"], rows["value"]).astype(float),
                    "blq": cen,
                    "lloq": pd.to_numeric(rows["lloq"], errors="coerce").to_numpy(float),
                    "pred": pred,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def simulate_design(
    patients: Sequence[PatientDesign],
    logp: Sequence[np.ndarray],
    sigma: Sequence[dict[str, np.ndarray]],
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulated values (n_sim, n_rows) of every patient's used observations (rows in
    the order of :func:`design_table`): patient ``i`` solved at ``logp[i]`` (n_sim,
    n_free), residual error with SDs ``sigma[i][analyte]`` (n_sim,); NaN where a solve
    failed."""
    out = []
    for pd_, lp, sd in zip(patients, logp, sigma, strict=True):
        d = pd_.data
        status, traj = trajectories(pd_, lp, np.asarray(d.times, dtype=float))
        vals = traj[:, d.t_idx, d.o_idx]
        analytes = d.rows["observable"].astype(str).to_numpy()
        for a in np.unique(analytes):
            sel = analytes == a
            vals[:, sel] = add_noise(vals[:, sel], a, np.asarray(sd[a], dtype=float), rng)
        vals[status != 0] = np.nan
        out.append(vals)
    return np.concatenate(out, axis=1)


def population_draws(pop, idata, n_sim: int, rng: np.random.Generator):
    """Log-parameters (per patient, (n_sim, n_free)) of new patients drawn from the
    population posterior (one posterior draw per simulated data set), their residual
    SDs, and the typical patients' log-parameters (posterior median means and effects,
    no deviation)."""
    post = idata.posterior
    mu = post["mu"].values.reshape(-1, len(pop.free))
    omega = post["omega"].values.reshape(-1, len(pop.free))
    k = rng.integers(0, mu.shape[0], n_sim)
    n_pat = len(pop.data)
    shift = np.zeros((mu.shape[0], n_pat, len(pop.free)))
    cov = pop.covariates
    if cov is not None:
        beta = post["beta"].values.reshape(-1, len(cov.labels))
        for j, (c, kk) in enumerate(cov.effects):
            shift[:, :, kk] += beta[:, j][:, None] * cov.x[None, :, c]
    eta = rng.standard_normal((n_sim, n_pat, len(pop.free)))
    lp = mu[k][:, None, :] + shift[k] + omega[k][:, None, :] * eta
    sig = {a: np.full(n_sim, v) for a, v in pop.sigma_fixed.items()}
    if pop.sigma_free:
        s = post["sigma"].values.reshape(-1, len(pop.sigma_free))[k]
        for j, a in enumerate(pop.sigma_free):
            sig[a] = s[:, j]
    typical = np.median(mu, axis=0)[None, :] + np.median(shift, axis=0)
    return [lp[:, i] for i in range(n_pat)], [sig] * n_pat, list(typical)


def population_vpc(
    pop, idata, *, n_sim: int = N_SIM, n_bins: int = N_BINS, seed: int = 0
) -> pd.DataFrame:
    """pcVPC table (:func:`vpc_table`) of a population fit's posterior ``idata`` over
    its model ``pop`` (:class:`~carthema.fitting.model.hierarchical.PopulationModel`)."""
    rng = np.random.default_rng(seed)
    designs = [PatientDesign(d, s, pop.op) for d, s in zip(pop.data, pop.schedules, strict=True)]
    lp, sig, typical = population_draws(pop, idata, n_sim, rng)
    design = design_table(designs, typical)
    return vpc_table(design, simulate_design(designs, lp, sig, rng), n_bins=n_bins)


def cohort_vpc(
    designs: Sequence[PatientDesign],
    draws: Sequence[np.ndarray],
    sigmas: Sequence[dict[str, np.ndarray]],
    *,
    n_sim: int = N_SIM,
    n_bins: int = N_BINS,
    seed: int = 0,
) -> pd.DataFrame:
    """pcVPC table of a cohort of single-patient fits: the population is the pool of
    every patient's posterior log-parameter draws ``draws[i]`` (k_i, n_free; the same
    free parameters) with their residual SDs ``sigmas[i][analyte]`` (k_i,), each patient
    weighted equally; the typical patient is the pool's median."""
    rng = np.random.default_rng(seed)
    n = len(designs)
    typical = np.median(np.concatenate([np.median(d, axis=0)[None] for d in draws]), axis=0)
    lps, sigs = [], []
    for _ in range(n):
        who = rng.integers(0, n, n_sim)
        lp = np.empty((n_sim, draws[0].shape[1]))
        sig: dict[str, np.ndarray] = {}
        for r, w in enumerate(who):
            k = rng.integers(0, draws[w].shape[0])
            lp[r] = draws[w][k]
            for a, v in sigmas[w].items():
                sig.setdefault(a, np.full(n_sim, np.nan))[r] = v[k]
        lps.append(lp)
        sigs.append(sig)
    design = design_table(designs, [typical] * n)
    return vpc_table(design, simulate_design(designs, lps, sigs, rng), n_bins=n_bins)


def cohort_vpc_from_folders(
    folders: Sequence,
    *,
    history_days: float = 30.0,
    n_sim: int = N_SIM,
    seed: int = 0,
    **solver_options,
) -> pd.DataFrame:
    """:func:`cohort_vpc` of saved single-patient fit folders (``patients/<id>/`` of a
    cohort run): each patient's design is rebuilt from the folder's own observations,
    events and fixed parameters (``history_days`` and ``solver_options`` as in the
    fits), its posterior draws and residual SDs (fixed ones from ``fit.json``) read
    from ``posterior.nc``. The folders' free parameters must agree."""
    from carthema.data.errors import InputError
    from carthema.fitting.model.data import prepare_patient
    from carthema.fitting.op.ode_op import Schedule, SolveOp
    from carthema.fitting.results.fitdir import load_fit

    designs, draws, sigmas = [], [], []
    free = None
    for folder in folders:
        ff = load_fit(folder)
        if free is None:
            free = ff.free
        elif ff.free != free:
            raise InputError(
                f"the patients' fits have different free parameters ({', '.join(ff.free)} "
                f"vs {', '.join(free)}): a pooled VPC needs the same ones",
                file=str(folder),
            )
        d = prepare_patient(ff.model, ff.observations, ff.events, ff.patient,
                            ff.fixed_params, history_days=history_days)  # fmt: skip
        designs.append(PatientDesign(d, Schedule.from_data(d, free),
                                     SolveOp(ff.model.name, **solver_options)))  # fmt: skip
        post = ff.idata.posterior
        lp = post["log_params"].values.reshape(-1, len(free))
        sig = {a: np.full(lp.shape[0], float(v)) for a, v in ff.meta["sigma_fixed"].items()}
        if "sigma" in post:
            s = post["sigma"].values.reshape(lp.shape[0], -1)
            sig.update({str(a): s[:, j] for j, a in enumerate(post["analyte"].values)})
        draws.append(lp)
        sigmas.append(sig)
    return cohort_vpc(designs, draws, sigmas, n_sim=n_sim, seed=seed)


# ---------------------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------------------
def plot_vpc(table: pd.DataFrame, path, *, title: str = "") -> None:
    """One panel per analyte: the observed 5/50/95 % percentiles of the
    prediction-corrected values (lines and points) over the simulated percentiles' 90 %
    intervals (shaded), at each bin's median time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from carthema.models.plotting import LOG_SCALE, TITLES, log_axis

    analytes = list(dict.fromkeys(table["analyte"]))
    fig, axes = plt.subplots(1, len(analytes), figsize=(5.2 * len(analytes), 4.0), squeeze=False)
    for ax, a in zip(axes.flat, analytes, strict=True):
        t = table[table["analyte"] == a]
        x = t["t_median"].to_numpy(float)
        for p, color in zip(PERCENTILES, ("C0", "C3", "C0"), strict=True):
            what = "median" if p == 50 else "5 % and 95 % percentiles"
            legend = p != PERCENTILES[-1]  # one entry for the 5 % and 95 % pair
            ax.fill_between(x, t[f"sim_p{p:02d}_q05"], t[f"sim_p{p:02d}_q95"], color=color,
                            alpha=0.18 if p == 50 else 0.12, lw=0,
                            label=f"simulated {what}: 90 % interval"
                            if legend else "_nolegend_")  # fmt: skip
            ax.plot(x, t[f"obs_p{p:02d}"], "o-" if p == 50 else "o--", color=color, ms=3,
                    lw=1.4 if p == 50 else 1.0,
                    label=f"observed {what}" if legend else "_nolegend_")  # fmt: skip
        if a in LOG_SCALE:
            log_axis(ax)
        ax.set_title(f"{TITLES.get(a, a)} (prediction-corrected)", fontsize=10)
        ax.set_xlabel("Days since CAR-T infusion")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(
        title or "Prediction-corrected VPC (Bergstrand et al. 2011)\nBLQ values at their limit",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")  # a temporary name has no .png
    plt.close(fig)


def write_vpc_csv(table: pd.DataFrame, path) -> None:
    """``vpc.csv``: the table rounded to 4 significant digits, booleans as true/false."""
    out = table.copy()
    for c in out.columns:
        if out[c].dtype.kind == "f":
            out[c] = out[c].map(lambda v: float(f"{v:.4g}") if np.isfinite(v) else v)
        elif out[c].dtype.kind == "b":
            out[c] = out[c].map({True: "true", False: "false"})
    out.to_csv(path, index=False)
