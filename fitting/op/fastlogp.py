"""A cached, generated log-density and gradient of the single-patient model (nutpie, MAP).

Why: nutpie's PyMC path compiles the PyTensor graph of the log-density in every fresh
process (tens of seconds: its C callbacks close over the function and the data, so numba
never caches them). This module writes the same log-density as numba ``cfunc``\\ s with
``cache=True`` into a generated file (the generated-file cache,
:mod:`carthema.models.gencache`, kind ``fastlogp``): a fresh process loads them in a
fraction of a second.

The PyMC model of :func:`carthema.fitting.model.build.build_model` stays the one definition and
the reference. The generated code follows the same description of the model:

- ``z ~ Normal(0, 1)`` (dims ``param``), ``theta = prior_mu + prior_sd * z``;
- the estimated residual SDs ``sigma ~ HalfNormal(prior_scale)`` sampled as
  ``log sigma`` with the log-Jacobian; the others held at ``sigma_fixed``;
- the solve through ``solve_rows`` of :mod:`carthema.fitting.op.native` (the function
  :class:`~carthema.fitting.op.ode_op.SolveOp`'s kernel calls), its failure flag (or a
  non-finite output) giving a log-density of -inf;
- each row's prediction on its likelihood scale by the row's scale code
  (:data:`carthema.fitting.model.build.SCALE_CODES`: a branch is generated per code, from
  :data:`SCALE_SOURCE`; a code without one leaves the fast path unavailable), then the
  normal density (quantified rows) or the M3 probability
  (:func:`carthema.fitting.model.likelihood.normal_lcdf_pt`, the same branches) of censored rows.

Every input is read from :attr:`FitModel.inputs` (the ``pm.Data`` of the PyMC model) and
packed into one float64 array (:func:`pack`; integers are exact in float64), which nutpie
passes to the callbacks as their user data: one compiled file per model serves every
patient, free-parameter set and solver setting.

Guard: :func:`fast_model` compares the fast log-density and gradient with PyMC's own at
the fit's initial point (:func:`check`); beyond :data:`CHECK_RTOL` (relative) it returns
``None`` and the caller uses the PyMC/PyTensor path, saying so in one line.

It stays one module (about 750 lines): the generated source's text (the density's
template and one branch per scale code), the packing of the inputs it reads and the
nutpie wrapper that passes them must agree slot by slot, and the check against PyMC
guards exactly that agreement; split, a change to one would not show the others.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import threading
import time
from collections.abc import Callable
from types import ModuleType

import numpy as np

from ...models.gencache import load_generated
from ...models.model import get_model
from ..model.build import SCALE_CODES, FitModel
from ..model.likelihood import _TAIL
from ..model.priors import RESIDUALS
from .native import sens_module
from .ode_op import SCHEDULE_INPUTS

#: Relative tolerance of the run-time check against PyMC's log-density and gradient.
CHECK_RTOL = 1e-8

#: numba source of each row scale: from the prediction ``f`` and the row's ``floor``, set
#: ``m`` (the prediction on the likelihood scale) and ``dm`` (d m / d f), as PyTensor
#: differentiates :func:`carthema.fitting.model.build.transform_rows_pt` (``maximum`` passes the
#: gradient where the output equals the input, ``clip`` inside its closed range).
SCALE_SOURCE: dict[str, str] = {
    "identity": "m = f\n        dm = 1.0",
    "log": (
        "fp = max(f, 0.0)\n"
        "        m = math.log(fp + floor)\n"
        "        dm = (1.0 if f >= 0.0 else 0.0) / (fp + floor)"
    ),
    "logit": (
        "fr = f / 100.0\n"
        "        fc = min(max(fr, 0.0), 1.0)\n"
        "        fl = floor / 100.0\n"
        "        m = math.log(fc + fl) - math.log(1.0 - fc + fl)\n"
        "        inside = 1.0 if (fr >= 0.0 and fr <= 1.0) else 0.0\n"
        "        dm = inside / 100.0 * (1.0 / (fc + fl) + 1.0 / (1.0 - fc + fl))"
    ),
}

#: Header of the packed data (:func:`pack`): scalars, then the offset of each array.
HEADER = (
    "length",
    "n_free",
    "n_sigma_free",
    "n_sigma_fixed",
    "n_rows",
    "n_t",
    "n_ev",
    "n_expand",
    "t0",
    "rtol",
    "atol",
    "max_steps",
    "method",
)
#: Arrays of the packed data, in order (``expand``: the codes of :data:`EXPAND_CODES`).
ARRAYS = (
    "prior_mu",
    "prior_sd",
    "sigma_prior",
    "sigma_fixed",
    # One patient's schedule, as SolveOp takes it (t0 is in the header).
    *(name for name in SCHEDULE_INPUTS if name != "t0"),
    "row_scale",
    "row_floor",
    "row_sigma",
    "row_censored",
    "row_y",
    "expand",
)
#: What nutpie's expanded draw holds, by the PyMC variable's name: the unconstrained
#: values, ``sigma``, the deterministics ``log_params`` and ``params``.
EXPAND_CODES = {"z": 0, "sigma_log__": 1, "sigma": 2, "log_params": 3, "params": 4}


class FastPathUnavailable(Exception):
    """The model has a feature the generated log-density does not implement."""


_TEMPLATE = '''"""Generated by carthema.fitting.op.fastlogp: the single-patient log-density
and gradient of the '{model}' model as numba cfuncs, solving through {native}.solve_rows."""
import math
import sys

import numpy as np
from numba import carray, cfunc, njit, types

# The rows of one solve, shared with SolveOp's kernel (it calls the solver by symbol, so
# the cached machine code here holds no process address).
_solve_rows = sys.modules["{native}"].solve_rows

N_Y = {n_y}
N_P = {n_p}
N_U = {n_u}
N_OBS = {n_obs}
{header}
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
LOG_SQRT_2_OVER_PI = 0.5 * math.log(2.0 / math.pi)
SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
TAIL = {tail!r}

_F = types.CPointer(types.float64)
LOGP_SIGNATURE = types.int64(types.uint64, _F, _F, _F, _F)
EXPAND_SIGNATURE = types.int64(types.uint64, types.uint64, _F, _F, _F)
_OPT = dict(cache=True, error_model="numpy", nogil=True)


@njit(**_OPT)
def _ints(d, off, n):
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = np.int64(d[off + i])
    return out


@njit(**_OPT)
def _floats(d, off, n):
    out = np.empty(n)
    for i in range(n):
        out[i] = d[off + i]
    return out


@njit(**_OPT)
def solve_rows(theta, d):
    """(pred, jac, good) at the rows, as SolveOp's kernel gives them."""
    nf = np.int64(d[H_N_FREE])
    n_t = np.int64(d[H_N_T])
    n_ev = np.int64(d[H_N_EV])
    n_r = np.int64(d[H_N_ROWS])
    p = _floats(d, np.int64(d[O_P_FIXED]), N_P)
    free = _ints(d, np.int64(d[O_FREE]), nf)
    u0 = _floats(d, np.int64(d[O_U0]), N_U)
    t_out = _floats(d, np.int64(d[O_T_OUT]), n_t)
    ev_t = _floats(d, np.int64(d[O_EV_T]), n_ev)
    ev_kind = _ints(d, np.int64(d[O_EV_KIND]), n_ev)
    ev_target = _ints(d, np.int64(d[O_EV_TARGET]), n_ev)
    ev_value = _floats(d, np.int64(d[O_EV_VALUE]), n_ev)
    ev_scale = _ints(d, np.int64(d[O_EV_SCALE]), n_ev)
    return _solve_rows(
        theta, p, free, u0, d[H_T0], t_out, ev_t, ev_kind, ev_target, ev_value, ev_scale,
        _ints(d, np.int64(d[O_T_IDX]), n_r), _ints(d, np.int64(d[O_O_IDX]), n_r),
        d[H_RTOL], d[H_ATOL], np.int64(d[H_MAX_STEPS]), np.int64(d[H_METHOD]),
    )


