"""docs/figures.py regenerates the natural-history figures the README shows: it runs at a
tiny size here so that it cannot rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _figures_module():
    spec = importlib.util.spec_from_file_location("docs_figures", DOCS / "figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lbcl_figures_name_the_products_of_its_rows():
    # natural_history.csv holds axi-cel and tisa-cel rows (and their pool) for LBCL.
    assert _figures_module().products_with_rows("lbcl")[:2] == ["tisa-cel", "axi-cel"]


def test_figures_are_written_as_png(tmp_path):
    written = _figures_module().figures(tmp_path, n=40)
    assert tmp_path / "natural_history_lbcl.png" in written
    assert tmp_path / "natural_history_lbcl_axi-cel.png" in written
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
