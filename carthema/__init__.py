"""carthema: compartment ODE models after CD19 CAR-T cell therapy.

CAR-T kinetics, B cells and leukemia, haematopoietic stem/progenitor lineages and donor
chimerism; numba and JAX backends from one set of equations; Bayesian fits of patients
with PyMC; engraftment windows for stem-cell boosts.

The fitting and prediction functions load PyMC on first use, so ``import carthema``
stays quick.
"""

from __future__ import annotations

import importlib

from carthema.api import *  # noqa: F403
from carthema.api import __all__ as _eager

__version__ = "0.1.0"

#: Public names imported on first use: name -> module.
_LAZY = {
    "fit": "carthema.fitting.samplers",
    "FitResult": "carthema.fitting.samplers",
    "load_fit": "carthema.fitting.fitdir",
    "window_from_fit": "carthema.fitting.window",
    "predict_boost": "carthema.fitting.predict_boost",
    "Plan": "carthema.fitting.plans",
    "predict_plan": "carthema.fitting.plans",
    "natural_history": "carthema.fitting.natural_history",
    "load_population": "carthema.fitting.vpop",
}

__all__ = [*_eager, *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'carthema' has no attribute {name!r}")
