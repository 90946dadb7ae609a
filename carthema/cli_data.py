"""CLI commands for patient data: ``carthema check-data`` and ``carthema import-nonmem``.

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

from carthema import cli_options as opt
from carthema._console import stdout_console

_warn_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _fmt(x: object, spec: str = ".4g") -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and pd.isna(x)):
        return ""
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


#: Rows of each summary table printed unless ``--all`` (a rich table of a million-row
#: data set takes longer to draw than the data take to check, and no one reads it).
SHOWN_ROWS = 200


def _more(console: Console, n: int, what: str) -> None:
    if n > 0:
        console.print(f"... and {n} more {what} (pass --all to print every row)", markup=False)


def print_summary(
    console: Console,
    obs: pd.DataFrame | None,
    events: pd.DataFrame | None,
    obs_name: str = "observations",
    events_name: str = "events",
    *,
    limit: int | None = SHOWN_ROWS,
) -> None:
    """Print per-patient tables of observations and events (rich): the first ``limit``
    rows of each, and how many more there are (``limit=None``: every row)."""
    from carthema.data.summary import summarize

    s = summarize(obs, events)
    cut = len(s.analytes) + len(s.events) + len(s.patients) if limit is None else limit
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
        for r in s.analytes.head(cut).itertuples(index=False):
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
        _more(console, len(s.analytes) - cut, "analyte rows")
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
        for r in s.events.head(cut).itertuples(index=False):
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
        _more(console, len(s.events) - cut, "events")
    for r in s.patients.head(cut).itertuples(index=False):
        console.print(
            f"patient {r.patient}: {r.n_observations} observation(s) of {r.n_analytes} "
            f"analyte(s), {r.n_events} event(s), days {_fmt(r.first_day)} to {_fmt(r.last_day)}"
        )
    _more(console, len(s.patients) - cut, "patients")


def _load_inputs(
    obs: str, events: str | None
) -> tuple[pd.DataFrame, pd.DataFrame | None, str, str | None]:
    """Observations and events from paths or ``example:NAME`` (as ``fit`` reads them).

    ``OBS=example:NAME`` brings the data set's events too unless ``--events`` is given.
    Returns (observations, events, observations name, events name).
    """
    from carthema.data import load_example, read_events, read_observations
    from carthema.data.errors import InputError

    def example(spec: str, what: str):
        ex = load_example(spec.split(":", 1)[1])
        table = getattr(ex, what)
        if table is None:
            raise InputError(
                f"bundled data set '{ex.name}' has no {what}.",
                fix="use example:han2022 or example:synthetic.",
            )
        return ex, table

    ev: pd.DataFrame | None = None
    ev_name = events
    if obs.startswith("example:"):
        ex, observations = example(obs, "observations")
        if events is None and ex.events is not None:
            ev, ev_name = ex.events, f"{obs} (events)"
    else:
        observations = read_observations(obs)
    if events is not None:
        ev = example(events, "events")[1] if events.startswith("example:") else read_events(events)
    return observations, ev, obs, ev_name


def _ids(df: pd.DataFrame) -> list[str]:
    from carthema.data.validate import _natural_key

    return sorted(df["patient"].astype(str).unique(), key=_natural_key)


def _few(ids: list[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (f" ... ({len(ids) - n} more)" if len(ids) > n else "")


def check_patient_overlap(obs: pd.DataFrame, ev: pd.DataFrame, obs_name: str, ev_name: str) -> None:
    """Refuse two tables with no patient in common; warn (stderr) on a partial overlap."""
    from carthema.data.errors import InputError

    in_obs, in_ev = _ids(obs), _ids(ev)
    shared = set(in_obs) & set(in_ev)
    if not shared:
        raise InputError(
            f"no patient id is in both files: {obs_name} has {_few(in_obs)}; "
            f"the events have {_few(in_ev)}.",
            file=ev_name,
            column="patient",
            fix="give the events of these patients, with the ids spelt as in the "
            "observations (case and leading zeros count).",
        )
    only_obs = [p for p in in_obs if p not in shared]
    only_ev = [p for p in in_ev if p not in shared]
    if only_obs:
        _warn_console.print(
            f"warning: {len(only_obs)} patient(s) of {obs_name} have no events in "
            f"{ev_name}: {_few(only_obs)} (they cannot be fitted without a CAR-T infusion).",
            markup=False,
        )
    if only_ev:
        _warn_console.print(
            f"warning: {len(only_ev)} patient(s) of {ev_name} have no observations in "
            f"{obs_name}: {_few(only_ev)}.",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add ``check-data`` to ``app``."""

    @app.command("check-data")
    def check_data(
        obs: Annotated[
            str,
            typer.Argument(
                metavar="OBS",
                help="Observation table (CSV or Parquet), or example:NAME for a bundled set "
                "(its events are checked too unless --events is given).",
            ),
        ],
        events: Annotated[
            str | None,
            typer.Option("--events", help="Events table (CSV or Parquet), or example:NAME."),
        ] = None,
        show_all: Annotated[
            bool,
            typer.Option(
                "--all", help=f"Print every row of the summary (default: the first {SHOWN_ROWS})."
            ),
        ] = False,
        untreated: Annotated[
            bool,
            typer.Option(
                "--untreated",
                metavar="",
                help="Patients of the events table without a CAR-T infusion are meant "
                "(untreated controls); otherwise each needs its cart_infusion on day 0.",
            ),
        ] = False,
    ) -> None:
        """Validate an observation table (and events) and print a per-patient summary.

        Exit code 0 if the files are valid; 2 with a one-line message naming the file,
        row, column and fix if not. With both tables, patients present in only one are
        listed as warnings, and tables that share no patient are refused.
        """
        from carthema.data.course import check_course

        observations, ev, obs_name, ev_name = _load_inputs(obs, events)
        if ev is not None:
            # day 0 is the first CAR-T infusion; CAR-T copies need an infusion (patients
            # without events are warned about below: they cannot be fitted)
            check_course(
                observations,
                ev,
                events_name=str(ev_name),
                patients=_ids(ev),
                untreated=untreated,
            )
            check_patient_overlap(observations, ev, obs_name, str(ev_name))
        console = stdout_console()
        limit = None if show_all else SHOWN_ROWS
        print_summary(console, observations, ev, obs_name, str(ev_name), limit=limit)
        if ev is None:
            console.print(f"OK: {obs_name} is valid.")
        else:
            console.print(f"OK: {obs_name} and {ev_name} are valid.")


