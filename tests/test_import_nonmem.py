"""NONMEM import: censoring flags, LLOQ/LIMIT, ADDL/II bounds, the cmt-map's keys, and the
``carthema import-nonmem`` command (atomic output folder, report of skipped rows)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from carthema.cli import main
from carthema.data import InputError, read_events, read_nonmem, read_observations

CMT_MAP = {
    1: {"kind": "cart_infusion", "unit": "10^6 cells/kg"},
    2: {"analyte": "cart_copies", "compartment": "blood"},
    4: "anc",
}


def _write(tmp_path: Path, header: str, rows: list[str], name: str = "nm.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _refused(path: Path, cmt=CMT_MAP, **kw) -> InputError:
    with pytest.raises(InputError) as err:
        read_nonmem(path, cmt, **kw)
    assert str(path) in err.value.message and "Fix:" in err.value.message
    return err.value


@pytest.mark.parametrize("flag", ["BLQ", "CENS", "BQL", "BLOQ"])
def test_censoring_flags_with_dv_as_lloq(tmp_path: Path, flag: str) -> None:
    """Monolix/M3 coding: flag 1, DV = LLOQ, no LLOQ column."""
    rows = ["1,0,.,1,1,2,1,0", "1,7,5000,0,0,.,2,0", "1,28,50,0,0,.,2,1"]
    obs, _ = read_nonmem(_write(tmp_path, f"ID,TIME,DV,MDV,EVID,AMT,CMT,{flag}", rows), CMT_MAP)
    below = obs[obs["blq"]]
    assert list(below["day"]) == [28.0]
    assert math.isnan(below["value"].iloc[0]) and below["lloq"].iloc[0] == 50
    assert obs.attrs["nonmem_notes"] == [
        (3, "below-limit row: LLOQ taken from DV (DV = LLOQ coding)")
    ]


def test_lloq_column_wins_over_dv_placeholder(tmp_path: Path) -> None:
    rows = ["1,0,.,1,1,2,1,0,.", "1,28,25,0,0,.,2,1,50"]
    obs, _ = read_nonmem(_write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT,BQL,LLOQ", rows), CMT_MAP)
    assert obs["lloq"].iloc[0] == 50 and obs.attrs["nonmem_notes"] == []


def test_lloq_zero_means_no_limit(tmp_path: Path) -> None:
    rows = ["1,0,.,1,1,2,1,0", "1,7,0.3,0,0,.,4,0", "1,8,20,0,0,.,2,50"]
    obs, _ = read_nonmem(_write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT,LLOQ", rows), CMT_MAP)
    anc = obs[obs["analyte"] == "anc"].iloc[0]
    assert anc["value"] == 0.3 and math.isnan(anc["lloq"]) and not anc["blq"]
    assert bool(obs[obs["analyte"] == "cart_copies"]["blq"].iloc[0])  # 20 < 50


def test_limit_is_read_as_monolix_defines_it(tmp_path: Path) -> None:
    header = "ID,TIME,DV,MDV,EVID,AMT,CMT,CENS,LIMIT"
    rows = ["1,0,.,1,1,2,1,0,.", "1,28,50,0,0,.,2,1,0"]
    obs, _ = read_nonmem(_write(tmp_path, header, rows), CMT_MAP)
    assert obs["lloq"].iloc[0] == 50 and bool(obs["blq"].iloc[0])
    err = _refused(_write(tmp_path, header, ["1,0,.,1,1,2,1,0,.", "1,28,50,0,0,.,2,1,10"]))
    assert err.row == 2 and err.column == "LIMIT" and "interval" in err.message
    err = _refused(_write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT,LIMIT", ["1,0,.,1,1,2,1,."]))
    assert err.column == "LIMIT" and "rename the column LLOQ" in err.message


@pytest.mark.parametrize(
    ("header", "rows", "row", "column", "words"),
    [
        ("ID,TIME,DV,MDV,EVID,AMT,CMT,BLQ,CENS", ["1,0,.,1,1,2,1,0,0"], 0, "CENS", "two censoring"),
        (
            "ID,TIME,DV,MDV,EVID,AMT,CMT,CENS",
            ["1,0,.,1,1,2,1,0", "1,7,9,0,0,.,2,-1"],
            2,
            "CENS",
            "upper",
        ),
        (
            "ID,TIME,DV,MDV,EVID,AMT,CMT,BLOQ",
            ["1,0,.,1,1,2,1,0", "1,7,9,0,0,.,2,2"],
            2,
            "BLOQ",
            "0 or 1",
        ),
        (
            "ID,TIME,DV,MDV,EVID,AMT,CMT,LLOQ",
            ["1,0,.,1,1,2,1,.", "1,7,9,0,0,.,2,-5"],
            2,
            "LLOQ",
            "negative",
        ),
        ("ID,TIME,DV,MDV,EVID,AMT,CMT,ADDL,II", ["1,0,.,1,1,2,1,-1,1"], 1, "ADDL", "negative"),
        ("ID,TIME,DV,MDV,EVID,AMT,CMT,ADDL,II", ["1,0,.,1,1,2,1,0,-24"], 1, "II", "negative"),
        ("ID,TIME,DV,MDV,EVID,AMT,CMT,ADDL,II", ["1,0,.,1,1,2,1,100000,1"], 1, "ADDL", "1000"),
        (
            "ID,TIME,DV,MDV,EVID,AMT,CMT,BQL",
            ["1,0,.,1,1,2,1,0", "1,7,0,0,0,.,2,1"],
            2,
            "BQL",
            "limit",
        ),
    ],
    ids=[
        "two_flags",
        "cens_upper",
        "bad_flag",
        "negative_lloq",
        "negative_addl",
        "negative_ii",
        "addl_huge",
        "blq_no_limit",
    ],
)
def test_refused(
    tmp_path: Path, header: str, rows: list[str], row: int, column: str, words: str
) -> None:
    err = _refused(_write(tmp_path, header, rows))
    assert err.row == row and err.column == column and words in err.message, err.message


def test_time_in_hours_read_as_days_names_the_option(tmp_path: Path) -> None:
    path = _write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT", ["1,0,.,1,1,2,1", "1,9000,0.5,0,0,.,4"])
    err = _refused(path)
    assert err.column == "TIME" and "--time-unit hour" in err.message


def test_duration_key_for_periods(tmp_path: Path) -> None:
    cmt = {**CMT_MAP, 5: {"kind": "gcsf", "unit": "ug/kg/day", "duration": 1}}
    header = "ID,TIME,DV,MDV,EVID,AMT,CMT,ADDL,II"
    rows = ["1,0,.,1,1,2,1,0,0", "1,10,.,1,1,5,5,2,1", "1,14,0.6,0,0,.,4,0,0"]
    _, ev = read_nonmem(_write(tmp_path, header, rows), cmt)
    gcsf = ev[ev["kind"] == "gcsf"]
    assert list(gcsf["day"]) == [10.0, 11.0, 12.0] and list(gcsf["duration"]) == [1.0] * 3
    err = _refused(
        _write(tmp_path, header, rows), {**CMT_MAP, 5: {"kind": "gcsf", "unit": "ug/kg/day"}}
    )
    assert err.row == 2 and err.column == "CMT" and "duration" in err.message


def test_unknown_cmt_map_key_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT", ["1,0,.,1,1,2,1"])
    bad = {1: {"kind": "gcsf", "unit": "ug/kg/day", "durations": 1}}
    with pytest.raises(InputError) as err:
        read_nonmem(path, bad)
    assert "unknown key 'durations'" in err.value.message


# ------------------------------------------------------------------------------ the command
NM_ROWS = [
    "1,-5,.,1,1,30,3,0,.,2,1,70",
    "1,0,.,1,1,2,1,0,.,0,0,70",
    "1,7,15000,0,0,.,2,0,50,0,0,70",
    "1,7,0.4,0,0,.,4,0,0,0,0,70",
    "1,28,50,0,0,.,2,1,.,0,0,70",
    "1,30,.,1,0,.,4,0,.,0,0,70",
    "1,35,.,1,0,.,4,0,.,0,0,70",
    "1,40,.,1,2,.,4,0,.,0,0,70",
    "2,0,.,1,1,1,1,0,.,0,0,60",
    "2,14,300,0,0,.,2,0,50,0,0,60",
]
NM_HEADER = "ID,TIME,DV,MDV,EVID,AMT,CMT,CENS,LLOQ,ADDL,II,WT"
MAP_JSON = {
    "1": {"kind": "cart_infusion", "unit": "10^6 cells/kg"},
    "2": {"analyte": "cart_copies", "compartment": "blood"},
    "3": {"kind": "lymphodepletion", "drug": "fludarabine", "unit": "mg/m2"},
    "4": "anc",
}


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    out, err = capsys.readouterr()
    return int(ex.value.code or 0), out, err


def _inputs(tmp_path: Path, rows: list[str] = NM_ROWS, cmap=MAP_JSON) -> tuple[Path, Path]:
    nm = _write(tmp_path, NM_HEADER, rows)
    mp = tmp_path / "map.json"
    mp.write_text(json.dumps(cmap))
    return nm, mp


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_command_writes_carthema_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nm, mp = _inputs(tmp_path)
    out = tmp_path / "imported"
    code, stdout, err = _run(
        ["import-nonmem", str(nm), "--cmt-map", str(mp), "--out", str(out)], capsys
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "covariates.csv",
        "events.csv",
        "observations.csv",
        "run.json",
    ]
    obs, ev = read_observations(out / "observations.csv"), read_events(out / "events.csv")
    assert len(obs) == 4 and len(ev) == 5  # 3 fludarabine days (ADDL=2) + 2 CAR-T
    assert "skipped 2 rows: MDV=1 observation record (rows 6, 7)" in stdout
    assert "skipped 1 row: EVID=2 (other-type event) (row 8)" in stdout
    assert "note: 1 row: below-limit row: LLOQ taken from DV" in stdout
    assert "covariates: WT -> covariates.csv" in stdout
    assert _leftovers(tmp_path) == []
    code, stdout, err = _run(
        ["check-data", str(out / "observations.csv"), "--events", str(out / "events.csv")], capsys
    )
    assert code == 0, err


def test_command_refuses_existing_folder_and_overwrite_replaces_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nm, mp = _inputs(tmp_path)
    out = tmp_path / "imported"
    out.mkdir()
    (out / "stale.png").write_text("old")
    argv = ["import-nonmem", str(nm), "--cmt-map", str(mp), "--out", str(out)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "covariates.csv",
        "events.csv",
        "observations.csv",
        "run.json",
    ]
    assert _leftovers(tmp_path) == []


def test_command_error_leaves_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [*NM_ROWS[:1], "1,0,.,1,1,2,1,0,.,-1,0,70", *NM_ROWS[2:]]
    nm, mp = _inputs(tmp_path, rows)
    out = tmp_path / "imported"
    code, stdout, err = _run(
        ["import-nonmem", str(nm), "--cmt-map", str(mp), "--out", str(out)], capsys
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {nm}, row 2, column 'ADDL': ADDL -1 is negative. Fix: give ADDL (additional "
        "doses) >= 0 and II (the interval between them) >= 0."
    ]
    assert "Traceback" not in stdout + err
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("map_text", "words"),
    [
        ('{"1": "cart_infusion",}', "not valid JSON"),
        ('{"one": "anc"}', "not a CMT number"),
        ('{"2": {"analyte": "anc", "colour": "red"}}', "unknown key 'colour'"),
        ("[1, 2]", "not a non-empty object"),
    ],
    ids=["trailing_comma", "key_not_number", "unknown_key", "not_object"],
)
def test_command_bad_cmt_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], map_text: str, words: str
) -> None:
    nm, mp = _inputs(tmp_path)
    mp.write_text(map_text)
    code, _, err = _run(
        ["import-nonmem", str(nm), "--cmt-map", str(mp), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and words in err and str(mp) in err, err
    assert len(err.strip().splitlines()) == 1


def test_command_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nm, mp = _inputs(tmp_path)
    code, _, err = _run(["import-nonmem", str(nm), "--cmt-map", str(mp), "--out", str(nm)], capsys)
    assert code == 2 and "is a file" in err


def test_walkthrough_demo_imports_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/nonmem.md steps 2-3 on the bundled demo file (fit and window are run by hand)."""
    from carthema.data.examples import example_path

    demo = example_path("nonmem_demo")
    out = tmp_path / "patient1"
    code, stdout, err = _run(
        [
            "import-nonmem",
            str(demo / "nonmem.csv"),
            "--cmt-map",
            str(demo / "cmt_map.json"),
            "--out",
            str(out),
        ],
        capsys,
    )
    assert code == 0, err
    assert "35 observation(s) of 5 analyte(s)" in stdout and "7 event(s)" in stdout
    code, _, err = _run(
        ["check-data", str(out / "observations.csv"), "--events", str(out / "events.csv")], capsys
    )
    assert code == 0, err


