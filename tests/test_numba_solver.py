"""Tests of the numba backend's generic adaptive solver (models/_solver_template.py).

Every test compares with an independent reference: an analytic (matrix-exponential)
solution, scipy's ``solve_ivp`` (DOP853 / Radau at tight tolerances) with plain-numpy
right-hand sides written here, or central finite differences. The toy models are
components (tests/solver_toys.py, shared with the JAX backend's tests) turned into numba
modules by the code generator, as the real model is; each is compiled once per test
session (module-scoped fixtures) and cached on disk by numba for later sessions.
"""

from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from solver_toys import BLOWUP, LINEAR, ROBERTSON

from carthema.models import gencache, numba_backend, solver_kernels
from carthema.models.codegen import numba_source
from carthema.models.compiled import numba_model
from carthema.models.numba_backend import event_arrays, load_numba_module
from carthema.models.solver_contract import Status

# ---------------------------------------------------------------------------------
# Toy models (components in tests/solver_toys.py; parameter order as listed there)
# ---------------------------------------------------------------------------------

# Linear two-compartment model: depot y0 (absorbed at rate ka, fed by input u0) and
# central y1 (eliminated at rate ke). p = [ka, ke, s, c0, V]: s scales a bolus, c0 only
# enters init (central amount at t0), V only enters the observable y1 / V.
P_LIN = np.array([1.2, 0.3, 2.0, 1.5, 4.0])
U0_LIN = np.zeros(1)
# (t, kind, target, value, scale): a bolus into the depot scaled by p[2]; an input
# switched on at t=5 and off at t=8, where an unscaled bolus into the central
# compartment shares the time with the switch.
EVENTS_LIN = (
    [2.0, 5.0, 8.0, 8.0],
    [0, 1, 1, 0],
    [0, 0, 0, 1],
    [10.0, 3.0, 0.0, 5.0],
    [2, -1, -1, -1],
)
# Includes every event time (pre-dose samples), a duplicate, and a time just after a dose.
T_OUT_LIN = np.array(sorted(set(np.linspace(0.0, 12.0, 25)) | {3.3, 8.0001}) + [12.0])

# Robertson's chemical kinetics (Hairer & Wanner II, IV.1): the classic stiff test.
# p = [k1, k2, k3] = [0.04, 1e4, 3e7].
P_ROB = np.array([0.04, 1e4, 3e7])

# y' = p0 y^2, y(0) = 1: blows up at t = 1 / p0.
BLOWUP_SRC = numba_source(BLOWUP)

NO_EVENTS = event_arrays()


@pytest.fixture(scope="module")
def lin():
    return numba_model(LINEAR)


@pytest.fixture(scope="module")
def rob():
    return numba_model(ROBERTSON)


@pytest.fixture(scope="module")
def blow():
    return numba_model(BLOWUP)


# ---------------------------------------------------------------------------------
# Independent references for the linear model
# ---------------------------------------------------------------------------------
def _segments(t0, t_out, events):
    """Yield (t_start, t_stop, outputs in (t_start, t_stop], events at t_stop) with the
    solver's convention that an output at an event time precedes that time's events."""
    ev = list(zip(*events, strict=True))
    times = sorted({e[0] for e in ev if e[0] <= t_out[-1]} | {t_out[-1]})
    start = t0
    for stop in times:
        outs = [i for i, to in enumerate(t_out) if start < to <= stop or to == start == t0]
        yield start, stop, outs, [e for e in ev if e[0] == stop]
        start = stop


def _apply(y, u, p, evs):
    for _, kind, target, value, scale in evs:
        if kind == 0:
            y[target] += value * (p[scale] if scale >= 0 else 1.0)
        else:
            u[target] = value


def linear_analytic(p, t0, t_out, events):
    """Exact solution: the model is linear with piecewise-constant input, so each
    segment is propagated by the matrix exponential of [[A, b], [0, 0]]."""
    ka, ke, _, c0, _ = p
    A = np.array([[-ka, 0.0], [ka, -ke]])
    y = np.array([0.0, c0])
    u = U0_LIN.copy()
    Y = np.full((len(t_out), 2), np.nan)

    def prop(y, dt):
        m = np.zeros((3, 3))
        m[:2, :2] = A
        m[0, 2] = u[0]
        e = expm(m * dt)
        return e[:2, :2] @ y + e[:2, 2]

    for start, stop, outs, evs in _segments(t0, t_out, events):
        for i in outs:
            Y[i] = prop(y, t_out[i] - start)
        y = prop(y, stop - start)
        _apply(y, u, p, evs)
    return Y


