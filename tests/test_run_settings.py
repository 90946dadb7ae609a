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


def test_fit_functions_take_their_run_settings_through_one_validator():
    """RunSettings.of: a given RunSettings is used as it is; otherwise the run settings
    among a function's arguments (and nothing else) are validated."""
    from carthema.fitting.sampling.settings import RUN_FIELDS, run_args

    given = RunSettings.validated(("map",), "cart", sampler="map", draws=3, seed=5)
    assert RunSettings.of(given, ("nutpie",), "liver", {"sampler": "stan"}) is given
    args = {"sampler": "map", "draws": 7, "seed": 2, "observations": None, "out": "x"}
    assert run_args(args) == {"sampler": "map", "draws": 7, "seed": 2}
    rs = RunSettings.of(None, ("map",), "cart", args)
    assert (rs.sampler, rs.draws, rs.seed, rs.tune) == ("map", 7, 2, 1000)
    with pytest.raises(InputError, match="unknown sampler 'stan' for a population fit"):
        RunSettings.of(None, ("map",), "cart", {"sampler": "stan"}, what=" for a population fit")
    # Every field of RunSettings is a run setting of the fit functions and the CLI.
    assert set(RUN_FIELDS) == set(RunSettings.__dataclass_fields__)


def test_population_fit_and_single_fit_refuse_the_same_bad_setting():
    from carthema.fitting.sampling.samplers import fit
    from carthema.fitting.workflows.population import fit_population

    with pytest.raises(InputError, match="draws must be at least 1"):
        fit(pd.DataFrame(), None, sampler="map", draws=0)
    with pytest.raises(InputError, match="draws must be at least 1"):
        fit_population(pd.DataFrame(), None, sampler="map", draws=0)


def test_cohort_fit_refuses_a_bad_setting_before_any_work(tmp_path):
    from carthema.fitting.workflows.cohort import fit_cohort

    obs = pd.DataFrame({"patient": ["P1"], "day": [1.0]})
    with pytest.raises(InputError, match="unknown sampler 'stan'"):
        fit_cohort(obs, None, tmp_path / "c", sampler="stan")
    with pytest.raises(InputError, match="chains must be at least 1"):
        fit_cohort(obs, None, tmp_path / "c", chains=0)
    assert not (tmp_path / "c").exists()
