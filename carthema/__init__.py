"""carthema: compartment ODE models after CD19 CAR-T cell therapy.

CAR-T kinetics, B cells and leukemia, haematopoietic stem/progenitor lineages and donor
chimerism; numba and JAX backends from one set of equations.
"""

from __future__ import annotations

from carthema.api import *  # noqa: F403
from carthema.api import __all__  # noqa: F401

__version__ = "0.1.0"