def linear_scipy(p, t0, t_out, events):
    """DOP853 at rtol 1e-12, atol 1e-14, restarted at every event."""
    ka, ke, _, c0, _ = p
    y = np.array([0.0, c0])
    u = U0_LIN.copy()
    Y = np.full((len(t_out), 2), np.nan)

    def f(t, y, u):
        return np.array([-ka * y[0] + u[0], ka * y[0] - ke * y[1]])

    for start, stop, outs, evs in _segments(t0, t_out, events):
        if stop > start:
            sol = solve_ivp(
                f, (start, stop), y, method="DOP853", args=(u.copy(),), rtol=1e-12, atol=1e-14,
                dense_output=True,
            )  # fmt: skip
            for i in outs:
                Y[i] = sol.sol(t_out[i]) if t_out[i] > start else y
            y = sol.y[:, -1].copy()
        else:
            for i in outs:
                Y[i] = y
        _apply(y, u, p, evs)
    return Y


def _rel(a, b, floor):
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), floor))


# ---------------------------------------------------------------------------------
# (a) accuracy with events
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [0, 1, 2])
def test_linear_events_match_analytic_and_scipy(lin, method):
    ev = event_arrays(*EVENTS_LIN)
    status, Y, O, n_steps = lin.solve(
        P_LIN, U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-10, 1e-12, 10**6, method
    )
    assert status == 0 and n_steps > 0
    exact = linear_analytic(P_LIN, 0.0, T_OUT_LIN, EVENTS_LIN)
    ref = linear_scipy(P_LIN, 0.0, T_OUT_LIN, EVENTS_LIN)
    assert _rel(ref, exact, 1e-3) < 1e-9  # the references agree with each other
    assert _rel(Y, exact, 1e-3) < 1e-7
    assert _rel(Y, ref, 1e-3) < 1e-7
    np.testing.assert_allclose(O[:, 0], Y[:, 1] / P_LIN[4], rtol=1e-14)
    np.testing.assert_array_equal(O[:, 1], Y[:, 0])
    # Pre-dose convention: at t=2 the scaled depot bolus is not yet in the output.
    i2 = int(np.flatnonzero(T_OUT_LIN == 2.0)[0])
    assert Y[i2, 0] == 0.0
    i8 = np.flatnonzero(T_OUT_LIN == 8.0)[0]
    assert Y[i8 + 1, 1] - Y[i8, 1] == pytest.approx(5.0, rel=1e-3)  # 8.0001 is post-dose


def test_linear_tolerance_proportionality(lin):
    """Loosening rtol by 100x should loosen the global error by roughly 100x."""
    ev = event_arrays(*EVENTS_LIN)
    exact = linear_analytic(P_LIN, 0.0, T_OUT_LIN, EVENTS_LIN)
    for method in (0, 1):
        errs = []
        for rtol in (1e-6, 1e-8):
            Y = lin.solve(P_LIN, U0_LIN, 0.0, T_OUT_LIN, *ev, rtol, rtol * 1e-2, 10**6, method)[1]
            errs.append(_rel(Y, exact, 1e-3))
        assert errs[1] < errs[0] / 10
        assert errs[0] < 1e-4


# ---------------------------------------------------------------------------------
# (b) stiff problem
# ---------------------------------------------------------------------------------
def _robertson_radau(t_out):
    k1, k2, k3 = P_ROB

    def f(t, y):
        return [-k1 * y[0] + k2 * y[1] * y[2], k1 * y[0] - k2 * y[1] * y[2] - k3 * y[1] ** 2,
                k3 * y[1] ** 2]  # fmt: skip

    def jac(t, y):
        return [
            [-k1, k2 * y[2], k2 * y[1]],
            [k1, -k2 * y[2] - 2 * k3 * y[1], -k2 * y[1]],
            [0.0, 2 * k3 * y[1], 0.0],
        ]

    sol = solve_ivp(
        f, (0.0, t_out[-1]), [1.0, 0.0, 0.0], method="Radau", jac=jac, t_eval=t_out,
        rtol=1e-12, atol=[1e-14, 1e-18, 1e-14],
    )  # fmt: skip
    assert sol.success
    return sol.y.T


