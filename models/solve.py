"""``solve``: the one entry point to both solver backends.

Every caller describes a solve with three objects and gets one result type back::

    sol = solve(model, params, Schedule.from_events(model, ev, t_out), PREDICT, backend="numba")
    batch = solve_batch(model, P, schedule, PREDICT)      # one row of P per patient

- ``model``: a :class:`~.model.Model` (its numba module is compiled once and cached on
  disk; its JAX solve is compiled once per schedule and cached in the process);
- ``params``: natural-scale parameter vector (n_p,), or a matrix (n, n_p) for a batch;
- :class:`Schedule`: output times, events in solver form, start time and inputs;
- :class:`~.solver_contract.SolverOptions`: method, tolerances and step limit (use a
  preset: ``FIT``, ``PREDICT``, ``SIMULATE``, ``SCREEN``, ``REFERENCE``).

Both backends report :class:`~.solver_contract.Status` codes and both return
``Status.BAD_INPUT`` (outputs NaN, nothing raised) for inputs that break the solver
contract: unsorted or early output/event times, out-of-range event targets or scales,
bad tolerances, a parameter vector of the wrong length. The numba solver checks this
itself; for JAX the same rules are checked here (:func:`check_inputs`) before tracing,
because the JAX backend's ``make_solver`` raises ``ValueError`` on them. A JAX solve
that fails has all its outputs set to NaN (diffrax does not say where it failed).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .events import SolverEvents
from .model import Model
from .numba_backend import event_arrays
from .solver_contract import SIMULATE, SolverOptions, Status

__all__ = ["BatchSolution", "Schedule", "Solution", "check_inputs", "solve", "solve_batch"]

BACKENDS = ("numba", "jax")

# Compiled numba module per model object. numba_model() is cached on the model's value,
# but hashing a Model (every state and parameter record) costs ~100 us, as much as a
# forward solve; identity is checked, so a recycled id never aliases another model.
_NUMBA_MODULES: dict[int, tuple[Model, ModuleType]] = {}


def _numba_module(model: Model) -> ModuleType:
    hit = _NUMBA_MODULES.get(id(model))
    if hit is not None and hit[0] is model:
        return hit[1]
    from .compiled import numba_model

    mod = numba_model(model)
    _NUMBA_MODULES[id(model)] = (model, mod)
    return mod


@dataclass(frozen=True, eq=False)
class Schedule:
    """When a patient is dosed and when the solution is read (days).

    Attributes
    ----------
    t_out:
        Output times, non-decreasing, ``>= t0`` (float64). An output at an event time
        reports the state before that time's events (pre-dose sample).
    ev_t, ev_kind, ev_target, ev_value, ev_scale:
        Events in solver form, sorted by time (see :mod:`.events`): float64, int64,
        int64, float64, int64 (``ev_scale`` -1 for an unscaled bolus).
    t0:
        Start time; the state there is the model's ``init(p)`` (untreated steady state).
    u0:
        Piecewise-constant inputs at ``t0`` (n_u,), changed by set-input events.
    """

    t_out: np.ndarray
    ev_t: np.ndarray
    ev_kind: np.ndarray
    ev_target: np.ndarray
    ev_value: np.ndarray
    ev_scale: np.ndarray
    t0: float
    u0: np.ndarray

    @classmethod
    def from_events(
        cls,
        model: Model,
        events: SolverEvents | None,
        t_out: np.ndarray,
        *,
        t0: float | None = None,
        u0: np.ndarray | None = None,
    ) -> Schedule:
        """Schedule of ``events`` read at ``t_out``.

        ``t0`` defaults to the earlier of the first output and the first event; ``u0``
        to zeros (no input active before the first event).
        """
        t = np.ascontiguousarray(t_out, dtype=np.float64).reshape(-1)
        if events is None:
            arrays = event_arrays()
        else:
            arrays = event_arrays(events.t, events.kind, events.target, events.value, events.scale)
        if t0 is None:
            starts = [float(t[0])] if t.size else [0.0]
            if arrays[0].size:
                starts.append(float(arrays[0][0]))
            t0 = min(starts)
        u = np.zeros(model.n_u) if u0 is None else u0
        u = np.ascontiguousarray(u, dtype=np.float64).reshape(-1)
        return cls(t, *arrays, float(t0), u)


@dataclass(frozen=True, eq=False)
class Solution:
    """One patient's solve.

    Attributes
    ----------
    status:
        Outcome; outputs from a failure point on are NaN.
    t:
        Output times (days).
    obs:
        Observables (n_t, n_obs) in the units of ``model.observables``.
    y:
        States (n_t, n_y) (numba backend; ``None`` from JAX).
    dobs:
        ``d obs / d log p[free]`` (n_t, n_obs, n_free) when ``free`` was given.
    n_steps:
        Attempted steps (numba forward solve only).
    """

    status: Status
    t: np.ndarray
    obs: np.ndarray
    y: np.ndarray | None = None
    dobs: np.ndarray | None = None
    n_steps: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK


@dataclass(frozen=True, eq=False)
class BatchSolution:
    """Many parameter vectors under one schedule: ``status`` (n,) int64 codes of
    :class:`Status`, ``obs`` (n, n_t, n_obs)."""

    status: np.ndarray
    t: np.ndarray
    obs: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.status == Status.OK

    def astuple(self) -> tuple[np.ndarray, np.ndarray]:
        """``(status, obs)``, the numba ``solve_population`` return form."""
        return self.status, self.obs


def check_inputs(model: Model, p: np.ndarray, schedule: Schedule, options: SolverOptions) -> bool:
    """True if the inputs satisfy the solver contract (the numba solver's own check).

    ``p`` is one parameter vector or a matrix of them (rows).
    """
    s = schedule
    p = np.asarray(p)
    if p.shape[-1:] != (model.n_p,) or s.u0.shape != (model.n_u,):
        return False
    if not np.isfinite(s.t0):
        return False
    o = options
    if not (np.isfinite(o.rtol) and o.rtol >= 0 and np.isfinite(o.atol) and o.atol > 0):
        return False
    t = s.t_out
    if not np.all(np.isfinite(t)) or np.any(t < s.t0) or np.any(np.diff(t) < 0):
        return False
    n = s.ev_t.size
    if any(a.size != n for a in (s.ev_kind, s.ev_target, s.ev_value, s.ev_scale)):
        return False
    if n == 0:
        return True
    if not (np.all(np.isfinite(s.ev_t)) and np.all(np.isfinite(s.ev_value))):
        return False
    if np.any(s.ev_t < s.t0) or np.any(np.diff(s.ev_t) < 0):
        return False
    bolus = s.ev_kind == 0
    setin = s.ev_kind == 1
    if not np.all(bolus | setin):
        return False
    if np.any(bolus & ((s.ev_target < 0) | (s.ev_target >= model.n_y))):
        return False
    if np.any(setin & ((s.ev_target < 0) | (s.ev_target >= model.n_u))):
        return False
    return not np.any((s.ev_scale < -1) | (s.ev_scale >= model.n_p))


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")


def solve(
    model: Model,
    params: np.ndarray,
    schedule: Schedule,
    options: SolverOptions = SIMULATE,
    backend: str = "numba",
    *,
    free: np.ndarray | None = None,
) -> Solution:
    """Solve one patient (see the module docstring).

    ``free`` (numba only): indices into ``params`` of the parameters whose log-scale
    sensitivities ``dobs`` are integrated with the states (forward sensitivities).
    Never raises for a numerical failure or bad input: check ``status``. Raises
    ValueError for an unknown backend or a method the backend does not have.
    """
    _check_backend(backend)
    s = schedule
    p = np.ascontiguousarray(params, dtype=np.float64)
    if backend == "numba":
        method = options.numba_method
        mod = _numba_module(model)
        if p.ndim != 1:
            return _failed_single(model, s, free)
        common = (s.u0, s.t0, s.t_out, s.ev_t, s.ev_kind, s.ev_target, s.ev_value, s.ev_scale)
        tail = (options.rtol, options.atol, options.max_steps, method)
        if free is None:
            status, Y, O, n_steps = mod.solve(p, *common, *tail)
            return Solution(Status(int(status)), s.t_out, O, Y, None, int(n_steps))
        fr = np.ascontiguousarray(free, dtype=np.int64).reshape(-1)
        status, Y, O, dO = mod.solve_sens(p, fr, *common, *tail)
        return Solution(Status(int(status)), s.t_out, O, Y, dO)
    if free is not None:
        raise ValueError("sensitivities (free=...) are computed by the numba backend only")
    if p.ndim != 1 or not check_inputs(model, p, s, options):
        return _failed_single(model, s, None)
    status, obs = _jax().simulate(model, p, s.t_out, **_jax_kwargs(s, options))
    st = Status(int(status))
    if st != Status.OK:
        obs = np.full_like(obs, np.nan)
    return Solution(st, s.t_out, obs)


def solve_batch(
    model: Model,
    params: np.ndarray,
    schedule: Schedule,
    options: SolverOptions = SIMULATE,
    backend: str = "numba",
) -> BatchSolution:
    """Solve every row of ``params`` (n, n_p) under one schedule.

    numba: in parallel threads (``prange``); JAX: ``jax.jit(jax.vmap(...))``, compiled
    once per schedule. A bad schedule gives ``Status.BAD_INPUT`` on every row.
    """
    _check_backend(backend)
    s = schedule
    P = np.ascontiguousarray(params, dtype=np.float64)
    if P.ndim != 2:
        P = P.reshape(-1, P.shape[-1] if P.ndim else 1)
    n = P.shape[0]
    if backend == "numba":
        method = options.numba_method
        mod = _numba_module(model)
        status, obs = mod.solve_population(
            P, s.u0, s.t0, s.t_out, s.ev_t, s.ev_kind, s.ev_target, s.ev_value, s.ev_scale,
            options.rtol, options.atol, options.max_steps, method,
        )  # fmt: skip
        return BatchSolution(status, s.t_out, obs)
    if not check_inputs(model, P, s, options):
        status = np.full(n, int(Status.BAD_INPUT), dtype=np.int64)
        return BatchSolution(status, s.t_out, np.full((n, s.t_out.size, model.n_obs), np.nan))
    status, obs = _jax().simulate_population(model, P, s.t_out, **_jax_kwargs(s, options))
    status = np.asarray(status, dtype=np.int64)
    obs = np.array(obs, dtype=np.float64)
    obs[status != Status.OK] = np.nan
    return BatchSolution(status, s.t_out, obs)


def _failed_single(model: Model, s: Schedule, free: np.ndarray | None) -> Solution:
    n_t = s.t_out.size
    dobs = None if free is None else np.full((n_t, model.n_obs, np.size(free)), np.nan)
    return Solution(
        Status.BAD_INPUT,
        s.t_out,
        np.full((n_t, model.n_obs), np.nan),
        None,
        dobs,
    )


def _jax():
    from . import jax_backend

    return jax_backend


def _jax_kwargs(s: Schedule, options: SolverOptions) -> dict:
    return dict(
        t0=s.t0,
        u0=s.u0,
        ev_t=s.ev_t,
        ev_kind=s.ev_kind,
        ev_target=s.ev_target,
        ev_value=s.ev_value,
        ev_scale=s.ev_scale,
        solver=options.jax_method,
        rtol=options.rtol,
        atol=options.atol,
        max_steps=options.max_steps,
    )
