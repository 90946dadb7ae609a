"""Every command, bad arguments: exit code 2 and one line naming the problem, no traceback.

The commands are enumerated from the typer app, so a new command is swept automatically
(it gets the generic bad arguments until it has its own cases below). Each case runs the
CLI in a subprocess, as a user would, so that a traceback anywhere is seen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carthema.cli import app

#: Commands rebuilt elsewhere whose errors may not yet pass (xfail with the reason).
#: predict-boost (issue 10) passes the sweep as it stands, so it is checked strictly.
REBUILT: dict[str, str] = {}


def _commands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    code = "import sys; from carthema.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    (d / "a_file.txt").write_text("not a folder\n")
    (d / "bad.csv").write_text("patient;day;analyte;value\nP1;1;anc;2\n")
    (d / "truncated").mkdir()
    return d


def _bad_fit_folder(d: Path) -> Path:
    """A fit folder whose posterior.nc is truncated."""
    f = d / "truncated"
    (f / "fit.json").write_text('{"patient": "P1", "components": "full", "free": ["anc0"]}')
    (f / "events.csv").write_text("patient,day,kind,amount,unit\nP1,0,cart_infusion,1e6,cells/kg\n")
    (f / "posterior.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    return f


def _cases(files: Path) -> dict[str, list[list[str]]]:
    out_file = str(files / "a_file.txt")
    bad = str(files / "bad.csv")
    fitdir = str(_bad_fit_folder(files))
    return {
        "check-data": [[str(files / "missing.csv")], [bad]],
        "import-nonmem": [
            [str(files / "missing.csv"), "--cmt-map", "m.json", "--out", "o"],
            [bad, "--cmt-map", "m.json", "--out", out_file],
        ],
        "simulate": [
            ["--events", "example:han2022", "--days", "-5"],
            [],
            ["--events", "example:han2022", "--components", "liver"],
            ["--events", "example:han2022", "--days", "abc"],
        ],
        "params": [["--components", "liver"]],
        "natural-history": [
            ["--product", "kymriah"],
            ["--hematotox", "9"],
            ["--disease", "cll"],
            ["--n", "3"],
        ],
        "demo": [["--sampler", "gibbs"]],
        "fit": [
            ["example:han2022", "--out", out_file],
            ["example:han2022", "--out", "/proc/x"],
            ["example:han2022", "--out", "o", "--draws", "0"],
            ["example:han2022"],
        ],
        "fit-population": [
            ["example:synthetic", "--out", out_file],
            ["example:synthetic", "--out", "o", "--components", "liver"],
        ],
        "fit-cohort": [
            ["example:synthetic", "--out", out_file],
            ["example:synthetic", "--out", "o", "--chains", "0"],
        ],
        "window": [
            [fitdir],
            [fitdir, "--draws", "0"],
            [str(files / "no_such_fit")],
        ],
        "predict-boost": [["--day", "-400", "--dose", "3e6"], ["--dose", "3e6"]],
        "icaht": [
            [str(files / "missing.csv")],
            [bad],
            ["example:synthetic"],  # counts every 2-7 days: a gap decides a grade
            ["example:synthetic", "--max-gap", "0"],
        ],
        "virtual-trial": [["prior", "--policies", str(files / "missing.csv"), "--out", "o"]],
    }


GENERIC = [["--no-such-option"]]


def _params():
    out = []
    for cmd in _commands():
        marks = [pytest.mark.xfail(reason=REBUILT[cmd], strict=False)] if cmd in REBUILT else []
        out.append(pytest.param(cmd, marks=marks, id=cmd))
    return out


def test_sweep_covers_every_registered_command(files):
    """A registered command without its own bad-argument cases fails here: add them."""
    missing = set(_commands()) - set(_cases(files))
    assert not missing, f"add bad-argument cases for {sorted(missing)}"


@pytest.mark.parametrize("cmd", _params())
def test_bad_arguments_end_in_one_line_and_exit_2(cmd, files, tmp_path):
    for args in _cases(files).get(cmd, []) + GENERIC:
        res = _run([cmd, *args], tmp_path)
        text = (res.stdout + res.stderr).strip()
        where = f"carthema {cmd} {' '.join(args)}"
        assert res.returncode == 2, f"{where}: exit {res.returncode}\n{text}"
        assert "Traceback" not in text, f"{where}:\n{text}"
        err = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(err) == 1, f"{where}: stderr is not one line:\n{res.stderr}"
        assert err[0].startswith("error: "), f"{where}: {err[0]}"


def test_messages_name_the_option_and_the_fix(files, tmp_path):
    """The sweep's key cases say what to do, not only what is wrong."""
    res = _run(["simulate"], tmp_path)
    assert "--events example:" in res.stderr and "--untreated" in res.stderr
    res = _run(["simulate", "--events", "example:han2022", "--days", "-5"], tmp_path)
    assert "--days" in res.stderr
    res = _run(["fit", "example:han2022", "--out", str(files / "a_file.txt")], tmp_path)
    assert "a_file.txt" in res.stderr and "is a file" in res.stderr
    res = _run(["window", str(_bad_fit_folder(files))], tmp_path)
    assert "posterior.nc" in res.stderr and "refit" in res.stderr
    res = _run(["window", str(_bad_fit_folder(files)), "--draws", "0"], tmp_path)
    assert "--draws" in res.stderr


def test_version(tmp_path):
    from carthema import __version__

    res = _run(["--version"], tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == f"carthema {__version__}"