@njit(**_OPT)
def row_scale(code, f, floor):
    """(m, dm/df): the prediction f on the row's likelihood scale."""
{scales}
    return np.nan, np.nan


@njit(**_OPT)
def normal_lcdf(z):
    """(log Phi(z), its derivative), the branches of likelihood.normal_lcdf_pt."""
    if z < TAIL:
        r = 1.0 / (z * z)
        s = 1.0 + r * (-1.0 + r * (3.0 + r * (-15.0 + r * 105.0)))
        ds = -1.0 + r * (6.0 + r * (-45.0 + r * 420.0))
        val = -0.5 * z * z - LOG_SQRT_2PI - math.log(-z) + math.log(s)
        return val, -z - 1.0 / z + ds / s * (-2.0 * r / z)
    dens = SQRT_2_OVER_PI * math.exp(-0.5 * z * z)
    if z < 0.0:
        e = math.erfc(-z / SQRT2)
        return math.log(0.5 * e), dens / e
    e = 0.5 * math.erfc(z / SQRT2)
    return math.log1p(-e), 0.5 * dens / (1.0 - e)


@njit(**_OPT)
def logp_grad(x, g, d):
    """log-density at the unconstrained point x (z, then log sigma); gradient into g."""
    nf = np.int64(d[H_N_FREE])
    nsf = np.int64(d[H_N_SIGMA_FREE])
    nsx = np.int64(d[H_N_SIGMA_FIXED])
    n_r = np.int64(d[H_N_ROWS])
    o_mu = np.int64(d[O_PRIOR_MU])
    o_sd = np.int64(d[O_PRIOR_SD])
    lp = 0.0
    theta = np.empty(nf)
    for k in range(nf):
        z = x[k]
        lp += -0.5 * z * z - LOG_SQRT_2PI
        g[k] = -z
        theta[k] = d[o_mu + k] + d[o_sd + k] * z
    sig = np.empty(nsf + nsx)
    o_sp = np.int64(d[O_SIGMA_PRIOR])
    for j in range(nsf):
        v = x[nf + j]
        s = np.exp(v)
        sig[j] = s
        sc = d[o_sp + j]
        u = s / sc
        lp += -0.5 * u * u + LOG_SQRT_2_OVER_PI - math.log(sc) + v
        g[nf + j] = 1.0 - u * u
    o_sx = np.int64(d[O_SIGMA_FIXED])
    for j in range(nsx):
        sig[nsf + j] = d[o_sx + j]
    pred, jac, good = solve_rows(theta, d)
    o_sc = np.int64(d[O_ROW_SCALE])
    o_fl = np.int64(d[O_ROW_FLOOR])
    o_si = np.int64(d[O_ROW_SIGMA])
    o_ce = np.int64(d[O_ROW_CENSORED])
    o_y = np.int64(d[O_ROW_Y])
    gpred = np.empty(n_r)
    for r in range(n_r):
        m, dm = row_scale(np.int64(d[o_sc + r]), pred[r], d[o_fl + r])
        si = np.int64(d[o_si + r])
        s = sig[si]
        zz = (d[o_y + r] - m) / s
        if d[o_ce + r] != 0.0:
            val, dval = normal_lcdf(zz)
            lp += val
            dmu = -dval / s
            ds = -dval * zz / s
        else:
            lp += -0.5 * zz * zz - LOG_SQRT_2PI - math.log(s)
            dmu = zz / s
            ds = (zz * zz - 1.0) / s
        gpred[r] = dmu * dm
        if si < nsf:
            g[nf + si] += ds * s
    for k in range(nf):
        acc = 0.0
        for r in range(n_r):
            acc += gpred[r] * jac[r, k]
        g[k] += d[o_sd + k] * acc
    if not good:
        lp = -np.inf
    return lp


