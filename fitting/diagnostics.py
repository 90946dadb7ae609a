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

How much the data inform a parameter is summarised by the shrinkage
``1 - posterior SD / prior SD`` on the log scale: near 0 the posterior is the prior (the
data say nothing about it); near 1 the data pin it down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pandas as pd

from .priors import RESIDUALS

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
EBFMI_MIN = 0.3
#: Below this shrinkage a parameter is reported as barely informed by the data.
SHRINKAGE_LOW = 0.1


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
    if np.isfinite(max_rhat) and max_rhat > RHAT_MAX:
        bad = [
            f"{v}[{c}]" if c is not None else v for v, c, val in _per_param(rhat) if val > RHAT_MAX
        ]
        warnings.append(
            f"R-hat {max_rhat:.3f} > {RHAT_MAX} ({', '.join(bad[:5])}): the chains did not "
            "agree; the posterior summaries are not trustworthy. Run longer (more tune and "
            "draws) or check for several modes"
        )
    if np.isfinite(min_bulk) and min_bulk < want_ess:
        warnings.append(
            f"bulk ESS {min_bulk:.0f} < {want_ess}: too few effectively independent draws "
            "for stable posterior means; run more draws"
        )
    if np.isfinite(min_tail) and min_tail < want_ess:
        warnings.append(
            f"tail ESS {min_tail:.0f} < {want_ess}: the 90 % intervals are not yet stable; "
            "run more draws"
        )
    if div > 0:
        warnings.append(
            f"{div} divergent transition(s): the sampler met curvature it could not follow "
            "and the posterior may be biased there; raise target_accept or reparameterise"
        )
    if np.isfinite(ebfmi) and ebfmi < EBFMI_MIN:
        warnings.append(
            f"E-BFMI {ebfmi:.2f} < {EBFMI_MIN}: the sampler explores the energy distribution "
            "poorly (heavy tails or a funnel)"
        )
    if maxdepth > 0:
        warnings.append(
            f"{maxdepth} draw(s) hit the maximum tree depth: sampling was inefficient there"
        )
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
    sd, median, q05, q95, post_sd_log, shrinkage, ess_bulk, ess_tail, r_hat, [true,
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
            "shrinkage": float(1.0 - np.std(lx) / p.sd),
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
                "shrinkage": float(1.0 - np.std(x) / prior_sd),
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
    return {
        "mean": float(np.mean(x)),
        "sd": float(np.std(x)),
        "median": float(np.median(x)),
        "q05": float(np.quantile(x, 0.05)),
        "q95": float(np.quantile(x, 0.95)),
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
        s = r["shrinkage"]
        if s < SHRINKAGE_LOW:
            what = "not informed by the data (posterior = prior)"
        elif s < 0.5:
            what = "weakly informed"
        elif s < 0.8:
            what = "informed"
        else:
            what = "strongly informed"
        out.append(
            f"{r['name']}: prior SD {r['prior_sd_log']:.2f} -> posterior SD "
            f"{r['post_sd_log']:.2f} (log scale), shrinkage {s:.2f}: {what}"
        )
    return out
