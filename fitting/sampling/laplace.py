"""MAP estimate and Laplace approximation in the unconstrained space of the model.

The mode is found with L-BFGS-B on the log-density of the unconstrained variables
(``z`` and the log of each residual SD, Jacobian included), from the prior median and a
few jittered starts; the best is kept. The Hessian at the mode is taken by central
differences of the exact gradient (forward sensitivities), and the Gaussian
``N(mode, (-H)^-1)`` in that space is the Laplace approximation. Its draws are mapped
back to parameters: log-parameters are linear in ``z``, so the approximation is a
multivariate log-normal in the parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize

from carthema.fitting.model.build import FitModel

#: A stand-in for -log p at points where the solve fails (L-BFGS-B needs a finite value).
_BAD = 1e100


@dataclass
class MapResult:
    """Mode, Laplace covariance and bookkeeping of a MAP fit (unconstrained space)."""

    x: np.ndarray
    logp: float
    cov: np.ndarray
    names: list[str]
    slices: dict[str, slice]
    success: bool
    message: str
    n_grad_evals: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def point(self, x: np.ndarray | None = None) -> dict[str, np.ndarray]:
        x = self.x if x is None else x
        return {n: np.asarray(x[..., s]) for n, s in self.slices.items()}


class _Counter:
    def __init__(self, fn):
        self.fn = fn
        self.n = 0

    def __call__(self, x):
        self.n += 1
        logp, grad = self.fn(x)
        logp = float(logp)
        if not np.isfinite(logp) or not np.all(np.isfinite(grad)):
            return -_BAD, np.zeros_like(x)
        return logp, np.asarray(grad, dtype=float)


def value_grad_function(fm: FitModel, mode: str = "NUMBA", compile: bool = True):
    """``x -> (logp, grad)`` over the raveled unconstrained variables, and their layout."""
    model = fm.pymc_model
    fn = None
    if compile:
        fn = model.logp_dlogp_function(ravel_inputs=True, mode=mode)
        fn.set_extra_values({})
    ip = model.initial_point()
    names = [v.name for v in model.value_vars]
    slices, start = {}, 0
    for n in names:
        size = int(np.size(ip[n]))
        slices[n] = slice(start, start + size)
        start += size
    x0 = np.concatenate([np.ravel(ip[n]) for n in names]).astype(float)
    return fn, names, slices, x0


def find_map(
    fm: FitModel,
    *,
    value_grad=None,
    seed: int | np.random.Generator | None = 0,
    n_starts: int = 3,
    maxiter: int = 1000,
    fd_step: float = 1e-4,
) -> MapResult:
    """MAP estimate with a Laplace covariance (see the module docstring).

    ``value_grad``: an already compiled ``x -> (logp, grad)`` over the raveled
    unconstrained variables in the model's order (e.g. nutpie's), to save a compile.
    """
    rng = np.random.default_rng(seed)
    t_start = time.perf_counter()
    fn, names, slices, x0 = value_grad_function(fm, compile=value_grad is None)
    if value_grad is not None:
        fn = value_grad
    f = _Counter(fn)

    def neg(x):
        lp, g = f(x)
        return -lp, -g

    starts = [x0] + [x0 + rng.normal(0.0, 0.5, x0.size) for _ in range(max(n_starts - 1, 0))]
    best = None
    for s in starts:
        if -neg(s)[0] <= -_BAD:
            continue
        res = optimize.minimize(
            neg, s, jac=True, method="L-BFGS-B", options={"maxiter": maxiter, "gtol": 1e-6}
        )
        if best is None or res.fun < best.fun:
            best = res
    notes: list[str] = []
    if best is None:
        raise RuntimeError("the ODE solve failed at every starting point of the MAP search")
    x = np.asarray(best.x, dtype=float)
    # Hessian of log p by central differences of the exact gradient.
    n = x.size
    H = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = fd_step
        gp = f(x + e)[1]
        gm = f(x - e)[1]
        H[:, i] = (gp - gm) / (2.0 * fd_step)
    H = 0.5 * (H + H.T)
    w, V = np.linalg.eigh(-H)
    if np.any(w <= 1e-8):
        notes.append(
            f"the Hessian at the mode is not positive definite ({int(np.sum(w <= 1e-8))} "
            "flat or negative direction(s)); those directions were given unit prior-scale "
            "variance: treat the Laplace intervals as rough"
        )
        w = np.where(w > 1e-8, w, 1.0)
    cov = (V / w) @ V.T
    return MapResult(
        x=x,
        logp=float(-best.fun),
        cov=cov,
        names=names,
        slices=slices,
        success=bool(best.success),
        message=str(best.message),
        n_grad_evals=f.n,
        seconds=time.perf_counter() - t_start,
        notes=notes,
    )


def laplace_draws(m: MapResult, n: int, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """``n`` draws (n, dim) from the Laplace approximation in unconstrained space."""
    rng = np.random.default_rng(seed)
    L = np.linalg.cholesky(m.cov + 1e-12 * np.eye(m.x.size))
    return m.x + rng.standard_normal((n, m.x.size)) @ L.T