@cfunc(LOGP_SIGNATURE, **_OPT)
def logp_c(dim, x_, g_, lp_, d_):
    n = np.int64(carray(d_, (1,))[0])
    d = carray(d_, (n,))
    if dim != np.int64(d[H_N_FREE]) + np.int64(d[H_N_SIGMA_FREE]):
        return -1
    x = carray(x_, (dim,))
    g = carray(g_, (dim,))
    out = carray(lp_, (1,))
    val = logp_grad(x, g, d)
    out[0] = val
    for i in range(dim):
        if not np.isfinite(g[i]):
            return 3
    if not np.isfinite(val):
        return 4
    return 0


@cfunc(EXPAND_SIGNATURE, **_OPT)
def expand_c(dim, n_expanded, x_, out_, d_):
    n = np.int64(carray(d_, (1,))[0])
    d = carray(d_, (n,))
    nf = np.int64(d[H_N_FREE])
    nsf = np.int64(d[H_N_SIGMA_FREE])
    if dim != nf + nsf:
        return -1
    x = carray(x_, (dim,))
    out = carray(out_, (n_expanded,))
    o_mu = np.int64(d[O_PRIOR_MU])
    o_sd = np.int64(d[O_PRIOR_SD])
    o_ex = np.int64(d[O_EXPAND])
    pos = 0
    for b in range(np.int64(d[H_N_EXPAND])):
        code = np.int64(d[o_ex + b])
        if code == 0:
            for k in range(nf):
                out[pos + k] = x[k]
            pos += nf
        elif code == 1:
            for j in range(nsf):
                out[pos + j] = x[nf + j]
            pos += nsf
        elif code == 2:
            for j in range(nsf):
                out[pos + j] = np.exp(x[nf + j])
            pos += nsf
        elif code == 3:
            for k in range(nf):
                out[pos + k] = d[o_mu + k] + d[o_sd + k] * x[k]
            pos += nf
        else:
            for k in range(nf):
                out[pos + k] = np.exp(d[o_mu + k] + d[o_sd + k] * x[k])
            pos += nf
    if pos != n_expanded:
        return -2
    return 0
