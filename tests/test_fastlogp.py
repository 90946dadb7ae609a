"""The generated single-patient log-density (fitting/op/fastlogp.py) against PyMC's own.

Reference: the PyMC model of ``build_model`` compiled by PyMC (``compile_logp`` and
``compile_dlogp`` with the Jacobian, Python-linked, the ODE Op running its own numba
kernel), at random points, for every likelihood feature: the log, logit and identity row
scales, M3 rows on each scale (one in the asymptotic tail, one whose prediction is exactly
0 before the infusion), estimated and fixed residual SDs, a model with no estimated SD,
and failed solves. Also: nutpie's expanded draw, a short nutpie run, the run-time check
and its fallback to the PyTensor path when the fast density disagrees.
"""

from __future__ import annotations

import ctypes
import itertools

import numpy as np
import pandas as pd
import pytest

from carthema.data.examples import load_example
from carthema.fitting import compiled, fastlogp
from carthema.fitting.build import SCALE_CODES, build_patient_model
from carthema.fitting.priors import RESIDUALS


@pytest.fixture(scope="module")
def synthetic():
    return load_example("synthetic")


def _censor(obs: pd.DataFrame, analyte: str, k: int, lloq: float) -> None:
    idx = obs.index[obs["analyte"] == analyte][k]
    obs.loc[idx, ["value", "lloq", "blq"]] = [np.nan, lloq, True]


@pytest.fixture(scope="module")
def all_features(synthetic):
    """VP002 on the full model (log, logit and identity rows) with censored rows on every
    scale: a platelet limit far below the prediction (z < -10, the series branch of M3)
    and a CAR-T row on day -3, where the prediction is exactly 0."""
    obs = synthetic.observations
    obs = obs[obs["patient"] == "VP002"].copy()
    _censor(obs, "platelets", -1, 1.0)
    _censor(obs, "chimerism_cd15", 0, 1.0)
    _censor(obs, "b_cells", -1, 1.0)
    early = obs[obs["analyte"] == "cart_copies"].iloc[[0]].copy()
    early["day"] = -3.0
    early.index = [obs.index.max() + 1]
    obs = pd.concat([obs, early])
    return build_patient_model(obs, synthetic.events, "VP002", "full")


def _reference(fm):
    """PyMC's log-density and gradient of the whole model, the ODE Op included."""
    m = fm.pymc_model
    logp = m.compile_logp(jacobian=True, mode="FAST_COMPILE")
    dlogp = m.compile_dlogp(jacobian=True, mode="FAST_COMPILE")
    nf = len(fm.free)

    def f(x):
        point = {"z": x[:nf]}
        if fm.sigma_free:
            point["sigma_log__"] = x[nf:]
        return float(logp(point)), np.asarray(dlogp(point))

    return f


def _points(fm, n: int = 3, spread: float = 0.7) -> list[np.ndarray]:
    x0 = fastlogp.initial_point(fm)
    rng = np.random.default_rng(7)
    return [x0] + [x0 + rng.normal(0.0, spread, x0.size) for _ in range(n - 1)]


def _assert_matches(fm, points=None, rtol: float = 1e-10) -> list[float]:
    fast = fastlogp.compiled_model(fm).value_grad()
    ref = _reference(fm)
    values = []
    for x in points if points is not None else _points(fm):
        lp, g = fast(x)
        lp_ref, g_ref = ref(x)
        assert np.isfinite(lp_ref) == np.isfinite(lp)
        if np.isfinite(lp_ref):
            assert lp == pytest.approx(lp_ref, rel=rtol)
        np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=rtol * np.abs(g_ref).max())
        values.append(lp)
    return values


def test_every_scale_m3_and_estimated_and_fixed_sds_match_pymc(all_features):
    fm = all_features
    rows = fm.data.rows
    assert set(rows["scale"]) == set(SCALE_CODES)
    assert set(rows.loc[fm.data.censored, "scale"]) == set(SCALE_CODES)
    assert fm.sigma_free and fm.sigma_fixed
    # The day -3 CAR-T row predicts exactly 0 (log scale: the floor keeps it finite).
    mod = fastlogp.module(fm.model.name)
    pred, _jac, ok = mod.solve_rows(fm.prior_mu.copy(), fastlogp.pack(fm))
    assert ok and pred[(rows["day"] == -3.0).to_numpy()][0] == 0.0
    # The platelet limit sits in the series branch of log Phi at the prior median.
    y = fm.data.transformed()
    plt_cen = ((rows["observable"] == "platelets") & fm.data.censored).to_numpy()
    z = (y[plt_cen] - np.log(pred[plt_cen] + RESIDUALS["platelets"].floor)) / 0.12
    assert z[0] < -10.0
    values = _assert_matches(fm)
    assert len(set(values)) == len(values)


