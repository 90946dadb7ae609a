"""CLI command ``carthema fit``: Bayesian fit of one patient.

Writes DIR/posterior.nc (ArviZ InferenceData), DIR/summary.csv (per parameter: prior,
posterior, data information, ESS, R-hat), DIR/priors.csv, DIR/residuals.csv (PRED, IPRED,
residuals, PIT per observation), DIR/correlation.csv, DIR/ipred.png (individual posterior
predictive), DIR/diagnostics.png and DIR/run.json (the run record) and prints the
diagnostics, trust signals first. ``--out`` is checked
before any work, and the folder is written whole under a temporary name and swapped in
at the end (a refit leaves no stale file). ``OBS`` may also be ``example:NAME`` for a
bundled data set (``example:han2022``, ``example:synthetic``); its events (and, for
synthetic patients, the true parameters) are then used unless given.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from carthema import cli_options as opt
from carthema._console import console
from carthema.cli_window import progress_line


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
        truth_df = _truth_values(t, str(truth))
    return observations, ev, truth_df


def _truth_values(t, where: str):
    """The truth table with numeric values: a non-number, a name given twice for one
    patient, or a name that is no model parameter is refused (one line, the row)."""
    import math

    from carthema.data.errors import InputError
    from carthema.models.model import get_model

    known = {q.name for q in get_model("full").params}
    seen: set[tuple[str, str]] = set()
    values = []
    cols = zip(t.index, t["patient"], t["name"], t["value"], strict=True)
    for row, p, name, text in cols:
        name = str(name).strip()
        try:
            v = float(str(text).strip())
        except ValueError:
            v = math.nan
        if not math.isfinite(v):
            raise InputError(f"'{text}' is not a number", file=where, row=row, column="value",
                             fix="give the true value of each parameter as a number")  # fmt: skip
        if name not in known:
            raise InputError(f"'{name}' is not a model parameter", file=where, row=row,
                             column="name", fix="use the names of `carthema params`")  # fmt: skip
        if (str(p), name) in seen:
            raise InputError(f"parameter '{name}' is given twice for patient {p}", file=where,
                             row=row, column="name", fix="give each parameter once")  # fmt: skip
        seen.add((str(p), name))
        values.append(v)
    return t.assign(value=values, name=t["name"].astype(str).str.strip())


def register(app: typer.Typer) -> None:
    """Add ``fit`` to ``app``."""

    @app.command()
    def fit(
        obs: opt.Observations,
        out: opt.Out,
        events: opt.Events = None,
        patient: Annotated[
            str | None, typer.Option(help="Patient to fit (needed when OBS holds several).")
        ] = None,
        components: opt.Components = "full",
        free: opt.Free = None,
        sampler: opt.Sampler = "nutpie",
        draws: opt.Draws = 1000,
        tune: opt.Tune = 1000,
        chains: opt.Chains = 4,
        seed: opt.Seed = None,
        cores: opt.Cores = None,
        truth: Annotated[
            Path | None,
            typer.Option(help="True parameters (patient,name,value) of a synthetic patient."),
        ] = None,
        target_accept: opt.TargetAccept = 0.8,
        no_plots: Annotated[
            bool,
            typer.Option(
                "--no-plots", metavar="", help="Do not write ipred.png and diagnostics.png."
            ),
        ] = False,
        quiet: opt.Quiet = False,
        overwrite: opt.Overwrite = False,
    ) -> None:
        """Fit one patient's parameters (Bayesian, PyMC) and write the posterior."""
        from carthema.data.course import check_fit_course
        from carthema.fitting import fit as run_fit
        from carthema.fitting.results.fitdir import check_fit_out
        from carthema.fitting.sampling.settings import run_args

        inputs = (obs, events, truth)
        check_fit_out(out, overwrite=overwrite, inputs=inputs)  # before any work
        observations, ev, truth_df = _load(obs, events, truth)
        # The library's check of day 0 and the CAR-T infusion (carthema.fit makes it
        # too), here first so that the message names the events file.
        patient = check_fit_course(observations, ev, patient, events_name=events and str(events))
        check_fit_out(out, patient, overwrite=overwrite, inputs=inputs)  # another patient
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
            truth=true_values,
            **run_args(locals()),  # sampler, draws, ..., target_accept as given
            progress=sys.stderr.isatty() and not quiet,
            log=None if quiet else progress_line,
        )
        paths = result.save(out, plot=not no_plots, inputs=[obs, events, truth])
        print_fit(result, paths)


def print_fit(result, paths: dict) -> None:
    """Diagnostics, information lines, the posterior table and the files written."""
    for line in result.report():
        style = (
            "yellow"
            if line.startswith(("warning", "trust: "))
            and "problem" in line
            or (line.startswith("warning"))
            else None
        )
        console.print(line, style=style, markup=False)
    _table(result)
    console.print(
        "data info = 1 - posterior SD / prior SD (log scale): 0 = the data say nothing, "
        "1 = the data pin the parameter down",
        markup=False,
    )
    crit = result.criteria()
    if crit:
        console.print(
            f"-2LL {crit['minus_2ll']:.2f}, AIC {crit['aic']:.2f}, BIC {crit['bic']:.2f} "
            f"({crit['n_parameters']} estimated, {crit['n_observations']} observations; "
            f"{crit['note']})",
            markup=False,
        )
    console.print(f"seed {result.settings['seed']}")
    for kind, path in paths.items():
        console.print(f"wrote {kind}: {path}", markup=False)


def _table(result) -> None:
    df = result.summary()
    truth = "true" in df.columns
    table = Table(title=f"posterior of patient {result.patient}", title_justify="left")
    cols = ("parameter", "median", "90% interval", "prior 90%", "data info", "ESS", "R-hat")
    for col in cols:
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
            "" if fixed or r["information"] != r["information"] else f"{r['information']:.2f}",
            "" if r.get("ess_bulk") != r.get("ess_bulk") else f"{r['ess_bulk']:.0f}",
            "" if r.get("r_hat") != r.get("r_hat") else f"{r['r_hat']:.3f}",
        ]
        if truth:
            t = r.get("true")
            cells.append("" if t != t or t is None else f"{t:.4g}")
        table.add_row(*cells)
    console.print(table)