def register_import(app: typer.Typer) -> None:
    """Add ``import-nonmem`` to ``app``."""

    @app.command("import-nonmem")
    def import_nonmem_cmd(
        nm: Annotated[
            Path,
            typer.Argument(
                metavar="NM", help="NONMEM-style data set (CSV or Parquet: ID, TIME, DV, ...)."
            ),
        ],
        cmt_map: Annotated[
            Path,
            typer.Option(
                "--cmt-map",
                help="JSON file: CMT number -> analyte or event kind (see docs/nonmem.md).",
            ),
        ],
        out: Annotated[
            Path,
            typer.Option("--out", help="Folder to write observations.csv and events.csv to."),
        ],
        dose_map: Annotated[
            Path | None,
            typer.Option(
                "--dose-map",
                help="JSON file: CMT number -> event kind for dose records, where a CMT is "
                "also observed.",
            ),
        ] = None,
        time_unit: Annotated[
            str, typer.Option("--time-unit", help="Unit of TIME: day or hour.")
        ] = "day",
        time_zero: Annotated[
            float | None,
            typer.Option(
                "--time-zero",
                help="TIME of the first CAR-T infusion (day 0), in --time-unit. Without it "
                "a first CAR-T infusion not at TIME 0 is refused.",
            ),
        ] = None,
        ignore: Annotated[
            list[str] | None,
            typer.Option(
                "--ignore",
                help="A character that starts records to ignore (NONMEM's IGNORE=c), "
                "besides # and C (when the first column is C); @ = a letter or @. "
                "Repeatable.",
            ),
        ] = None,
        overwrite: opt.Overwrite = False,
    ) -> None:
        """Import a NONMEM data set as carthema observations and events.

        Writes OUT/observations.csv and OUT/events.csv (canonical units), readable by
        check-data and fit, and prints every row it skipped and why. The folder is
        written whole or not at all.
        """
        from carthema.data.errors import InputError
        from carthema.data.loaders import check_output_folder
        from carthema.data.nonmem import check_time_zero, import_nonmem, read_cmt_map

        if time_unit not in ("day", "hour"):
            raise InputError(
                f"--time-unit '{time_unit}' is not day or hour.", fix="pass day or hour."
            )
        check_time_zero(time_zero)
        inputs = (nm, cmt_map, dose_map)
        check_output_folder(out, overwrite=overwrite, inputs=inputs)  # before any work
        cmap = read_cmt_map(cmt_map, "--cmt-map")
        dmap = read_cmt_map(dose_map, "--dose-map")
        report = import_nonmem(
            nm,
            cmap,
            out,
            dose_map=dmap,
            time_unit=time_unit,  # type: ignore[arg-type]
            time_zero=time_zero,
            ignore=tuple(ignore or ()),
            overwrite=overwrite,
            inputs=inputs,
        )
        console = stdout_console()
        for line in report.lines():
            console.print(line, markup=False, soft_wrap=True)
        ev_part = f" --events {out / 'events.csv'}" if not report.events.empty else ""
        console.print(
            f"next: carthema check-data {out / 'observations.csv'}{ev_part}",
            markup=False,
            soft_wrap=True,
        )