def test_robertson_stiff(rob):
    t_out = np.array([0.4, 4.0, 40.0])
    ref = _robertson_radau(t_out)
    u0 = np.zeros(0)  # no inputs
    st1, Y1, _, n1 = rob.solve(P_ROB, u0, 0.0, t_out, *NO_EVENTS, 1e-9, 1e-10, 10**6, 1)
    assert st1 == 0
    assert _rel(Y1, ref, 1e-12) < 1e-6
    st0, Y0, _, n0 = rob.solve(P_ROB, u0, 0.0, t_out, *NO_EVENTS, 1e-9, 1e-10, 10**6, 0)
    assert st0 == 0
    assert _rel(Y0, ref, 1e-12) < 1e-6
    assert n1 * 10 < n0  # the explicit method is stability-limited
    st2, Y2, _, n2 = rob.solve(P_ROB, u0, 0.0, t_out, *NO_EVENTS, 1e-9, 1e-10, 10**6, 2)
    assert st2 == 0
    assert _rel(Y2, ref, 1e-12) < 1e-6
    assert n2 * 10 < n0  # auto detected the stiffness and switched
    # Long horizon, where only a stiff method is practical.
    t_long = np.array([4e2, 4e4, 4e6])
    st, Y, _, n = rob.solve(P_ROB, u0, 0.0, t_long, *NO_EVENTS, 1e-8, 1e-10, 10**5, 1)
    assert st == 0 and n < 5000
    assert _rel(Y, _robertson_radau(t_long), 1e-12) < 1e-6


# ---------------------------------------------------------------------------------
# (c) sensitivities vs central finite differences in log p
# ---------------------------------------------------------------------------------
def _fd_log(mod, p, u0, t_out, ev, method_fd, h=1e-5):
    cols = []
    for k in range(p.size):
        obs = []
        for sgn in (1.0, -1.0):
            q = p.copy()
            q[k] *= np.exp(sgn * h)
            st, _, O, _ = mod.solve(q, u0, 0.0, t_out, *ev, 1e-12, 1e-14, 10**7, method_fd)
            assert st == 0
            obs.append(O)
        cols.append((obs[0] - obs[1]) / (2 * h))
    return np.stack(cols, axis=-1)


def _assert_sens_close(dO, fd, tol):
    # Relative to each (observable, parameter) column's magnitude, with a floor from the
    # observable's largest sensitivity for columns that are identically zero.
    col = np.max(np.abs(fd), axis=0, keepdims=True)
    obs = np.max(col, axis=2, keepdims=True)
    err = np.abs(dO - fd) / np.maximum(col, 1e-3 * obs)
    assert np.max(err) < tol, np.max(err)


@pytest.fixture(scope="module")
def lin_fd(lin):
    ev = event_arrays(*EVENTS_LIN)
    return _fd_log(lin, P_LIN, U0_LIN, T_OUT_LIN, ev, 0)


@pytest.mark.parametrize("method", [0, 1])
def test_linear_sensitivities_vs_fd(lin, lin_fd, method):
    ev = event_arrays(*EVENTS_LIN)
    free = np.arange(5, dtype=np.int64)  # includes the bolus scale p[2], init-only p[3]
    st, Y, O, dO = lin.solve_sens(P_LIN, free, U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-10, 1e-12,
                                  10**7, method)  # fmt: skip
    assert st == 0
    assert dO.shape == (T_OUT_LIN.size, 2, 5)
    st_, Y_, O_, _ = lin.solve(P_LIN, U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-10, 1e-12, 10**7, method)
    assert _rel(Y, Y_, 1e-3) < 1e-7  # the augmented solve tracks the plain one
    _assert_sens_close(dO, lin_fd, 1e-6)
    # The bolus-scale and init-only parameters really are exercised.
    assert np.max(np.abs(dO[:, :, 2])) > 1.0 and np.max(np.abs(dO[:, 0, 3])) > 0.01
    # A subset of free parameters, in another order, gives the same columns.
    sub = np.array([3, 2], dtype=np.int64)
    dO_sub = lin.solve_sens(P_LIN, sub, U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-10, 1e-12,
                            10**7, method)[3]  # fmt: skip
    _assert_sens_close(dO_sub, lin_fd[:, :, sub], 1e-6)


