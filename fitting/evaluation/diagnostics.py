"""Convergence diagnostics, plain-words warnings and the parameter summary table.

Thresholds (Vehtari et al. 2021, Bayesian Analysis 16:667; Betancourt 2017):

- R-hat (rank-normalised, split) above :data:`RHAT_MAX` (1.01): the chains disagree;
- bulk or tail ESS below :data:`ESS_PER_CHAIN` x chains (100 per chain): too few
  effectively independent draws for stable means or 90 % intervals;
- any divergent transition: the sampler met curvature it could not follow, so the
  posterior may be biased where it diverged;
- E-BFMI below :data:`EBFMI_MIN` (0.3) in a chain: momentum resampling explores the
  energy poorly (heavy tails or funnels);
- trees that hit the maximum depth: the sampler stopped early, efficiency is poor.

How much the data inform a parameter of one patient is summarised by the *data
information* ``1 - posterior SD / prior SD`` on the log scale (``sd_ratio`` is the ratio
itself): near 0 the posterior is the prior (the data say nothing about it); near 1 the
data pin it down. This is not what pharmacometricians call shrinkage: that is a
population quantity, ``1 - SD(eta) / omega`` over patients (Savic and Karlsson 2009, AAPS
J 11:558), reported by population fits
(:meth:`carthema.fitting.PopulationResult.shrinkage`).

Goodness of fit (PRED, IPRED, residuals, PIT) and the likelihood records (pointwise
log-likelihood, -2LL, AIC/BIC) are in :mod:`carthema.fitting.evaluation.goodness`; their
names still import from here. A residual SD whose posterior median exceeds its prior's
90 % upper bound is reported as a misfit (:func:`misfit_warnings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pandas as pd

# Former home of the goodness-of-fit functions: their names still import from here.
from carthema.fitting.evaluation.goodness import (  # noqa: F401
    log_likelihood_group,
    map_criteria,
    pit_line,
    pit_summary,
    pit_values,
    pointwise_loglik,
    predictive_checks,
    to_scale,
)
from carthema.fitting.model.priors import RESIDUALS

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
EBFMI_MIN = 0.3
#: Below this data information (1 - posterior SD / prior SD) a parameter is reported as
#: barely informed by the data.
INFORMATION_LOW = 0.1
#: Former name of :data:`INFORMATION_LOW`.
SHRINKAGE_LOW = INFORMATION_LOW


@dataclass
class Diagnostics:
    """Summary numbers and warnings of a fit."""

    method: str
    chains: int
    draws: int
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    min_ebfmi: float
    maxdepth_hits: int
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "chains": self.chains,
            "draws": self.draws,
            "max_rhat": self.max_rhat,
            "min_ess_bulk": self.min_ess_bulk,
            "min_ess_tail": self.min_ess_tail,
            "divergences": self.divergences,
            "min_ebfmi": self.min_ebfmi,
            "maxdepth_hits": self.maxdepth_hits,
            "warnings": list(self.warnings),
        }

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        if self.method == "map":
            head = (
                f"MAP + Laplace approximation, {self.draws} independent draws "
                "(no MCMC diagnostics apply)"
            )
            out = [head]
        else:
            out = [
                f"{self.method}: {self.chains} chains x {self.draws} draws",
                f"max R-hat {self.max_rhat:.3f} (want <= {RHAT_MAX}), min bulk ESS "
                f"{self.min_ess_bulk:.0f}, min tail ESS {self.min_ess_tail:.0f} "
                f"(want >= {ESS_PER_CHAIN * self.chains}), divergences {self.divergences}, "
                f"min E-BFMI {self.min_ebfmi:.2f} (want >= {EBFMI_MIN})",
            ]
        if self.warnings:
            out += [f"warning: {w}" for w in self.warnings]
        elif self.method != "map":
            out.append("no convergence warnings: the sampler diagnostics look trustworthy")
        return out


def _vars(idata) -> list[str]:
    return [v for v in ("params", "sigma") if v in idata.posterior]


def diagnose(idata, method: str, extra_warnings: list[str] | None = None) -> Diagnostics:
    """Diagnostics of a fit's InferenceData (``method``: sampler name or ``"map"``)."""
    post = idata.posterior
    chains = int(post.sizes["chain"])
    draws = int(post.sizes["draw"])
    warnings = list(extra_warnings or [])
    if method == "map":
        return Diagnostics(
            method, chains, draws, np.nan, float(draws), float(draws), 0, np.nan, 0, warnings
        )
    names = _vars(idata)
    rhat = az.rhat(idata, var_names=names)
    ess_b = az.ess(idata, var_names=names, method="bulk")
    ess_t = az.ess(idata, var_names=names, method="tail")

    def _min_max(ds, fn):
        vals = np.concatenate([np.ravel(ds[v].values) for v in ds.data_vars])
        vals = vals[np.isfinite(vals)]
        return float(fn(vals)) if vals.size else np.nan

    max_rhat = _min_max(rhat, np.max)
    min_bulk = _min_max(ess_b, np.min)
    min_tail = _min_max(ess_t, np.min)
    stats = idata.sample_stats if "sample_stats" in idata.groups() else None
    div = int(stats["diverging"].sum()) if stats is not None and "diverging" in stats else 0
    try:
        ebfmi = float(np.min(az.bfmi(idata)))
    except Exception:  # noqa: BLE001 - energy missing (e.g. some samplers)
        ebfmi = np.nan
    if stats is not None and "maxdepth_reached" in stats:
        maxdepth = int(stats["maxdepth_reached"].sum())
    elif stats is not None and "reached_max_treedepth" in stats:
        maxdepth = int(stats["reached_max_treedepth"].sum())
    else:
        maxdepth = 0

    stuck = _stuck_chains(stats)
    if stuck:
        warnings.append(
            "chain(s) "
            + ", ".join(f"{c} (mean log-density {m:.1f})" for c, m, _ in stuck)
            + f" stayed at a lower posterior density than the others ({stuck[0][2]:.1f}): "
            "a local mode; the pooled draws mix two regions. Re-run with another seed or "
            "more tuning, or report the main mode only"
        )
    want_ess = ESS_PER_CHAIN * chains
    if chains < 2:
        warnings.append("only one chain: R-hat cannot detect chains that disagree; run >= 2")
    bad_rhat = [f"{v}[{c}]" if c is not None else v for v, c, x in _per_param(rhat) if x > RHAT_MAX]
    # (failed, warning) per threshold; a NaN statistic (not computed) never fails.
    checks = (
        (
            max_rhat > RHAT_MAX,
            f"R-hat {max_rhat:.3f} > {RHAT_MAX} ({', '.join(bad_rhat[:5])}): the chains did not "
            "agree; the posterior summaries are not trustworthy. Run longer (more tune and "
            "draws) or check for several modes",
        ),
        (
            min_bulk < want_ess,
            f"bulk ESS {min_bulk:.0f} < {want_ess}: too few effectively independent draws "
            "for stable posterior means; run more draws",
        ),
        (
            min_tail < want_ess,
            f"tail ESS {min_tail:.0f} < {want_ess}: the 90 % intervals are not yet stable; "
            "run more draws",
        ),
        (
            div > 0,
            f"{div} divergent transition(s): the sampler met curvature it could not follow "
            "and the posterior may be biased there; raise --target-accept (e.g. 0.95; "
            "target_accept in Python) or reparameterise",
        ),
        (
            ebfmi < EBFMI_MIN,
            f"E-BFMI {ebfmi:.2f} < {EBFMI_MIN}: the sampler explores the energy distribution "
            "poorly (heavy tails or a funnel)",
        ),
        (
            maxdepth > 0,
            f"{maxdepth} draw(s) hit the maximum tree depth: sampling was inefficient there",
        ),
    )
    warnings += [text for failed, text in checks if failed]
    return Diagnostics(
        method, chains, draws, max_rhat, min_bulk, min_tail, div, ebfmi, maxdepth, warnings
    )


