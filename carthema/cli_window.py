"""CLI command ``carthema window``: the engraftment window of a fitted patient.

The fit folder is checked first (its parts must agree: fit.json, observations.csv,
events.csv and posterior.nc of one patient, a readable posterior), and whether to trust
the fit (convergence, misfit, window parameters the data barely inform) is printed
before the window itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carthema import cli_options as opt
from carthema._console import console


def register(app: typer.Typer) -> None:
    """Add ``window`` to ``app``."""

    @app.command()
    def window(
        fitdir: Annotated[Path, typer.Argument(help="Fit folder written by `carthema fit`.")],
        boost_days: Annotated[
            str, typer.Option(help='Candidate boost days: "30:120" (with --step) or "30,45,60".')
        ] = "30:120",
        step: Annotated[float, typer.Option(help="Days between candidates in a range.")] = 1.0,
        dose: Annotated[float, typer.Option(help="CD34+ cells/kg, e.g. 3e6.")] = 3e6,
        source: Annotated[
            str,
            typer.Option(
                help="autologous, prior-donor (the donor of an earlier transplant) or "
                "allogeneic (a new donor)."
            ),
        ] = "autologous",
        selected: Annotated[
            bool,
            typer.Option("--selected/--unselected", help="CD34-selected graft (default: no)."),
        ] = False,
        cd3: Annotated[
            float | None,
            typer.Option(help="CD3+ cells/kg of an unselected graft from a new donor."),
        ] = None,
        threshold: Annotated[
            float, typer.Option(help="Wanted P(neutrophil engraftment within 30 days).")
        ] = 0.8,
        cart_limit: Annotated[
            float, typer.Option(help="Highest median CAR-T copies/ug DNA on the boost day.")
        ] = 1000.0,
        draws: Annotated[
            int, typer.Option(min=1, help="Posterior draws to predict over (at least 1).")
        ] = 500,
        seed: Annotated[int, typer.Option(help="Random seed for picking draws.")] = 0,
        out: Annotated[
            Path | None, typer.Option(help="Output folder (default: FITDIR/window).")
        ] = None,
        report: Annotated[
            bool, typer.Option("--report/--no-report", help="Also write report.html.")
        ] = False,
        overwrite: opt.Overwrite = False,
    ) -> None:
        """When will a stem-cell boost work? Scan boost days over the fitted posterior."""
        from carthema.clinical.window import parse_days, window_from_fit
        from carthema.data.atomic import check_out_folder
        from carthema.fitting.fitdir import load_fit

        out = out if out is not None else fitdir / "window"
        # Before any work; FITDIR itself (or a folder holding it) is never replaced.
        check_out_folder(
            out, "window", overwrite=overwrite, inputs=(fitdir,), own_markers=("window.json",)
        )
        days = parse_days(boost_days, step)
        ff = load_fit(fitdir)
        print_trust(ff.meta)
        res = window_from_fit(
            ff,
            days,
            out,
            dose=dose,
            source=source,
            selected=selected,
            cd3_per_kg=cd3,
            threshold=threshold,
            cart_limit=cart_limit,
            n_draws=draws,
            seed=seed,
            report=report,
            log=lambda m: console.print(f"[dim]{m}...[/dim]"),
        )
        print_window(res)


def print_trust(meta: dict) -> None:
    """Whether to trust the fit, before any recommendation: the trust lines recorded in
    fit.json (or, for an older fit, derived from its diagnostics)."""
    from carthema.fitting.diagnostics import trust_lines

    lines = meta.get("trust") or trust_lines(meta.get("diagnostics", {}))
    for line in lines:
        bad = line.startswith("warning") or (line.startswith("trust: ") and "problem" in line)
        console.print(line, style="yellow" if bad else None, markup=False)


def print_window(res: dict) -> None:
    """Summary lines and output paths of a window result."""
    for line in res["summary_lines"]:
        console.print(line, markup=False)
    for kind, path in res["files"].items():
        console.print(f"wrote {kind}: {path}", markup=False)
