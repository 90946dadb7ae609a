"""The ODE solves of a batch of patients as one PyTensor Op, with numba and JAX code.

:class:`SolveOp` maps the free log-parameters ``theta`` (n_patients, n_free) to

- ``pred`` (n_rows,): the model observable of each observation row at its day, the rows
  of all patients concatenated in patient order;
- ``jac`` (n_rows, n_free): ``d pred / d theta`` of each row by its own patient's
  log-parameters, from the solver's forward sensitivities;
- ``ok`` (n_patients,): 1.0 where the patient's solve succeeded with finite outputs, else 0.

A single patient is a batch of one (:func:`solve_patient`). The patients' schedules
(fixed parameters, output times, events, row indices; :class:`Schedule`, stacked by
:func:`stack_schedules` into the :data:`BATCH_INPUTS`) are inputs of the Op, not part of
it: one compiled kernel serves every patient of a model and solver setting, and the
schedule may be a shared variable (``pm.Data``) whose value changes between fits without a
recompile. On a failed solve (step limit, non-finite state, from an extreme parameter
draw) that patient's ``pred`` rows are filled with finite dummies (1.0), its ``jac`` rows
with zeros and its ``ok`` with 0: the model turns that into a -inf log-density with a
``pm.Potential``; nothing raises inside a sampler.

Backends
--------
- Python (``perform``) and numba (``numba_funcify``): a numba loop over the patients
  around the model's sensitivity solve (``solve_rows`` of
  :func:`carthema.fitting.op.native.sens_module`, which calls the solver's C callback by
  symbol name), so nutpie's numba backend runs the whole log-density and gradient
  without object mode, and PyTensor may cache the kernel and the graph around it on
  disk (a cache key per model and setting).
- JAX (``jax_funcify``): diffrax (:func:`carthema.models.jax_backend.make_solver`), one
  solver per patient built from the schedule's values when the graph is converted (XLA
  needs static shapes and event times: a JAX graph is built for the data it holds).
  ``pred`` is reverse-mode differentiable (``jax.grad``: numpyro, nutpie's JAX backend
  with ``gradient_backend="jax"``); ``jac`` comes from forward-mode ``jax.jacfwd`` for
  PyTensor's own gradient graph (and is dropped by XLA when unused).

Gradient
--------
``L_op`` returns, per patient, ``g_pred @ jac`` over its rows, using the Op's own ``jac``
output, so PyTensor evaluates one solve (states + sensitivities) per
log-density-and-gradient call. ``jac`` and ``ok`` are not differentiable.

It stays one module (about 550 lines): the batch layout (:class:`Schedule`), the Op and
its numba and JAX implementations must agree on one argument order, which is written
here once.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply, Constant, Variable
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import register_funcify_and_cache_key
from pytensor.scalar.basic import Cast
from pytensor.tensor.elemwise import Elemwise

from carthema.fitting.model.data import PatientData
from carthema.fitting.op.native import sens_module
from carthema.models.model import get_model
from carthema.models.simulate import METHODS

#: Default solver settings of a fit: tolerances relative to each state's typical size.
#: The explicit Tsit5 method is used: the fitted models are not stiff at their default
#: rates, and the log-likelihood needs far less accuracy than rtol 1e-6 gives.
RTOL = 1e-5
ATOL = 1e-7
MAX_STEPS = 20_000
METHOD = "tsit5"

#: Arrays of one patient's :class:`Schedule`.
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

#: Inputs of :class:`SolveOp` after ``theta``: every patient's :class:`Schedule` arrays,
#: stacked (``p_fixed``, ``t0``) or concatenated with offsets (times, events, rows), and
#: each row's patient.
BATCH_INPUTS = (
    "p_fixed",
    "free",
    "u0",
    "t0",
    "t_out",
    "t_off",
    "ev_t",
    "ev_kind",
    "ev_target",
    "ev_value",
    "ev_scale",
    "ev_off",
    "t_idx",
    "o_idx",
    "row_off",
    "row_patient",
)
_BATCH_INT = frozenset(
    {"free", "t_off", "ev_kind", "ev_target", "ev_scale", "ev_off", "t_idx", "o_idx"}
    | {"row_off", "row_patient"}
)


@dataclass(frozen=True)
class Schedule:
    """What one patient's solve needs besides ``theta`` (numpy arrays)."""

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
            t_idx=np.ascontiguousarray(data.t_idx, dtype=np.int64),
            o_idx=np.ascontiguousarray(data.o_idx, dtype=np.int64),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, n) for n in SCHEDULE_INPUTS)


