"""Every script in benchmarks/ runs its ``--smoke`` mode (the same code paths at tiny
sizes) in a fresh process, exits 0, writes its JSON to a temporary folder, never to
``benchmarks/results/``, and that JSON holds the script's headline keys.

Timings are not asserted (they belong in the benchmarks); the scripts that still
compile a PyTensor log-density or sample take minutes on 2 shared cores and are marked
slow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
RESULTS = BENCH / "results"


def _run_smoke(script: str) -> dict:
    before = {p.name: p.stat().st_mtime_ns for p in RESULTS.glob("*")}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = re.findall(r"wrote (\S+\.json)", proc.stdout)
    assert written, proc.stdout[-2000:]
    path = Path(written[-1])
    assert RESULTS.resolve() not in path.resolve().parents
    after = {p.name: p.stat().st_mtime_ns for p in RESULTS.glob("*")}
    assert after == before, "a --smoke run changed benchmarks/results/"
    return json.loads(path.read_text())


@pytest.mark.slow
def test_startup_smoke():
    res = _run_smoke("startup.py")
    assert res["mode"] == "smoke"
    cold = res["cold"]
    # solve and solve_sens were compiled ahead by numba_model, which recorded it.
    assert cold["compiled_ahead"]["file"] == cold["module"]
    assert res["cold_compile_cpu_s"] >= cold["compiled_ahead"]["cpu_s"] > 0.0
    # The fast path's first gradient is measured even in a smoke run (it is seconds) ...
    assert res["first_gradient_fresh_s"] > 0.0
    assert all(r["grad_finite"] for r in res["gradient_fast"]["runs"])
    # ... the keys not measured in a smoke run are null with the reason.
    for key in ("first_gradient_fresh_s_pytensor", "demo_cold_s"):
        assert res[key] is None and res["reasons"][key]


def test_solver_smoke():
    res = _run_smoke("solver.py")
    assert res["mode"] == "smoke"
    assert res["numba_forward_us"] > 0.0 and res["numba_grad_us"] > 0.0
    assert all(v == 0 for v in res["status"].values())
    assert res["population"]["n"] == 20 and res["population"]["numba_failed"] == 0


def test_data_layer_smoke():
    res = _run_smoke("data_layer.py")
    assert res["mode"] == "smoke"
    assert [r["patients"] for r in res["runs"]] == [100, 20]


@pytest.mark.slow
def test_validation_smoke():
    res = _run_smoke("validation.py")
    assert res["smoke"] is True
    assert set(res["validation"]) == {"gagelmann2023", "mullanfiroze2022", "han2022"}


def test_sensitivity_smoke():
    res = _run_smoke("sensitivity.py")
    assert res["mode"] == "smoke" and res["n"] == 16
    assert "engraftment" in res["outputs"]
    assert res["outputs"]["engraftment"]["sobol"]


def test_boost_calibration_smoke():
    res = _run_smoke("boost_calibration.py")
    assert res["mode"] == "smoke"
    assert res["n_patients"] + res["n_refused"] == 1


@pytest.mark.slow
def test_prediction_smoke():
    res = _run_smoke("prediction.py")
    assert res["n_boost_days"] == 2 and res["n_draws"] == 10
    assert res["scan_s"] > 0.0 and len(res["predict_boost"]) == 1


@pytest.mark.slow
def test_cohort_smoke():
    res = _run_smoke("cohort.py")
    assert res["mode"] == "smoke" and not res["failures"]
    assert res["cohort"]["n_patients"] == 2
    assert res["virtual_patient_days_per_s_numba"] > 0.0


@pytest.mark.slow
def test_fit_smoke():
    res = _run_smoke("fit.py")
    assert res["mode"] == "smoke"
    assert res["paths"]["carthema"]["draws"] == 20
    assert res["recovery"]["n_patients"] == 1


def test_ball_diagnosis_smoke():
    res = _run_smoke("ball_diagnosis.py")
    assert res["mode"] == "smoke" and res["n"] == 40
    assert set(res["per_product"]) == {"tisa-cel", "brexu-cel"}
    assert 0.0 <= res["discordant_tisa_bad_brexu_ok"] <= 1.0 and len(res["swaps"]) == 8


def test_every_benchmark_script_has_a_smoke_test():
    # A new script in benchmarks/ without a smoke test here would rot unnoticed.
    scripts = {p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_")}
    tested = {name[len("test_") : -len("_smoke")] for name in globals()
              if name.startswith("test_") and name.endswith("_smoke")}  # fmt: skip
    assert scripts, "no benchmark scripts found"
    assert scripts <= tested, f"benchmarks without a smoke test: {sorted(scripts - tested)}"