def test_cart_model_and_no_estimated_sd_match_pymc(synthetic):
    fm = build_patient_model(synthetic.observations, synthetic.events, "VP001", "cart")
    assert fm.sigma_free and fm.data.censored.any()
    _assert_matches(fm)
    held = build_patient_model(
        synthetic.observations, synthetic.events, "VP001", "cart", sigma={"cart_copies": 0.4}
    )
    assert not held.sigma_free
    assert [v.name for v in held.pymc_model.value_vars] == ["z"]
    _assert_matches(held)


def test_failed_solve_is_minus_infinity_like_pymc(synthetic):
    """A solve that hits its step limit: -inf in both, nutpie's 'rejected draw' code."""
    fm = build_patient_model(synthetic.observations, synthetic.events, "VP001", "cart", max_steps=5)
    values = _assert_matches(fm, _points(fm, 2))
    assert values == [-np.inf, -np.inf]
    cm = fastlogp.compiled_model(fm)
    x = fastlogp.initial_point(fm)
    g = np.empty_like(x)
    lp = np.empty(1)
    p = ctypes.POINTER(ctypes.c_double)
    code = cm.compiled_logp_func.ctypes(
        x.size, *(a.ctypes.data_as(p) for a in (x, g, lp, cm.user_data))
    )
    assert code == 4 and lp[0] == -np.inf


def test_expanded_draw_equals_pymc_variables(all_features):
    """nutpie's expanded draw (z, log sigma, sigma, log_params, params in PyMC's order)."""
    fm = all_features
    cm = fastlogp.compiled_model(fm)
    m = fm.pymc_model
    names, _slices, shapes = cm.shape_info
    assert names == [v.name for v in m.unobserved_value_vars]
    fn = m.compile_fn(m.unobserved_value_vars, inputs=m.value_vars, mode="FAST_COMPILE")
    x = _points(fm, 2)[1]
    nf = len(fm.free)
    expected = np.concatenate([np.ravel(v) for v in fn({"z": x[:nf], "sigma_log__": x[nf:]})])
    out = np.empty(cm.n_expanded)
    p = ctypes.POINTER(ctypes.c_double)
    code = cm.compiled_expand_func.ctypes(
        x.size, out.size, *(a.ctypes.data_as(p) for a in (x, out, cm.user_data))
    )
    assert code == 0
    np.testing.assert_allclose(out, expected, rtol=1e-14)
    assert sum(int(np.prod(s)) for s in shapes) == cm.n_expanded


def test_nutpie_samples_the_fast_model(synthetic):
    import nutpie

    fm = build_patient_model(synthetic.observations, synthetic.events, "VP001", "cart")
    cm = compiled.nutpie_model(fm, fast=True)
    assert hasattr(cm, "value_grad")
    idata = nutpie.sample(cm, draws=60, tune=60, chains=1, seed=3, progress_bar=False)
    post = idata.posterior
    assert set(post["params"].coords["param"].values) == set(fm.free)
    np.testing.assert_allclose(post["params"], np.exp(post["log_params"]), rtol=1e-12)
    np.testing.assert_allclose(
        post["log_params"], fm.prior_mu + fm.prior_sd * post["z"].values, rtol=1e-12
    )
    assert np.all(post["sigma"] > 0)


def test_second_patient_loads_the_same_module(synthetic):
    fms = [
        build_patient_model(synthetic.observations, synthetic.events, p, "cart")
        for p in ("VP001", "VP003")
    ]
    cms = [fastlogp.compiled_model(fm) for fm in fms]
    assert cms[0].compiled_logp_func is cms[1].compiled_logp_func
    x = fastlogp.initial_point(fms[0])
    a, b = (cm.value_grad()(x)[0] for cm in cms)
    assert a != b


