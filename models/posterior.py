"""A posterior both sides share: the parameter draws of a fitted patient, in memory.

A :class:`Posterior` is what a clinical question needs from a fit: the model, the
parameter vector of the fixed values, the draws (natural scale, one row per draw, every
model parameter), the patient's events and observations, and where it came from. A fit
in memory (:meth:`carthema.fitting.results.fit_result.FitResult.posterior`) and a saved
fit folder (:meth:`Posterior.from_fit_folder`) give the same draws, and the same
:class:`FitRecord` (what the fit says about itself: the misfit check and the report read
it). The calibrated virtual population gives draws without a fit
(:meth:`carthema.clinical.population.posterior.VirtualPopulation.sample`; ``fit``
is None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .model import Model


@dataclass(frozen=True)
class FitRecord:
    """What a fit says about itself besides its draws: ``fit.json``, ``summary.csv`` and
    ``residuals.csv`` of a saved fit, or the same tables of a fit in memory.

    Attributes
    ----------
    meta:
        :meth:`~carthema.fitting.results.fit_result.FitResult.meta` (``fit.json``):
        settings, diagnostics, the trust lines, the PIT summary, notes.
    summary:
        One row per parameter: prior and posterior quantiles, data information, R-hat.
    residuals:
        One row per observation: PRED, IPRED, 90 % predictive interval, PIT.
    folder:
        The saved fit folder, where there is one (its plots and files are named from
        there); None for a fit only in memory.
    """

    meta: Mapping
    summary: pd.DataFrame | None = None
    residuals: pd.DataFrame | None = None
    folder: Path | None = None

    @property
    def notes(self) -> list[str]:
        """The fit's notes (data and sampler)."""
        return [str(n) for n in self.meta.get("notes", [])]


@dataclass(frozen=True)
class Posterior:
    """Posterior draws of one patient's parameters.

    Attributes
    ----------
    model:
        The model the draws belong to.
    fixed:
        Parameter vector (n_params,), natural scale, holding the values of the parameters
        the fit kept fixed.
    draws:
        (n, n_params) parameter vectors, natural scale: ``fixed`` with the free
        parameters replaced by their posterior draws (chains flattened in order).
    free:
        Names of the parameters the fit estimated.
    events, observations:
        The patient's tables (data-layer columns).
    patient:
        Who was fitted.
    provenance:
        Where the draws came from (``fit_folder``, ``in_memory`` or ``population``, the
        sampler and its settings).
    fit:
        What the fit says about itself (:class:`FitRecord`); None for draws that no fit
        produced (the virtual population).
    """

    model: Model
    fixed: np.ndarray
    draws: np.ndarray
    free: tuple[str, ...]
    events: pd.DataFrame
    observations: pd.DataFrame | None = None
    patient: str | None = None
    provenance: dict = field(default_factory=dict)
    fit: FitRecord | None = None

    @classmethod
    def from_log_draws(
        cls,
        model: Model,
        fixed: np.ndarray,
        names: Sequence[str],
        log_draws: np.ndarray,
        **kw,
    ) -> Posterior:
        """The posterior of draws of log parameters ``log_draws`` (..., len(names)) of
        the parameters ``names`` (the fit's ``log_params``), the rest at ``fixed``."""
        flat = np.asarray(log_draws, dtype=float).reshape(-1, len(names))
        fixed = np.asarray(fixed, dtype=float)
        P = np.tile(fixed, (flat.shape[0], 1))
        P[:, [model.index("param", str(n)) for n in names]] = np.exp(flat)
        return cls(model, fixed, P, tuple(str(n) for n in names), **kw)

    @classmethod
    def from_fit_folder(cls, path: str | Path) -> Posterior:
        """The posterior of a saved fit folder (:func:`carthema.fitting.results.fitdir.load_fit`;
        loads ArviZ, not PyMC)."""
        from carthema.fitting.results.fitdir import FitFolder, load_fit, read_residuals

        ff = path if isinstance(path, FitFolder) else load_fit(path)
        lp = ff.idata.posterior["log_params"]
        return cls.from_log_draws(
            ff.model,
            ff.fixed_params,
            [str(x) for x in lp["param"].values],
            lp.values,
            events=ff.events,
            observations=ff.observations,
            patient=ff.patient,
            provenance={"fit_folder": str(ff.path), "settings": ff.meta.get("settings", {})},
            fit=FitRecord(ff.meta, ff.summary, read_residuals(ff.path), ff.path),
        )

    @property
    def n_draws(self) -> int:
        return int(self.draws.shape[0])

    def sample(self, n: int | None = None, seed: int = 0) -> np.ndarray:
        """``n`` draws picked at random without replacement, in their stored order (all
        when ``n`` is None or larger; :meth:`carthema.fitting.results.fitdir.FitFolder.draws`)."""
        if n is None or n >= self.n_draws:
            return self.draws.copy()
        pick = np.random.default_rng(seed).choice(self.n_draws, n, replace=False)
        return self.draws[np.sort(pick)]
