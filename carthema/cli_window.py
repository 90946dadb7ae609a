"""CLI command ``carthema window``: the engraftment window of a fitted patient.

The fit folder is checked first (its parts must agree: fit.json, observations.csv,
events.csv and posterior.nc of one patient, a readable posterior). The first line printed
is the decision (a recommendation, or why there is none); whether to trust the fit
(convergence, misfit, window parameters the data barely inform) follows it, then the
statements of the window, conditional on the model. Progress goes to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carthema import cli_options as opt
from carthema._console import console, progress_to_stderr


def register(app: typer.Typer) -> None:
    """Add ``window`` to ``app``."""

    @app.command()
    def window(
        fitdir: Annotated[Path, typer.Argument(help="Fit folder written by `carthema fit`.")],
        boost_days: Annotated[
            str | None,
            typer.Option(
                help='Candidate boost days: "40:130" (with --step) or "40,45,60"; default: '
                "every day from today to today + 90. Days before today are dropped."
            ),
        ] = None,
        step: Annotated[float, typer.Option(help="Days between candidates in a range.")] = 1.0,
        today: opt.Today = None,
        dose: opt.Dose = opt.DEFAULT_DOSE,
        source: opt.Source = opt.DEFAULT_SOURCE,
        selected: opt.Selected = opt.DEFAULT_SELECTED,
        cd3: opt.Cd3 = None,
        mnc: opt.Mnc = None,
        threshold: Annotated[
            float, typer.Option(help="Wanted P(neutrophil engraftment within 30 days).")
        ] = 0.8,
        cart_limit: Annotated[
            float, typer.Option(help="Highest median CAR-T copies/ug DNA on the boost day.")
        ] = 1000.0,
        posterior_draws: opt.PredictDraws = 500,
        seed: Annotated[int, typer.Option(help="Random seed for picking draws.")] = 0,
        out: Annotated[
            Path | None, typer.Option(help="Output folder (default: FITDIR/window).")
        ] = None,
        report: Annotated[
            bool, typer.Option("--report", metavar="", help="Also write report.html.")
        ] = False,
        json_out: opt.Json = None,
        quiet: opt.Quiet = False,
        overwrite: opt.Overwrite = False,
    ) -> None:
        """When will a stem-cell boost work? Scan boost days from today over the fitted
        posterior; the first line printed is the recommendation, or why there is none."""
        graft = opt.graft(dose, source, selected, cd3, mnc).check()  # refused before work
        from carthema.clinical.window import parse_days, window_from_fit
        from carthema.data.atomic import check_out_folder
        from carthema.fitting.results.fitdir import load_fit

        out = out if out is not None else fitdir / "window"
        # Before any work; FITDIR itself (or a folder holding it) is never replaced.
        check_out_folder(
            out, "window", overwrite=overwrite, inputs=(fitdir,), own_markers=("window.json",)
        )
        days = None if boost_days is None else parse_days(boost_days, step)
        ff = load_fit(fitdir)
        res = window_from_fit(
            ff,
            days,
            out,
            graft=graft,
            threshold=threshold,
            cart_limit=cart_limit,
            n_draws=posterior_draws,
            seed=seed,
            report=report,
            today=today,
            log=None if quiet else progress_line,
        )
        console.print(res["decision"], markup=False, style="bold")
        print_trust(ff.meta)
        print_window(res)
        if json_out is not None:
            from carthema.data.atomic import write_atomic
            from carthema.data.jsonsafe import dumps

            write_atomic(json_out, dumps(res), mkdir=True)
            console.print(f"wrote json: {json_out}", markup=False)


#: Progress lines of long steps go to stderr (stdout keeps the results).
progress_line = progress_to_stderr


def print_trust(meta: dict) -> None:
    """Whether to trust the fit, before any recommendation: the trust lines recorded in
    fit.json (or, for an older fit, derived from its diagnostics)."""
    from carthema.fitting.evaluation.diagnostics import trust_lines

    lines = meta.get("trust") or trust_lines(meta.get("diagnostics", {}))
    for line in lines:
        bad = line.startswith("warning") or (line.startswith("trust: ") and "problem" in line)
        console.print(line, style="yellow" if bad else None, markup=False)


def print_window(res: dict) -> None:
    """Summary lines (conditional on the model) and output paths of a window result."""
    for line in res["summary_lines"]:
        console.print(line, markup=False)
    for kind, path in res["files"].items():
        console.print(f"wrote {kind}: {path}", markup=False)
