"""The output-folder contract (data/atomic.py): one helper that every command writing a
folder calls before any work, and the ``run.json`` its folders carry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from carthema import __version__
from carthema.data.atomic import (
    LOCK_NAME,
    STALE_EMPTY_LOCK_S,
    FolderLock,
    check_out_folder,
    clean_stale_temporaries,
    swap_folder,
)
from carthema.data.errors import InputError
from carthema.data.runrecord import RUN_JSON as RUN_RECORD


def test_a_new_or_empty_folder_is_accepted(tmp_path):
    assert check_out_folder(tmp_path / "new", "window") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_out_folder(tmp_path / "empty", "window")


def test_a_plain_file_is_refused_even_with_overwrite(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    with pytest.raises(InputError, match="is a file"):
        check_out_folder(f, "window", overwrite=True)
    assert f.read_text() == "mine\n"


def test_a_foreign_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    d = tmp_path / "notes"
    d.mkdir()
    (d / "todo.txt").write_text("x")
    with pytest.raises(InputError, match="not the output of an earlier `carthema window`") as e:
        check_out_folder(d, "window")
    assert "--overwrite" in e.value.message and "notes" in e.value.message
    check_out_folder(d, "window", overwrite=True)


def test_the_commands_own_folder_is_recognised_by_run_json(tmp_path):
    out = tmp_path / "trial"
    with swap_folder(out, "virtual-trial") as tmp:
        (tmp / "summary.csv").write_text("a\n1\n")
    record = json.loads((out / RUN_RECORD).read_text())
    assert record["subcommand"] == "virtual-trial"
    assert record["carthema_version"] == __version__
    assert record["time_utc"].endswith("+00:00")
    check_out_folder(out, "virtual-trial")  # its own earlier output: replaced as a whole
    with pytest.raises(InputError, match="written by `carthema virtual-trial`"):
        check_out_folder(out, "window")  # another command's output is not replaced


def test_an_older_folder_is_recognised_by_its_marker(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    (d / "window.json").write_text("{}")
    check_out_folder(d, "window", own_markers=("window.json",))


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_input_folder_is_never_replaced(tmp_path, overwrite):
    fit = tmp_path / "fit"
    fit.mkdir()
    (fit / "posterior.nc").write_bytes(b"x")
    with pytest.raises(InputError, match="is an input of this command"):
        check_out_folder(fit, "window", overwrite=overwrite, inputs=(fit,))
    data = tmp_path / "data.csv"
    data.write_text("patient\n")
    with pytest.raises(InputError, match="holds .*data.csv"):
        check_out_folder(tmp_path, "fit", overwrite=overwrite, inputs=(data,))
    # a subfolder of the input folder (window's default FIT/window) is fine
    check_out_folder(fit / "window", "window", overwrite=overwrite, inputs=(fit,))
    assert (fit / "posterior.nc").exists()


def test_stale_temporaries_are_cleaned_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    killed = tmp_path / f".out.tmp-{dead_pid}-abc"
    killed.mkdir()
    (killed / "half.csv").write_text("x")
    live = tmp_path / f".out.tmp-{os.getppid()}-def"  # our parent runs
    live.mkdir()
    old_unknown = tmp_path / ".out.tmp-zz9"
    old_unknown.mkdir()
    long_ago = time.time() - 2 * 3600
    os.utime(old_unknown, (long_ago, long_ago))
    young_unknown = tmp_path / ".out.tmp-zz8"
    young_unknown.mkdir()
    other = tmp_path / ".other.tmp-1-x"
    other.mkdir()
    check_out_folder(tmp_path / "out", "fit")
    assert not killed.exists() and not old_unknown.exists()
    assert live.exists() and young_unknown.exists() and other.exists()
    assert clean_stale_temporaries(tmp_path / "out") == []


def test_an_empty_lock_older_than_a_minute_is_taken_over(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text("")
    with pytest.raises(InputError, match="lock"):
        FolderLock(tmp_path).acquire()  # a young empty lock: being written this instant
    long_ago = time.time() - STALE_EMPTY_LOCK_S - 5
    os.utime(lock, (long_ago, long_ago))
    with FolderLock(tmp_path, "fit-cohort"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
