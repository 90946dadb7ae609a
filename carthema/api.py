"""The public API, re-exported from ``carthema``."""

from __future__ import annotations

from carthema.data import load_example, read_events, read_nonmem, read_observations
from carthema.data.boost import BoostPlan, GraftSource
from carthema.data.errors import InputError
from carthema.models.hematotox import hematotox
from carthema.models.model import COMPONENT_SETS, Model, get_model
from carthema.models.scenarios import typical_course, with_boost, with_plan
from carthema.models.simulate import Trajectory, simulate
from carthema.models.solve import Schedule, solve, solve_batch
from carthema.models.solver_contract import PRESETS, SolverOptions, Status

__all__ = [
    "BoostPlan",
    "COMPONENT_SETS",
    "GraftSource",
    "InputError",
    "Model",
    "PRESETS",
    "Schedule",
    "SolverOptions",
    "Status",
    "Trajectory",
    "get_model",
    "hematotox",
    "load_example",
    "read_events",
    "read_nonmem",
    "read_observations",
    "simulate",
    "solve",
    "solve_batch",
    "typical_course",
    "with_boost",
    "with_plan",
]