def test_robertson_sensitivities_vs_fd(rob):
    t_out = np.array([0.4, 4.0, 40.0])
    u0 = np.zeros(0)  # no inputs
    free = np.arange(3, dtype=np.int64)
    st, _, _, dO = rob.solve_sens(P_ROB, free, u0, 0.0, t_out, *NO_EVENTS, 1e-10, 1e-10,
                                  10**6, 1)  # fmt: skip
    assert st == 0
    fd = _fd_log(rob, P_ROB, u0, t_out, NO_EVENTS, 1)
    _assert_sens_close(dO, fd, 1e-5)


# ---------------------------------------------------------------------------------
# (d) status codes
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [0, 1, 2])
def test_blowup_reports_status(blow, method):
    t_out = np.array([0.5, 0.9, 2.0, 3.0])
    st, Y, O, n = blow.solve(np.array([1.0]), np.zeros(0), 0.0, t_out, *NO_EVENTS, 1e-8,
                             1e-10, 10**6, method)  # fmt: skip
    assert st in (2, 3)
    np.testing.assert_allclose(O[:2, 0], 1.0 / (1.0 - t_out[:2]), rtol=1e-6)
    assert np.all(np.isnan(O[2:])) and np.all(np.isnan(Y[2:]))
    st, _, _, dO = blow.solve_sens(np.array([1.0]), np.zeros(1, dtype=np.int64), np.zeros(0),
                                   0.0, t_out, *NO_EVENTS, 1e-8, 1e-10, 10**6, method)  # fmt: skip
    assert st in (2, 3)
    # d y / d log p0 = p0 t / (1 - p0 t)^2
    np.testing.assert_allclose(dO[:2, 0, 0], t_out[:2] / (1.0 - t_out[:2]) ** 2, rtol=1e-5)
    assert np.all(np.isnan(dO[2:]))


def test_nonfinite_parameter_gives_status_2(lin):
    ev = event_arrays(*EVENTS_LIN)
    p = P_LIN.copy()
    p[0] = np.nan
    st, Y, O, _ = lin.solve(p, U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-8, 1e-10, 10**6, 0)
    assert st == 2
    assert np.all(np.isnan(Y[1:]))


@pytest.mark.parametrize("method", [0, 1, 2])
def test_max_steps(lin, method):
    ev = event_arrays(*EVENTS_LIN)
    st, Y, O, n = lin.solve(P_LIN, U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-8, 1e-10, 10, method)
    assert st == 1 and n == 10
    assert np.isfinite(Y[0]).all() and np.isnan(Y[-1]).all() and np.isnan(O[-1]).all()


def _bad_inputs():
    ev = list(map(list, EVENTS_LIN))
    good = dict(p=P_LIN, free=np.arange(5, dtype=np.int64), u0=U0_LIN, t0=0.0, t_out=T_OUT_LIN,
                ev=ev, rtol=1e-8, atol=1e-10, method=0)  # fmt: skip
    cases = {
        "t_out unsorted": dict(t_out=np.array([1.0, 0.5])),
        "t_out before t0": dict(t_out=np.array([-1.0, 0.5])),
        "t_out nan": dict(t_out=np.array([0.5, np.nan])),
        "events unsorted": dict(ev=[[5.0, 2.0], [0, 0], [0, 0], [1.0, 1.0], [-1, -1]]),
        "event before t0": dict(ev=[[-1.0], [0], [0], [1.0], [-1]]),
        "bolus target": dict(ev=[[1.0], [0], [2], [1.0], [-1]]),
        "input target": dict(ev=[[1.0], [1], [1], [1.0], [-1]]),
        "event kind": dict(ev=[[1.0], [2], [0], [1.0], [-1]]),
        "scale index": dict(ev=[[1.0], [0], [0], [1.0], [5]]),
        "event lengths": dict(ev=[[1.0, 2.0], [0], [0], [1.0], [-1]]),
        "negative rtol": dict(rtol=-1.0),
        "zero atol": dict(atol=0.0),
        "method": dict(method=3),
        "p length": dict(p=P_LIN[:4]),
        "u0 length": dict(u0=np.zeros(2)),
        "duplicate free": dict(free=np.array([1, 1], dtype=np.int64)),
        "free range": dict(free=np.array([5], dtype=np.int64)),
    }
    return good, cases