def stack_schedules(schedules: Sequence[Schedule]) -> dict[str, np.ndarray]:
    """The inputs of :class:`SolveOp` (:data:`BATCH_INPUTS`, by name) of a batch of
    patients, one :class:`Schedule` each, in patient order. All share ``free`` and ``u0``."""
    schedules = list(schedules)
    if not schedules:
        raise ValueError("a batch needs at least one patient")

    def cat(name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
        parts = [np.asarray(getattr(s, name), dtype=dtype) for s in schedules]
        off = np.concatenate([[0], np.cumsum([len(a) for a in parts])]).astype(np.int64)
        return np.ascontiguousarray(np.concatenate(parts)), off

    out: dict[str, np.ndarray] = {
        "p_fixed": np.ascontiguousarray(np.stack([s.p_fixed for s in schedules])),
        "free": np.asarray(schedules[0].free, dtype=np.int64),
        "u0": np.asarray(schedules[0].u0, dtype=np.float64),
        "t0": np.array([float(s.t0) for s in schedules]),
    }
    out["t_out"], out["t_off"] = cat("t_out", np.float64)
    for n in ("ev_t", "ev_kind", "ev_target", "ev_value", "ev_scale"):
        out[n] = cat(n, np.float64 if n in ("ev_t", "ev_value") else np.int64)[0]
    out["ev_off"] = cat("ev_t", np.float64)[1]
    out["t_idx"], out["row_off"] = cat("t_idx", np.int64)
    out["o_idx"] = cat("o_idx", np.int64)[0]
    out["row_patient"] = np.repeat(np.arange(len(schedules)), np.diff(out["row_off"])).astype(
        np.int64
    )
    return {n: out[n] for n in BATCH_INPUTS}


def unstack_schedules(arrays: Sequence[np.ndarray]) -> list[Schedule]:
    """Inverse of :func:`stack_schedules` (arrays in :data:`BATCH_INPUTS` order)."""
    a = dict(zip(BATCH_INPUTS, (np.asarray(x) for x in arrays), strict=True))
    out = []
    for i in range(a["p_fixed"].shape[0]):
        ts = slice(a["t_off"][i], a["t_off"][i + 1])
        es = slice(a["ev_off"][i], a["ev_off"][i + 1])
        rs = slice(a["row_off"][i], a["row_off"][i + 1])
        out.append(
            Schedule(
                p_fixed=a["p_fixed"][i],
                free=a["free"],
                u0=a["u0"],
                t0=np.asarray(float(a["t0"][i])),
                t_out=a["t_out"][ts],
                ev_t=a["ev_t"][es],
                ev_kind=a["ev_kind"][es],
                ev_target=a["ev_target"][es],
                ev_value=a["ev_value"][es],
                ev_scale=a["ev_scale"][es],
                t_idx=a["t_idx"][rs],
                o_idx=a["o_idx"][rs],
            )
        )
    return out


# ---------------------------------------------------------------------------------------
# numba kernels (one per model module and solver setting)
# ---------------------------------------------------------------------------------------
_KERNELS: dict[tuple, tuple] = {}

#: How many batch kernels this process has built (one per model and solver setting):
#: tests read it to show that a second patient reuses the first one's.
KERNEL_BUILDS = [0]


def _kernels(model_name: str, rtol: float, atol: float, max_steps: int, method: int):
    """(single-patient kernel, batch kernel) of one model and solver setting."""
    key = (model_name, rtol, atol, max_steps, method)
    if key in _KERNELS:
        return _KERNELS[key]
    rows = sens_module(model_name).solve_rows

    @numba.njit(error_model="numpy", nogil=True)
    def single(
        theta, p_fixed, free, u0, t0, t_out, ev_t, ev_kind, ev_target, ev_value, ev_scale,
        t_idx, o_idx,
    ):  # fmt: skip
        pred, jac, good = rows(
            theta, p_fixed, free, u0, t0, t_out, ev_t, ev_kind, ev_target, ev_value,
            ev_scale, t_idx, o_idx, rtol, atol, max_steps, method,
        )  # fmt: skip
        return pred, jac, 1.0 if good else 0.0

    @numba.njit(error_model="numpy", nogil=True)
    def batch(
        theta, p_fixed, free, u0, t0, t_out, t_off, ev_t, ev_kind, ev_target, ev_value,
        ev_scale, ev_off, t_idx, o_idx, row_off, row_patient,
    ):  # fmt: skip
        n_pat = theta.shape[0]
        nf = theta.shape[1]
        n = t_idx.shape[0]
        pred = np.empty(n)
        jac = np.empty((n, nf))
        ok = np.empty(n_pat)
        for i in range(n_pat):
            a, b = t_off[i], t_off[i + 1]
            c, d = ev_off[i], ev_off[i + 1]
            r0, r1 = row_off[i], row_off[i + 1]
            p_i, j_i, ok_i = single(
                theta[i].copy(), p_fixed[i], free, u0, t0[i], t_out[a:b],
                ev_t[c:d], ev_kind[c:d], ev_target[c:d], ev_value[c:d], ev_scale[c:d],
                t_idx[r0:r1], o_idx[r0:r1],
            )  # fmt: skip
            pred[r0:r1] = p_i
            jac[r0:r1, :] = j_i
            ok[i] = ok_i
        return pred, jac, ok

    KERNEL_BUILDS[0] += 1
    _KERNELS[key] = (single, batch)
    return _KERNELS[key]


_KERNEL_SOURCE_HASH = hashlib.sha256(inspect.getsource(_kernels).encode()).hexdigest()[:16]


class SolveOp(Op):
    """``theta (n_patients, n_free) -> (pred, jac, ok)`` for one model and solver setting
    (see the module docstring). Call as ``op(theta, *inputs)`` with the
    :data:`BATCH_INPUTS` of :func:`stack_schedules` (numpy arrays, constants or shared
    variables), or use :func:`solve_patient` for one patient."""

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
        """The numba batch kernel (arguments: ``theta`` and the :data:`BATCH_INPUTS`)."""
        return _kernels(self.model_name, self.rtol, self.atol, self.max_steps, self.method_code)[1]

    def make_node(self, theta, *inputs) -> Apply:
        if len(inputs) != len(BATCH_INPUTS):
            raise TypeError(f"SolveOp takes theta and {len(BATCH_INPUTS)} batch inputs")
        theta = pt.as_tensor_variable(theta).astype("float64")
        if theta.ndim != 2:
            raise TypeError("SolveOp's theta is (n_patients, n_free); see solve_patient")
        ins = []
        for name, x in zip(BATCH_INPUTS, inputs, strict=True):
            x = pt.as_tensor_variable(x)
            ins.append(x.astype("int64" if name in _BATCH_INT else "float64"))
        outputs = [pt.dvector("pred"), pt.dmatrix("jac"), pt.dvector("ok")]
        return Apply(self, [theta, *ins], outputs)

    def perform(self, node, inputs, output_storage) -> None:
        arrays = [np.ascontiguousarray(a) for a in inputs]
        pred, jac, ok = self.kernel()(*arrays)
        output_storage[0][0] = pred
        output_storage[1][0] = jac
        output_storage[2][0] = ok

    def infer_shape(self, fgraph, node, input_shapes):
        n = input_shapes[BATCH_INPUTS.index("t_idx") + 1][0]
        nf = input_shapes[0][1]
        return [(n,), (n, nf), (input_shapes[0][0],)]

    def connection_pattern(self, node):
        return [[True, True, False]] + [[False, False, False]] * len(BATCH_INPUTS)

    def L_op(self, inputs, outputs, output_grads):
        theta = inputs[0]
        g_pred, g_jac, _ = output_grads
        rest = [disconnected_type() for _ in BATCH_INPUTS]
        if not isinstance(g_jac.type, DisconnectedType):
            why = "second derivatives of the ODE solve"
            return [grad_not_implemented(self, 0, theta, why), *rest]
        if isinstance(g_pred.type, DisconnectedType):
            return [pt.zeros_like(theta), *rest]
        if theta.type.shape[0] == 1:
            # A batch of one (a single-patient fit): every row is the patient's.
            return [pt.dot(g_pred, outputs[1])[None, :], *rest]
        row_patient = inputs[-1]
        g = pt.zeros_like(theta)[row_patient].inc(g_pred[:, None] * outputs[1])
        return [g, *rest]


@register_funcify_and_cache_key(SolveOp)
def _numba_funcify_solve(op: SolveOp, node=None, **kwargs):
    # The kernel calls the solver by symbol (see carthema.fitting.op.native), so PyTensor
    # may cache it and the graph around it on disk. The key names the solver (its module
    # carries the model's hash), the settings and the kernel's own source.
    native = sens_module(op.model_name)
    key = "|".join(
        [
            "carthema.SolveOp",
            native.__name__,
            repr((op.rtol, op.atol, op.max_steps, op.method_code)),
            _KERNEL_SOURCE_HASH,
        ]
    )
    return op.kernel(), key


def solve_patient(op: SolveOp, theta, inputs: Sequence) -> tuple:
    """One patient as a batch of one: ``theta`` (n_free,) -> ``(pred, jac, ok)`` with
    ``ok`` a scalar. ``inputs``: the :data:`BATCH_INPUTS` of a one-patient batch."""
    theta = pt.as_tensor_variable(theta)
    pred, jac, ok = op(theta[None, :], *inputs)
    return pred, jac, ok[0]


# ---------------------------------------------------------------------------------------
# JAX implementation
# ---------------------------------------------------------------------------------------
_JAX_SOLVER = {"tsit5": "tsit5", "rosenbrock": "kvaerno5", "auto": "tsit5"}


def jax_solve_function(op: SolveOp, schedule: Schedule):
    """``theta (n_free,) -> (pred, jac, ok)`` of one patient in JAX (diffrax).

    ``pred`` is differentiable by ``jax.grad`` in reverse mode (diffrax's recursive
    checkpointing adjoint: about 1.7x cheaper than forward mode for 11 parameters on the
    full model); ``jac`` is computed in forward mode (``jax.jacfwd``) and only when the
    graph uses it (PyTensor's gradient, :meth:`SolveOp.L_op`): XLA removes it otherwise.
    """
    import diffrax
    import jax
    import jax.numpy as jnp

    from carthema.models.jax_backend import make_solver

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


def jax_batch_function(op: SolveOp, schedules: Sequence[Schedule]):
    """``theta (n_patients, n_free) -> (pred, jac, ok)`` in JAX: one diffrax solve per
    patient (each with its own static schedule), outputs laid out as :class:`SolveOp`'s."""
    import jax.numpy as jnp

    fs = [jax_solve_function(op, s) for s in schedules]

    def f(theta):
        outs = [fi(theta[i]) for i, fi in enumerate(fs)]
        pred = jnp.concatenate([o[0] for o in outs])
        jac = jnp.concatenate([o[1] for o in outs], axis=0)
        ok = jnp.stack([o[2] for o in outs])
        return pred, jac, ok

    return f


def _static_value(var: Variable, name: str) -> np.ndarray:
    """The value a JAX graph bakes in for a schedule input (constant or shared)."""
    if var.owner is not None and isinstance(var.owner.op, Elemwise):
        if isinstance(var.owner.op.scalar_op, Cast):  # an astype of a constant or data
            var = var.owner.inputs[0]
    if isinstance(var, Constant):
        return np.asarray(var.data)
    if isinstance(var, SharedVariable):
        return np.asarray(var.get_value())
    raise NotImplementedError(
        f"SolveOp's JAX implementation needs a constant or shared '{name}' input"
    )


def _register_jax() -> None:
    """Register :class:`SolveOp`'s JAX implementation with PyTensor's JAX dispatcher
    (the dispatch module already imported)."""
    from pytensor.link.jax.dispatch import jax_funcify

    @jax_funcify.register(SolveOp)
    def _jax_funcify_solve(op: SolveOp, node=None, **kwargs):
        if node is None:
            raise NotImplementedError("SolveOp needs its node to read the patients' schedules")
        values = [_static_value(v, n) for n, v in zip(BATCH_INPUTS, node.inputs[1:], strict=True)]
        f = jax_batch_function(op, unstack_schedules(values))

        def solve_op(theta, *inputs):
            return f(theta)

        return solve_op


#: PyTensor's JAX dispatch module: importing it imports jax (about 0.9 s of a fresh
#: process, most of the fast log-density path's start-up beyond PyMC), so the JAX
#: implementation is registered when something imports it, not when this module is.
_JAX_DISPATCH = "pytensor.link.jax.dispatch"


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Runs :func:`_register_jax` right after :data:`_JAX_DISPATCH` is first imported,
    by whatever path: PyTensor's JAX linker imports it when a graph is compiled in JAX
    mode (``compile_logp(mode="JAX")``, nutpie's JAX backend, numpyro through PyMC), so
    every JAX compile finds the registration without jax being imported otherwise."""

    def __init__(self) -> None:
        self._finding = False

    def find_spec(self, fullname, path, target=None):
        if fullname != _JAX_DISPATCH or self._finding:
            return None
        self._finding = True  # the real spec, from the finders after this one
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:  # pragma: no cover - jax is a dependency
            return None
        spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    """The dispatch module's own loader, then :func:`_register_jax`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterAfterImport)]
        _register_jax()


if _JAX_DISPATCH in sys.modules:
    _register_jax()
else:
    sys.meta_path.insert(0, _RegisterAfterImport())
