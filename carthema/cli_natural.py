"""CLI command: natural history of a virtual population without a boost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from carthema._console import stdout_console
from carthema.data.atomic import write_atomic

console = stdout_console()


def register(app: typer.Typer) -> None:
    """Add ``natural-history`` to ``app``."""

    @app.command("natural-history")
    def natural_history_cmd(
        product: Annotated[
            str | None,
            typer.Option(
                help="tisa-cel, axi-cel, liso-cel or brexu-cel (default: the LBCL "
                "cohort's axi-cel : tisa-cel mix 159 : 76)."
            ),
        ] = None,
        disease: Annotated[
            str, typer.Option(help="lbcl; b-all and mcl are refused until calibrated.")
        ] = "lbcl",
        hematotox: Annotated[
            str | None, typer.Option(help="CAR-HEMATOTOX group: low (0-1), high (>= 2) or 0-7.")
        ] = None,
        n: Annotated[int, typer.Option(help="Virtual patients.")] = 1000,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Write statistics and settings as JSON.")
        ] = None,
        plot: Annotated[
            Path | None, typer.Option(help="Write the visual predictive check (PNG).")
        ] = None,
    ) -> None:
        """Simulate the calibrated virtual population without a boost and compare its
        blood-count statistics with the published natural history (Rejeski et al. 2021)."""
        from carthema.clinical.population.natural_history import (
            natural_history,
            plot_natural_history,
        )

        nh = natural_history(product, disease, hematotox, n=n, seed=seed)
        s = nh.settings
        table = Table(
            title=f"Natural history, days 0-60: {s['product']}, {s['disease']}, "
            f"CAR-HEMATOTOX {s['hematotox'] if s['hematotox'] is not None else 'all'}, "
            f"n = {s['n']}"
        )
        for col in ("statistic", "model", "published", "within 0.10 / 3 d"):
            table.add_column(col)
        for r in nh.table().itertuples():
            pub = "" if r.published is None or r.published != r.published else f"{r.published:.3g}"
            ok = "" if r.within_tolerance is None else ("yes" if r.within_tolerance else "NO")
            table.add_row(r.statistic, f"{r.model:.3g}", pub, ok)
        console.print(table)
        for note in nh.notes:
            console.print(f"note: {note}")
        console.print(
            "published values: Rejeski et al. 2021, Blood 138:2499 (calibration targets, "
            "natural_history.csv); the population was calibrated to them"
        )
        if json_out is not None:
            write_atomic(json_out, json.dumps(nh.to_json(), indent=1, default=float), mkdir=True)
            console.print(f"wrote {json_out}")
        if plot is not None:
            plot_natural_history(nh, plot)
            console.print(f"wrote {plot}")
