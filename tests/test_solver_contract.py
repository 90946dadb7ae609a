"""The solver contract: options and presets, one status enumeration, the ``solve`` facade.

References: the raw numba entry points (the facade must not change a single bit), a
tight scipy DOP853 solve of the same equations (tests/scipy_reference.py), and the other
backend for the status codes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from carthema.models.compiled import numba_model
from carthema.models.events import build_events
from carthema.models.model import get_model
from carthema.models.scenarios import typical_course, with_boost
from carthema.models.simulate import Trajectory, simulate
from carthema.models.solve import Schedule, check_inputs, solve, solve_batch
from carthema.models.solver_contract import (
    CONDITION,
    FIT,
    PREDICT,
    PRESETS,
    REFERENCE,
    SCREEN,
    SIMULATE,
    SolverOptions,
    Status,
)

from scipy_reference import observe_all, reference_solve

# --- options and status -----------------------------------------------------------------


def test_status_codes_and_messages():
    assert [int(s) for s in Status] == [0, 1, 2, 3, 4, 5]
    messages = [s.message for s in Status]
    assert len(set(messages)) == len(messages) and all(messages)
    assert Status.describe(4) == Status.BAD_INPUT.message
    assert Status.describe(99) == "status 99"
    assert Status(0) == 0 and Status.MAX_STEPS == 1  # IntEnum: compares with raw codes


def test_solver_options_are_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PREDICT.rtol = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown method"):
        SolverOptions("euler")
    assert SolverOptions("kvaerno5").jax_method == "kvaerno5"
    with pytest.raises(ValueError, match="JAX-only"):
        _ = SolverOptions("kvaerno5").numba_method
    assert SolverOptions("rosenbrock").numba_method == 1
    assert SolverOptions("rosenbrock").jax_method == "kvaerno5"
    looser = PREDICT.replace(rtol=1e-5)
    assert looser.rtol == 1e-5 and looser.atol == PREDICT.atol and PREDICT.rtol == 1e-7
    # Numbers are normalised, so equal options hash alike (they key compile caches).
    assert SolverOptions("auto", 1, 1e-9, 2e5) == SolverOptions("auto", 1.0, 1e-9, 200_000)
    assert hash(SolverOptions("auto", 1, 1e-9, 2e5)) == hash(SolverOptions("auto", 1.0, 1e-9))
    assert set(PRESETS.values()) == {CONDITION, FIT, PREDICT, SIMULATE, SCREEN, REFERENCE}
    # Presets order by accuracy: each tighter one has smaller tolerances.
    order = [CONDITION, FIT, SCREEN, PREDICT, SIMULATE, REFERENCE]
    pairs = zip(order[:-1], order[1:], strict=True)
    assert all(a.rtol > b.rtol and a.atol > b.atol for a, b in pairs)


# --- the facade on the full model --------------------------------------------------------


@pytest.fixture(scope="module")
def full():
    return get_model("full")


@pytest.fixture(scope="module")
def course(full):
    p = full.default_params()
    ev = build_events(full, with_boost(typical_course(), 30.0, 1e6), p)
    t = np.arange(-5.0, 61.0, 1.0)
    return p, ev, Schedule.from_events(full, ev, t)


def test_schedule_from_events(full, course):
    _, ev, s = course
    assert s.t0 == -5.0 == min(s.t_out[0], ev.t[0])
    assert s.u0.shape == (full.n_u,) and not s.u0.any()
    assert s.ev_kind.dtype == np.int64 and s.ev_t.flags.c_contiguous
    # Without an explicit t0, an event before the first output starts the solve.
    early = Schedule.from_events(full, ev, np.array([10.0, 20.0]))
    assert early.t0 == float(ev.t[0])


@pytest.mark.parametrize("options", [FIT, PREDICT, SIMULATE])
def test_facade_is_bitwise_the_raw_solver(full, course, options):
    p, ev, s = course
    mod = numba_model(full)
    raw_args = (
        np.zeros(full.n_u), s.t0, s.t_out, ev.t, ev.kind, ev.target, ev.value, ev.scale,
        options.rtol, options.atol, options.max_steps, options.numba_method,
    )  # fmt: skip
    status, Y, O, n_steps = mod.solve(p, *raw_args)
    sol = solve(full, p, s, options)
    assert sol.status == status == Status.OK and sol.n_steps == n_steps
    np.testing.assert_array_equal(sol.obs, O)
    np.testing.assert_array_equal(sol.y, Y)
    P = p * np.exp(0.1 * np.random.default_rng(1).standard_normal((3, full.n_p)))
    st_raw, O_raw = mod.solve_population(np.ascontiguousarray(P), *raw_args)
    batch = solve_batch(full, P, s, options)
    np.testing.assert_array_equal(batch.status, st_raw)
    np.testing.assert_array_equal(batch.obs, O_raw)
    assert batch.ok.all()


def test_facade_sensitivities_are_the_raw_solve_sens(full, course):
    p, ev, s = course
    free = np.array([0, 3, 7], dtype=np.int64)
    mod = numba_model(full)
    st, _, O, dO = mod.solve_sens(
        p, free, s.u0, s.t0, s.t_out, ev.t, ev.kind, ev.target, ev.value, ev.scale,
        FIT.rtol, FIT.atol, FIT.max_steps, FIT.numba_method,
    )  # fmt: skip
    sol = solve(full, p, s, FIT, free=free)
    assert sol.ok and st == 0
    np.testing.assert_array_equal(sol.dobs, dO)
    np.testing.assert_array_equal(sol.obs, O)
    with pytest.raises(ValueError, match="numba backend only"):
        solve(full, p, s, FIT, "jax", free=free)


@pytest.fixture(scope="module")
def reference(full, course):
    p, ev, s = course
    return observe_all(full, p, reference_solve(full, p, ev, s.t_out, s.t0, rtol=1e-11))


# Worst relative error over all observables and days that each preset keeps against a
# DOP853 rtol 1e-11 solve on this course (values below 1e-6 of an observable's maximum
# compared in absolute terms, as in test_model_core). Measured: CONDITION 5.4e-4, FIT
# 7.1e-5 (tsit5), SCREEN 6.5e-6, PREDICT 5.6e-7, SIMULATE 3.0e-8 (auto); the REFERENCE
# preset itself differs by 3.2e-8, the resolution of this comparison. Bounds leave a
# factor of about 2-6.
PRESET_ACCURACY = {
    "condition": 3e-3,
    "fit": 3e-4,
    "screen": 2e-5,
    "predict": 1e-6,
    "simulate": 2e-7,
}


@pytest.mark.parametrize("name", sorted(PRESET_ACCURACY))
def test_presets_keep_their_accuracy_against_scipy(full, course, reference, name):
    p, _, s = course
    sol = solve(full, p, s, PRESETS[name])
    assert sol.ok
    floor = 1e-6 * np.maximum(np.nanmax(np.abs(reference), axis=0), 1e-12)
    err = np.max(np.abs(sol.obs - reference) / np.maximum(np.abs(reference), floor))
    assert err < PRESET_ACCURACY[name], err


def test_trajectory_reports_the_shared_status(full):
    traj = simulate(None, days=5, max_steps=3)
    assert isinstance(traj, Trajectory)
    assert traj.status == Status.MAX_STEPS and traj.message == "max_steps exceeded"
    assert np.isnan(traj.obs[-1]).all()


# --- both backends report the same status --------------------------------------------------


@pytest.fixture(scope="module")
def cart():
    """The CAR-T component alone (3 states): cheap to compile for both backends."""
    m = get_model("cart")
    p = m.default_params()
    ev = build_events(m, typical_course(), p)
    return m, p, Schedule.from_events(m, ev, np.arange(-5.0, 31.0, 1.0))


def _bad_schedules(m, s):
    def change(**kw):
        return dataclasses.replace(s, **kw)

    def ev_change(name, i, value):
        a = getattr(s, name).copy()
        a[i] = value
        return change(**{name: a})

    return {
        "unsorted_t_out": change(t_out=s.t_out[::-1].copy()),
        "t_out_before_t0": change(t0=float(s.t_out[0]) + 1.0),
        "nan_t_out": change(t_out=np.append(s.t_out, np.nan)),
        "event_before_t0": ev_change("ev_t", 0, s.t0 - 1.0),
        "unsorted_events": ev_change("ev_t", 0, float(s.ev_t[-1]) + 1.0),
        "bolus_target_out_of_range": ev_change("ev_target", 0, m.n_y),
        "unknown_event_kind": ev_change("ev_kind", 0, 7),
        "scale_out_of_range": ev_change("ev_scale", 0, m.n_p),
        "nan_event_value": ev_change("ev_value", 0, np.nan),
        "wrong_u0_length": change(u0=np.zeros(m.n_u + 1)),
    }


BAD_CASES = [
    "unsorted_t_out",
    "t_out_before_t0",
    "nan_t_out",
    "event_before_t0",
    "unsorted_events",
    "bolus_target_out_of_range",
    "unknown_event_kind",
    "scale_out_of_range",
    "nan_event_value",
    "wrong_u0_length",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_the_same_status_in_both_backends(cart, case):
    m, p, s = cart
    cases = _bad_schedules(m, s)
    assert sorted(cases) == sorted(BAD_CASES)
    bad = cases[case]
    assert not check_inputs(m, p, bad, SIMULATE)
    for backend in ("numba", "jax"):
        sol = solve(m, p, bad, SIMULATE.replace(method="tsit5"), backend)
        assert sol.status == Status.BAD_INPUT, (backend, sol.status)
        assert np.isnan(sol.obs).all()
        batch = solve_batch(m, np.tile(p, (2, 1)), bad, SIMULATE.replace(method="tsit5"), backend)
        assert (batch.status == Status.BAD_INPUT).all(), (backend, batch.status)


@pytest.mark.parametrize("change", ["short_p", "negative_atol", "nan_rtol"])
def test_bad_parameters_and_tolerances_are_bad_input_in_both_backends(cart, change):
    m, p, s = cart
    opts = SIMULATE.replace(method="tsit5")
    if change == "short_p":
        p = p[:-1]
    elif change == "negative_atol":
        opts = opts.replace(atol=-1.0)
    else:
        opts = opts.replace(rtol=float("nan"))
    for backend in ("numba", "jax"):
        assert solve(m, p, s, opts, backend).status == Status.BAD_INPUT, backend


def test_step_limit_is_the_same_status_in_both_backends(cart):
    m, p, s = cart
    opts = SolverOptions("tsit5", rtol=1e-8, atol=1e-10, max_steps=3)
    for backend in ("numba", "jax"):
        sol = solve(m, p, s, opts, backend)
        assert sol.status == Status.MAX_STEPS, backend
        assert np.isnan(sol.obs[-1]).all()  # no value survives past the failure
        batch = solve_batch(m, np.tile(p, (2, 1)), s, opts, backend)
        assert (batch.status == Status.MAX_STEPS).all(), backend


def test_backends_agree_through_the_facade(cart):
    m, p, s = cart
    opts = SolverOptions("tsit5", rtol=1e-10, atol=1e-12)
    a = solve(m, p, s, opts, "numba")
    b = solve(m, p, s, opts, "jax")
    assert a.ok and b.ok and b.y is None
    floor = 1e-9 * np.abs(a.obs).max(axis=0)
    np.testing.assert_array_less(np.abs(a.obs - b.obs), 1e-7 * np.abs(a.obs) + floor)
    P = p * np.exp(0.2 * np.random.default_rng(0).standard_normal((4, m.n_p)))
    na, nb = solve_batch(m, P, s, opts, "numba"), solve_batch(m, P, s, opts, "jax")
    assert na.ok.all() and nb.ok.all()
    np.testing.assert_array_less(np.abs(na.obs - nb.obs), 1e-7 * np.abs(na.obs) + floor)


def test_unknown_backend_raises(cart):
    m, p, s = cart
    with pytest.raises(ValueError, match="backend"):
        solve(m, p, s, SIMULATE, "torch")
