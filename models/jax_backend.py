"""JAX/diffrax backend: jittable, vmappable, differentiable solves of a carthema model.

The model equations are plain Python functions written once and shared with the numba
backend (DESIGN.md section 3). This module only needs a duck-typed model object with

- ``n_y, n_p, n_u, n_obs``: ints (states, parameters, inputs, observables);
- ``atol_scale``: array (n_y,) of typical state magnitudes in the state's own unit; the
  absolute tolerance of state ``i`` is ``atol * atol_scale[i]``;
- ``rhs(t, y, p, u, m) -> sequence of n_y scalars``: dy/dt in state units per day;
- ``init(p, m) -> sequence of n_y scalars``: the state at ``t0`` before any event;
- ``observe(t, y, p, m) -> sequence of n_obs scalars``: observables in assay units.

``y``, ``p`` and ``u`` are 1-D arrays indexed with integer constants and ``m`` is a math
namespace (``jax.numpy`` here, ``math``/``numpy`` elsewhere) providing ``exp``, ``log``,
``sqrt``. The functions contain no Python control flow on values, so they trace.

Events
------
Events come as arrays whose times, kinds, targets and scales are static (numpy, known at
trace time) so the segment structure is unrolled in Python; only their values may be
traced:

- ``ev_t`` (days, float64, sorted ascending, ``>= t0``);
- ``ev_kind``: ``EV_BOLUS`` (0): ``y[target] += value * (p[scale] if scale >= 0 else 1)``;
  ``EV_SET_INPUT`` (1): ``u[target] = value`` from that time on;
- ``ev_target``: state index (bolus) or input index (set input);
- ``ev_scale``: parameter index multiplying a bolus, or -1 for none (ignored for inputs);
- ``ev_value``: the amount (state unit) or the input level (input unit); may be traced.

Integration starts at ``t0`` from ``init(p)`` with inputs ``u0`` and restarts exactly at
every distinct event time (one ``diffeqsolve`` per segment), so no adaptive step ever
straddles a discontinuity. Events sharing a time are applied in table order.

Conventions shared with the numba backend:

- an output time equal to an event time reports the state BEFORE that time's events
  (pre-dose sample); this includes events at ``t0``: an output at ``t0`` is ``init(p)``;
- events after the last output time cannot influence any output and are skipped.

Status codes are those of :class:`carthema.models.solver_contract.Status`, shared with
the numba backend: ``MAX_STEPS`` (1) when diffrax hit its step limit in a segment,
``NONFINITE`` (2) when a state or observable is not finite, ``SOLVER_FAILED`` (5) for
any other non-successful diffrax result. A failure never raises: ``throw=False`` is
passed to diffrax, and the fitting layer turns a nonzero status into a -inf log-density.
Bad input (unsorted times, out-of-range targets) raises ``ValueError`` here, at build
time; :func:`carthema.models.solve.solve` checks it first and returns ``BAD_INPUT``
instead, as the numba backend does.

Precision: carthema needs float64 (cell counts span ~1e-6 to 1e12 and the reference
tests run at rtol 1e-10), so importing this module enables ``jax_enable_x64`` globally.

It stays one module (about 500 lines): the solver object, the static event layout, the
compiled single-patient and population functions share one cache key per model and
event layout.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import jax

# Must run before any array is created: carthema's tolerances are below float32's
# resolution. This is a process-wide JAX setting.
jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from .solver_contract import Status  # noqa: E402

__all__ = [
    "EV_BOLUS",
    "EV_SET_INPUT",
    "STATUS_MAX_STEPS",
    "STATUS_NONFINITE",
    "STATUS_OK",
    "STATUS_SOLVER_FAILED",
    "SOLVERS",
    "JaxModel",
    "device_description",
    "make_solver",
    "simulate",
    "simulate_population",
]

EV_BOLUS = 0
EV_SET_INPUT = 1

STATUS_OK = int(Status.OK)
STATUS_MAX_STEPS = int(Status.MAX_STEPS)
STATUS_NONFINITE = int(Status.NONFINITE)
STATUS_SOLVER_FAILED = int(Status.SOLVER_FAILED)

SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    # Stiff-capable (L-stable ESDIRK); its Newton iterations use the controller's tolerances.
    "kvaerno5": diffrax.Kvaerno5,
}

SolveFn = Callable[[Any, Any, Any], tuple[jax.Array, jax.Array]]


class JaxModel(Protocol):
    """What this backend needs from a model (structural type, see the module docstring)."""

    n_y: int
    n_p: int
    n_u: int
    n_obs: int
    atol_scale: np.ndarray

    def rhs(self, t: Any, y: Any, p: Any, u: Any, m: Any) -> Any: ...

    def init(self, p: Any, m: Any) -> Any: ...

    def observe(self, t: Any, y: Any, p: Any, m: Any) -> Any: ...


def device_description() -> str:
    """Describe the device JAX computes on, e.g. ``"gpu: NVIDIA H100 80GB HBM3 (jax 0.4.35)"``."""
    dev = jax.devices()[0]
    return f"{dev.platform}: {dev.device_kind} (jax {jax.__version__})"


def _stack(values: Any, dtype: Any) -> jax.Array:
    # Model functions return tuples that may mix traced scalars and Python literals
    # (a derivative that is identically 0.0), so convert each element explicitly.
    return jnp.stack([jnp.asarray(v, dtype=dtype) for v in values])


def _as_static_events(
    t0: float,
    ev_t: Any,
    ev_kind: Any,
    ev_target: Any,
    ev_scale: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ev_t = np.asarray([] if ev_t is None else ev_t, dtype=np.float64).ravel()
    n_ev = ev_t.size

    def _ints(a: Any, name: str, default: int | None = None) -> np.ndarray:
        if a is None:
            if default is None and n_ev:
                raise ValueError(f"{name} is required when events are given")
            return np.full(n_ev, -1 if default is None else default, dtype=np.int64)
        out = np.asarray(a).ravel()
        if out.size != n_ev:
            raise ValueError(f"{name} has {out.size} entries, ev_t has {n_ev}")
        if out.size and not np.all(out == np.round(out)):
            raise ValueError(f"{name} must hold integers")
        return out.astype(np.int64)

    ev_kind = _ints(ev_kind, "ev_kind")
    ev_target = _ints(ev_target, "ev_target")
    ev_scale = _ints(ev_scale, "ev_scale", default=-1)
    if n_ev:
        if not np.all(np.isfinite(ev_t)):
            raise ValueError("ev_t must be finite")
        if np.any(np.diff(ev_t) < 0):
            raise ValueError("ev_t must be sorted ascending")
        if ev_t[0] < t0:
            raise ValueError(f"event at t={ev_t[0]} precedes t0={t0}")
        if not np.all(np.isin(ev_kind, (EV_BOLUS, EV_SET_INPUT))):
            raise ValueError("ev_kind must be 0 (bolus) or 1 (set input)")
    return ev_t, ev_kind, ev_target, ev_scale


def _make_solver_object(solver: str | diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    try:
        return SOLVERS[solver]()
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}") from None


def make_solver(
    model: JaxModel,
    t0: float,
    t_out: Any,
    ev_t: Any = None,
    ev_kind: Any = None,
    ev_target: Any = None,
    ev_scale: Any = None,
    *,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> SolveFn:
    """Build ``solve(p, u0, ev_value) -> (status, obs)`` for a fixed schedule.

    Args:
        model: the model (see :class:`JaxModel`).
        t0: start time (days); the state there is ``model.init(p)``.
        t_out: output times (days), sorted ascending, all ``>= t0``; duplicates allowed.
        ev_t, ev_kind, ev_target, ev_scale: static event arrays (module docstring); all
            ``None`` (or empty) for no events. ``ev_scale`` may be ``None`` (no scaling).
        solver: ``"tsit5"`` or ``"dopri5"`` (explicit, non-stiff), ``"kvaerno5"``
            (implicit, for stiff rates), or a diffrax solver instance.
        rtol: relative tolerance.
        atol: absolute tolerance in units of ``model.atol_scale`` (state ``i`` gets
            ``atol * atol_scale[i]``).
        max_steps: step limit per segment; hitting it gives ``STATUS_MAX_STEPS``.
        adjoint: diffrax adjoint. ``None`` is diffrax's default
            (``RecursiveCheckpointAdjoint``: reverse mode, ``jax.grad``/``jax.jacrev``).
            Pass ``diffrax.ForwardMode()`` to differentiate with ``jax.jacfwd``/``jax.jvp``.

    Returns:
        A pure function (not jitted; wrap it in ``jax.jit``/``jax.vmap`` as needed) of
        ``p`` (n_p,), ``u0`` (n_u,) inputs before any event, and ``ev_value`` (n_ev,),
        returning ``status`` (int32 scalar, ``STATUS_*``) and ``obs`` (n_t, n_obs),
        float64. On failure ``obs`` holds garbage (possibly inf/nan) and must not be used.
        It is differentiable with respect to ``p``, ``u0`` and ``ev_value``.
    """
    t0 = float(t0)
    t_out = np.asarray(t_out, dtype=np.float64).ravel()
    if not np.all(np.isfinite(t_out)):
        raise ValueError("t_out must be finite")
    if np.any(np.diff(t_out) < 0):
        raise ValueError("t_out must be sorted ascending")
    if t_out.size and t_out[0] < t0:
        raise ValueError(f"output time {t_out[0]} precedes t0={t0}")
    ev_t, ev_kind, ev_target, ev_scale = _as_static_events(t0, ev_t, ev_kind, ev_target, ev_scale)
    n_ev = ev_t.size
    n_y, n_obs, n_u, n_p = int(model.n_y), int(model.n_obs), int(model.n_u), int(model.n_p)
    for k in range(n_ev):
        if ev_kind[k] == EV_BOLUS and not 0 <= ev_target[k] < n_y:
            raise ValueError(f"event {k}: bolus target {ev_target[k]} outside 0..{n_y - 1}")
        if ev_kind[k] == EV_SET_INPUT and not 0 <= ev_target[k] < n_u:
            raise ValueError(f"event {k}: input target {ev_target[k]} outside 0..{n_u - 1}")
        if ev_kind[k] == EV_BOLUS and ev_scale[k] >= n_p:
            raise ValueError(f"event {k}: scale parameter {ev_scale[k]} outside 0..{n_p - 1}")

    atol_scale = np.asarray(model.atol_scale, dtype=np.float64).ravel()
    if atol_scale.size != n_y or np.any(atol_scale <= 0):
        raise ValueError("model.atol_scale must hold n_y positive magnitudes")
    atol_vec = jnp.asarray(atol * atol_scale)
    controller = diffrax.PIDController(rtol=rtol, atol=atol_vec)
    ode_solver = _make_solver_object(solver)
    adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint

    t_end = float(t_out[-1]) if t_out.size else t0
    # Events at/after the last output only act after every sample (pre-dose convention).
    active = np.flatnonzero(ev_t < t_end)
    group_times = np.unique(ev_t[active])
    # Segment k integrates [starts[k], ends[k]] after applying the events at starts[k].
    starts = [t0] + [float(s) for s in group_times if s > t0]
    ends = starts[1:] + [t_end]
    if t_end <= t0:
        starts, ends = [], []
    groups = {float(s): [int(k) for k in active if ev_t[k] == s] for s in group_times}
    # Outputs at t0 are the initial state (before events at t0); those in (a, b] belong to
    # the segment [a, b], so an output at an event time is the state before its events.
    n_at_t0 = int(np.sum(t_out == t0))
    seg_ts = [t_out[(t_out > a) & (t_out <= b)] for a, b in zip(starts, ends, strict=True)]

    def vector_field(t: Any, y: Any, args: Any) -> Any:
        p, u, alive = args
        dy = _stack(model.rhs(t, y, p, u, jnp), y.dtype)
        # After a failed segment, the remaining segments integrate dy/dt = 0 from a finite
        # state: a vmapped batch then does not spend max_steps on every later segment.
        return jnp.where(alive, dy, 0.0)

    term = diffrax.ODETerm(vector_field)

    def apply_events(k_list: list[int], y: Any, u: Any, p: Any, ev_value: Any) -> Any:
        for k in k_list:
            if ev_kind[k] == EV_BOLUS:
                amount = ev_value[k] * (p[ev_scale[k]] if ev_scale[k] >= 0 else 1.0)
                y = y.at[ev_target[k]].add(amount)
            else:
                u = u.at[ev_target[k]].set(ev_value[k])
        return y, u

    # Every segment is solved by the same jitted function with the same argument shapes
    # (segment bounds are traced scalars, output times are padded to a common length), so
    # diffrax is traced once per make_solver instead of once per segment: tracing dominates
    # compile time and a patient history can have tens of event times.
    n_save = max((ts.size for ts in seg_ts), default=0)
    seg_ts_padded = [
        np.concatenate([ts, np.full(n_save - ts.size, b)])
        for ts, b in zip(seg_ts, ends, strict=True)
    ]

    @jax.jit
    def solve_segment(a: Any, b: Any, ts: Any, y: Any, p: Any, u: Any, alive: Any) -> Any:
        if n_save:
            saveat = diffrax.SaveAt(ts=ts, t1=True)
        else:
            saveat = diffrax.SaveAt(t1=True)
        sol = diffrax.diffeqsolve(
            term,
            ode_solver,
            t0=a,
            t1=b,
            dt0=None,
            y0=y,
            args=(p, u, alive),
            saveat=saveat,
            stepsize_controller=controller,
            adjoint=adjoint,
            max_steps=max_steps,
            throw=False,
        )
        ok = sol.result == diffrax.RESULTS.successful
        return ok, sol.result == diffrax.RESULTS.max_steps_reached, sol.ys[:-1], sol.ys[-1]

    def solve(p: Any, u0: Any, ev_value: Any) -> tuple[jax.Array, jax.Array]:
        p = jnp.asarray(p, dtype=jnp.float64)
        u = jnp.asarray(u0, dtype=jnp.float64).reshape(n_u)
        ev_value = jnp.asarray(ev_value, dtype=jnp.float64).reshape(n_ev)
        y = _stack(model.init(p, jnp), jnp.float64)
        ys_parts = [jnp.broadcast_to(y, (n_at_t0, n_y))]
        alive = jnp.all(jnp.isfinite(y))
        solver_ok = jnp.array(True)
        step_limit = jnp.array(False)
        for a, b, ts, ts_pad in zip(starts, ends, seg_ts, seg_ts_padded, strict=True):
            y, u = apply_events(groups.get(a, []), y, u, p, ev_value)
            ok, hit_limit, ys_seg, y_end = solve_segment(
                jnp.float64(a), jnp.float64(b), jnp.asarray(ts_pad), y, p, u, alive
            )
            # The first failing segment decides; later ones integrate dy/dt = 0.
            step_limit = step_limit | (solver_ok & hit_limit)
            solver_ok = solver_ok & ok
            ys_parts.append(ys_seg[: ts.size])
            alive = alive & ok & jnp.all(jnp.isfinite(y_end))
            # Restart from the segment's (finite) start state when it failed; see above.
            y = jnp.where(alive, y_end, y)
        ys = jnp.concatenate(ys_parts, axis=0)
        obs = jax.vmap(lambda t, yy: _stack(model.observe(t, yy, p, jnp), yy.dtype))(
            jnp.asarray(t_out), ys
        ).reshape(t_out.size, n_obs)
        finite = jnp.all(jnp.isfinite(ys)) & jnp.all(jnp.isfinite(obs))
        status = jnp.where(
            solver_ok,
            jnp.where(finite, STATUS_OK, STATUS_NONFINITE),
            jnp.where(step_limit, STATUS_MAX_STEPS, STATUS_SOLVER_FAILED),
        ).astype(jnp.int32)
        return status, obs

    return solve


# --- convenience wrappers with a compiled-function cache -------------------------------

_CACHE_SIZE = 32
_cache: OrderedDict[tuple, tuple[JaxModel, Callable]] = OrderedDict()


def _key_array(a: Any, dtype: Any) -> tuple:
    if a is None:
        return (None,)
    arr = np.asarray(a, dtype=dtype).ravel()
    return (arr.size, arr.tobytes())


def _compiled(
    model: JaxModel,
    kind: str,
    t0: float,
    t_out: Any,
    ev_t: Any,
    ev_kind: Any,
    ev_target: Any,
    ev_scale: Any,
    vmap_ev: bool,
    options: dict[str, Any],
) -> Callable:
    # Compiling a diffrax solve takes seconds, so reuse it across calls with the same
    # schedule. Keyed on id(model) but the model is kept alive in the value and checked
    # with `is`, so a recycled id can never alias another model.
    key = (
        id(model),
        kind,
        vmap_ev,
        float(t0),
        _key_array(t_out, np.float64),
        _key_array(ev_t, np.float64),
        _key_array(ev_kind, np.int64),
        _key_array(ev_target, np.int64),
        _key_array(ev_scale, np.int64),
        _key_array(model.atol_scale, np.float64),
        tuple(sorted((k, repr(v)) for k, v in options.items())),
    )
    hit = _cache.get(key)
    if hit is not None and hit[0] is model:
        _cache.move_to_end(key)
        return hit[1]
    solve = make_solver(model, t0, t_out, ev_t, ev_kind, ev_target, ev_scale, **options)
    if kind == "single":
        fn = jax.jit(solve)
    else:
        fn = jax.jit(jax.vmap(solve, in_axes=(0, None, 0 if vmap_ev else None)))
    _cache[key] = (model, fn)
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return fn


def _default_u0(model: JaxModel, u0: Any) -> np.ndarray:
    n_u = int(model.n_u)
    return np.zeros(n_u) if u0 is None else np.asarray(u0, dtype=np.float64).reshape(n_u)


def _default_values(ev_t: Any, ev_value: Any) -> np.ndarray:
    n_ev = 0 if ev_t is None else np.asarray(ev_t).size
    if ev_value is None:
        if n_ev:
            raise ValueError("ev_value is required when events are given")
        return np.zeros(0)
    return np.asarray(ev_value, dtype=np.float64)


def simulate(
    model: JaxModel,
    p: Any,
    t_out: Any,
    *,
    t0: float = 0.0,
    u0: Any = None,
    ev_t: Any = None,
    ev_kind: Any = None,
    ev_target: Any = None,
    ev_value: Any = None,
    ev_scale: Any = None,
    solver: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
) -> tuple[int, np.ndarray]:
    """Solve one patient; returns ``(status, obs)`` with ``obs`` (n_t, n_obs) in numpy.

    ``p`` is (n_p,) in the model's natural units, ``u0`` (n_u,) defaults to zeros, times
    are in days; see :func:`make_solver` for the events, tolerances and status codes. The
    jitted solve is cached per (model, schedule, options), so repeated calls with new
    parameters or event values do not recompile.
    """
    options = dict(solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)
    fn = _compiled(model, "single", t0, t_out, ev_t, ev_kind, ev_target, ev_scale, False, options)
    status, obs = fn(
        np.asarray(p, dtype=np.float64), _default_u0(model, u0), _default_values(ev_t, ev_value)
    )
    return int(status), np.asarray(obs)


def simulate_population(
    model: JaxModel,
    P: Any,
    t_out: Any,
    *,
    t0: float = 0.0,
    u0: Any = None,
    ev_t: Any = None,
    ev_kind: Any = None,
    ev_target: Any = None,
    ev_value: Any = None,
    ev_scale: Any = None,
    solver: str = "tsit5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    chunk_size: int = 16_384,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve a virtual population with ``jax.jit(jax.vmap(...))`` on ``jax.devices()[0]``.

    Args:
        P: parameters, (n, n_p). All patients share ``t_out``, ``u0`` and the event
            schedule; ``ev_value`` is (n_ev,) shared or (n, n_ev) per patient.
        chunk_size: at most this many patients per device call, to bound memory; the
            population is split into equal chunks (the last one padded) so that one
            compiled function serves all chunks.
        others: as :func:`simulate`.

    Returns:
        ``status`` (n,) int32 and ``obs`` (n, n_t, n_obs) float64, numpy arrays.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != int(model.n_p):
        raise ValueError(f"P must have shape (n, {model.n_p}), got {P.shape}")
    n = P.shape[0]
    values = _default_values(ev_t, ev_value)
    vmap_ev = values.ndim == 2
    if vmap_ev and values.shape[0] != n:
        raise ValueError("per-patient ev_value must have one row per patient")
    n_t = np.asarray(t_out).size
    if n == 0:
        return np.zeros(0, dtype=np.int32), np.zeros((0, n_t, int(model.n_obs)))
    options = dict(solver=solver, rtol=rtol, atol=atol, max_steps=max_steps)
    fn = _compiled(
        model, "population", t0, t_out, ev_t, ev_kind, ev_target, ev_scale, vmap_ev, options
    )
    u0 = _default_u0(model, u0)
    n_chunks = math.ceil(n / max(int(chunk_size), 1))
    size = math.ceil(n / n_chunks)
    statuses, observations = [], []
    for c in range(n_chunks):
        lo, hi = c * size, min((c + 1) * size, n)
        idx = np.arange(lo, lo + size).clip(max=hi - 1)  # pad by repeating the last row
        status, obs = fn(P[idx], u0, values[idx] if vmap_ev else values)
        statuses.append(np.asarray(status)[: hi - lo])
        observations.append(np.asarray(obs)[: hi - lo])
    return np.concatenate(statuses), np.concatenate(observations)