def test_mismatch_falls_back_to_pytensor_with_one_line(synthetic, monkeypatch):
    """A fast density built from a description that differs from the PyMC model's (here
    another prior scale of the residual SD) fails the check at the initial point: one
    line says so and the MAP log-density is PyTensor's, equal to PyMC's."""
    fm = build_patient_model(synthetic.observations, synthetic.events, "VP001", "cart")
    cm = fastlogp.fast_model(fm)
    assert cm is not None
    drifted = dict(RESIDUALS)
    r = RESIDUALS["cart_copies"]
    drifted["cart_copies"] = type(r)(**{**r.__dict__, "prior_scale": r.prior_scale * 1.001})
    monkeypatch.setattr(fastlogp, "RESIDUALS", drifted)
    lines: list[str] = []
    assert fastlogp.fast_model(fm, lines.append) is None
    assert len(lines) == 1 and "differs from PyMC's" in lines[0]
    lines.clear()
    vg = compiled.logp_grad(fm, fast=True, say=lines.append)
    assert len(lines) == 1 and "using PyMC/PyTensor's instead" in lines[0]
    x = _points(fm, 2)[1]
    lp, g = vg(x)
    lp_ref, g_ref = _reference(fm)(x)
    assert lp == pytest.approx(lp_ref, rel=1e-10)
    np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-9 * np.abs(g_ref).max())


def test_a_scale_without_generated_form_leaves_the_fast_path(monkeypatch):
    monkeypatch.setitem(SCALE_CODES, "probit", max(SCALE_CODES.values()) + 1)
    with pytest.raises(fastlogp.FastPathUnavailable, match="probit"):
        fastlogp.source("cart")


def test_packed_layout_round_trips(all_features):
    """Every array of the packed data sits at its offset (the generated code reads it)."""
    fm = all_features
    d = fastlogp.pack(fm)
    h = len(fastlogp.HEADER)
    offsets = d[h : h + len(fastlogp.ARRAYS)].astype(int)
    ends = list(offsets[1:]) + [len(d)]
    arrays = dict(
        zip(fastlogp.ARRAYS, (d[a:b] for a, b in zip(offsets, ends, strict=True)), strict=True)
    )
    for name, key in itertools.chain(
        [("prior_mu", "prior_mu"), ("row_floor", "row_floor"), ("free", "sched_free")],
        [("t_out", "sched_t_out"), ("ev_value", "sched_ev_value"), ("o_idx", "sched_o_idx")],
    ):
        np.testing.assert_array_equal(arrays[name], fm.inputs[key], err_msg=name)
    assert d[0] == len(d) and d[fastlogp.HEADER.index("n_rows")] == len(fm.data.rows)


_POPULATION_KEY = r"""
from pytensor.compile.mode import Mode, get_mode
from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key
from pytensor.link.numba.linker import NumbaLinker

from carthema.data.examples import load_example
from carthema.fitting.data import prepare_patient
from carthema.fitting.hierarchical import build_population_model
from carthema.models.model import get_model
from carthema.models.simulate import resolve_params


class Rewritten(Exception):
    pass


class Capture(NumbaLinker):
    # Keeps the graph PyTensor's NUMBA mode has rewritten and stops before LLVM.
    fgraph = None

    def accept(self, fgraph, *args, **kwargs):
        Capture.fgraph = fgraph
        raise Rewritten


ex = load_example("synthetic")
model = get_model("cart")
p = resolve_params(model, None)
ids = ("VP001", "VP002", "VP003")
data = [prepare_patient(model, ex.observations, ex.events, i, p) for i in ids]
m = build_population_model(data).pymc_model
try:
    m.logp_dlogp_function(
        ravel_inputs=True, mode=Mode(Capture(), get_mode("NUMBA").provided_optimizer)
    )
except Rewritten:
    pass
print("KEY", numba_funcify_and_cache_key(Capture.fgraph)[1])
"""


def test_population_log_density_has_one_pytensor_cache_key_across_processes():
    """PyTensor caches a numba-compiled graph under a key of the rewritten graph; the
    population model's log-density and gradient (rows as constants of known length)
    must rewrite to the same graph in every fresh process, or no run would hit the cache."""
    import subprocess
    import sys

    keys = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _POPULATION_KEY], capture_output=True, text=True, check=True
        ).stdout
        keys += [line.split()[1] for line in out.splitlines() if line.startswith("KEY ")]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0] != "None"
