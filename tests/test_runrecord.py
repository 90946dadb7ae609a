"""run.json, the run record of every output folder, and strict JSON (no NaN)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carthema.data.jsonsafe import clean, dumps
from carthema.data.runrecord import read_run_record, run_record, sha256, write_run_record


def test_sha256_of_a_known_text(tmp_path):
    f = tmp_path / "abc.txt"
    f.write_bytes(b"abc")  # FIPS 180-2, appendix B.1
    assert sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_run_record_names_inputs_seed_command_and_packages(tmp_path):
    f = tmp_path / "obs.csv"
    f.write_bytes(b"abc")
    rec = run_record([f, None, tmp_path / "gone.csv", "example:han2022"], seed=7,
                     argv=["carthema", "fit", str(f)], settings={"draws": 10})  # fmt: skip
    from carthema import __version__

    assert rec["carthema_version"] == __version__ and rec["seed"] == 7
    assert rec["command"] == ["carthema", "fit", str(f)]
    assert rec["inputs"][0]["sha256"].startswith("ba7816bf") and rec["inputs"][0]["bytes"] == 3
    assert rec["inputs"][1]["sha256"] is None  # named, but not there
    han = rec["inputs"][2]
    assert han["path"] == "example:han2022" and len(han["files"]) >= 2
    assert rec["packages"]["numpy"] == np.__version__ and rec["settings"] == {"draws": 10}
    path = write_run_record(tmp_path, rec)
    assert path.name == "run.json" and read_run_record(tmp_path) == json.loads(path.read_text())
    assert read_run_record(tmp_path / "nowhere") is None


def test_json_holds_null_never_nan():
    x = {"a": np.float64("nan"), "b": [np.inf, np.int64(3), np.bool_(True)], "c": (1.5,)}
    assert clean(x) == {"a": None, "b": [None, 3, True], "c": [1.5]}
    text = dumps(x)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c))["b"][1] == 3
