"""CLI command ``carthema fit-cohort``: independent fits of many patients on dask.

Writes a fit folder per patient, DIR/patients/<id>/ (as ``carthema fit``: posterior.nc,
fit.json, summary.csv, ...; plus report.txt and, last, done.json),
DIR/cohort.parquet and DIR/cohort.csv (one row per patient), DIR/cohort.json (the
settings) and the pooled prediction-corrected VPC (DIR/vpc.png, DIR/vpc.csv).
Re-running the same command resumes: only patients without a done marker
(missing or failed) are fitted. Exit status 0 when every patient is fitted, 1 when some
failed (their errors are in the table and in DIR/patients/<id>/error.txt), 2 on bad input.
One run at a time per folder: the run holds DIR/.carthema.lock (its pid and host) and a
second run on the same folder is refused with the holder's pid.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from carthema import cli_options as opt
from carthema._console import console


def register(app: typer.Typer) -> None:
    """Add ``fit-cohort`` to ``app``."""

    @app.command("fit-cohort")
    def fit_cohort_cmd(
        obs: opt.Observations,
        out: Annotated[Path, typer.Option(help="Output folder (resumed when it exists).")],
        events: opt.Events = None,
        scheduler: Annotated[
            str | None,
            typer.Option(
                help="Address of a running dask scheduler (tcp://host:port); "
                "default: a local cluster."
            ),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option(help="Worker processes of the local cluster (default: one per core)."),
        ] = None,
        patients: Annotated[
            str | None, typer.Option(help="Comma-separated patients to fit (default: all).")
        ] = None,
        components: opt.Components = "full",
        free: opt.Free = None,
        sampler: opt.Sampler = "nutpie",
        draws: opt.Draws = 1000,
        tune: opt.Tune = 1000,
        chains: opt.Chains = 4,
        cores: Annotated[int, typer.Option(min=1, help="Cores per patient fit.")] = 1,
        seed: Annotated[
            int | None, typer.Option(help="Cohort seed (drawn and recorded when not given).")
        ] = None,
        truth: Annotated[
            Path | None,
            typer.Option(help="True parameters (patient,name,value) of synthetic patients."),
        ] = None,
        plot: Annotated[
            bool,
            typer.Option(
                "--plots", metavar="", help="Write ipred.png and diagnostics.png per patient."
            ),
        ] = False,
    ) -> int:
        """Fit many patients independently (dask.distributed), resumably."""
        from carthema.cli_fit import _load
        from carthema.fitting.sampling.settings import run_args
        from carthema.fitting.workflows.cohort import fit_cohort

        observations, ev, truth_df = _load(obs, events, truth)
        result = fit_cohort(
            observations,
            ev,
            out,
            patients=None if patients is None else patients.split(","),
            scheduler=scheduler,
            workers=workers,
            components=components,
            free=free,
            **run_args(locals()),  # sampler, draws, tune, chains, seed, cores as given
            truth=truth_df,
            plot=plot,
            progress=sys.stderr.isatty(),
            log=lambda msg: console.print(msg, markup=False),
        )
        _print_table(result)
        t = result.timings
        console.print(
            f"{len(result.fitted)} fitted, {len(result.failed)} failed, "
            f"{len(result.skipped)} already done; cluster start {t.get('startup_s', 0):.1f} s, "
            f"fits {t.get('fit_s', 0):.1f} s; cohort seed {result.settings['seed']}"
        )
        console.print(f"wrote table: {result.paths['table_parquet']}")
        console.print(f"wrote table: {result.paths['table_csv']}")
        console.print(f"wrote settings: {result.paths['manifest']}")
        console.print(f"wrote per-patient results: {result.out / 'patients'}/<id>/")
        failed = result.table[result.table["status"] != "ok"]
        if len(failed):
            console.print(
                f"{len(failed)} patient(s) not fitted ({', '.join(failed['patient'])}); "
                "see error.txt in their folders; run the same command again to retry them",
                style="yellow",
                markup=False,
            )
            return 1
        return 0


def _fmt(v, spec: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return ""
    return "" if f != f else format(f, spec)


def _print_table(result) -> None:
    df = result.table
    mcmc = result.settings.get("sampler") != "map"
    params = [c.removesuffix("_median") for c in df.columns if c.endswith("_median")][:6]
    table = Table(title=f"cohort ({len(df)} patients)", title_justify="left")
    cols = ["patient", "status", "wall s"]
    if mcmc:
        cols += ["max R-hat", "min ESS", "div."]
    cols += [f"{p} median" for p in params] + ["warnings / error"]
    for c in cols[:-1]:
        table.add_column(c, justify="left" if c in ("patient", "status") else "right")
    table.add_column(cols[-1], no_wrap=True, overflow="ellipsis", max_width=36)
    for _, r in df.iterrows():
        cells = [str(r["patient"]), str(r["status"]), _fmt(r.get("wall_s"), ".1f")]
        if mcmc:
            cells += [
                _fmt(r.get("max_rhat"), ".3f"),
                _fmt(r.get("min_ess_bulk"), ".0f"),
                _fmt(r.get("divergences"), ".0f"),
            ]
        cells += [_fmt(r.get(f"{p}_median"), ".3g") for p in params]
        note = r.get("error") if r["status"] != "ok" else r.get("warnings")
        note = "" if note is None or note != note else str(note)
        cells.append(note)
        table.add_row(*(Text(c) for c in cells))  # plain text: ids and warnings hold [..]
    # Wide enough for the parameter columns when the output is not a terminal (a log).
    wide = console if console.is_terminal else Console(highlight=False, width=160)
    wide.print(table)