# ------------------------------------------- NONMEM conventions (issue 22): IGNORE, day 0
def test_ignore_c_column_and_hash_lines_are_not_data(tmp_path: Path) -> None:
    """IGNORE=C (a first column C flags comment records) and the default IGNORE=# (a
    record starting with #, whatever its number of fields) are skipped and listed."""
    rows = [
        ".,1,0,.,1,1,2,1",
        "C,1,3,999,0,0,.,4",
        "#1,5,888,0,0,.,4",
        "# a comment, with, more, commas, than, the, header, has, x, y",
        ".,1,7,0.4,0,0,.,4",
    ]
    path = _write(tmp_path, "C,ID,TIME,DV,MDV,EVID,AMT,CMT", rows)
    obs, ev = read_nonmem(path, CMT_MAP)
    assert list(obs["value"]) == [0.4] and list(obs["patient"]) == ["1"]
    assert len(ev) == 1
    skipped = obs.attrs["nonmem_skipped_rows"]
    assert [r for r, _ in skipped] == [2, 3, 4]
    assert all("IGNORE=#/C" in why for _, why in skipped)
    assert obs.attrs["nonmem_ignored_columns"] == []  # C is no covariate


def test_ignore_option_for_other_characters(tmp_path: Path) -> None:
    rows = ["1,0,.,1,1,2,1", "1,3,9.9,0,0,.,4", "1,7,0.4,0,0,.,4"]
    path = _write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT", rows)
    assert len(read_nonmem(path, CMT_MAP)[0]) == 2
    text = path.read_text().replace("\n1,3,9.9", "\nX1,3,9.9")
    path.write_text(text)
    obs, _ = read_nonmem(path, CMT_MAP, ignore="X")
    assert list(obs["value"]) == [0.4]
    assert obs.attrs["nonmem_skipped_rows"][0][0] == 2
    with pytest.raises(InputError, match="--ignore 'XY' is not one character"):
        read_nonmem(path, CMT_MAP, ignore=["XY"])


