"""carthema: compartment ODE models after CD19 CAR-T cell therapy.

CAR-T kinetics, B cells and leukemia, haematopoietic stem/progenitor lineages and donor
chimerism; numba and JAX backends from one set of equations; Bayesian fits of patients
with PyMC; engraftment windows for stem-cell boosts.

The fitting and prediction functions load PyMC on first use, so ``import carthema``
stays quick.
"""

from __future__ import annotations

from carthema._lazy import lazy_getattr
from carthema.api import *  # noqa: F403
from carthema.api import __all__ as _eager

__version__ = "0.1.0"

#: Public names imported on first use: name -> module.
_LAZY = {
    "fit": "carthema.fitting.sampling.samplers",
    "FitResult": "carthema.fitting.results.fit_result",
    "load_fit": "carthema.fitting.results.fitdir",
    "Posterior": "carthema.models.posterior",
    "FitRecord": "carthema.models.posterior",
    "VirtualPopulation": "carthema.clinical.population.posterior",
    "window_from_fit": "carthema.clinical.window",
    "WindowResult": "carthema.clinical.window",
    "predict_boost": "carthema.clinical.boost.predict",
    "Plan": "carthema.clinical.plans",
    "predict_plan": "carthema.clinical.plans",
    "virtual_trial": "carthema.clinical.trial",
    "TrialResult": "carthema.clinical.trial",
    "Policy": "carthema.clinical.trial_inputs",
    "read_policies": "carthema.clinical.trial_inputs",
    "natural_history": "carthema.clinical.population.natural_history",
    "load_population": "carthema.clinical.population.virtual",
    "icaht": "carthema.clinical.population.icaht",
}

__all__ = [*_eager, *_LAZY]


__getattr__ = lazy_getattr("carthema", _LAZY, globals())
