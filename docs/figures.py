"""Regenerate the natural-history figures in docs/: one per calibrated disease and
product (5/50/95 % bands of ANC and platelets, days -7..180, beside the published rows).

    python docs/figures.py            # n = 2000 virtual patients a figure, into docs/
    python docs/figures.py --smoke    # n = 40, into a temporary folder (run by the tests)

Products per disease are those the calibration rows name for it (a pooled row such as
``axi-cel+tisa-cel`` names each of its products), so a figure exists wherever a
published number can be read against it. The pooled LBCL cohort mix gets its own figure
(``natural_history_lbcl.png``, the README's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from carthema.clinical.population.natural_history import (
    CALIBRATED_DISEASES,
    natural_history,
    plot_natural_history,
)
from carthema.clinical.population.statistics import load_calibration_rows
from carthema.clinical.population.virtual import PRODUCTS

HERE = Path(__file__).resolve().parent


def products_with_rows(disease: str) -> list[str]:
    """Products named by a calibration row of ``disease`` (pooled rows count for each
    of their products), in :data:`PRODUCTS` order."""
    named: set[str] = set()
    rows = load_calibration_rows()
    for p in rows.loc[rows["disease"] == disease, "product"]:
        named.update(str(p).split("+"))
    return [p for p in PRODUCTS if p in named]


def figures(out: Path, n: int, seed: int = 0) -> list[Path]:
    """Write every figure into ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for disease in CALIBRATED_DISEASES:
        jobs: list[str | None] = products_with_rows(disease)
        if disease == "lbcl":
            jobs = [None, *jobs]  # the pooled cohort mix first
        for product in jobs:
            nh = natural_history(product, disease, None, n=n, seed=seed)
            name = f"natural_history_{disease}" + (f"_{product}" if product else "")
            path = out / f"{name}.png"
            plot_natural_history(nh, path)
            written.append(path)
            print(f"wrote {path}", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="virtual patients a figure")
    ap.add_argument("--out", type=Path, default=HERE, help="folder (default: docs/)")
    ap.add_argument("--smoke", action="store_true", help="n = 40 into a temporary folder")
    a = ap.parse_args(argv)
    if a.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            figures(Path(tmp), n=40)
        return 0
    figures(a.out, n=a.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