@pytest.mark.parametrize("flag", ["BLQ", "CENS"])
def test_flag_below_limit_with_dv_above_the_limit_is_refused(tmp_path: Path, flag: str) -> None:
    """DV 5000 flagged below a limit of 50: a quantified peak, not a censored value."""
    rows = ["1,0,.,1,1,2,1,0,.", "1,7,5000,0,0,.,2,1,50"]
    path = _write(tmp_path, f"ID,TIME,DV,MDV,EVID,AMT,CMT,{flag},LLOQ", rows)
    err = _refused(path)
    assert err.row == 2 and err.column == "DV"
    assert f"{flag}=1" in err.problem and "5000" in err.problem and "50" in err.problem
    assert f"set {flag}=0" in err.fix
    # at the limit it is the M3 coding and accepted
    path.write_text(path.read_text().replace("5000", "50"))
    assert bool(read_nonmem(path, CMT_MAP)[0]["blq"].iloc[0])


def test_addl_expanded_record_with_a_bad_amount_names_the_record(tmp_path: Path) -> None:
    rows = ["1,-5,.,1,1,-30,3,2,1", "1,0,.,1,1,2,1,0,0", "1,7,0.4,0,0,.,4,0,0"]
    path = _write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT,ADDL,II", rows)
    cmap = {**CMT_MAP, 3: {"kind": "lymphodepletion", "drug": "fludarabine", "unit": "mg/m2"}}
    err = _refused(path, cmap)
    assert err.row == 1 and err.column == "AMT"
    assert "from ADDL" in err.problem


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_time_zero_not_finite(tmp_path: Path, bad: float) -> None:
    path = _write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT", ["1,0,.,1,1,2,1", "1,7,0.4,0,0,.,4"])
    with pytest.raises(InputError) as err:
        read_nonmem(path, CMT_MAP, time_zero=bad)
    assert "--time-zero" in err.value.message and "finite" in err.value.message
    assert "column 'TIME'" not in err.value.message