def _stuck_chains(stats) -> list[tuple[int, float, float]]:
    """Chains whose mean log-density sits far below the others' (a local mode).

    Flags chain ``c`` when its mean log-density is below the median of the chain means
    by more than ``max(3, 4 x median within-chain SD)``.
    """
    if stats is None or "logp" not in stats or stats.sizes.get("chain", 1) < 2:
        return []
    lp = np.asarray(stats["logp"].values, dtype=float)
    means = np.nanmean(lp, axis=1)
    sds = np.nanstd(lp, axis=1)
    ref = float(np.median(means))
    gap = max(3.0, 4.0 * float(np.median(sds)))
    return [(c, float(m), ref) for c, m in enumerate(means) if m < ref - gap]


def _per_param(ds):
    for v in ds.data_vars:
        da = ds[v]
        if da.ndim == 0:
            yield v, None, float(da.values)
        else:
            dim = da.dims[0]
            for c, val in zip(da[dim].values, np.ravel(da.values), strict=True):
                yield v, c, float(val)


def summary_table(
    idata,
    priors,
    sigma_free: tuple[str, ...] = (),
    sigma_fixed: dict[str, float] | None = None,
    truth: dict[str, float] | None = None,
    method: str = "nutpie",
) -> pd.DataFrame:
    """One row per free parameter and residual SD.

    Columns: name, kind, unit, prior_median, prior_sd_log, prior_q05, prior_q95, mean,
    sd, median, q05, q95, rse_pct (100 x sd / median: the relative standard error, %),
    post_sd_log, sd_ratio (posterior SD / prior SD), information
    (1 - sd_ratio: how much the data inform it), ess_bulk, ess_tail, r_hat, [true,
    true_in_90], source.
    """
    post = idata.posterior
    mcmc = method != "map" and post.sizes["chain"] >= 1
    rows = []
    logp = post["log_params"]
    params = post["params"]
    for i, p in enumerate(priors):
        x = params.isel(param=i).values
        lx = logp.isel(param=i).values
        lo, hi = p.interval(0.9)
        row = {
            "name": p.name,
            "kind": "parameter",
            "unit": p.unit,
            "prior_median": p.median,
            "prior_sd_log": p.sd,
            "prior_q05": lo,
            "prior_q95": hi,
            **_moments(x),
            "post_sd_log": float(np.std(lx)),
            "sd_ratio": float(np.std(lx) / p.sd),
            "information": float(1.0 - np.std(lx) / p.sd),
            **_mcmc_stats(lx, mcmc),
            "source": p.source,
        }
        rows.append(row)
    for j, a in enumerate(sigma_free):
        x = post["sigma"].isel(analyte=j).values
        res = RESIDUALS[a]
        # Half-normal(scale) prior of the SD.
        prior_sd = res.prior_scale * np.sqrt(1.0 - 2.0 / np.pi)
        rows.append(
            {
                "name": f"sigma_{a}",
                "kind": "residual SD",
                "unit": f"{res.scale} scale",
                "prior_median": res.prior_scale * 0.6745,
                "prior_sd_log": np.nan,
                "prior_q05": res.prior_scale * 0.0627,
                "prior_q95": res.prior_scale * 1.96,
                **_moments(x),
                "post_sd_log": float(np.std(np.log(x))),
                "sd_ratio": float(np.std(x) / prior_sd),
                "information": float(1.0 - np.std(x) / prior_sd),
                **_mcmc_stats(x, mcmc),
                "source": res.source,
            }
        )
    for a, v in (sigma_fixed or {}).items():
        res = RESIDUALS[a]
        rows.append(
            {
                "name": f"sigma_{a}",
                "kind": "residual SD (fixed: too few observations)",
                "unit": f"{res.scale} scale",
                "mean": v,
                "median": v,
                "source": res.source,
            }
        )
    df = pd.DataFrame(rows)
    if truth:
        df["true"] = [truth.get(n, np.nan) for n in df["name"]]
        inside = (df["true"] >= df["q05"]) & (df["true"] <= df["q95"])
        df["true_in_90"] = inside.astype(object).where(df["true"].notna(), None)
    return df