@pytest.mark.parametrize("case", sorted(_bad_inputs()[1]))
def test_bad_input_gives_status_4(lin, case):
    good, cases = _bad_inputs()
    a = {**good, **cases[case]}
    ev = event_arrays(*a["ev"])
    st, Y, O, dO = lin.solve_sens(a["p"], a["free"], a["u0"], a["t0"], a["t_out"], *ev,
                                  a["rtol"], a["atol"], 1000, a["method"])  # fmt: skip
    assert st == 4
    assert np.all(np.isnan(Y)) and np.all(np.isnan(O)) and np.all(np.isnan(dO))
    if case not in ("duplicate free", "free range"):
        st, *_ = lin.solve(a["p"], a["u0"], a["t0"], a["t_out"], *ev, a["rtol"], a["atol"],
                           1000, a["method"])  # fmt: skip
        assert st == 4


@pytest.mark.parametrize("method", [0, 1])
def test_no_allocation_in_the_stepping_loop(lin, method):
    """The number of NRT allocations per call does not grow with the number of steps."""
    nrt = pytest.importorskip("numba.core.runtime._nrt_python")
    from numba.core.runtime import rtsys

    if not hasattr(nrt, "memsys_enable_stats"):
        pytest.skip("this numba cannot switch NRT statistics on at run time")
    ev = event_arrays(*EVENTS_LIN)
    free = np.arange(5, dtype=np.int64)
    was_enabled = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    try:
        counts, steps = [], []
        for rtol in (1e-5, 1e-11):
            args = (P_LIN, U0_LIN, 0.0, T_OUT_LIN, *ev, rtol, rtol, 10**7, method)
            steps.append(lin.solve(*args)[3])
            before = rtsys.get_allocation_stats().alloc
            lin.solve(*args)
            lin.solve_sens(P_LIN, free, *args[1:])
            counts.append(rtsys.get_allocation_stats().alloc - before)
    finally:
        if not was_enabled:
            nrt.memsys_disable_stats()
    assert steps[1] > 5 * steps[0]
    assert counts[0] == counts[1]


def test_empty_outputs(lin):
    st, Y, O, n = lin.solve(P_LIN, U0_LIN, 0.0, np.empty(0), *NO_EVENTS, 1e-8, 1e-10, 100, 0)
    assert st == 0 and Y.shape == (0, 2) and O.shape == (0, 2) and n == 0


# ---------------------------------------------------------------------------------
# (e) population
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [0, 1])
def test_population_equals_loop(lin, method):
    rng = np.random.default_rng(0)
    P = P_LIN * np.exp(0.3 * rng.standard_normal((12, P_LIN.size)))
    P[5, 0] = np.nan  # one failing patient does not disturb the others
    ev = event_arrays(*EVENTS_LIN)
    status, O = lin.solve_population(P, U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-8, 1e-10, 10**6, method)
    assert status.shape == (12,) and O.shape == (12, T_OUT_LIN.size, 2)
    for i in range(12):
        st, _, Oi, _ = lin.solve(P[i], U0_LIN, 0.0, T_OUT_LIN, *ev, 1e-8, 1e-10, 10**6, method)
        assert status[i] == st
        np.testing.assert_allclose(O[i], Oi, rtol=1e-13, atol=0.0)
    assert status[5] == 2 and np.all(status[np.arange(12) != 5] == 0)


# ---------------------------------------------------------------------------------
# (f) module cache
# ---------------------------------------------------------------------------------
def test_load_numba_module_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(tmp_path))
    assert numba_backend.cache_dir() == tmp_path
    mod = load_numba_module("cachetest", BLOWUP_SRC)
    files = sorted((tmp_path / "numba").glob("cachetest_*.py"))
    assert len(files) == 1
    text = files[0].read_text()
    assert text.startswith(BLOWUP_SRC.rstrip())
    assert text.endswith(numba_backend.template_source())
    assert mod.__file__ == str(files[0])
    assert load_numba_module("cachetest", BLOWUP_SRC) is mod
    mtime = files[0].stat().st_mtime_ns
    # A changed model gives a new file and a new module; the old file is untouched.
    mod2 = load_numba_module("cachetest", BLOWUP_SRC.replace("y[0] = 1.0", "y[0] = 2.0"))
    assert mod2 is not mod
    assert len(list((tmp_path / "numba").glob("cachetest_*.py"))) == 2
    assert files[0].stat().st_mtime_ns == mtime
    assert not list((tmp_path / "numba").glob("*.tmp"))
    with pytest.raises(ValueError):
        load_numba_module("bad key!", BLOWUP_SRC)


