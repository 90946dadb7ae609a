"""One Op over a batch of schedules, and one compile per model structure
(fitting/ode_op.py, fitting/compiled.py)."""

from __future__ import annotations

import numpy as np
import pytest

from carthema.data.examples import load_example
from carthema.fitting import compiled, fastlogp
from carthema.fitting.build import build_patient_model
from carthema.fitting.laplace import find_map, value_grad_function
from carthema.fitting.ode_op import (
    BATCH_INPUTS,
    SolveOp,
    stack_schedules,
    unstack_schedules,
)

PATIENTS = ("VP001", "VP002", "VP003")


@pytest.fixture(scope="module")
def models():
    ex = load_example("synthetic")
    return [build_patient_model(ex.observations, ex.events, p, "cart") for p in PATIENTS]


def _batch(models):
    arrays = stack_schedules([fm.schedule for fm in models])
    return [arrays[n] for n in BATCH_INPUTS]


def test_patients_share_one_structure_and_differ_in_data(models):
    keys = {fm.structure for fm in models}
    assert len(keys) == 1 and next(iter(keys))
    a, b = models[0].inputs, models[1].inputs
    assert set(a) == set(b)
    assert not np.array_equal(a["y_obs"], b["y_obs"])


def test_stack_unstack_round_trip(models):
    back = unstack_schedules(_batch(models))
    for fm, s in zip(models, back, strict=True):
        for name, x in zip(
            ("p_fixed", "t_out", "ev_t", "ev_value", "t_idx", "o_idx"),
            (s.p_fixed, s.t_out, s.ev_t, s.ev_value, s.t_idx, s.o_idx),
            strict=True,
        ):
            np.testing.assert_array_equal(x, getattr(fm.schedule, name), err_msg=name)


def test_batch_equals_batches_of_one_and_jac_equals_finite_differences(models):
    """The batch kernel gives each patient what a batch of one gives, and ``jac`` (forward
    sensitivities) matches central differences of ``pred`` (tight tolerances)."""
    op = SolveOp("cart", rtol=1e-10, atol=1e-12)
    kernel = op.kernel()
    rng = np.random.default_rng(0)
    theta = np.stack([fm.prior_mu + 0.2 * rng.normal(size=len(fm.free)) for fm in models])
    pred, jac, ok = kernel(theta, *_batch(models))
    assert np.all(ok == 1.0)
    start = 0
    for i, fm in enumerate(models):
        p1, j1, ok1 = kernel(theta[i : i + 1], *_batch([fm]))
        n = len(p1)
        np.testing.assert_array_equal(pred[start : start + n], p1)
        np.testing.assert_array_equal(jac[start : start + n], j1)
        assert ok1[0] == 1.0
        h = 1e-5
        for k in range(theta.shape[1]):
            up, dn = theta[i : i + 1].copy(), theta[i : i + 1].copy()
            up[0, k] += h
            dn[0, k] -= h
            fd = (kernel(up, *_batch([fm]))[0] - kernel(dn, *_batch([fm]))[0]) / (2 * h)
            np.testing.assert_allclose(j1[:, k], fd, rtol=1e-4, atol=1e-6 * np.abs(p1).max())
        start += n
    assert start == len(pred)


def test_failed_patient_is_flagged_alone(models):
    """A patient whose solve hits the step limit gets ok = 0 and dummy rows; the others
    are untouched."""
    op = SolveOp("cart", max_steps=5)
    good = SolveOp("cart")
    theta = np.stack([fm.prior_mu for fm in models])
    batch = _batch(models)
    _, _, ok_bad = op.kernel()(theta, *batch)
    assert np.all(ok_bad == 0.0)
    pred, jac, ok = good.kernel()(theta, *batch)
    assert np.all(ok == 1.0) and np.all(np.isfinite(pred))


