"""Tests of the JAX/diffrax backend (models/jax_backend.py) on small toy models.

The toys are components (tests/solver_toys.py) composed into models exactly as the real
model is, and shared with the numba solver's tests; the same equations, called with
``m = numpy``, drive the scipy references. The last tests run every toy through both
backends via the ``solve`` facade.
"""

from __future__ import annotations

import diffrax
import jax
import numpy as np
import pytest
import scipy.linalg
from scipy.integrate import solve_ivp
from solver_toys import BLOWUP, ROBERTSON, TOYS, TWO_COMPARTMENT

from carthema.models import jax_backend as jb
from carthema.models.events import SolverEvents
from carthema.models.solve import Schedule, solve
from carthema.models.solver_contract import SolverOptions, Status

# --- toy models: components shared with the numba tests (tests/solver_toys.py) -------------

TOY = TWO_COMPARTMENT  # p = (ka, ke, V, F, A0); obs = (central / V, log total)
P_TOY = np.array([1.2, 0.3, 5.0, 0.7, 10.0])
T_OUT = np.linspace(0.0, 10.0, 21)  # contains the event times 0, 2, 3 and 5
# bolus at t0; bolus; infusion on; F-scaled bolus and infusion off at the same time; an
# event after the last output (must be ignored).
EVENTS = dict(
    ev_t=np.array([0.0, 2.0, 3.0, 5.0, 5.0, 12.0]),
    ev_kind=np.array([0, 0, 1, 0, 1, 0]),
    ev_target=np.array([0, 0, 0, 0, 0, 0]),
    ev_scale=np.array([-1, -1, -1, 3, -1, -1]),
)
EV_VALUE = np.array([10.0, 100.0, 5.0, 50.0, 0.0, 1.0])
STATIC_EVENTS = tuple(EVENTS[k] for k in ("ev_t", "ev_kind", "ev_target", "ev_scale"))


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _reference(model, p, t_out, ev_t, ev_kind, ev_target, ev_scale, ev_value, segment_solve):
    """Piecewise reference with the backend's conventions (pre-dose output at event times).

    ``segment_solve(y0, u, a, b, ts) -> (states at ts (len(ts), n_y), state at b)``.
    """
    y = np.array(model.init(p, np), dtype=float)
    u = np.zeros(model.n_u)
    out = np.empty((len(t_out), model.n_y))
    out[t_out == t_out[0]] = y  # outputs at t0 (t_out[0] == t0 in these tests)
    t_end = t_out[-1]
    times = [t_out[0]] + sorted({t for t in ev_t if t_out[0] < t < t_end}) + [t_end]
    for a, b in zip(times[:-1], times[1:], strict=True):
        for k in np.flatnonzero(ev_t == a):
            if ev_kind[k] == 0:
                y[ev_target[k]] += ev_value[k] * (p[ev_scale[k]] if ev_scale[k] >= 0 else 1.0)
            else:
                u[ev_target[k]] = ev_value[k]
        sel = (t_out > a) & (t_out <= b)
        out[sel], y = segment_solve(y, u.copy(), a, b, t_out[sel])
    return np.array([model.observe(t, yy, p, np) for t, yy in zip(t_out, out, strict=True)])


def _scipy_segment(model, p, method, rtol, atol):
    def segment_solve(y0, u, a, b, ts):
        sol = solve_ivp(
            lambda t, y: model.rhs(t, y, p, u, np),
            (a, b),
            y0,
            method=method,
            t_eval=np.unique(np.append(ts, b)),
            rtol=rtol,
            atol=atol * model.atol_scale,
        )
        assert sol.success
        return sol.y.T[np.searchsorted(sol.t, ts)], sol.y[:, -1]

    return segment_solve


