"""CLI command: natural history of a virtual population without a boost."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from carthema import cli_options as opt
from carthema._console import Step, progress_to_stderr, stdout_console
from carthema.data.atomic import write_atomic
from carthema.data.jsonsafe import dumps

console = stdout_console()


def _fmt(value) -> str:
    """A statistic for the table: a number, or five fractions of a grade distribution."""
    if isinstance(value, list | tuple):
        return " / ".join(f"{v:.2f}" for v in value)
    if value is None or value != value:
        return "none"
    return f"{value:.3g}"


def register(app: typer.Typer) -> None:
    """Add ``natural-history`` to ``app``."""

    @app.command("natural-history")
    def natural_history_cmd(
        product: Annotated[
            str | None,
            typer.Option(
                help="tisa-cel, axi-cel, liso-cel or brexu-cel (default: the disease's "
                "cohorts: LBCL axi-cel : tisa-cel 159 : 76, B-ALL tisa-cel : brexu-cel 52 : 78, "
                "MCL brexu-cel)."
            ),
        ] = None,
        disease: Annotated[
            str, typer.Option(help="lbcl, b-all or mcl (each with its own calibrated population).")
        ] = "lbcl",
        hematotox: opt.Hematotox = None,
        n: Annotated[int, typer.Option(help="Virtual patients.")] = 1000,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        json_out: opt.Json = None,
        plot: opt.Plot = None,
    ) -> None:
        """Simulate the calibrated virtual population without a boost (days -7 to 180) and
        compare its blood-count statistics and ICAHT grades with every published row of
        both calibration files that applies."""
        from carthema.clinical.population.natural_history import (
            natural_history,
            plot_natural_history,
        )

        with Step(progress_to_stderr, f"natural history: simulating {n} virtual patients"):
            nh = natural_history(product, disease, hematotox, n=n, seed=seed)
        s = nh.settings
        group = (
            f"{s['product']}, {s['disease']}, CAR-HEMATOTOX "
            f"{s['hematotox'] if s['hematotox'] is not None else 'all'}"
        )
        t = nh.table()
        rows = t[t["published"].notna()]
        if len(rows):
            table = Table(title=f"Published rows that apply: {group}, n = {s['n']}")
            for col in ("row", "statistic", "published", "model", "within 0.10 / 3 d"):
                table.add_column(col)
            pub = {r["statistic"]: r for r in nh.published}
            for r in rows.itertuples():
                where = f"{pub[r.statistic]['file']}:{pub[r.statistic]['row']}"
                ok = {True: "yes", False: "NO", None: "-"}[r.within_tolerance]
                table.add_row(where, r.statistic, f"{r.published:.3g}", _fmt(r.model), ok)
            console.print(table)
            hits = int(sum(rows["within_tolerance"] == True))  # noqa: E712
            console.print(f"{hits} of {len(rows)} published rows within tolerance")
        else:
            console.print(
                f"no published row for {group} in natural_history.csv or "
                "natural_history_more.csv: the model values below have nothing to compare with"
            )
        table = Table(
            title=f"Model statistics without a published row, days {s['days'][0]:g} to "
            f"{s['days'][1]:g}: {group}, n = {s['n']}"
        )
        for col in ("statistic", "model", "definition"):
            table.add_column(col)
        for r in t[t["published"].isna()].itertuples():
            table.add_row(r.statistic, _fmt(r.model), r.definition)
        console.print(table)
        for note in nh.notes:
            console.print(f"note: {note}")
        console.print(
            "published rows: ../shared/calibration/natural_history.csv (Rejeski et al. 2021, "
            "Blood 138:2499) and natural_history_more.csv (bundled copies); grade "
            "distributions are fractions of patients with grade 0 / 1 / 2 / 3 / 4"
        )
        if json_out is not None:
            write_atomic(json_out, dumps(nh.to_json()), mkdir=True)
            console.print(f"wrote {json_out}")
        if plot is not None:
            plot_natural_history(nh, plot)
            console.print(f"wrote {plot}")