def test_second_patient_reuses_the_compiled_log_density(models):
    """nutpie's numba model and the MAP log-density compile once for the structure; the
    second and third patients get the same compiled function with their own data, and its
    values equal each patient's own (separately compiled) PyMC log-density."""
    compiled.clear()
    before = dict(compiled.COMPILES)
    cms = [compiled.nutpie_model(fm) for fm in models]
    assert compiled.COMPILES["nutpie"] - before.get("nutpie", 0) == 1
    assert len({id(cm.compiled_logp_func) for cm in cms}) == 1
    values = []
    for fm, cm in zip(models, cms, strict=True):
        x0 = value_grad_function(fm, compile=False)[3]
        lp, grad = compiled.logp_grad(fm, cm)(x0)
        ref = fm.pymc_model.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
        ref.set_extra_values({})
        lp_ref, grad_ref = ref(x0)
        assert lp == pytest.approx(float(lp_ref), rel=1e-12)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-12)
        values.append(lp)
    assert len(set(values)) == len(values), "each patient's own data is used"
    # The MAP-only log-density: one compile for all three patients as well.
    before = compiled.COMPILES["logp_grad"]
    for fm in models:
        compiled.logp_grad(fm)
    assert compiled.COMPILES["logp_grad"] - before == 1


def test_map_with_reused_function_equals_a_fresh_compile(models):
    """The MAP of the second patient through the structure's shared log-density equals
    the MAP through a log-density compiled for that patient alone."""
    fm = models[1]
    shared = find_map(fm, value_grad=compiled.logp_grad(fm), seed=1)
    fresh = find_map(fm, seed=1)
    np.testing.assert_allclose(shared.x, fresh.x, rtol=1e-8, atol=1e-10)
    assert shared.logp == pytest.approx(fresh.logp, rel=1e-12)


def test_cohort_task_compiles_once_for_two_patients():
    """A cohort worker runs :func:`fit_patient_task` for patient after patient: the second
    patient of the same structure does not compile again."""
    from carthema.fitting.cohort import fit_patient_task
    from carthema.fitting.sampling.settings import RunSettings

    ex = load_example("synthetic")
    run = RunSettings(sampler="map", draws=50, tune=0, chains=1, cores=1, seed=3)
    compiled.clear()
    before = compiled.COMPILES["logp_grad"]
    loads = fastlogp.module.cache_info().misses
    out = [
        fit_patient_task(ex.observations, ex.events, p, run, components="cart")
        for p in PATIENTS[:2]
    ]
    assert [o["status"] for o in out] == ["ok", "ok"], [o.get("traceback") for o in out]
    assert [o["row"]["patient"] for o in out] == list(PATIENTS[:2])
    # The MAP runs on the generated log-density (fitting/op/fastlogp.py), loaded at most once
    # per process for both patients: no PyTensor compile at all.
    assert compiled.COMPILES["logp_grad"] - before == 0
    assert fastlogp.module.cache_info().misses - loads <= 1


_GRAPH_KEY = """
from pytensor.compile.mode import get_mode
from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key
from carthema.data.examples import load_example
from carthema.fitting.build import build_patient_model
ex = load_example("synthetic")
fm = build_patient_model(ex.observations, ex.events, "VP002", "cart")
f = fm.pymc_model.logp_dlogp_function(mode=get_mode("NUMBA").clone(linker="py"))
fg = f._pytensor_function.maker.fgraph
print(numba_funcify_and_cache_key(fg)[1], sum("Assert" in str(n.op) for n in fg.apply_nodes))
"""


def test_the_log_density_graph_is_the_same_in_every_process():
    """PyTensor caches a numba-compiled graph under a key over the rewritten graph; the
    row likelihood's vectors of unknown length once made it add broadcast Asserts in an
    order that changed from process to process (5 processes, 5 keys), so the cache never
    hit. Two fresh processes now rewrite to the same graph, with no such Assert."""
    import subprocess
    import sys

    outs = [
        subprocess.run(
            [sys.executable, "-c", _GRAPH_KEY], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    (key, n_assert), again = outs
    assert key != "None" and [key, n_assert] == again
    assert n_assert == "0"