def test_first_cart_not_at_time_zero_needs_time_zero(tmp_path: Path) -> None:
    rows = ["1,5,.,1,1,2,1", "1,12,0.4,0,0,.,4"]
    path = _write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT", rows)
    err = _refused(path)
    assert err.row == 1 and err.column == "TIME" and "--time-zero 5" in err.fix
    obs, ev = read_nonmem(path, CMT_MAP, time_zero=5)
    assert list(ev["day"]) == [0.0] and list(obs["day"]) == [7.0]
    # an explicit origin that misses one ID's infusion is said, not hidden
    two = rows + ["2,8,.,1,1,2,1", "2,20,0.5,0,0,.,4"]
    obs, _ = read_nonmem(_write(tmp_path, "ID,TIME,DV,MDV,EVID,AMT,CMT", two), CMT_MAP, time_zero=5)
    assert any("ID 2: 3 days" in why for _, why in obs.attrs["nonmem_notes"])


def test_covariates_are_carried_in_the_format_fit_population_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from carthema.data.loaders import read_table_text
    from carthema.fitting.covariates import design_matrix

    rows = [*NM_ROWS[:3], NM_ROWS[3].replace(",70", ",72"), *NM_ROWS[4:]]
    nm, mp = _inputs(tmp_path, rows)
    out = tmp_path / "imported"
    code, stdout, err = _run(
        ["import-nonmem", str(nm), "--cmt-map", str(mp), "--out", str(out)], capsys
    )
    assert code == 0, err
    cov = read_table_text(out / "covariates.csv")
    assert list(cov.columns) == ["patient", "WT"]
    assert dict(zip(cov["patient"], cov["WT"], strict=True)) == {"1": "70", "2": "60"}
    assert "covariate WT changes within ID 1" in stdout
    dm = design_matrix(cov, ["1", "2"], ["cart_rho"])
    assert dm.columns == ("WT",) and list(dm.x[:, 0]) == [5.0, -5.0]  # 70, 60 centred
