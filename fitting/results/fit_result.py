"""The result of a single-patient fit (:func:`carthema.fitting.sampling.samplers.fit`):
posterior, diagnostics, summary, goodness of fit, the in-memory
:class:`~carthema.models.posterior.Posterior`, and the fit folder it writes
(:meth:`FitResult.save`; read back by :mod:`carthema.fitting.results.fitdir`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import pandas as pd

from carthema.data.jsonsafe import dumps
from carthema.fitting.evaluation.diagnostics import (
    Diagnostics,
    correlation,
    information_lines,
    summary_table,
    timing_line,
    trust_lines,
)
from carthema.fitting.evaluation.goodness import (
    map_criteria,
    pit_line,
    pit_summary,
    predictive_checks,
)
from carthema.fitting.model.build import FitModel
from carthema.fitting.model.priors import priors_frame
from carthema.fitting.results.fitdir import write_csv, write_result_folder
from carthema.fitting.sampling.laplace import MapResult
from carthema.models.posterior import FitRecord, Posterior


@dataclass
class FitResult:
    """Result of :func:`fit`.

    Attributes
    ----------
    idata:
        ArviZ InferenceData: ``posterior`` (z, log_params, params, sigma), sample stats,
        and a ``carthema_observations`` group with the rows the likelihood used.
    diagnostics:
        R-hat, ESS, divergences, E-BFMI and plain-words warnings.
    fit_model:
        The PyMC model and what it was built from (data, priors, free parameters).
    sampler, settings, timings:
        How it was run (seed included) and how long it took (seconds).
    map:
        The MAP result when one was computed (``sampler="map"`` or MAP init).
    """

    idata: az.InferenceData
    diagnostics: Diagnostics
    fit_model: FitModel
    sampler: str
    settings: dict
    timings: dict
    events_table: pd.DataFrame | None = None
    observations_table: pd.DataFrame | None = None
    truth: dict[str, float] | None = None
    map: MapResult | None = None
    notes: list[str] = field(default_factory=list)
    _checks: pd.DataFrame | None = field(default=None, repr=False)
    #: The folder :meth:`save` last wrote (None until then).
    folder: Path | None = field(default=None, repr=False)

    @property
    def patient(self) -> str:
        return self.fit_model.data.patient

    def checks(self) -> pd.DataFrame:
        """Goodness of fit per observation: PRED, IPRED, 90 % predictive interval,
        residuals and PIT (:func:`carthema.fitting.evaluation.goodness.predictive_checks`)."""
        if self._checks is None:
            self._checks = predictive_checks(self, seed=int(self.settings.get("seed") or 0))
        return self._checks

    def pit(self) -> dict:
        """PIT uniformity: n, KS p-value, fraction outside the 90 % predictive interval."""
        return pit_summary(self.checks()["pit"].to_numpy(float))

    def trust(self) -> list[str]:
        """Whether to trust the fit, in words: verdict, convergence numbers, warnings
        (convergence, misfit, uninformed window parameters) and the PIT summary."""
        return [*trust_lines(self.diagnostics), pit_line(self.pit())]

    def summary(self) -> pd.DataFrame:
        """Per-parameter table: prior, posterior, shrinkage, ESS, R-hat (and truth)."""
        fm = self.fit_model
        return summary_table(
            self.idata,
            fm.priors,
            fm.sigma_free,
            fm.sigma_fixed,
            truth=self.truth,
            method=self.sampler,
        )

    def information(self) -> list[str]:
        """How much the data inform each parameter, in words."""
        return information_lines(self.summary())

    def report(self) -> list[str]:
        """Everything worth printing after a fit."""
        fm = self.fit_model
        data = fm.data
        n_cen = int(data.censored.sum())
        lines = self.trust()
        lines += [
            f"patient {data.patient}: {data.n} observations used ({n_cen} below a limit, "
            f"M3-censored) of {', '.join(data.observables)}; model '{fm.model.name}', "
            f"{len(fm.free)} free parameters",
        ]
        if len(data.unused):
            by = data.unused.groupby("reason").size()
            for reason, k in by.items():
                lines.append(f"unused: {k} observation(s): {reason}")
        lines += [f"note: {n}" for n in data.notes]
        lines += [f"note: {n}" for n in self.notes]
        lines.append(timing_line(self.timings))
        lines.append(
            "how much the data inform each parameter (data information = 1 - posterior SD "
            "/ prior SD; not the population shrinkage):"
        )
        lines += ["  " + s for s in self.information()]
        return lines

    def posterior(self) -> Posterior:
        """The fit's draws as a :class:`~carthema.models.posterior.Posterior`, in memory:
        the same draws a saved fit folder gives (:meth:`Posterior.from_fit_folder`), with
        the fit's :class:`~carthema.models.posterior.FitRecord` (:meth:`meta`,
        :meth:`summary`, :meth:`checks`; the folder when :meth:`save` wrote one)."""
        fm = self.fit_model
        lp = self.idata.posterior["log_params"]
        return Posterior.from_log_draws(
            fm.model,
            fm.data.p_fixed,
            [str(x) for x in lp["param"].values],
            lp.values,
            events=self.events_table,
            observations=self.observations_table,
            patient=fm.data.patient,
            provenance={"in_memory": True, "sampler": self.sampler, "settings": self.settings},
            fit=FitRecord(self.meta(), self.summary(), self.checks(), self.folder),
        )

    def meta(self) -> dict:
        """What a later step needs to use the fit: patient, model, free parameters, the
        values of the fixed ones, settings, timings, diagnostics and notes (JSON-ready)."""
        fm = self.fit_model
        model = fm.model
        return {
            "format": FIT_FORMAT,
            "patient": fm.data.patient,
            "components": model.name,
            "free": list(fm.free),
            "fixed_params": {
                n: float(v) for n, v in zip(model.param_names, fm.data.p_fixed, strict=True)
            },
            "sigma_fixed": {k: float(v) for k, v in fm.sigma_fixed.items()},
            "settings": self.settings,
            "timings": {k: float(v) for k, v in self.timings.items()},
            "diagnostics": self.diagnostics.as_dict(),
            "trust": self.trust(),
            "pit": self.pit(),
            "criteria": self.criteria(),
            "correlation": _matrix(correlation(self.idata)),
            "notes": list(fm.data.notes) + list(self.notes),
        }

    def criteria(self) -> dict | None:
        """-2LL, AIC and BIC at the MAP for MAP fits
        (:func:`carthema.fitting.evaluation.goodness.map_criteria`); None for NUTS fits, whose
        ``log_likelihood`` group serves ``az.loo`` instead."""
        if self.sampler != "map" or self.map is None:
            return None
        return map_criteria(self.fit_model, self.map)

    def save(self, out: str | Path, *, plot: bool = True, inputs: Iterable = ()) -> dict[str, Path]:
        """Write the fit folder: ``posterior.nc``, ``summary.csv``, ``priors.csv``,
        ``fit.json`` (:meth:`meta`), the patient's ``events.csv`` and
        ``observations.csv`` (so that ``carthema window`` needs nothing else),
        ``residuals.csv`` (:meth:`checks`), ``correlation.csv`` (of the estimates over
        the draws), ``run.json`` (the run record, with ``inputs``: the files the data
        came from) and, with ``plot``, ``ipred.png`` (individual posterior predictive)
        and ``diagnostics.png`` (observed vs PRED / IPRED, residuals, PIT).

        The folder is written whole or not at all: under a temporary name beside ``out``,
        swapped in at the end (:func:`carthema.data.atomic.swap_folder`). Whatever ``out``
        held before (an earlier fit, its plots, a window/ subfolder) is replaced as a
        whole, so no stale file survives a refit."""
        files: dict[str, tuple[str, Callable[[Path], object]]] = {
            "posterior": ("posterior.nc", lambda p: self.idata.to_netcdf(str(p))),
            "summary": ("summary.csv", lambda p: write_csv(self.summary(), p)),
            "priors": (
                "priors.csv",
                lambda p: priors_frame(self.fit_model.priors).to_csv(p, index=False),
            ),
            "residuals": ("residuals.csv", lambda p: write_csv(self.checks(), p)),
            "correlation": (
                "correlation.csv",
                lambda p: correlation(self.idata).round(4).to_csv(p, index_label="name"),
            ),
        }
        tables = {"events": self.events_table, "observations": self.observations_table}
        for key, table in tables.items():
            if table is not None:
                files[key] = (f"{key}.csv", lambda p, t=table: t.to_csv(p, index=False))
        unused = self.fit_model.data.unused
        if len(unused):
            files["unused"] = ("unused_observations.csv", lambda p: unused.to_csv(p, index=False))
        if plot:
            from carthema.fitting.evaluation.plots import plot_diagnostics, plot_fit

            files["plot"] = ("ipred.png", lambda p: plot_fit(self, p))
            files["diagnostics"] = (
                "diagnostics.png",
                lambda p: plot_diagnostics(
                    self.checks(),
                    p,
                    title=f"patient {self.patient}: goodness of fit ({self.sampler})",
                ),
            )
        files["meta"] = (
            "fit.json",
            lambda p: p.write_text(dumps(self.meta()), encoding="utf-8"),
        )
        from carthema.data.runrecord import run_record

        record = run_record(list(inputs), seed=self.settings.get("seed"), settings=self.settings)
        paths = write_result_folder(out, files, "fit", record=record)
        self.folder = Path(out)
        return paths


def _matrix(df: pd.DataFrame) -> dict:
    return {"names": list(df.columns), "matrix": df.round(4).to_numpy().tolist()}


#: Version of the fit-folder layout written by :meth:`FitResult.save`.
FIT_FORMAT = 1