def _exact_segment(p):
    """Exact solution of the linear toy by the matrix exponential of the augmented system."""

    def segment_solve(y0, u, a, b, ts):
        A = np.array([[-p[0], 0.0, u[0]], [p[0], -p[1], 0.0], [0.0, 0.0, 0.0]])
        z0 = np.append(y0, 1.0)
        ys = np.array([scipy.linalg.expm(A * (t - a)) @ z0 for t in ts]).reshape(-1, 3)
        return ys[:, :2], (scipy.linalg.expm(A * (b - a)) @ z0)[:2]

    return segment_solve


# --- fixtures (compiled solves shared across tests) --------------------------------------


@pytest.fixture(scope="module")
def toy_solvers():
    return {
        name: jax.jit(
            jb.make_solver(TOY, 0.0, T_OUT, *STATIC_EVENTS, solver=name, rtol=1e-10, atol=1e-12)
        )
        for name in ("tsit5", "kvaerno5")
    }


@pytest.fixture(scope="module")
def toy_reference():
    return _reference(
        TOY,
        P_TOY,
        T_OUT,
        *STATIC_EVENTS,
        EV_VALUE,
        _scipy_segment(TOY, P_TOY, "DOP853", 1e-12, 1e-14),
    )


@pytest.fixture(scope="module")
def toy_exact():
    return _reference(TOY, P_TOY, T_OUT, *STATIC_EVENTS, EV_VALUE, _exact_segment(P_TOY))


# --- accuracy --------------------------------------------------------------------------


def test_references_agree(toy_reference, toy_exact):
    assert _max_rel(toy_reference, toy_exact) < 1e-9


@pytest.mark.parametrize("name", ["tsit5", "kvaerno5"])
def test_toy_matches_scipy_and_exact(toy_solvers, toy_reference, toy_exact, name):
    status, obs = toy_solvers[name](P_TOY, np.zeros(1), EV_VALUE)
    assert int(status) == jb.STATUS_OK
    assert obs.shape == (T_OUT.size, TOY.n_obs)
    assert _max_rel(np.asarray(obs), toy_reference) < 1e-7
    assert _max_rel(np.asarray(obs), toy_exact) < 1e-7


def test_pre_dose_convention(toy_solvers, toy_exact):
    """An output at an event time is the state before that time's events."""
    _, obs = toy_solvers["tsit5"](P_TOY, np.zeros(1), EV_VALUE)
    obs = np.asarray(obs)
    # At t0 the bolus of 10 at t = 0 is not yet in: total amount = A0.
    np.testing.assert_allclose(obs[0], [0.0, np.log(P_TOY[4])], rtol=1e-14)
    # Just after t = 2 the total amount has jumped by the bolus of 100; at t = 2 it has not.
    i2 = int(np.flatnonzero(T_OUT == 2.0)[0])
    status, obs_after = jax.jit(
        jb.make_solver(TOY, 0.0, [2.0, 2.0 + 1e-9], *STATIC_EVENTS, rtol=1e-10, atol=1e-12)
    )(P_TOY, np.zeros(1), EV_VALUE)
    assert int(status) == jb.STATUS_OK
    np.testing.assert_allclose(obs_after[0], obs[i2], rtol=1e-9)
    np.testing.assert_allclose(np.exp(obs_after[1, 1]) - np.exp(obs[i2, 1]), 100.0, rtol=1e-6)


def test_only_t0_outputs_and_no_events():
    status, obs = jb.simulate(
        TOY, P_TOY, [0.0, 0.0], ev_t=[0.0], ev_kind=[0], ev_target=[0], ev_value=[5.0]
    )
    assert status == jb.STATUS_OK
    np.testing.assert_allclose(obs[:, 1], np.log(P_TOY[4]))
    t_out = np.array([0.0, 1.0, 4.0])
    status, obs = jb.simulate(TOY, P_TOY, t_out, u0=[0.0], rtol=1e-10, atol=1e-12)
    assert status == jb.STATUS_OK
    none = np.array([], dtype=int)
    exact = _reference(TOY, P_TOY, t_out, none * 1.0, none, none, none, none, _exact_segment(P_TOY))
    assert _max_rel(obs, exact) < 1e-7