def _moments(x: np.ndarray) -> dict:
    x = np.ravel(x)
    med = float(np.median(x))
    sd = float(np.std(x))
    return {
        "mean": float(np.mean(x)),
        "sd": sd,
        "median": med,
        "q05": float(np.quantile(x, 0.05)),
        "q95": float(np.quantile(x, 0.95)),
        # Relative standard error (%): posterior SD / posterior median, natural scale.
        "rse_pct": 100.0 * sd / abs(med) if med else np.nan,
    }


def _mcmc_stats(x: np.ndarray, mcmc: bool) -> dict:
    if not mcmc or x.ndim != 2:
        return {"ess_bulk": np.nan, "ess_tail": np.nan, "r_hat": np.nan}
    return {
        "ess_bulk": float(az.ess(x, method="bulk")),
        "ess_tail": float(az.ess(x, method="tail")),
        "r_hat": float(az.rhat(x)) if x.shape[0] > 1 else np.nan,
    }


def information_lines(table: pd.DataFrame) -> list[str]:
    """Plain-words lines: how much the data inform each parameter (prior vs posterior)."""
    out = []
    for _, r in table[table["kind"] == "parameter"].iterrows():
        s = r["information"]
        if s < INFORMATION_LOW:
            what = "not informed by the data (posterior = prior)"
        elif s < 0.5:
            what = "weakly informed"
        elif s < 0.8:
            what = "informed"
        else:
            what = "strongly informed"
        out.append(
            f"{r['name']}: prior SD {r['prior_sd_log']:.2f} -> posterior SD "
            f"{r['post_sd_log']:.2f} (log scale), data information {s:.2f} "
            f"(1 - posterior/prior SD): {what}"
        )
    return out


