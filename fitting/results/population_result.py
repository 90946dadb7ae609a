"""Result of a population fit: summary tables, the population file, shrinkage, saving."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from carthema.fitting.evaluation.diagnostics import (
    Diagnostics,
    _mcmc_stats,
    _moments,
    timing_line,
    trust_lines,
)
from carthema.fitting.model.hierarchical import PopulationModel
from carthema.fitting.model.priors import RESIDUALS
from carthema.fitting.sampling.laplace import MapResult

#: Quantiles of a half-normal(1): median, 5 % and 95 %.
_HN_MEDIAN, _HN_Q05, _HN_Q95 = 0.6745, 0.0627, 1.96
#: 5 %/95 % quantile of a standard normal.
_Z95 = 1.6449


# ---------------------------------------------------------------------------------------
@dataclass
class PopulationResult:
    """Result of :func:`fit_population`.

    Attributes
    ----------
    idata:
        ArviZ InferenceData; posterior: ``mu``, ``omega`` (dims ``param``), ``beta``
        (``effect``), ``eta``, ``log_params``, ``params`` (``patient``, ``param``),
        ``sigma`` (``analyte``).
    diagnostics:
        R-hat, ESS, divergences, E-BFMI over mu, omega, effects, every patient's
        log-parameters and the residual SDs.
    population_model:
        The PyMC model and what it was built from.
    truth:
        Known values (synthetic cohorts): ``{"mu": {name: log-mean}, "omega": {name:
        SD}, "beta": {label: effect}}``, any part optional.
    """

    idata: az.InferenceData
    diagnostics: Diagnostics
    population_model: PopulationModel
    sampler: str
    settings: dict
    timings: dict
    truth: dict[str, dict[str, float]] | None = None
    map: MapResult | None = None
    notes: list[str] = field(default_factory=list)
    _vpc: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def patients(self) -> list[str]:
        return self.population_model.patients

    def summary(self) -> pd.DataFrame:
        """One row per population mean (``mu``, log scale), between-patient SD
        (``omega``, log scale), covariate effect (``beta``, log scale per unit of the
        covariate) and residual SD (``sigma``).

        Columns: name, quantity, unit, prior_median, prior_q05, prior_q95, mean, sd,
        median, q05, q95 (90 % interval), typical (``exp(median mu)`` in the
        parameter's unit), ess_bulk, ess_tail, r_hat, [true, true_in_90], source.
        """
        pm_ = self.population_model
        post = self.idata.posterior
        mcmc = self.sampler != "map"
        rows = []
        for k, p in enumerate(pm_.priors):
            x = post["mu"].isel(param=k).values
            rows.append(
                {
                    "name": p.name,
                    "quantity": "mu",
                    "unit": f"log({p.unit})",
                    "prior_median": p.mu,
                    "prior_q05": p.mu - _Z95 * p.sd,
                    "prior_q95": p.mu + _Z95 * p.sd,
                    **_moments(x),
                    "typical": float(np.exp(np.median(x))),
                    **_mcmc_stats(x, mcmc),
                    "source": p.source,
                }
            )
        for k, p in enumerate(pm_.priors):
            x = post["omega"].isel(param=k).values
            s = float(pm_.omega_scale[k])
            rows.append(
                {
                    "name": p.name,
                    "quantity": "omega",
                    "unit": "SD of log",
                    "prior_median": _HN_MEDIAN * s,
                    "prior_q05": _HN_Q05 * s,
                    "prior_q95": _HN_Q95 * s,
                    **_moments(x),
                    **_mcmc_stats(x, mcmc),
                    "source": f"half-normal({s:g}) prior of the between-patient SD",
                }
            )
        cov = pm_.covariates
        if cov is not None:
            for j, ((c, k), label) in enumerate(zip(cov.effects, cov.labels, strict=True)):
                x = post["beta"].isel(effect=j).values
                s = float(pm_.prior_sd[k] / cov.scale[c])
                rows.append(
                    {
                        "name": label,
                        "quantity": "beta",
                        "unit": f"log per unit of {cov.columns[c]}",
                        "prior_median": 0.0,
                        "prior_q05": -_Z95 * s,
                        "prior_q95": _Z95 * s,
                        **_moments(x),
                        **_mcmc_stats(x, mcmc),
                        "source": f"normal(0, {s:.3g}): a 1-SD covariate change moves log p by "
                        "about one prior SD",
                    }
                )
        for j, a in enumerate(pm_.sigma_free):
            x = post["sigma"].isel(analyte=j).values
            res = RESIDUALS[a]
            rows.append(
                {
                    "name": a,
                    "quantity": "sigma",
                    "unit": f"{res.scale} scale",
                    "prior_median": _HN_MEDIAN * res.prior_scale,
                    "prior_q05": _HN_Q05 * res.prior_scale,
                    "prior_q95": _HN_Q95 * res.prior_scale,
                    **_moments(x),
                    **_mcmc_stats(x, mcmc),
                    "source": res.source,
                }
            )
        for a, v in pm_.sigma_fixed.items():
            rows.append(
                {
                    "name": a,
                    "quantity": "sigma (fixed)",
                    "unit": f"{RESIDUALS[a].scale} scale",
                    "median": v,
                    "mean": v,
                    "source": RESIDUALS[a].source,
                }
            )
        df = pd.DataFrame(rows)
        if self.truth:
            df["true"] = [
                float(self.truth.get(q, {}).get(n, np.nan))
                for q, n in zip(df["quantity"], df["name"], strict=True)
            ]
            inside = (df["true"] >= df["q05"]) & (df["true"] <= df["q95"])
            df["true_in_90"] = inside.astype(object).where(df["true"].notna(), None)
        return df

    def patient_summary(self) -> pd.DataFrame:
        """Per patient and parameter: posterior median and 90 % interval (natural scale)."""
        post = self.idata.posterior["params"]
        q = post.quantile([0.05, 0.5, 0.95], dim=("chain", "draw"))
        rows = []
        for pid in post["patient"].values:
            for name in post["param"].values:
                v = q.sel(patient=pid, param=name).values
                rows.append(
                    {
                        "patient": str(pid),
                        "name": str(name),
                        "median": float(v[1]),
                        "q05": float(v[0]),
                        "q95": float(v[2]),
                    }
                )
        return pd.DataFrame(rows)

    def population(self) -> dict:
        """The population file's content: ``{"mu": {name: posterior median of the
        log-mean}, "omega": {name: posterior median between-patient SD of log p}}`` (the
        format :func:`carthema.clinical.trial.read_population` reads), plus the
        covariate effects and what was fitted."""
        post = self.idata.posterior
        free = self.population_model.free
        out: dict = {
            "mu": {n: float(post["mu"].sel(param=n).median()) for n in free},
            "omega": {n: float(post["omega"].sel(param=n).median()) for n in free},
            "components": self.population_model.model.name,
            "patients": self.patients,
            "sampler": self.sampler,
            "seed": self.settings.get("seed"),
        }
        cov = self.population_model.covariates
        if cov is not None:
            out["beta"] = {lab: float(post["beta"].sel(effect=lab).median()) for lab in cov.labels}
            out["covariate_center"] = dict(zip(cov.columns, map(float, cov.center), strict=True))
            out["note"] = "mu is the log-median of a patient with the cohort-mean covariates"
        return out

    def report(self) -> list[str]:
        """Everything worth printing after a population fit."""
        pm_ = self.population_model
        n_rows = sum(d.n for d in pm_.data)
        n_cen = sum(int(d.censored.sum()) for d in pm_.data)
        lines = [
            f"{len(pm_.data)} patients, {n_rows} observations used ({n_cen} below a limit, "
            f"M3-censored); model '{pm_.model.name}', {len(pm_.free)} free parameters"
            + (f", {len(pm_.covariates.labels)} covariate effects" if pm_.covariates else ""),
        ]
        lines = [*trust_lines(self.diagnostics), *lines]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(timing_line(self.timings))
        sh = self.shrinkage()
        if len(sh) and sh["shrinkage"].notna().any():
            lines.append(
                "eta-shrinkage (1 - SD(eta) / omega; above 0.3 individual estimates lean on "
                "the population): "
                + ", ".join(
                    f"{r.name} {r.shrinkage:.2f}"
                    for r in sh.itertuples()
                    if r.shrinkage == r.shrinkage
                )
            )
        return lines

    def shrinkage(self) -> pd.DataFrame:
        """Pharmacometric eta-shrinkage per free parameter (Savic and Karlsson 2009, AAPS J
        11:558): ``1 - SD over patients of the posterior-mean eta / omega``, with ``eta``
        the patient's deviation from the population mean on the log scale
        (``omega * eta_std``) and ``omega`` its posterior median. Near 0: the data
        identify each patient's value; above about 0.3: individual estimates shrink to
        the population mean and diagnostics built on them mislead.

        Columns: name, omega (posterior median), sd_eta (SD over patients of the
        posterior-mean eta), shrinkage."""
        post = self.idata.posterior
        omega = post["omega"]  # (chain, draw, param)
        eta = post["eta"] * omega  # (chain, draw, patient, param): log-scale deviation
        eta_mean = eta.mean(dim=("chain", "draw"))  # (patient, param)
        rows = []
        for name in post["param"].values:
            om = float(omega.sel(param=name).median())
            sd = (
                float(np.std(eta_mean.sel(param=name).values, ddof=1))
                if eta_mean.sizes["patient"] > 1
                else np.nan
            )
            rows.append(
                {
                    "name": str(name),
                    "omega": om,
                    "sd_eta": sd,
                    "shrinkage": float(1.0 - sd / om) if om > 0 else np.nan,
                }
            )
        return pd.DataFrame(rows)

    def vpc(self, n_sim: int = 200, seed: int | None = None) -> pd.DataFrame:
        """The binned, prediction-corrected VPC table of the fit
        (:func:`carthema.fitting.evaluation.vpc.population_vpc`: definition, BLQ handling, columns);
        computed once (``seed`` default: the fit's seed)."""
        if self._vpc is None:
            from carthema.fitting.evaluation.vpc import population_vpc

            s = self.settings.get("seed") if seed is None else seed
            self._vpc = population_vpc(
                self.population_model, self.idata, n_sim=n_sim, seed=int(s or 0)
            )
        return self._vpc

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``population.nc`` (InferenceData), ``population_summary.csv``,
        ``population.json`` (see :meth:`population`), ``population_patients.csv``,
        ``population_shrinkage.csv`` (:meth:`shrinkage`) and the prediction-corrected VPC,
        ``vpc.csv`` and ``vpc.png`` (:meth:`vpc`).

        The folder is written whole or not at all: under a temporary name beside ``out``
        and swapped in at the end (:func:`carthema.data.atomic.swap_folder`); whatever
        ``out`` held before is replaced as a whole."""
        from carthema.fitting.evaluation.vpc import plot_vpc, write_vpc_csv
        from carthema.fitting.results.fitdir import write_result_folder

        vpc = self.vpc()  # before the folder is opened: a failure leaves no folder
        return write_result_folder(
            out,
            {
                "posterior": ("population.nc", lambda p: self.idata.to_netcdf(str(p))),
                "summary": (
                    "population_summary.csv",
                    lambda p: self.summary().to_csv(p, index=False),
                ),
                "population": (
                    "population.json",
                    lambda p: p.write_text(json.dumps(self.population(), indent=2) + "\n"),
                ),
                "patients": (
                    "population_patients.csv",
                    lambda p: self.patient_summary().to_csv(p, index=False),
                ),
                "shrinkage": (
                    "population_shrinkage.csv",
                    lambda p: self.shrinkage().to_csv(p, index=False),
                ),
                "vpc_csv": ("vpc.csv", lambda p: write_vpc_csv(vpc, p)),
                "vpc_png": ("vpc.png", lambda p: plot_vpc(vpc, p)),
            },
            "fit-population",
        )
