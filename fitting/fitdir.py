"""Read a fit folder written by :meth:`carthema.fitting.FitResult.save`.

A fit folder holds ``posterior.nc`` (ArviZ InferenceData), ``fit.json`` (patient, model,
free parameters, values of the fixed ones, settings, diagnostics), the patient's
``events.csv`` and ``observations.csv``, ``summary.csv`` and ``fit.png``. What is read
back is what prediction needs: full parameter vectors (natural scale) for the posterior
draws, the events and the observations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd

from ..data.errors import InputError
from ..models.model import Model, get_model

#: Files a fit folder must have for prediction.
REQUIRED = ("posterior.nc", "fit.json", "events.csv")


@dataclass
class FitFolder:
    """A saved fit, ready for prediction.

    Attributes
    ----------
    path:
        The folder.
    patient, model, free:
        Who was fitted, with which model, and which parameters were free.
    idata:
        The posterior (ArviZ InferenceData).
    meta:
        Contents of ``fit.json``.
    events, observations:
        The patient's tables (data-layer columns).
    """

    path: Path
    patient: str
    model: Model
    free: tuple[str, ...]
    idata: az.InferenceData
    meta: dict
    events: pd.DataFrame
    observations: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fixed_params(self) -> np.ndarray:
        """Parameter vector with the fit's fixed values (natural scale)."""
        p = self.model.default_params().copy()
        for name, value in self.meta.get("fixed_params", {}).items():
            if name in self.model.param_names:
                p[self.model.index("param", name)] = float(value)
        return p

    @property
    def n_draws(self) -> int:
        post = self.idata.posterior
        return int(post.sizes["chain"] * post.sizes["draw"])

    def draws(self, n: int | None = None, seed: int = 0) -> np.ndarray:
        """Parameter vectors (n, n_params), natural scale, of ``n`` posterior draws picked
        at random without replacement (all draws when ``n`` is None or larger)."""
        lp = self.idata.posterior["log_params"]
        names = [str(x) for x in lp["param"].values]
        flat = lp.values.reshape(-1, len(names))
        if n is not None and n < flat.shape[0]:
            pick = np.random.default_rng(seed).choice(flat.shape[0], n, replace=False)
            flat = flat[np.sort(pick)]
        P = np.tile(self.fixed_params, (flat.shape[0], 1))
        idx = [self.model.index("param", name) for name in names]
        P[:, idx] = np.exp(flat)
        return P


def load_fit(path: str | Path) -> FitFolder:
    """Read a fit folder; refuses a folder that is missing, incomplete or of another
    format with an :class:`InputError` that says how to make one."""
    path = Path(path)
    make = "write one with `carthema fit OBS --events EVENTS --patient ID --out DIR`"
    if not path.is_dir():
        raise InputError("fit folder not found", file=str(path), fix=make)
    for name in REQUIRED:
        if not (path / name).exists():
            raise InputError(
                f"the fit folder has no {name} (an unfinished or older fit?)",
                file=str(path / name),
                fix=make,
            )
    try:
        meta = json.loads((path / "fit.json").read_text())
    except json.JSONDecodeError as exc:
        raise InputError(
            f"fit.json is not valid JSON ({exc})", file=str(path / "fit.json"), fix=make
        ) from None
    for key in ("patient", "components", "free"):
        if key not in meta:
            raise InputError(f"fit.json has no '{key}'", file=str(path / "fit.json"), fix=make)
    model = get_model(meta["components"])
    idata = az.from_netcdf(str(path / "posterior.nc"))
    if "log_params" not in idata.posterior:
        raise InputError(
            "posterior.nc has no log_params", file=str(path / "posterior.nc"), fix=make
        )
    from ..data.loaders import read_events, read_observations

    events = read_events(path / "events.csv")
    obs_path = path / "observations.csv"
    observations = read_observations(obs_path) if obs_path.exists() else None
    summary_path = path / "summary.csv"
    summary = pd.read_csv(summary_path) if summary_path.exists() else None
    return FitFolder(
        path=path,
        patient=str(meta["patient"]),
        model=model,
        free=tuple(meta["free"]),
        idata=idata,
        meta=meta,
        events=events,
        observations=observations,
        summary=summary,
        notes=list(meta.get("notes", [])),
    )