def test_stiff_robertson_kvaerno5_vs_radau():
    model, p = ROBERTSON, np.array([0.04, 1e4, 3e7])
    t_out = np.array([0.0, 1e-3, 0.1, 1.0, 10.0, 100.0])
    status, obs = jb.simulate(model, p, t_out, solver="kvaerno5", rtol=1e-9, atol=1e-10)
    assert status == jb.STATUS_OK
    ref = solve_ivp(
        lambda t, y: model.rhs(t, y, p, None, np),
        (0.0, t_out[-1]),
        [1.0, 0.0, 0.0],
        method="Radau",
        t_eval=t_out,
        rtol=1e-12,
        atol=1e-14 * model.atol_scale,
    )
    assert ref.success
    assert _max_rel(obs[1:], ref.y.T[1:]) < 1e-7


# --- gradients -------------------------------------------------------------------------


def test_jacfwd_matches_finite_differences_and_reverse_mode():
    """d obs / d log p: jacfwd (ForwardMode) vs central differences and reverse mode."""
    tol = dict(rtol=1e-11, atol=1e-13)
    fwd = jb.make_solver(TOY, 0.0, T_OUT, *STATIC_EVENTS, **tol, adjoint=diffrax.ForwardMode())
    rev = jb.make_solver(TOY, 0.0, T_OUT, *STATIC_EVENTS, **tol)  # default adjoint

    def obs_of(solve):
        return lambda logp: solve(jax.numpy.exp(logp), np.zeros(1), EV_VALUE)[1].ravel()

    f = jax.jit(obs_of(fwd))
    logp = np.log(P_TOY)
    J = np.asarray(jax.jit(jax.jacfwd(obs_of(fwd)))(logp))
    # Reverse mode as a sampler uses it: the gradient of one scalar functional.
    w = np.linspace(-1.0, 1.0, J.shape[0])
    g = np.asarray(jax.jit(jax.grad(lambda lp: obs_of(rev)(lp) @ w))(logp))
    h = 1e-5
    J_fd = np.empty_like(J)
    for i in range(logp.size):
        e = np.zeros_like(logp)
        e[i] = h
        J_fd[:, i] = (np.asarray(f(logp + e)) - np.asarray(f(logp - e))) / (2 * h)
    scale = np.max(np.abs(J_fd), axis=0)
    assert np.max(np.abs(J - J_fd) / scale) < 1e-6
    np.testing.assert_allclose(g, w @ J, rtol=1e-8, atol=1e-8 * np.max(np.abs(w @ J)))


# --- populations and failures ------------------------------------------------------------


def test_population_equals_loop(toy_solvers):
    rng = np.random.default_rng(0)
    P = P_TOY * np.exp(0.3 * rng.standard_normal((5, TOY.n_p)))
    kw = dict(**EVENTS, ev_value=EV_VALUE, rtol=1e-10, atol=1e-12)  # as toy_solvers
    status, obs = jb.simulate_population(TOY, P, T_OUT, chunk_size=2, **kw)  # 3 chunks, padded
    assert status.shape == (5,) and obs.shape == (5, T_OUT.size, TOY.n_obs)
    for i in range(5):
        s_i, o_i = toy_solvers["tsit5"](P[i], np.zeros(1), EV_VALUE)
        assert status[i] == s_i == jb.STATUS_OK
        np.testing.assert_allclose(obs[i], o_i, rtol=1e-10, atol=0.0)
    # Per-patient event values: doubling patient 1's dose changes only patient 1.
    values = np.tile(EV_VALUE, (5, 1))
    values[1] *= 2.0
    status2, obs2 = jb.simulate_population(TOY, P, T_OUT, **{**kw, "ev_value": values})
    assert np.all(status2 == jb.STATUS_OK)
    np.testing.assert_allclose(obs2[[0, 2, 3, 4]], obs[[0, 2, 3, 4]], rtol=1e-10)
    assert not np.allclose(obs2[1], obs[1])


