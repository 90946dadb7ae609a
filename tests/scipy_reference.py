"""Independent reference: scipy solve_ivp on the model equations evaluated with numpy.

It shares only the equations (the thing under test is the solvers and codegen), not
the event handling or the integrators.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp


def reference_solve(model, p, ev, t_out, t0, rtol=1e-12, method="DOP853"):
    """States at ``t_out`` (pre-event at event times); shape (len(t_out), n_y)."""
    y = np.array(model.init(p, np), dtype=float)
    u = np.zeros(model.n_u)
    atol = rtol * model.atol_scale
    t_out = np.asarray(t_out, dtype=float)
    Y = np.full((t_out.size, model.n_y), np.nan)

    def f(t, yy):
        return np.array(model.rhs(t, yy, p, u, np), dtype=float)

    bounds = sorted({float(x) for x in ev.t if x > t0} | {float(t_out[-1])})
    t, k = t0, 0
    for tb in [t0, *bounds]:
        if tb > t:
            mask = (t_out > t) & (t_out <= tb)
            sol = solve_ivp(
                f,
                (t, tb),
                y,
                method=method,
                rtol=rtol,
                atol=atol,
                t_eval=t_out[mask] if mask.any() else None,
                dense_output=True,
            )
            assert sol.success, sol.message
            if mask.any():
                Y[mask] = sol.y.T
            y = sol.sol(tb).copy()
            t = tb
        while k < ev.n and ev.t[k] <= tb:
            if ev.kind[k] == 0:
                factor = p[ev.scale[k]] if ev.scale[k] >= 0 else 1.0
                y[ev.target[k]] += ev.value[k] * factor
            else:
                u[ev.target[k]] = ev.value[k]
            k += 1
    mask = t_out == t0
    if mask.any():
        Y[mask] = np.array(model.init(p, np), dtype=float)
    return Y


def observe_all(model, p, Y):
    return np.array([model.observe(0.0, y, p, np) for y in Y], dtype=float)
