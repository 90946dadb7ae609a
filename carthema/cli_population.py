"""CLI command ``carthema fit-population``: hierarchical fit of several patients.

Writes DIR/population.nc (ArviZ InferenceData), DIR/population_summary.csv (population
means ``mu`` and between-patient SDs ``omega`` of the log-parameters, covariate effects,
residual SDs: posterior median and 90 % interval), DIR/population.json (the file
``carthema virtual-trial --population`` reads), DIR/population_patients.csv and the
prediction-corrected VPC (DIR/vpc.png, DIR/vpc.csv), and prints the diagnostics.
``OBS`` may also be ``example:NAME`` for a bundled data set.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from carthema import cli_options as opt
from carthema._console import console


def register(app: typer.Typer) -> None:
    """Add ``fit-population`` to ``app``."""

    @app.command("fit-population")
    def fit_population_cmd(
        obs: opt.Observations,
        out: opt.Out,
        events: opt.Events = None,
        patients: Annotated[
            str | None,
            typer.Option(help="Comma-separated patients to fit (default: all in OBS)."),
        ] = None,
        components: Annotated[
            str,
            typer.Option(
                callback=opt.check_components,
                help="cart (default), cart_targets, haematopoiesis or full.",
            ),
        ] = "cart",
        free: opt.Free = None,
        covariates: Annotated[
            Path | None,
            typer.Option(
                help="Per-patient covariates (CSV or Parquet): a patient column and one "
                "column per covariate (numbers, or text levels such as an age group)."
            ),
        ] = None,
        effects: Annotated[
            str | None,
            typer.Option(
                help="Which parameters each covariate acts on, e.g. "
                "'reserve:hsc_regen;age_group:cart_rho,cart_alpha' (default: all free)."
            ),
        ] = None,
        sampler: opt.Sampler = "nutpie",
        draws: opt.Draws = 1000,
        tune: opt.Tune = 1000,
        chains: opt.Chains = 4,
        seed: opt.Seed = None,
        cores: opt.Cores = None,
        overwrite: opt.Overwrite = False,
    ) -> None:
        """Hierarchical population fit: shared log-means and between-patient spreads.

        Writes population.nc, population_summary.csv, population.json (for
        virtual-trial) and a prediction-corrected VPC (vpc.png, vpc.csv)."""
        from carthema.cli_fit import _load
        from carthema.data.loaders import read_table_text
        from carthema.fitting.sampling.settings import run_args
        from carthema.fitting.workflows.population import fit_population

        _check_out(out, overwrite, (obs, events, covariates))  # before any work
        observations, ev, _truth = _load(obs, events, None)
        cov = read_table_text(covariates) if covariates is not None else None
        result = fit_population(
            observations,
            ev,
            patients,
            components=components,
            free=free,
            covariates=cov,
            effects=effects,
            **run_args(locals()),  # sampler, draws, tune, chains, seed, cores as given
            progress=sys.stderr.isatty(),
            log=lambda msg: console.print(f"[dim]{msg}...[/dim]"),
        )
        paths = result.save(out)
        for line in result.report():
            style = "yellow" if line.startswith("warning") else None
            console.print(line, style=style, markup=False)
        _table(result)
        console.print(f"seed {result.settings['seed']}")
        for kind, path in paths.items():
            console.print(f"wrote {kind}: {path}")


def _check_out(out: Path, overwrite: bool, inputs: tuple) -> None:
    """Refuse --out before any work (the output-folder contract,
    :func:`carthema.data.atomic.check_out_folder`): a file, an unwritable place, a folder
    holding the inputs, or a non-empty folder that does not hold a population fit."""
    from carthema.data.atomic import check_out_folder

    check_out_folder(
        out, "fit-population", overwrite=overwrite, inputs=inputs, own_markers=("population.json",)
    )


def _table(result) -> None:
    df = result.summary()
    table = Table(
        title=f"population posterior ({len(result.patients)} patients)", title_justify="left"
    )
    for col in ("quantity", "parameter", "median", "90% interval", "prior 90%", "ESS", "R-hat"):
        table.add_column(col, justify="left" if col in ("quantity", "parameter") else "right")
    for _, r in df.iterrows():
        fixed = str(r["quantity"]).endswith("(fixed)")
        cells = [
            str(r["quantity"]),
            str(r["name"]),
            f"{r['median']:.4g}",
            "fixed" if fixed else f"{r['q05']:.3g} - {r['q95']:.3g}",
            "" if fixed else f"{r['prior_q05']:.3g} - {r['prior_q95']:.3g}",
            "" if r.get("ess_bulk") != r.get("ess_bulk") else f"{r['ess_bulk']:.0f}",
            "" if r.get("r_hat") != r.get("r_hat") else f"{r['r_hat']:.3f}",
        ]
        table.add_row(*cells)
    console.print(table)
