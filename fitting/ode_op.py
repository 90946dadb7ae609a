"""The ODE solve of one patient as a PyTensor Op, with numba and JAX implementations.

:class:`SolveOp` maps the free log-parameters ``theta`` (n_free,) to

- ``pred`` (n_rows,): the model observable of each observation row at its day;
- ``jac`` (n_rows, n_free): ``d pred / d theta`` from the solver's forward sensitivities;
- ``ok`` (scalar float, 1.0 or 0.0): whether the solve succeeded with finite outputs.

The patient's schedule (fixed parameters, output times, events, row indices) enters as
constant inputs, so one compiled kernel serves every patient of a model. On a failed solve
(step limit, non-finite state, from an extreme parameter draw) ``pred`` is filled with
finite dummies (1.0) and ``jac`` with zeros and ``ok`` is 0: the model turns that into a
-inf log-density with a ``pm.Potential``; nothing raises inside a sampler.

Backends
--------
- Python (``perform``): calls the model's cached numba module
  (:func:`carthema.models.compiled.numba_model`).
- numba (``numba_funcify``, registered with a cache key): the same kernel, called from
  PyTensor's numba-compiled log-density, so nutpie's numba backend runs the whole
  log-density and gradient without object mode.
- JAX (``jax_funcify``): diffrax (:func:`carthema.models.jax_backend.make_solver`).
  ``pred`` is reverse-mode differentiable (``jax.grad``: numpyro through
  ``pm.sample(nuts_sampler="numpyro")``, nutpie's JAX backend with
  ``gradient_backend="jax"``); ``jac`` comes from forward-mode ``jax.jacfwd`` for
  PyTensor's own gradient graph (and is dropped by XLA when unused).

Gradient
--------
``L_op`` returns ``g_pred @ jac`` using the Op's own ``jac`` output, so PyTensor evaluates
one solve (states + sensitivities) per log-density-and-gradient call. ``jac`` and ``ok``
are not differentiable (second derivatives are not provided).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import numba_funcify

from ..models.model import get_model
from ..models.simulate import METHODS
from ._native import sens_module
from .data import PatientData

#: Default solver settings of a fit: tolerances relative to each state's typical size.
#: The explicit Tsit5 method is used: the fitted models are not stiff at their default
#: rates, and the log-likelihood needs far less accuracy than rtol 1e-6 gives.
RTOL = 1e-5
ATOL = 1e-7
MAX_STEPS = 20_000
METHOD = "tsit5"

#: Names of the Op's inputs after ``theta`` (all constants of the patient's schedule).
SCHEDULE_INPUTS = (
    "p_fixed",
    "free",
    "u0",
    "t0",
    "t_out",
    "ev_t",
    "ev_kind",
    "ev_target",
    "ev_value",
    "ev_scale",
    "t_idx",
    "o_idx",
)
_INT_INPUTS = {"free", "ev_kind", "ev_target", "ev_scale", "t_idx", "o_idx"}


@dataclass(frozen=True)
class Schedule:
    """Constant inputs of :class:`SolveOp` for one patient (numpy arrays)."""

    p_fixed: np.ndarray
    free: np.ndarray
    u0: np.ndarray
    t0: np.ndarray  # 0-d
    t_out: np.ndarray
    ev_t: np.ndarray
    ev_kind: np.ndarray
    ev_target: np.ndarray
    ev_value: np.ndarray
    ev_scale: np.ndarray
    t_idx: np.ndarray
    o_idx: np.ndarray

    @classmethod
    def from_data(cls, data: PatientData, free: tuple[str, ...]) -> Schedule:
        model = data.model
        ev = data.events
        return cls(
            p_fixed=np.ascontiguousarray(data.p_fixed, dtype=np.float64),
            free=np.array([model.index("param", n) for n in free], dtype=np.int64),
            u0=np.zeros(model.n_u),
            t0=np.asarray(float(data.t0)),
            t_out=np.ascontiguousarray(data.times, dtype=np.float64),
            ev_t=np.ascontiguousarray(ev.t, dtype=np.float64),
            ev_kind=np.ascontiguousarray(ev.kind, dtype=np.int64),
            ev_target=np.ascontiguousarray(ev.target, dtype=np.int64),
            ev_value=np.ascontiguousarray(ev.value, dtype=np.float64),
            ev_scale=np.ascontiguousarray(ev.scale, dtype=np.int64),
            t_idx=data.t_idx,
            o_idx=data.o_idx,
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, n) for n in SCHEDULE_INPUTS)

    def constants(self) -> list[pt.TensorConstant]:
        return [pt.constant(a, name=n) for n, a in zip(SCHEDULE_INPUTS, self.arrays(), strict=True)]


# ---------------------------------------------------------------------------------------
# numba kernel (one per model module and solver setting)
# ---------------------------------------------------------------------------------------
_KERNELS: dict[tuple, object] = {}


def _kernel(model_name: str, rtol: float, atol: float, max_steps: int, method: int):
    key = (model_name, rtol, atol, max_steps, method)
    if key in _KERNELS:
        return _KERNELS[key]
    native = sens_module(model_name)
    solve_c = native.solve_sens_c.ctypes  # called through its address: nothing to link
    n_y = native.N_Y
    n_obs = native.N_OBS

    @numba.njit(error_model="numpy", nogil=True)
    def kernel(
        theta, p_fixed, free, u0, t0, t_out, ev_t, ev_kind, ev_target, ev_value, ev_scale,
        t_idx, o_idx,
    ):  # fmt: skip
        nf = free.shape[0]
        n_t = t_out.shape[0]
        n_ev = ev_t.shape[0]
        p = p_fixed.copy()
        # Writable C-contiguous copies (PyTensor constants are read-only).
        free_c = free.copy()
        u0_c = u0.copy()
        t_out_c = t_out.copy()
        ev_t_c = ev_t.copy()
        ev_kind_c = ev_kind.copy()
        ev_target_c = ev_target.copy()
        ev_value_c = ev_value.copy()
        ev_scale_c = ev_scale.copy()
        for k in range(nf):
            p[free_c[k]] = np.exp(theta[k])
        Y = np.empty((n_t, n_y))
        O = np.empty((n_t, n_obs))
        dO = np.empty((n_t, n_obs, nf))
        status = solve_c(
            p.ctypes, free_c.ctypes, nf, u0_c.ctypes, t0.item(), t_out_c.ctypes, n_t,
            ev_t_c.ctypes, ev_kind_c.ctypes, ev_target_c.ctypes, ev_value_c.ctypes,
            ev_scale_c.ctypes, n_ev, rtol, atol, max_steps, method,
            Y.ctypes, O.ctypes, dO.ctypes,
        )  # fmt: skip
        n = t_idx.shape[0]
        pred = np.empty(n)
        jac = np.empty((n, nf))
        acc = 0.0
        for i in range(n):
            pred[i] = O[t_idx[i], o_idx[i]]
            acc += pred[i] * 0.0
            for k in range(nf):
                jac[i, k] = dO[t_idx[i], o_idx[i], k]
                acc += jac[i, k] * 0.0
        good = status == 0 and acc == 0.0
        if not good:
            pred[:] = 1.0
            jac[:, :] = 0.0
        return pred, jac, np.asarray(1.0 if good else 0.0)

    _KERNELS[key] = kernel
    return kernel


class SolveOp(Op):
    """``theta -> (pred, jac, ok)`` for one model and solver setting (see module doc).

    Call as ``op(theta, *schedule.constants())``.
    """

    __props__ = ("model_name", "rtol", "atol", "max_steps", "method")

    def __init__(
        self,
        model_name: str,
        rtol: float = RTOL,
        atol: float = ATOL,
        max_steps: int = MAX_STEPS,
        method: str = METHOD,
    ) -> None:
        self.model_name = str(model_name)
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = int(max_steps)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        self.method = str(method)
        super().__init__()

    @property
    def method_code(self) -> int:
        return METHODS[self.method]

    def kernel(self):
        return _kernel(self.model_name, self.rtol, self.atol, self.max_steps, self.method_code)

    def make_node(self, theta, *schedule) -> Apply:
        if len(schedule) != len(SCHEDULE_INPUTS):
            raise TypeError(f"SolveOp takes theta and {len(SCHEDULE_INPUTS)} schedule inputs")
        theta = pt.as_tensor_variable(theta).astype("float64")
        ins = []
        for name, x in zip(SCHEDULE_INPUTS, schedule, strict=True):
            x = pt.as_tensor_variable(x)
            x = x.astype("int64" if name in _INT_INPUTS else "float64")
            ins.append(x)
        outputs = [pt.dvector("pred"), pt.dmatrix("jac"), pt.dscalar("ok")]
        return Apply(self, [theta, *ins], outputs)

    def perform(self, node, inputs, output_storage) -> None:
        arrays = [np.ascontiguousarray(a) for a in inputs]
        arrays[4] = np.asarray(arrays[4], dtype=np.float64)  # t0, 0-d
        pred, jac, ok = self.kernel()(*arrays)
        output_storage[0][0] = pred
        output_storage[1][0] = jac
        output_storage[2][0] = np.asarray(ok, dtype=np.float64)

    def infer_shape(self, fgraph, node, input_shapes):
        n = input_shapes[-1][0]
        nf = input_shapes[2][0]
        return [(n,), (n, nf), ()]

    def connection_pattern(self, node):
        return [[True, True, False]] + [[False, False, False]] * len(SCHEDULE_INPUTS)

    def L_op(self, inputs, outputs, output_grads):
        theta = inputs[0]
        g_pred, g_jac, _ = output_grads
        if not isinstance(g_jac.type, DisconnectedType):
            return [grad_not_implemented(self, 0, theta, "second derivatives of the ODE solve")] + [
                disconnected_type() for _ in SCHEDULE_INPUTS
            ]
        if isinstance(g_pred.type, DisconnectedType):
            g_theta = pt.zeros_like(theta)
        else:
            g_theta = pt.dot(g_pred, outputs[1])
        return [g_theta] + [disconnected_type() for _ in SCHEDULE_INPUTS]


@numba_funcify.register(SolveOp)
def _numba_funcify_solve(op: SolveOp, node=None, **kwargs):
    # No cache key: the kernel holds the solver's address, which changes between
    # processes. It compiles in well under a second (the solver itself is cached).
    return op.kernel()


# ---------------------------------------------------------------------------------------
# JAX implementation
# ---------------------------------------------------------------------------------------
_JAX_SOLVER = {"tsit5": "tsit5", "rosenbrock": "kvaerno5", "auto": "tsit5"}


def jax_solve_function(op: SolveOp, schedule: Schedule):
    """``theta -> (pred, jac, ok)`` in JAX (diffrax).

    ``pred`` is differentiable by ``jax.grad`` in reverse mode (diffrax's recursive
    checkpointing adjoint: about 1.7x cheaper than forward mode for 11 parameters on the
    full model); ``jac`` is computed in forward mode (``jax.jacfwd``) and only when the
    graph uses it (PyTensor's gradient, :meth:`SolveOp.L_op`): XLA removes it otherwise.
    """
    import diffrax
    import jax
    import jax.numpy as jnp

    from ..models.jax_backend import make_solver

    model = get_model(op.model_name)
    s = schedule

    def solver(adjoint):
        return make_solver(
            model,
            float(s.t0),
            s.t_out,
            s.ev_t,
            s.ev_kind,
            s.ev_target,
            s.ev_scale,
            solver=_JAX_SOLVER[op.method],
            rtol=op.rtol,
            atol=op.atol,
            max_steps=op.max_steps,
            adjoint=adjoint,
        )

    solve_rev = solver(diffrax.RecursiveCheckpointAdjoint())
    solve_fwd = solver(diffrax.ForwardMode())
    p_fixed = jnp.asarray(s.p_fixed)
    free = jnp.asarray(s.free)
    u0 = jnp.asarray(s.u0)
    ev_value = jnp.asarray(s.ev_value)
    t_idx = jnp.asarray(s.t_idx)
    o_idx = jnp.asarray(s.o_idx)

    def pred_of(solve, theta):
        p = p_fixed.at[free].set(jnp.exp(theta))
        status, obs = solve(p, u0, ev_value)
        return obs[t_idx, o_idx], status

    def f(theta):
        pred, status = pred_of(solve_rev, theta)
        jac = jax.jacfwd(lambda th: pred_of(solve_fwd, th)[0])(theta)
        good = (status == 0) & jnp.all(jnp.isfinite(pred))
        pred = jnp.where(good, pred, 1.0)
        jac = jnp.where(good & jnp.isfinite(jac), jac, 0.0)
        return pred, jac, jnp.where(good, 1.0, 0.0)

    return f


def _register_jax() -> None:
    try:
        from pytensor.link.jax.dispatch import jax_funcify
    except ImportError:  # pragma: no cover - jax is a hard dependency
        return

    @jax_funcify.register(SolveOp)
    def _jax_funcify_solve(op: SolveOp, node=None, **kwargs):
        if node is None:
            raise NotImplementedError("SolveOp needs its node to read the patient's schedule")
        consts = []
        for name, var in zip(SCHEDULE_INPUTS, node.inputs[1:], strict=True):
            if not isinstance(var, Constant):
                raise NotImplementedError(
                    f"SolveOp's JAX implementation needs a constant '{name}' input"
                )
            consts.append(np.asarray(var.data))
        f = jax_solve_function(op, Schedule(*consts))

        def solve_op(theta, *schedule):
            return f(theta)

        return solve_op


_register_jax()