def test_blow_up_returns_status_without_raising():
    t_out = np.array([0.5, 2.0, 3.0])
    ev = dict(ev_t=[1.5], ev_kind=[0], ev_target=[0], ev_value=[1.0])
    # p0 = 1 blows up at t = 1; p0 = 0.1 at t = 10, after the last output.
    status, obs = jb.simulate_population(BLOWUP, [[1.0], [0.1]], t_out, max_steps=2000, **ev)
    assert status[0] != jb.STATUS_OK
    assert status[1] == jb.STATUS_OK
    # y(0.5) = 1 / (1 - 0.05); y(2) = 1 / (1 - 0.2); after the bolus at 1.5: 1 / (1/y - 0.15).
    y15 = 1.0 / (1.0 - 0.15) + 1.0
    expected = [1 / 0.95, 1 / (1 / y15 - 0.05), 1 / (1 / y15 - 0.15)]
    np.testing.assert_allclose(obs[1, :, 0], expected, rtol=1e-6)


def test_step_limit_returns_status():
    # The shared enumeration's MAX_STEPS, as the numba solver reports it.
    status, _ = jb.simulate(TOY, P_TOY, T_OUT, **EVENTS, ev_value=EV_VALUE, max_steps=3)
    assert status == jb.STATUS_MAX_STEPS == Status.MAX_STEPS


def test_nonfinite_parameters_return_status(toy_solvers):
    p = np.array([1.2, 0.3, 5.0, 0.7, np.nan])
    status, _ = toy_solvers["tsit5"](p, np.zeros(1), EV_VALUE)
    assert int(status) != jb.STATUS_OK


def test_validation_and_device():
    with pytest.raises(ValueError, match="sorted"):
        jb.make_solver(TOY, 0.0, [1.0, 0.5])
    with pytest.raises(ValueError, match="precedes"):
        jb.make_solver(TOY, 1.0, [0.5, 2.0])
    with pytest.raises(ValueError, match="precedes"):
        jb.make_solver(TOY, 0.0, [1.0], [-1.0], [0], [0], [-1])
    with pytest.raises(ValueError, match="target"):
        jb.make_solver(TOY, 0.0, [1.0], [0.5], [1], [3], [-1])
    with pytest.raises(ValueError, match="solver"):
        jb.make_solver(TOY, 0.0, [1.0], solver="euler")
    assert jax.devices()[0].platform in jb.device_description()


# --- every toy through both backends ----------------------------------------------------


@pytest.mark.parametrize("model", TOYS, ids=lambda m: m.name)
def test_toys_agree_across_backends(model):
    """The same component, generated for numba and traced for JAX, gives the same
    observables (both at rtol 1e-10) and the same status."""
    p = model.default_params()
    if model is ROBERTSON:  # stiff: each backend's stiff method
        t_out = np.array([0.0, 1e-3, 0.1, 1.0, 10.0])
        numba_method, jax_method = "rosenbrock", "kvaerno5"
    else:
        t_end = 0.9 if model is BLOWUP else 10.0
        t_out, numba_method, jax_method = np.linspace(0.0, t_end, 10), "tsit5", "tsit5"
    if model.n_u:  # a bolus scaled by parameter 2, the input on at t = 3 and off at t = 5
        events = SolverEvents(
            t=np.array([1.0, 3.0, 5.0]),
            kind=np.array([0, 1, 1]),
            target=np.array([0, 0, 0]),
            value=np.array([2.0, 1.5, 0.0]),
            scale=np.array([2, -1, -1]),
        )
    else:
        events = None
    sched = Schedule.from_events(model, events, t_out, t0=0.0)
    a = solve(model, p, sched, SolverOptions(numba_method, rtol=1e-10, atol=1e-12))
    b = solve(model, p, sched, SolverOptions(jax_method, rtol=1e-10, atol=1e-12), "jax")
    assert a.status == b.status == Status.OK
    assert _max_rel(b.obs, a.obs) < 1e-7
