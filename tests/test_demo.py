"""`carthema demo`'s own rules: no window from chains that did not converge, and stage
lines with their seconds (the demo's end-to-end run is in test_window.py)."""

from __future__ import annotations

from types import SimpleNamespace

import arviz as az
import numpy as np

from carthema.cli_model import _converged, _Stages


def _fit(chain_means: list[float], sampler: str = "nutpie") -> SimpleNamespace:
    """A stand-in fit result: 4 chains x 400 independent normal draws of two
    parameters around the given per-chain means."""
    rng = np.random.default_rng(3)
    n = 400
    x = np.stack([m + rng.standard_normal((n, 2)) for m in chain_means])
    idata = az.from_dict(
        posterior={"params": np.exp(x)},
        sample_stats={
            "diverging": np.zeros((len(chain_means), n), bool),
            "energy": rng.standard_normal((len(chain_means), n)),
        },
        dims={"params": ["param"]},
        coords={"param": ["a", "b"]},
    )
    return SimpleNamespace(sampler=sampler, idata=idata)


def test_demo_accepts_chains_that_agree():
    assert _converged(_fit([0.0, 0.0, 0.0, 0.0])) == []


def test_demo_refuses_chains_that_disagree():
    # One chain 3 SD away from the others: R-hat far above 1.01.
    failed = _converged(_fit([0.0, 0.0, 0.0, 3.0]))
    assert failed and any(f.startswith("R-hat") for f in failed)


def test_demo_map_has_no_chains_to_check():
    assert _converged(_fit([0.0, 0.0, 0.0, 3.0], sampler="map")) == []


def test_demo_stage_lines_carry_wall_and_cpu_seconds(capsys):
    clock = _Stages()
    clock.start("1/2 fit", "a patient")
    sum(i * i for i in range(200_000))  # some CPU time
    clock.end()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1/2 fit: a patient (starts at ") and "s CPU)" in out[0]
    assert out[1].startswith("1/2 fit: done in ") and out[1].endswith(" s CPU)")
    wall = float(out[1].split("done in ")[1].split(" s")[0])
    cpu = float(out[1].split("(")[1].split(" s CPU")[0])
    assert wall >= 0.0 and cpu >= 0.0
