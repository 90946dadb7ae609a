"""One compiled log-density per model structure, reused for every patient.

A single-patient model (:func:`carthema.fitting.model.build.build_model`) takes everything that
belongs to the patient (schedule, observation rows, priors) as named data (``pm.Data``,
:attr:`FitModel.inputs`); what the compiled log-density depends on besides them is its
:attr:`FitModel.structure` (model, free parameters, estimated residual SDs, whether there
are quantified and censored rows, solver settings). The first patient of a structure
compiles; the next ones reuse that compiled function with their own data:

- nutpie (numba backend): the compiled model of the first patient with
  ``CompiledPyMCModel.with_data(...)`` of the next (:func:`nutpie_model`);
- the MAP / Laplace log-density and gradient: the numba function behind the first
  patient's PyTensor function, called with the next patient's data arrays
  (:func:`logp_grad`).

With ``fast=True`` (what :func:`carthema.fitting.sampling.samplers.fit` asks for) a single-patient
model uses the generated, disk-cached log-density of :mod:`carthema.fitting.op.fastlogp`
instead, checked against PyMC's at the initial point of each fit; when it is unavailable
or disagrees, these functions fall back to the PyTensor path above and say so in one line.

Nothing is mutated: a patient's function carries its own arrays, so fits of different
patients may interleave. The caches live for the process (a cohort worker compiles once
per structure); :data:`COMPILES` counts the compiles actually done. JAX backends
(nutpie-jax, numpyro) compile per patient: XLA fixes array shapes and the event schedule.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from carthema.fitting.model.build import FitModel

_LOCK = threading.Lock()
_NUTPIE: dict[tuple, Any] = {}
_LOGP_GRAD: dict[tuple, Any] = {}

#: Compiles done in this process, by kind ("nutpie", "logp_grad", "nutpie-jax").
COMPILES: Counter = Counter()


def clear() -> None:
    """Forget every compiled function (tests; the next fit compiles again)."""
    from carthema.fitting.op import fastlogp

    with _LOCK:
        _NUTPIE.clear()
        _LOGP_GRAD.clear()
    fastlogp.clear()


def _data_for(shared_names, fm: FitModel) -> dict[str, np.ndarray]:
    missing = [n for n in shared_names if n not in fm.inputs]
    if missing:  # pragma: no cover - the structure key would have to be wrong
        raise KeyError(f"the compiled log-density reads data the model lacks: {missing}")
    return {n: fm.inputs[n] for n in shared_names}


def _fast(fm, say: Callable[[str], None] | None):
    """The checked fast compiled model of a single-patient ``fm``, or ``None``."""
    if not isinstance(fm, FitModel) or not fm.structure:
        return None
    from carthema.fitting.op import fastlogp

    return fastlogp.fast_model(fm, say)


def nutpie_model(
    fm: FitModel,
    backend: str = "numba",
    *,
    fast: bool = False,
    say: Callable[[str], None] | None = None,
):
    """nutpie's compiled model of ``fm`` (``backend`` "numba" or "jax"), with ``fm``'s data.

    numba: compiled once per :attr:`FitModel.structure` and reused with
    ``with_data``; JAX (gradient by ``jax.grad`` through diffrax's adjoint) compiles each
    time, as does a model without a structure key (a custom predictor).
    ``fast``: a single-patient numba model uses :mod:`carthema.fitting.op.fastlogp` when it
    passes its check (``say`` gets the one line of a fallback)."""
    import nutpie

    if fast and backend == "numba":
        cm = _fast(fm, say)
        if cm is not None:
            return cm

    if backend == "jax":
        from carthema.models import jax_backend  # noqa: F401  (float64 in JAX before compiling)

        COMPILES["nutpie-jax"] += 1
        return nutpie.compile_pymc_model(fm.pymc_model, backend="jax", gradient_backend="jax")
    if not getattr(fm, "structure", ()):
        COMPILES["nutpie"] += 1
        return nutpie.compile_pymc_model(fm.pymc_model, backend="numba")
    with _LOCK:
        base = _NUTPIE.get(fm.structure)
        if base is None:
            base = nutpie.compile_pymc_model(fm.pymc_model, backend="numba")
            COMPILES["nutpie"] += 1
            _NUTPIE[fm.structure] = base
    return base.with_data(**_data_for(base.shared_data, fm))


def _bind(fn, fm: FitModel) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``x -> (logp, grad)`` of the compiled PyTensor function ``fn`` (inputs: the raveled
    unconstrained point, then its shared data) on ``fm``'s data."""
    jit = fn.vm.jit_fn
    shared = fn.get_shared()
    arrays = tuple(
        np.array(fm.inputs[v.name], dtype=v.type.dtype, order="C", copy=True) for v in shared
    )

    def value_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        logp, grad = jit(np.ascontiguousarray(x, dtype=np.float64), *arrays)
        return float(logp), np.asarray(grad)

    return value_grad


def logp_grad(
    fm: FitModel,
    compiled=None,
    *,
    fast: bool = False,
    say: Callable[[str], None] | None = None,
) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``x -> (logp, grad)`` over the raveled unconstrained variables of ``fm`` (the
    layout of :func:`carthema.fitting.sampling.laplace.value_grad_function`), on ``fm``'s data.

    ``compiled``: nutpie's compiled model of the same structure, whose log-density it
    reuses (the fast one's when it is one); otherwise the structure's own (compiled once
    per structure, numba), or with ``fast`` the checked fast log-density of
    :mod:`carthema.fitting.op.fastlogp` when it passes (``say`` gets a fallback's line)."""
    if compiled is not None and hasattr(compiled, "value_grad"):
        return compiled.value_grad()
    if compiled is None and fast:
        cm = _fast(fm, say)
        if cm is not None:
            return cm.value_grad()
    if compiled is not None and hasattr(compiled, "logp_func"):
        return _bind(compiled.logp_func, fm)
    if not getattr(fm, "structure", ()):
        fn = fm.pymc_model.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
        fn.set_extra_values({})
        COMPILES["logp_grad"] += 1
        return lambda x: fn(np.asarray(x, dtype=np.float64))
    with _LOCK:
        fn = _LOGP_GRAD.get(fm.structure)
        if fn is None:
            vg = fm.pymc_model.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
            vg.set_extra_values({})
            fn = vg._pytensor_function
            COMPILES["logp_grad"] += 1
            _LOGP_GRAD[fm.structure] = fn
    return _bind(fn, fm)
