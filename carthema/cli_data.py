"""CLI commands for patient data: ``carthema check-data``.

Bad input raises :class:`carthema.data.errors.InputError`; ``carthema.cli.main`` prints
its one-line message and exits with code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from carthema._console import stdout_console


def _fmt(x: object, spec: str = ".4g") -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and pd.isna(x)):
        return ""
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def print_summary(
    console: Console,
    obs: pd.DataFrame | None,
    events: pd.DataFrame | None,
    obs_name: str = "observations",
    events_name: str = "events",
) -> None:
    """Print per-patient tables of observations and events (rich)."""
    from carthema.data.summary import summarize

    s = summarize(obs, events)
    if obs is not None:
        table = Table(title=f"observations per patient: {obs_name}")
        for col, just in (
            ("patient", "left"),
            ("analyte", "left"),
            ("compartment", "left"),
            ("unit", "left"),
            ("n", "right"),
            ("n_blq", "right"),
            ("first day", "right"),
            ("last day", "right"),
        ):
            table.add_column(col, justify=just, no_wrap=True)
        for r in s.analytes.itertuples(index=False):
            table.add_row(
                str(r.patient),
                str(r.analyte),
                str(r.compartment),
                str(r.unit),
                str(r.n),
                str(r.n_blq),
                _fmt(r.first_day),
                _fmt(r.last_day),
            )
        console.print(table)
    if events is not None:
        table = Table(title=f"events: {events_name}")
        for col, just in (
            ("patient", "left"),
            ("day", "right"),
            ("kind", "left"),
            ("amount", "right"),
            ("unit", "left"),
            ("duration", "right"),
            ("detail", "left"),
        ):
            table.add_column(col, justify=just, no_wrap=col != "detail")
        for r in s.events.itertuples(index=False):
            table.add_row(
                str(r.patient),
                _fmt(r.day),
                str(r.kind),
                _fmt(r.amount),
                _fmt(r.unit),
                _fmt(r.duration),
                str(r.detail),
            )
        console.print(table)
    for r in s.patients.itertuples(index=False):
        console.print(
            f"patient {r.patient}: {r.n_observations} observation(s) of {r.n_analytes} "
            f"analyte(s), {r.n_events} event(s), days {_fmt(r.first_day)} to {_fmt(r.last_day)}"
        )


def register(app: typer.Typer) -> None:
    """Add the data commands to ``app``."""

    @app.command("check-data")
    def check_data(
        obs: Annotated[
            Path, typer.Argument(metavar="OBS", help="Observation table (CSV or Parquet).")
        ],
        events: Annotated[
            Path | None, typer.Option("--events", help="Events table (CSV or Parquet).")
        ] = None,
    ) -> None:
        """Validate an observation table (and events) and print a per-patient summary.

        Exit code 0 if the files are valid; 2 with a one-line message naming the file,
        row, column and fix if not.
        """
        from carthema.data.loaders import read_events, read_observations

        observations = read_observations(obs)
        ev = read_events(events) if events is not None else None
        console = stdout_console()
        print_summary(console, observations, ev, str(obs), str(events))
        if events is None:
            console.print(f"OK: {obs} is valid.")
        else:
            console.print(f"OK: {obs} and {events} are valid.")