'''


def _scales_source() -> str:
    """One branch per code of :data:`SCALE_CODES` (the model description's row scales)."""
    missing = [s for s in SCALE_CODES if s not in SCALE_SOURCE]
    if missing:
        raise FastPathUnavailable(f"no generated form of the row scale(s) {missing}")
    out = []
    for i, (scale, code) in enumerate(sorted(SCALE_CODES.items(), key=lambda kv: kv[1])):
        out.append(f"    {'if' if i == 0 else 'elif'} code == {int(code)}:  # {scale}")
        out.append(f"        {SCALE_SOURCE[scale]}")
        out.append("        return m, dm")
    return "\n".join(out)


def _header_source() -> str:
    lines = [f"H_{name.upper()} = {i}" for i, name in enumerate(HEADER)]
    lines += [f"O_{name.upper()} = {len(HEADER) + i}" for i, name in enumerate(ARRAYS)]
    return "\n".join(lines)


def source(model_name: str) -> str:
    """Text of the generated module of a model (see the module docstring)."""
    model = get_model(model_name)
    native = sens_module(model_name)
    return _TEMPLATE.format(
        model=model.name,
        native=native.__name__,
        n_y=model.n_y,
        n_p=model.n_p,
        n_u=model.n_u,
        n_obs=model.n_obs,
        header=_header_source(),
        tail=float(_TAIL),
        scales=_scales_source(),
    )


@functools.cache
def module(model_name: str) -> ModuleType:
    """The generated module of a model (``logp_c``, ``expand_c``, ``logp_grad``, ...),
    written to the generated-file cache when its text is new and imported once per
    process; numba loads its machine code from ``__pycache__`` beside it."""
    return load_generated(
        "fastlogp", f"logp_{model_name}", source(model_name), f"_carthema_fastlogp_{model_name}"
    )


# ---------------------------------------------------------------------------------------
# Packed data
# ---------------------------------------------------------------------------------------
def expand_layout(fm: FitModel) -> tuple[list[str], list[tuple[int, ...]]]:
    """Names and shapes of nutpie's expanded draw: the PyMC model's value variables, then
    its untransformed variables and deterministics (``Model.unobserved_value_vars``)."""
    names = [v.name for v in fm.pymc_model.unobserved_value_vars]
    unknown = [n for n in names if n not in EXPAND_CODES]
    if unknown:
        raise FastPathUnavailable(f"the model has variables the fast path lacks: {unknown}")
    nf, ns = len(fm.free), len(fm.sigma_free)
    size = {"z": nf, "sigma_log__": ns, "sigma": ns, "log_params": nf, "params": nf}
    return names, [(size[n],) for n in names]


def pack(fm: FitModel) -> np.ndarray:
    """Everything the generated log-density reads, from ``fm.inputs`` (the PyMC model's
    data) and its solver settings, as one float64 array (layout :data:`HEADER`,
    :data:`ARRAYS`)."""
    if not getattr(fm, "structure", ()):
        raise FastPathUnavailable("the model has a custom predictor")
    if [v.name for v in fm.pymc_model.value_vars] != ["z", "sigma_log__"][
        : 1 + bool(fm.sigma_free)
    ]:
        raise FastPathUnavailable("the model's free variables are not (z, log sigma)")
    inp = fm.inputs
    if inp["sched_p_fixed"].shape[0] != 1:  # pragma: no cover - build_model's is one
        raise FastPathUnavailable("a batch of several patients")
    n_rows = len(inp["row_scale"])
    censored = np.zeros(n_rows)
    censored[inp["cen_idx"]] = 1.0
    y = np.empty(n_rows)
    y[inp["unc_idx"]] = inp["y_obs"]
    y[inp["cen_idx"]] = inp["y_cen"]
    names, _ = expand_layout(fm)
    arrays = {
        "prior_mu": inp["prior_mu"],
        "prior_sd": inp["prior_sd"],
        "sigma_prior": np.array([RESIDUALS[a].prior_scale for a in fm.sigma_free]),
        "sigma_fixed": inp["sigma_fixed"],
        "p_fixed": inp["sched_p_fixed"][0],
        "free": inp["sched_free"],
        "u0": inp["sched_u0"],
        "t_out": inp["sched_t_out"],
        "ev_t": inp["sched_ev_t"],
        "ev_kind": inp["sched_ev_kind"],
        "ev_target": inp["sched_ev_target"],
        "ev_value": inp["sched_ev_value"],
        "ev_scale": inp["sched_ev_scale"],
        "t_idx": inp["sched_t_idx"],
        "o_idx": inp["sched_o_idx"],
        "row_scale": inp["row_scale"],
        "row_floor": inp["row_floor"],
        "row_sigma": inp["row_sigma"],
        "row_censored": censored,
        "row_y": y,
        "expand": np.array([EXPAND_CODES[n] for n in names]),
    }
    op = fm.op
    scalars = {
        "n_free": len(fm.free),
        "n_sigma_free": len(fm.sigma_free),
        "n_sigma_fixed": len(inp["sigma_fixed"]),
        "n_rows": n_rows,
        "n_t": len(inp["sched_t_out"]),
        "n_ev": len(inp["sched_ev_t"]),
        "n_expand": len(names),
        "t0": float(inp["sched_t0"][0]),
        "rtol": op.rtol,
        "atol": op.atol,
        "max_steps": op.max_steps,
        "method": op.method_code,
    }
    parts = [np.asarray(arrays[n], dtype=np.float64).ravel() for n in ARRAYS]
    start = len(HEADER) + len(ARRAYS)
    offsets = np.cumsum([start] + [len(p) for p in parts[:-1]])
    head = [0.0] + [float(scalars[n]) for n in HEADER[1:]]
    d = np.concatenate([np.array(head), offsets.astype(np.float64), *parts])
    d[0] = len(d)
    return np.ascontiguousarray(d)


# ---------------------------------------------------------------------------------------
# nutpie's compiled model and a Python value_grad
# ---------------------------------------------------------------------------------------
_P = ctypes.POINTER(ctypes.c_double)


class FastLogp:
    """``x -> (logp, grad)`` of one patient through the generated ``logp_c``."""

    def __init__(self, mod: ModuleType, data: np.ndarray, n_dim: int) -> None:
        self._fn = mod.logp_c.ctypes
        self.data = data
        self.n_dim = n_dim

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        g = np.empty(self.n_dim)
        lp = np.empty(1)
        self._fn(self.n_dim, x.ctypes.data_as(_P), g.ctypes.data_as(_P),
                 lp.ctypes.data_as(_P), self.data.ctypes.data_as(_P))  # fmt: skip
        return float(lp[0]), g


def _initial_point_func(fm: FitModel, names: list[str]) -> Callable:
    """nutpie's default start (PyMC's support point with a U(-1, 1) jitter), compiled on
    first use only: carthema's fits usually start at Laplace draws around the MAP."""
    lock = threading.Lock()
    state: dict = {}

    def init(seed=None) -> np.ndarray:
        with lock:
            if "fn" not in state:
                from pymc.initial_point import make_initial_point_fn

                m = fm.pymc_model
                state["fn"] = make_initial_point_fn(
                    model=m, jitter_rvs=set(m.free_RVs), return_transformed=True
                )
            point = state["fn"](seed)
        return np.concatenate([np.ravel(point[n]) for n in names]).astype(np.float64)

    return init


@functools.cache
def _model_class():
    from nutpie.compile_pymc import CompiledPyMCModel

    @dataclasses.dataclass(frozen=True)
    class FastCompiledModel(CompiledPyMCModel):
        """nutpie's compiled PyMC model on carthema's generated callbacks; the user data
        is the patient's packed array (:func:`pack`)."""

        fast_module: ModuleType | None = None

        def value_grad(self) -> FastLogp:
            return FastLogp(self.fast_module, self.user_data, self.n_dim)

        def with_data(self, **updates):
            raise NotImplementedError("build another with fastlogp.compiled_model(fm)")

    return FastCompiledModel


def compiled_model(fm: FitModel):
    """nutpie's compiled model of ``fm`` on the generated log-density (no check; see
    :func:`fast_model`). Raises :class:`FastPathUnavailable`."""
    import pandas as pd

    cls = _model_class()
    mod = module(fm.model.name)
    data = pack(fm)
    names, shapes = expand_layout(fm)
    sizes = [int(np.prod(s)) for s in shapes]
    stops = list(itertools.accumulate(sizes))
    slices = [slice(b - n, b) for b, n in zip(stops, sizes, strict=True)]
    value_names = [v.name for v in fm.pymc_model.value_vars]
    n_dim = sum(sz for n, sz in zip(names, sizes, strict=True) if n in value_names)
    model = fm.pymc_model
    coords = {name: pd.Index(vals) for name, vals in model.coords.items()}
    unc = [f"{n}_{i}" for n, s in zip(names, shapes, strict=True) if n in value_names
           for i in range(s[0])]  # fmt: skip
    coords["unconstrained_parameter"] = pd.Index(unc)
    kwargs = {
        "dims": dict(model.named_vars_to_dims),
        "compiled_logp_func": mod.logp_c,
        "compiled_expand_func": mod.expand_c,
        "initial_point_func": _initial_point_func(fm, value_names),
        "shared_data": {},
        "user_data": data,
        "n_expanded": int(sum(sizes)),
        "shape_info": (names, slices, shapes),
        "logp_func": None,
        "expand_func": None,
        "_n_dim": int(n_dim),
        "_shapes": dict(zip(names, shapes, strict=True)),
        "_coords": coords,
        "fast_module": mod,
    }
    fields = {f.name for f in dataclasses.fields(cls)}
    if "shared_var_keys" in fields:  # newer nutpie
        kwargs["shared_var_keys"] = {}
    return cls(**{k: v for k, v in kwargs.items() if k in fields})


# ---------------------------------------------------------------------------------------
# The run-time check against PyMC
# ---------------------------------------------------------------------------------------
_CHECK_LOCK = threading.Lock()
_X0: dict[tuple, np.ndarray] = {}
_REFERENCE: dict[tuple, tuple] = {}


def clear() -> None:
    """Forget the per-structure initial points and check functions (tests)."""
    with _CHECK_LOCK:
        _X0.clear()
        _REFERENCE.clear()


def initial_point(fm: FitModel) -> np.ndarray:
    """The raveled unconstrained initial point of the PyMC model (z = 0, each estimated
    SD at its half-normal's support point), as :func:`~carthema.fitting.sampling.laplace.find_map`
    starts from it; computed once per :attr:`FitModel.structure` (it depends on the free
    parameters and the estimated SDs only)."""
    from ..sampling.laplace import value_grad_function

    key = fm.structure
    if not key:
        return value_grad_function(fm, compile=False)[3]
    with _CHECK_LOCK:
        if key not in _X0:
            _X0[key] = value_grad_function(fm, compile=False)[3]
        return _X0[key].copy()


def _reference_function(fm: FitModel):
    """(compiled function, (name, dtype) of its data inputs) of :func:`reference`, once per
    :attr:`FitModel.structure`: the model's data (``pm.Data``) enter as inputs."""
    key = fm.structure
    with _CHECK_LOCK:
        if key not in _REFERENCE:
            _REFERENCE[key] = _compile_reference(fm)
        return _REFERENCE[key]


def _compile_reference(fm: FitModel):
    import pytensor
    import pytensor.tensor as pt
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import equal_computations
    from pytensor.graph.replace import clone_replace
    from pytensor.graph.traversal import applys_between, graph_inputs

    from .ode_op import SolveOp

    m = fm.pymc_model
    values = m.value_vars
    logp = m.logp(jacobian=True)
    grads = pt.grad(logp, values)
    # The solve appears once per term that uses it (PyMC clones each term's graph).
    nodes = {n for n in applys_between(values, [logp, *grads]) if isinstance(n.op, SolveOp)}
    first = next(iter(nodes), None)
    if first is None or not all(
        # theta reaches each copy by a differently rewritten path (through the
        # deterministic or not); the schedule inputs are the same data.
        n.op == first.op and equal_computations(n.inputs[1:], first.inputs[1:])
        for n in nodes
    ):
        raise FastPathUnavailable("the model's graph does not hold one ODE solve")
    given = [pt.dvector("pred"), pt.dmatrix("jac"), pt.dvector("ok")]
    replace = {out: g for n in nodes for out, g in zip(n.outputs, given, strict=True)}
    outs = clone_replace([logp, *grads], replace)
    # The patient's data become inputs; the dimension lengths (also shared) stay: they
    # are the structure's (numbers of free parameters and of estimated SDs).
    shared = sorted(
        {v for v in graph_inputs(outs) if isinstance(v, SharedVariable) and v.name in fm.inputs},
        key=lambda v: v.name,
    )
    data = [v.type(v.name) for v in shared]
    logp, *grads = clone_replace(outs, dict(zip(shared, data, strict=True)))
    fn = pytensor.function(
        [*values, *given, *data],
        [logp, pt.concatenate([g.ravel() for g in grads])],
        mode="FAST_COMPILE",
        on_unused_input="ignore",
    )
    return fn, [(v.name, v.type.dtype) for v in shared]


def reference(fm: FitModel) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """PyMC's own log-density and gradient of ``fm`` (``Model.logp(jacobian=True)`` and
    its ``pytensor.grad`` by the value variables, as ``compile_dlogp`` forms it) as
    ``x -> (logp, grad)`` over the raveled unconstrained variables, for the run-time
    check.

    To be cheap enough to run before every fit (about a second once per model structure,
    Python-linked FAST_COMPILE mode, then milliseconds), the outputs of the graph's ODE Op
    (``pred``, ``jac``, ``ok``) are inputs here, fed by the generated module's
    ``solve_rows`` (the same C callback and settings the Op calls), and so is the model's
    data: everything the PyMC model defines around the solve (priors, transforms and
    their Jacobian, row scales, normal and M3 rows, residual SDs, the failure potential,
    the Op's gradient rule) is PyMC's. The tests compare the fast path with the whole
    PyMC log-density, the Op's kernel included.
    """
    fn, names = _reference_function(fm)
    # In the dtype PyMC stored the data in (pm.Data keeps small integers as int32).
    arrays = [np.asarray(fm.inputs[n], dtype=dtype) for n, dtype in names]
    mod = module(fm.model.name)
    data = pack(fm)
    nf = len(fm.free)
    n_values = len(fm.pymc_model.value_vars)

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        theta = fm.prior_mu + fm.prior_sd * x[:nf]
        pred, jac, good = mod.solve_rows(np.ascontiguousarray(theta), data)
        parts = [x[:nf]] + ([x[nf:]] if n_values > 1 else [])
        ok = np.array([1.0 if good else 0.0])
        lp, grad = fn(*parts, pred, jac, ok, *arrays)
        return float(lp), np.asarray(grad, dtype=float)

    return f


def mismatch(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> float:
    """Largest relative difference of two (logp, grad) pairs (gradient entries relative to
    the gradient's largest entry; both -inf counts as equal)."""
    la, ga = a
    lb, gb = b
    if not (np.isfinite(la) and np.isfinite(lb)):
        d_lp = 0.0 if la == lb else np.inf
    else:
        d_lp = abs(la - lb) / max(abs(lb), 1.0)
    scale = max(float(np.max(np.abs(gb), initial=0.0)), 1e-300)
    d_g = float(np.max(np.abs(np.asarray(ga) - np.asarray(gb)), initial=0.0)) / scale
    return float(max(d_lp, d_g))


def check(fm: FitModel, fast: Callable, ref: Callable | None = None) -> float:
    """Relative mismatch of the fast log-density and gradient against PyMC's at the
    model's initial point (:func:`mismatch`)."""
    x0 = initial_point(fm)
    ref = ref or reference(fm)
    return mismatch(fast(x0), ref(x0))


#: Seconds spent in the last :func:`fast_model` call, by step (for benchmarks).
LAST_TIMINGS: dict[str, float] = {}


def fast_model(fm: FitModel, say: Callable[[str], None] | None = None, *, ref=None):
    """nutpie's compiled model of ``fm`` on the generated log-density, checked against
    PyMC's at the initial point; ``None`` (with one line to ``say``) when the fast path is
    unavailable or disagrees beyond :data:`CHECK_RTOL`, so the caller uses PyTensor."""
    say = say or (lambda _msg: None)
    t0 = time.perf_counter()
    try:
        cm = compiled_model(fm)
        t1 = time.perf_counter()
        err = check(fm, cm.value_grad(), ref)
    except FastPathUnavailable as e:
        say(f"the fast log-density is unavailable ({e}); using PyMC/PyTensor's instead")
        return None
    LAST_TIMINGS.update({"load_s": t1 - t0, "check_s": time.perf_counter() - t1})
    if not err <= CHECK_RTOL:
        say(
            f"the fast log-density differs from PyMC's by {err:.1e} (relative) at the "
            f"initial point (limit {CHECK_RTOL:g}); using PyMC/PyTensor's instead"
        )
        return None
    return cm


def first_gradient(fm: FitModel, backend: str = "fast") -> tuple[float, np.ndarray]:
    """The log-density and gradient at the initial point by the fast path (``"fast"``,
    checked as in a fit) or by PyMC/PyTensor's numba log-density (``"pytensor"``, as
    nutpie compiles it): what a fresh process does before its first gradient
    (``benchmarks/startup.py`` times it)."""
    from . import compiled

    x0 = initial_point(fm)
    if backend == "fast":
        cm = fast_model(fm)
        if cm is None:
            raise RuntimeError("the fast log-density failed its check")
        return cm.value_grad()(x0)
    if backend == "pytensor":
        cm = compiled.nutpie_model(fm, fast=False)
        return compiled.logp_grad(fm, cm)(x0)
    raise ValueError(f"backend is 'fast' or 'pytensor', not {backend!r}")
