"""The solver contract shared by both backends: options, presets and status codes.

Nothing here imports numba or JAX, so the fitting layer, the CLI and the tests can name a
preset or read a status without compiling anything.

- :class:`SolverOptions`: method, tolerances and step limit of one solve (frozen);
- :data:`FIT`, :data:`PREDICT`, :data:`SIMULATE`, :data:`SCREEN`, :data:`REFERENCE`:
  the presets the package uses, one per purpose (see each for why);
- :class:`Status`: the one enumeration of solve outcomes. The numba solver returns these
  codes directly; the JAX backend maps diffrax's outcome onto them (see
  :func:`carthema.models.jax_backend.make_solver`); :class:`~.simulate.Trajectory`
  reports them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "CONDITION",
    "FIT",
    "JAX_METHODS",
    "NUMBA_METHODS",
    "PREDICT",
    "PRESETS",
    "REFERENCE",
    "SCREEN",
    "SIMULATE",
    "SolverOptions",
    "Status",
]


class Status(enum.IntEnum):
    """Outcome of a solve; 0 is success. Outputs from a failure point on are NaN."""

    OK = 0
    MAX_STEPS = 1
    NONFINITE = 2
    STEP_UNDERFLOW = 3
    BAD_INPUT = 4
    SOLVER_FAILED = 5

    @property
    def message(self) -> str:
        """One-line meaning of the code."""
        return _MESSAGES[self]

    @classmethod
    def describe(cls, code: int) -> str:
        """Message for any integer code (unknown codes are named, not refused)."""
        try:
            return cls(int(code)).message
        except ValueError:
            return f"status {int(code)}"


_MESSAGES = {
    Status.OK: "ok",
    Status.MAX_STEPS: "max_steps exceeded",
    Status.NONFINITE: "non-finite state or derivative",
    Status.STEP_UNDERFLOW: "step size underflow",
    Status.BAD_INPUT: (
        "bad input (unsorted or early t_out/events, out-of-range indices, bad tolerances)"
    ),
    Status.SOLVER_FAILED: "solver failed otherwise (diffrax: e.g. implicit solve diverged)",
}

#: ``method`` codes of the numba solver (the integer its entry points take).
NUMBA_METHODS = {"tsit5": 0, "rosenbrock": 1, "auto": 2}
#: diffrax solver used by the JAX backend for each method name. The numba names map to
#: their nearest diffrax counterpart: ROS34PW2 and the auto switch have none, so the
#: stiff one gets Kvaerno5 (L-stable ESDIRK) and auto gets Tsit5, as the fitting Op does.
JAX_METHODS = {
    "tsit5": "tsit5",
    "dopri5": "dopri5",
    "kvaerno5": "kvaerno5",
    "rosenbrock": "kvaerno5",
    "auto": "tsit5",
}


@dataclass(frozen=True)
class SolverOptions:
    """How to solve: method, tolerances and step limit.

    Attributes
    ----------
    method:
        ``"tsit5"`` (explicit 5(4)), ``"rosenbrock"`` (ROS34PW2, stiff), ``"auto"``
        (Tsit5 switching to ROS34PW2 on stiffness); the JAX backend also takes
        ``"dopri5"`` and ``"kvaerno5"`` (see :data:`JAX_METHODS`).
    rtol:
        Relative tolerance (dimensionless, ``>= 0``).
    atol:
        Absolute tolerance in units of each state's typical size (``> 0``): state ``i``
        gets ``atol * ATOL_SCALE[i]`` in its own unit.
    max_steps:
        Attempted steps (accepted + rejected) over the whole solve (numba) or per
        integration segment between events (JAX, diffrax's limit).
    """

    method: str = "auto"
    rtol: float = 1e-7
    atol: float = 1e-9
    max_steps: int = 200_000

    def __post_init__(self) -> None:
        if self.method not in JAX_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {list(JAX_METHODS)}")
        # Normalise the numbers so that equal options compare (and hash) equal.
        object.__setattr__(self, "rtol", float(self.rtol))
        object.__setattr__(self, "atol", float(self.atol))
        object.__setattr__(self, "max_steps", int(self.max_steps))

    def replace(self, **changes: object) -> SolverOptions:
        """A copy with some fields changed (``PREDICT.replace(rtol=1e-6)``)."""
        return replace(self, **changes)

    @property
    def numba_method(self) -> int:
        """Method code of the numba solver; ValueError for a JAX-only method."""
        try:
            return NUMBA_METHODS[self.method]
        except KeyError:
            raise ValueError(
                f"method {self.method!r} is JAX-only; numba takes {list(NUMBA_METHODS)}"
            ) from None

    @property
    def jax_method(self) -> str:
        """diffrax solver name for this method."""
        return JAX_METHODS[self.method]


#: Likelihood evaluations inside a sampler (the fitting Op's defaults): the data's residual
#: SD is >= 10 %, far above the 1e-5 relative error this keeps; the fitted models are not
#: stiff at their default rates (explicit Tsit5); the step limit stops a pathological draw
#: early.
FIT = SolverOptions("tsit5", rtol=1e-5, atol=1e-7, max_steps=20_000)
#: Population predictions and plans drawn from posteriors (thousands of solves).
PREDICT = SolverOptions("auto", rtol=1e-7, atol=1e-9, max_steps=200_000)
#: One trajectory shown to a user or written as a synthetic observation.
SIMULATE = SolverOptions("auto", rtol=1e-8, atol=1e-10, max_steps=200_000)
#: Screens over many virtual patients where only day-scale features matter (days below
#: a threshold, engraftment day).
SCREEN = SolverOptions("auto", rtol=1e-6, atol=1e-8, max_steps=100_000)
#: Conditioning simulations of predict-boost (2,400 particles per tempering stage): only
#: boost-day counts on the log scale (residual SD 0.12) and day counts matter. Against
#: DOP853 at rtol 1e-11 it keeps 5.4e-4 (tests/test_solver_contract.py). Against 1e-7, on
#: 2,400 prior particles (axi-cel, boost day 40; the model before ``mpp_rate`` 1.0/d), the
#: boost-day ANC and platelets moved by at most 1.2e-3 on the log scale (99th percentile
#: 4e-4) and the neutropenic-day count by at most 1 day, in a third of the time (1e-5: 44
#: %; 1e-3 moved counts by up to 0.09, too much).
CONDITION = SolverOptions("auto", rtol=1e-4, atol=1e-6, max_steps=200_000)
#: Tight reference for accuracy checks of the other presets.
REFERENCE = SolverOptions("auto", rtol=1e-11, atol=1e-13, max_steps=2_000_000)

PRESETS = {
    "fit": FIT,
    "predict": PREDICT,
    "simulate": SIMULATE,
    "screen": SCREEN,
    "condition": CONDITION,
    "reference": REFERENCE,
}
