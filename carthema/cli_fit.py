"""CLI command ``carthema fit``: Bayesian fit of one patient.

Writes DIR/posterior.nc (ArviZ InferenceData), DIR/summary.csv (per parameter: prior,
posterior, shrinkage, ESS, R-hat), DIR/priors.csv, DIR/fit.png and prints the
diagnostics. ``OBS`` may also be ``example:NAME`` for a bundled data set
(``example:han2022``, ``example:synthetic``); its events (and, for synthetic patients, the
true parameters) are then used unless given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from carthema._console import stdout_console

console = stdout_console()


def _load(obs: str, events: Path | None, truth: Path | None):
    from carthema.data import load_example, read_events, read_observations
    from carthema.data.errors import InputError
    from carthema.data.loaders import read_table_text

    truth_df = None
    if obs.startswith("example:"):
        ex = load_example(obs.split(":", 1)[1])
        if ex.observations is None:
            raise InputError(
                f"bundled data set '{ex.name}' has no observations",
                fix="use example:han2022 or example:synthetic",
            )
        observations = ex.observations
        ev = read_events(events) if events is not None else ex.events
        truth_df = ex.tables.get("parameters")
    else:
        observations = read_observations(obs)
        if events is None:
            raise InputError(
                "no events table given",
                fix="pass --events EVENTS (the patient's CAR-T infusion and other treatments)",
            )
        ev = read_events(events)
    if truth is not None:
        t = read_table_text(truth)
        for col in ("patient", "name", "value"):
            if col not in t.columns:
                raise InputError(
                    "missing required column",
                    file=str(truth),
                    column=col,
                    fix="a truth table has columns patient,name,value",
                )
        t = t.assign(value=t["value"].astype(float))
        truth_df = t
    return observations, ev, truth_df


def register(app: typer.Typer) -> None:
    """Add ``fit`` to ``app``."""

    @app.command()
    def fit(
        obs: Annotated[
            str,
            typer.Argument(
                help="Observations table (CSV or Parquet), or example:NAME for a bundled set."
            ),
        ],
        out: Annotated[Path, typer.Option(help="Output folder.")],
        events: Annotated[Path | None, typer.Option(help="Events table (CSV or Parquet).")] = None,
        patient: Annotated[
            str | None, typer.Option(help="Patient to fit (needed when OBS holds several).")
        ] = None,
        components: Annotated[
            str, typer.Option(help="full, cart, cart_targets or haematopoiesis.")
        ] = "full",
        free: Annotated[
            str | None,
            typer.Option(help="Comma-separated free parameters (default: per component set)."),
        ] = None,
        sampler: Annotated[
            str, typer.Option(help="nutpie (default), nutpie-jax, numpyro, pymc or map.")
        ] = "nutpie",
        draws: Annotated[int, typer.Option(help="Draws per chain kept.")] = 1000,
        tune: Annotated[int, typer.Option(help="Tuning steps per chain.")] = 1000,
        chains: Annotated[int, typer.Option(help="Number of chains.")] = 4,
        seed: Annotated[int | None, typer.Option(help="Random seed (printed if drawn).")] = None,
        truth: Annotated[
            Path | None,
            typer.Option(help="True parameters (patient,name,value) of a synthetic patient."),
        ] = None,
        plot: Annotated[bool, typer.Option(help="Write fit.png.")] = True,
    ) -> None:
        """Fit one patient's parameters (Bayesian, PyMC) and write the posterior."""
        from carthema.fitting import fit as run_fit

        observations, ev, truth_df = _load(obs, events, truth)
        if patient is None and observations["patient"].nunique() == 1:
            patient = str(observations["patient"].iloc[0])
        true_values = None
        if truth_df is not None and patient is not None:
            mine = truth_df[truth_df["patient"].astype(str) == str(patient)]
            if len(mine):
                true_values = dict(zip(mine["name"].astype(str), mine["value"], strict=True))
        result = run_fit(
            observations,
            ev,
            patient,
            components=components,
            free=free,
            sampler=sampler,
            draws=draws,
            tune=tune,
            chains=chains,
            seed=seed,
            truth=true_values,
            progress=sys.stderr.isatty(),
            log=lambda msg: console.print(f"[dim]{msg}...[/dim]"),
        )
        paths = result.save(out, plot=plot)
        print_fit(result, paths)


def print_fit(result, paths: dict) -> None:
    """Diagnostics, information lines, the posterior table and the files written."""
    for line in result.report():
        style = "yellow" if line.startswith("warning") else None
        console.print(line, style=style, markup=False)
    _table(result)
    console.print(f"seed {result.settings['seed']}")
    for kind, path in paths.items():
        console.print(f"wrote {kind}: {path}", markup=False)


def _table(result) -> None:
    df = result.summary()
    truth = "true" in df.columns
    table = Table(title=f"posterior of patient {result.patient}", title_justify="left")
    for col in ("parameter", "median", "90% interval", "prior 90%", "shrinkage", "ESS", "R-hat"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    if truth:
        table.add_column("true", justify="right")
    for _, r in df.iterrows():
        fixed = str(r["kind"]).startswith("residual SD (fixed")
        cells = [
            str(r["name"]),
            f"{r['median']:.4g}",
            "fixed" if fixed else f"{r['q05']:.3g} - {r['q95']:.3g}",
            "" if fixed else f"{r['prior_q05']:.3g} - {r['prior_q95']:.3g}",
            "" if fixed or r["shrinkage"] != r["shrinkage"] else f"{r['shrinkage']:.2f}",
            "" if r.get("ess_bulk") != r.get("ess_bulk") else f"{r['ess_bulk']:.0f}",
            "" if r.get("r_hat") != r.get("r_hat") else f"{r['r_hat']:.3f}",
        ]
        if truth:
            t = r.get("true")
            cells.append("" if t != t or t is None else f"{t:.4g}")
        table.add_row(*cells)
    console.print(table)