@pytest.mark.skipif(sys.platform != "linux", reason="XDG base directories are Linux's")
def test_cache_dir_default_follows_xdg(tmp_path, monkeypatch):
    # Independent expectation (XDG base-directory spec): $XDG_CACHE_HOME/carthema, with an
    # empty CARTHEMA_CACHE_DIR ignored and a set one taking precedence, "~" expanded.
    monkeypatch.delenv("CARTHEMA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert numba_backend.cache_dir() == tmp_path / "xdg" / "carthema"
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", "")
    assert numba_backend.cache_dir() == tmp_path / "xdg" / "carthema"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", "~/cc")
    assert numba_backend.cache_dir() == tmp_path / "home" / "cc"


def test_kernels_text_is_part_of_the_cache_key(tmp_path, monkeypatch):
    # numba does not notice a change in an imported njit callee, so an edit of the kernels
    # module must give a new generated file (and a fresh compile), never the old one.
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(tmp_path))
    mod = load_numba_module("kerneltest", BLOWUP_SRC)
    edited = tmp_path / "solver_kernels.py"
    edited.write_text(numba_backend.kernels_source() + "\n# edited\n")
    monkeypatch.setitem(gencache.SOURCES, "kernels", edited)
    mod2 = load_numba_module("kerneltest", BLOWUP_SRC)
    assert mod2 is not mod and mod2.__file__ != mod.__file__
    assert len(list((tmp_path / "numba").glob("kerneltest_*.py"))) == 2


def test_generated_module_follows_the_documented_contract(lin):
    # Status constants are the shared enumeration's; the entry points take the arguments
    # in the order their docstrings (and the facade) use.
    for member in Status:
        if member != Status.SOLVER_FAILED:  # diffrax-only outcome
            assert getattr(lin, f"STATUS_{member.name}") == member
    common = ["u0", "t0", "t_out", "ev_t", "ev_kind", "ev_target", "ev_value", "ev_scale"]
    tail = ["rtol", "atol", "max_steps", "method"]
    assert list(inspect.signature(lin.solve.py_func).parameters) == ["p", *common, *tail]
    assert list(inspect.signature(lin.solve_sens.py_func).parameters) == [
        "p",
        "free",
        *common,
        *tail,
    ]
    assert list(inspect.signature(lin.solve_population.py_func).parameters) == [
        "P",
        *common,
        *tail,
    ]
    # The tableaux are the kernels' (the template holds no coefficient of its own).
    assert lin._T_A54 == solver_kernels.TSIT5_A[4, 3]
    assert lin._R_M3 == solver_kernels.ROS_M[2]
    assert lin._lu_factor is solver_kernels.lu_factor


# ---------------------------------------------------------------------------------
# Generated matrix functions: one zero-fill, then the nonzeros
# ---------------------------------------------------------------------------------
def test_matrix_functions_of_the_linear_toy_match_the_analytic_derivatives(lin):
    # Arrays pre-filled with NaN: an entry the function leaves unwritten shows.
    ka, ke, s, c0, V = P_LIN
    y = np.array([0.7, 2.5])
    Y0p = np.full((2, 5), np.nan)
    lin.init_jac_p(P_LIN, Y0p)
    expected = np.zeros((2, 5))
    expected[1, 3] = 1.0  # central(t0) = c0
    np.testing.assert_array_equal(Y0p, expected)
    Oy = np.full((2, 2), np.nan)
    lin.observe_jac_y(0.0, y, P_LIN, Oy)
    np.testing.assert_allclose(Oy, [[0.0, 1.0 / V], [1.0, 0.0]], rtol=1e-15, atol=0.0)
    Op = np.full((2, 5), np.nan)
    lin.observe_jac_p(0.0, y, P_LIN, Op)
    expected = np.zeros((2, 5))
    expected[0, 4] = -y[1] / V**2  # d(central / V) / dV
    np.testing.assert_allclose(Op, expected, rtol=1e-15, atol=0.0)


