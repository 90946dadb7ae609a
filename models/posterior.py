"""A posterior both sides share: the parameter draws of a fitted patient, in memory.

A :class:`Posterior` is what a clinical question needs from a fit: the model, the
parameter vector of the fixed values, the draws (natural scale, one row per draw, every
model parameter), the patient's events and observations, and where it came from. A fit
in memory (:meth:`carthema.fitting.sampling.samplers.FitResult.posterior`) and a saved fit folder
(:meth:`Posterior.from_fit_folder`) give the same draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .model import Model


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
        Where the draws came from (``fit_folder`` or ``in_memory``, the sampler and its
        settings).
    """

    model: Model
    fixed: np.ndarray
    draws: np.ndarray
    free: tuple[str, ...]
    events: pd.DataFrame
    observations: pd.DataFrame | None = None
    patient: str | None = None
    provenance: dict = field(default_factory=dict)

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
        from carthema.fitting.results.fitdir import FitFolder, load_fit

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
