"""``carthema check-data``: summary on good files, exit 2 and one line on bad ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from carthema.cli import main
from carthema.data import load_example


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    out, err = capsys.readouterr()
    return int(ex.value.code or 0), out, err


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # rich sizes tables to the terminal; keep cells on one line in captured output
    monkeypatch.setenv("COLUMNS", "200")


def test_check_data_han2022(capsys: pytest.CaptureFixture[str]) -> None:
    path = load_example("han2022").path
    code, out, err = _run(
        ["check-data", str(path / "observations.csv"), "--events", str(path / "events.csv")],
        capsys,
    )
    assert code == 0, err
    assert "stem_cell_boost" in out and "9.5e+05" in out and "allogeneic" in out
    assert "marrow_blasts" in out and "chimerism" in out
    # the per-patient line: 26 observations of 8 analytes, 23 events, days -261 to 113
    assert "patient han2022: 26 observation(s) of 8 analyte(s), 23 event(s)" in out
    assert "days -261 to 113" in out
    assert "OK:" in out


def test_check_data_observations_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "obs.csv"
    p.write_text(
        "patient,day,analyte,value,unit,compartment,lloq,blq\n"
        "A,7,cart_copies,,copies/ug DNA,blood,50,yes\n"
        "A,14,cart_copies,5000,copies/ug DNA,blood,50,no\n"
        "A,14,anc,800,cells/uL,,,\n"
    )
    code, out, _ = _run(["check-data", str(p)], capsys)
    assert code == 0
    line = next(r for r in out.splitlines() if "cart_copies" in r)
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    # patient, analyte, compartment, unit, n, n_blq, first day, last day
    assert cells == ["A", "cart_copies", "blood", "copies/ug DNA", "2", "1", "7", "14"]
    assert "patient A: 3 observation(s) of 2 analyte(s), 0 event(s), days 7 to 14" in out


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (
            "patient,day,analyte,value,unit\nA,0,anc,1,G/L\nA,1,anc,-1,G/L\n",
            "row 2, column 'value'",
        ),
        ("patient,day,analyte,value,unit\nA,x,anc,1,G/L\n", "row 1, column 'day'"),
        ("patient,day,value,unit\nA,0,1,G/L\n", "row 0, column 'analyte'"),
        ("patient,day,analyte,value,unit\nA,0,neutrophils,1,G/L\n", "row 1, column 'analyte'"),
    ],
    ids=["negative", "day_text", "missing_column", "unknown_analyte"],
)
def test_check_data_bad_observations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, where: str
) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    code, out, err = _run(["check-data", str(p)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {p}, {where}: ")
    assert "Traceback" not in err + out


def test_check_data_bad_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = load_example("han2022").path
    ev = tmp_path / "ev.csv"
    ev.write_text("patient,day,kind,amount,unit\nhan2022,34,stem_cell_boost,,\n")
    code, _, err = _run(["check-data", str(path / "observations.csv"), "--events", str(ev)], capsys)
    assert code == 2
    assert err.strip() == (
        f"error: {ev}, row 1, column 'amount': stem_cell_boost event has no amount. "
        "Fix: give the amount in cells/kg (stem-cell boost / HSC infusion without "
        "conditioning, CD34+ cells per kg)."
    )


def test_check_data_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["check-data", str(tmp_path / "none.csv")], capsys)
    assert code == 2 and "file not found" in err and len(err.strip().splitlines()) == 1


def test_entry_point_subprocess(tmp_path: Path) -> None:
    """The installed command: exit 2, one line on stderr, no traceback."""
    p = tmp_path / "bad.csv"
    p.write_text("patient,day,analyte,value,unit\nA,0,anc,1,G/L\nA,0,anc,2,G/L\n")
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-c", "from carthema.cli import main; main()", "check-data", str(p)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {p}, row 2, column 'day': duplicated record: patient A, day 0, anc in blood "
        "already appears on row 1. Fix: keep one measurement per patient, day, analyte and "
        "compartment (use fractional days for repeated measurements on one day)."
    ]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("sep", "name"), [(";", "a semicolon (;)"), ("\t", "a tab"), ("|", "a vertical bar (|)")]
)
def test_separator_other_than_comma_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sep: str, name: str
) -> None:
    p = tmp_path / "obs.csv"
    p.write_text(sep.join(["patient", "day", "analyte", "value", "unit"]) + "\nA;0;anc;1,2;G/L\n")
    code, _, err = _run(["check-data", str(p)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"error: {p}, row 0: the header is separated by {name}, not by a comma" in err


def test_check_data_example_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["check-data", "example:synthetic"], capsys)
    assert code == 0, err
    assert "OK: example:synthetic and example:synthetic (events) are valid." in out
    code, out, err = _run(["check-data", "example:han2022", "--events", "example:han2022"], capsys)
    assert code == 0 and "23 event(s)" in out, err
    code, _, err = _run(["check-data", "example:jiang2020"], capsys)
    assert code == 2 and "has no observations" in err


def test_check_data_refuses_files_sharing_no_patient(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = tmp_path / "ev.csv"
    ev.write_text("patient,day,kind,amount,unit\nVP1,0,cart_infusion,1e6,cells/kg\n")
    code, _, err = _run(["check-data", "example:synthetic", "--events", str(ev)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"error: {ev}, column 'patient': no patient id is in both files" in err
    assert "VP001" in err and "VP1" in err


def test_check_data_warns_on_partial_overlap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ev = tmp_path / "ev.csv"
    ev.write_text(
        "patient,day,kind,amount,unit\nVP001,0,cart_infusion,1e6,cells/kg\n"
        "XX,0,cart_infusion,1e6,cells/kg\n"
    )
    code, out, err = _run(["check-data", "example:synthetic", "--events", str(ev)], capsys)
    assert code == 0 and "OK:" in out
    assert "warning: 4 patient(s) of example:synthetic have no events" in err
    assert "VP002, VP003, VP004, VP005" in err
    assert f"warning: 1 patient(s) of {ev} have no observations in example:synthetic: XX." in err


def test_check_data_prints_the_first_rows_of_a_large_data_set_and_says_how_many_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from carthema.cli_data import SHOWN_ROWS

    n = SHOWN_ROWS + 7
    obs = tmp_path / "obs.csv"
    obs.write_text(
        "patient,day,analyte,value,unit\n"
        + "".join(f"P{i:04d},{1 + i % 20},anc,1.5,G/L\n" for i in range(n))
    )
    code, out, err = _run(["check-data", str(obs)], capsys)
    assert code == 0, err
    assert "... and 7 more analyte rows (pass --all to print every row)" in out
    assert "... and 7 more patients" in out and f"patient P{n - 1:04d}:" not in out
    code, out, err = _run(["check-data", str(obs), "--all"], capsys)
    assert code == 0 and "more patients" not in out and f"patient P{n - 1:04d}:" in out
