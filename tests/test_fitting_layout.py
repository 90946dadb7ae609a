"""carthema.fitting's subpackages by role: every module's former flat path still imports,
as the same module object, and the public names stay where users import them."""

import importlib
import subprocess
import sys

import pytest

import carthema.fitting as fitting


@pytest.mark.parametrize("former", sorted(fitting.MOVED))
def test_former_module_path_is_the_moved_module(former):
    old = importlib.import_module(f"carthema.fitting.{former}")
    new = importlib.import_module(f"carthema.fitting.{fitting.MOVED[former]}")
    assert old is new
    assert getattr(fitting, former) is new  # set on the package by the import


def test_former_path_imports_in_a_fresh_process_before_the_new_one():
    # The order users hit: the former path first, with nothing of the package loaded yet.
    code = (
        "from carthema.fitting.fitdir import load_fit\n"
        "import carthema.fitting.results.fitdir as new\n"
        "import carthema.fitting.fitdir as old\n"
        "assert old is new and load_fit is new.load_fit\n"
        "from carthema.fitting import priors\n"
        "assert priors.__name__ == 'carthema.fitting.model.priors'\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_every_moved_module_exists_at_its_new_path_only():
    from pathlib import Path

    root = Path(fitting.__file__).parent
    for former, new in fitting.MOVED.items():
        assert (root / (new.replace(".", "/") + ".py")).is_file(), new
        assert not (root / f"{former}.py").exists(), former


def test_unknown_former_name_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("carthema.fitting.no_such_module")
