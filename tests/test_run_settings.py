"""One patient selection (data/patients.py), one RunSettings (fitting/settings.py) and
one result-folder writer (fitting/fitdir.write_result_folder)."""

from __future__ import annotations

import pandas as pd
import pytest

from carthema.data.errors import InputError
from carthema.data.patients import select_patient, select_patients
from carthema.fitting.fitdir import write_result_folder
from carthema.fitting.settings import RunSettings

TABLE = pd.DataFrame({"patient": ["P3", "P1", "P3", "P2"], "value": [1, 2, 3, 4]})


def test_select_patients_orders_and_checks():
    assert select_patients(TABLE) == ["P1", "P2", "P3"]
    assert select_patients(TABLE, order="table") == ["P3", "P1", "P2"]
    assert select_patients(TABLE, " P2, P1 ,") == ["P2", "P1"]
    assert select_patients(TABLE, ["P2", "P2"], duplicates="drop") == ["P2"]
    with pytest.raises(InputError, match="listed twice"):
        select_patients(TABLE, ["P2", "P2"])
    with pytest.raises(InputError, match="unknown patient 'P9' not in the observations"):
        select_patients(TABLE, "P1,P9")
    with pytest.raises(InputError, match="no patients"):
        select_patients(TABLE, [])


def test_select_patient_needs_a_choice_only_when_several():
    assert select_patient(TABLE, "P2") == "P2"
    assert select_patient(TABLE[TABLE["patient"] == "P1"]) == "P1"
    with pytest.raises(InputError, match="hold 3 patients") as e:
        select_patient(TABLE)
    assert "--patient" in e.value.fix
    with pytest.raises(InputError, match="unknown patient 'P9' not in the events"):
        select_patient(TABLE, "P9", where="the events")


def test_run_settings_validate_once_and_record():
    rs = RunSettings.validated(("nutpie", "map"), "cart", sampler="map", draws=10, chains=3)
    assert rs.cores >= 1 and rs.cores <= 3 and 0 <= rs.seed < 2**31
    assert RunSettings.validated(("map",), "cart", sampler="map", seed=7).seed == 7
    for kw, msg in (
        ({"sampler": "stan"}, "unknown sampler 'stan' for a test"),
        ({"draws": 0}, "draws must be at least 1"),
        ({"chains": 0}, "chains must be at least 1"),
        ({"tune": -1}, "tune must be >= 0"),
        ({"init": "zero"}, "unknown init"),
    ):
        with pytest.raises(InputError, match=msg):
            RunSettings.validated(("nutpie",), "cart", what=" for a test", **kw)
    with pytest.raises(InputError, match="unknown component set"):
        RunSettings.validated(("nutpie",), "liver")

    class Op:
        rtol, atol, method = 1e-5, 1e-7, "tsit5"

    rec = rs.with_seed(11).record(Op())
    assert rec["seed"] == 11 and rec["sampler"] == "map" and rec["rtol"] == 1e-5
    assert set(rec) == {
        "sampler", "draws", "tune", "chains", "seed", "cores", "init", "target_accept",
        "low_rank", "rtol", "atol", "method",
    }  # fmt: skip


def test_result_folder_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "fit"
    paths = write_result_folder(
        out,
        {"a": ("a.txt", lambda p: p.write_text("1")), "b": ("b.txt", lambda p: p.write_text("2"))},
    )
    # Every result folder carries its run record (run.json) beside the files asked for.
    assert paths == {"run": out / "run.json", "a": out / "a.txt", "b": out / "b.txt"}
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "run.json"]

    def boom(p):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_result_folder(out, {"c": ("c.txt", lambda p: p.write_text("3")), "d": ("d", boom)})
    # The failed write left the earlier folder as it was, and no temporary folder behind.
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt", "run.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["fit"]
    write_result_folder(out, {"c": ("c.txt", lambda p: p.write_text("3"))})
    assert sorted(p.name for p in out.iterdir()) == ["c.txt", "run.json"]