def _central_fd(f, x, j, rel=1e-6):
    h = rel * max(abs(x[j]), 1e-300)
    xp, xm = x.copy(), x.copy()
    xp[j] += h
    xm[j] -= h
    return (np.asarray(f(xp), dtype=float) - np.asarray(f(xm), dtype=float)) / (2.0 * h)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_model_matrix_functions_match_finite_differences_of_the_equations(seed):
    # Reference: central differences of the equations evaluated with numpy (model.init,
    # model.observe), independent of sympy's derivatives and of the printed code. A
    # structural zero must come out 0.0 (the equations do not move at all) even
    # from an array pre-filled with NaN (up to round-off 1e-12 of its row's scale); a
    # nonzero must match to 1e-6 of its row's scale.
    from carthema import get_model

    m = get_model("full")
    mod = numba_model(m)
    rng = np.random.default_rng(seed)
    p = m.default_params() * np.exp(0.2 * rng.standard_normal(m.n_p) * (seed > 0))
    y = np.array(m.init(p, np), dtype=float) * np.exp(0.3 * rng.standard_normal(m.n_y))
    t = 7.0

    def check(got, fd_cols, scale):
        ref = np.column_stack(fd_cols)
        zero = ref == 0.0
        # Every entry is written (none left NaN); where the equations do not move, the
        # printed derivative is 0 up to the round-off of an unsimplified expression that
        # cancels analytically (the marrow reserve's supply factor: 1e-16).
        assert np.all(np.isfinite(got))
        assert np.all(np.abs(got[zero]) <= 1e-12 * np.broadcast_to(scale[:, None], got.shape)[zero])
        tol = 1e-6 * (np.abs(ref) + scale[:, None])
        assert np.all(np.abs(got - ref) <= tol), np.max(np.abs(got - ref) / tol)

    # Checked in log form (x_j * d/dx_j), whose natural scale is the row's own value.
    y0 = np.abs(np.array(m.init(p, np), dtype=float)) + 1e-12
    Y0p = np.full((m.n_y, m.n_p), np.nan)
    mod.init_jac_p(p, Y0p)
    check(Y0p * p, [p[j] * _central_fd(lambda q: m.init(q, np), p, j) for j in range(m.n_p)], y0)
    o = np.abs(np.array(m.observe(t, y, p, np), dtype=float)) + 1e-12
    Oy = np.full((m.n_obs, m.n_y), np.nan)
    mod.observe_jac_y(t, y, p, Oy)
    check(
        Oy * y,
        [y[j] * _central_fd(lambda z: m.observe(t, z, p, np), y, j) for j in range(m.n_y)],
        o,
    )
    Op = np.full((m.n_obs, m.n_p), np.nan)
    mod.observe_jac_p(t, y, p, Op)
    check(
        Op * p,
        [p[j] * _central_fd(lambda q: m.observe(t, y, q, np), p, j) for j in range(m.n_p)],
        o,
    )


def test_generated_matrix_functions_store_only_their_nonzeros():
    # The printed text: one zero-fill per dense matrix function, then no literal zero
    # stores (the cold compile time is LLVM scheduling those stores).
    src = numba_source(LINEAR)
    for name, arr in (("init_jac_p", "Y0p"), ("observe_jac_y", "Oy"), ("observe_jac_p", "Op")):
        body = src.split(f"def {name}(")[1].split("\n@njit")[0]
        assert body.count(f"{arr}[:, :] = 0.0") == 1
        stores = [ln.strip() for ln in body.splitlines() if ln.strip().startswith(f"{arr}[")]
        assert stores[0] == f"{arr}[:, :] = 0.0"
        assert not [ln for ln in stores[1:] if ln.endswith(("= 0", "= 0.0")) or ":" in ln]


def test_loading_a_solver_leaves_numbas_slp_setting_as_it_was(tmp_path, monkeypatch):
    """The template compiles solve_c with LLVM's SLP vectoriser on (numba's default is
    off) and must restore numba's setting afterwards, also when that compile fails."""
    from numba.core import config

    before = config.SLP_VECTORIZE
    text = numba_source(LINEAR)
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(tmp_path))  # a fresh compile
    load_numba_module("slp_probe", text)
    assert config.SLP_VECTORIZE == before
    # Before the template's text: solve_c's carray of O cannot be typed.
    broken = text + "\nN_OBS = None\n"
    with pytest.raises(Exception, match="N_OBS|NoneType|none"):
        load_numba_module("slp_probe_broken", broken)
    assert config.SLP_VECTORIZE == before
