"""The public API re-exported from ``carthema``: every listed name resolves, the lazy
names are the objects of their modules, and ``import carthema`` alone loads none of the
modules behind them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import carthema


def test_every_public_name_resolves_once():
    assert len(carthema.__all__) == len(set(carthema.__all__))
    for name in carthema.__all__:
        assert getattr(carthema, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        carthema.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "name, module",
    [
        ("virtual_trial", "carthema.clinical.trial"),
        ("TrialResult", "carthema.clinical.trial"),
        ("Policy", "carthema.clinical.trial"),
        ("read_policies", "carthema.clinical.trial"),
        ("window_from_fit", "carthema.clinical.window"),
        ("WindowResult", "carthema.clinical.window"),
    ],
)
def test_lazy_name_is_its_modules_object(name, module):
    assert name in carthema.__all__
    assert getattr(carthema, name) is getattr(importlib.import_module(module), name)


def test_import_carthema_loads_neither_the_trial_nor_the_window_module():
    code = (
        "import sys, carthema\n"
        "print(sorted(m for m in ('carthema.clinical.trial', 'carthema.clinical.window') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