# ---------------------------------------------------------------------------------------
# Trust signals: misfit and parameters the data barely inform
# ---------------------------------------------------------------------------------------
def misfit_warnings(table: pd.DataFrame) -> list[str]:
    """A warning per free residual SD whose posterior median exceeds the upper bound of
    its prior's 90 % interval: the model does not describe that analyte's data (wrong
    units, outliers, a missing event or a structural misfit), and every prediction built
    on the fit is less certain than its bands say."""
    out = []
    rows = table[table["kind"] == "residual SD"]
    for _, r in rows.iterrows():
        if (
            np.isfinite(r["median"])
            and np.isfinite(r["prior_q95"])
            and r["median"] > r["prior_q95"]
        ):
            analyte = str(r["name"]).removeprefix("sigma_")
            out.append(
                f"misfit: the residual SD of {analyte} has posterior median {r['median']:.3g} "
                f"({r['unit']}), above its prior's 90 % upper bound {r['prior_q95']:.3g}: the "
                f"model does not describe the {analyte} data (check units, outliers and "
                "missing events); predictions built on this fit are less certain than shown"
            )
    return out


def window_parameters(model) -> tuple[str, ...]:
    """Parameters that drive blood-count recovery, hence the engraftment window: those
    of the model's haematopoiesis component (none for a model without one)."""
    names: list[str] = []
    for comp in getattr(model, "components", ()):
        if comp.__name__.rsplit(".", 1)[-1] == "haematopoiesis":
            names += [q.name for q in comp.PARAMS]
    return tuple(names)


def uninformed_warnings(table: pd.DataFrame, relevant: tuple[str, ...]) -> list[str]:
    """One warning naming the window-relevant free parameters the data barely inform
    (data information below :data:`INFORMATION_LOW`): for those the window rests on the
    prior, not on this patient."""
    rows = table[(table["kind"] == "parameter") & table["name"].isin(relevant)]
    weak = [str(r["name"]) for _, r in rows.iterrows() if r["information"] < INFORMATION_LOW]
    if not weak:
        return []
    return [
        f"the data barely inform {', '.join(weak)} (data information < {INFORMATION_LOW}): "
        "the engraftment window rests on the population prior for these, not on this "
        "patient's counts"
    ]


def fit_warnings(table: pd.DataFrame, model) -> list[str]:
    """Warnings about the fit beyond the sampler's: misfit of residual SDs and window
    parameters the data barely inform."""
    return misfit_warnings(table) + uninformed_warnings(table, window_parameters(model))


def timing_line(timings: dict[str, float]) -> str:
    """``time: build 0.1 s, sample 12.3 s`` from the ``*_s`` entries of a result's timings
    (seconds)."""
    parts = (f"{k.removesuffix('_s')} {v:.1f} s" for k, v in timings.items() if k.endswith("_s"))
    return "time: " + ", ".join(parts)


def trust_lines(diag: Diagnostics | dict) -> list[str]:
    """The lines that say whether to trust a fit, first thing in every report: a verdict,
    the convergence numbers, then every warning (convergence, misfit, uninformed window
    parameters). ``diag`` may be the ``diagnostics`` record of a fit.json."""
    if isinstance(diag, dict):
        keys = (
            "method", "chains", "draws", "max_rhat", "min_ess_bulk", "min_ess_tail",
            "divergences", "min_ebfmi", "maxdepth_hits",
        )  # fmt: skip
        vals = {k: diag.get(k, np.nan) for k in keys}
        diag = Diagnostics(**vals, warnings=list(diag.get("warnings", [])))
    warn = list(diag.warnings)
    verdict = (
        f"trust: {len(warn)} problem(s) found; read them before any recommendation"
        if warn
        else "trust: no warnings (convergence, residual SDs within their priors, the data "
        "inform the window parameters)"
    )
    numbers = [
        line
        for line in diag.lines()
        if not line.startswith("warning:") and not line.startswith("no convergence warnings")
    ]
    return [verdict, *numbers, *(f"warning: {w}" for w in warn)]


def correlation(idata) -> pd.DataFrame:
    """Correlation matrix of the estimated quantities over the posterior draws (Laplace
    draws for MAP fits: the Laplace approximation's correlation): log parameters and log
    residual SDs, named as in summary.csv."""
    post = idata.posterior
    lp = post["log_params"].values.reshape(-1, post.sizes["param"])
    cols = [str(p) for p in post["param"].values]
    mats = [lp]
    if "sigma" in post:
        mats.append(np.log(post["sigma"].values.reshape(-1, post.sizes["analyte"])))
        cols += [f"sigma_{a}" for a in post["analyte"].values]
    X = np.concatenate(mats, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(X, rowvar=False) if X.shape[0] > 1 else np.full((X.shape[1],) * 2, np.nan)
    return pd.DataFrame(np.atleast_2d(c), index=cols, columns=cols)
