"""CLI commands for the model: simulate, params, demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from carthema import cli_options as opt
from carthema._console import console, progress_to_stderr
from carthema.data.atomic import write_atomic

#: Patient of ``carthema demo``.
DEMO_PATIENT = "VP003"
#: Chains, tuning steps and kept draws per chain of ``carthema demo``: half of
#: ``carthema fit``'s 4 x (1000 + 1000). Not shorter: the seed-2026 run failed the R-hat
#: check (> 1.01) with 4 x (300 + 250) (leuk_L0, 1.011) and with 4 x (300 + 500)
#: (sigma of cart_copies, 1.013; measured 2026-12-05), and the demo shows no window from
#: chains that fail the checks (:func:`_converged`).
DEMO_CHAINS = 4
DEMO_TUNE = 500
DEMO_DRAWS = 500
#: Posterior draws the demo's window predicts over (the window's own default).
DEMO_WINDOW_DRAWS = 500
#: What ``carthema demo`` calls each analyte of the synthetic cohort.
DEMO_ANALYTES = {
    "cart_copies": "CAR-T qPCR",
    "b_cells": "B cells",
    "marrow_blasts": "blasts",
    "anc": "ANC",
    "platelets": "platelets",
    "chimerism_cd15": "chimerism",
}


def register(app: typer.Typer) -> None:
    """Add the model commands to ``app``."""

    @app.command()
    def simulate(
        events: opt.EventsOrExample = None,
        days: Annotated[float, typer.Option(help="Simulate up to this day (> 0).")] = 180.0,
        backend: Annotated[str, typer.Option(help="numba or jax.")] = "numba",
        components: opt.Components = "full",
        params: Annotated[
            Path | None,
            typer.Option(help="Parameter overrides: JSON {name: value} or CSV name,value."),
        ] = None,
        patient: Annotated[
            str | None, typer.Option(help="Patient in a multi-patient events table.")
        ] = None,
        out: Annotated[
            Path | None, typer.Option(help="Write the long-form trajectory CSV here.")
        ] = None,
        plot: opt.Plot = None,
        untreated: Annotated[
            bool,
            typer.Option(
                "--untreated",
                metavar="",
                help="Simulate a patient without any treatment (no events): the baseline.",
            ),
        ] = False,
    ) -> None:
        """Simulate a patient's course from an events table (or --untreated)."""
        from carthema.api import load_example, read_events
        from carthema.api import simulate as run
        from carthema.data.errors import InputError

        if not (days == days and 0 < days < float("inf")):
            raise InputError(
                f"--days must be a positive number of days, got {days:g}",
                column="--days",
                fix="e.g. --days 180",
            )
        if backend not in ("numba", "jax"):
            raise InputError(
                f"unknown backend '{backend}'", column="--backend", fix="use numba or jax"
            )
        if events is None and not untreated:
            raise InputError(
                "no events given: without them the patient is untreated (no CAR-T)",
                column="--events",
                fix="pass --events EVENTS.csv or --events example:han2022 (a bundled course), "
                "or --untreated to simulate the untreated baseline on purpose",
            )
        if events is not None and untreated:
            raise InputError(
                "--untreated and --events contradict each other",
                column="--untreated",
                fix="leave out one of them",
            )
        if events is None:
            ev = None
        elif events.startswith("example:"):
            ev = load_example(events.split(":", 1)[1]).events
            if ev is None:
                raise InputError(
                    f"bundled data set '{events}' has no events",
                    column="--events",
                    fix="use example:han2022 or example:synthetic",
                )
        else:
            ev = read_events(events)
        if ev is not None:
            from carthema.data.patients import select_patient

            # Checked here for a clear message; run() selects the patient itself.
            select_patient(ev, patient, where="the events", file=str(events))
        traj = run(
            ev, components=components, params=params, days=days, backend=backend, patient=patient
        )
        for note in traj.notes:
            console.print(f"note: {note}")
        if not traj.ok:
            console.print(f"[red]solver failed: {traj.message}[/red]")
            raise typer.Exit(1)
        _summary(traj)
        if out is not None:
            write_atomic(out, traj.to_frame().to_csv(index=False), mkdir=True)
            console.print(f"trajectory: {out}")
        if plot is not None:
            from carthema.models.plotting import plot_trajectory

            plot_trajectory(traj, plot, title=f"carthema simulate ({components})")
            console.print(f"plot: {plot}")

    @app.command()
    def params(components: opt.Components = "full") -> None:
        """List model parameters with units, defaults, ranges and sources."""
        from carthema.models.model import get_model

        model = get_model(components)
        table = Table(title=f"parameters of the '{components}' model")
        for col in ("name", "default", "unit", "range", "between-patient SD", "source"):
            table.add_column(col, overflow="fold")
        owner = {q.name: c.__name__.rsplit(".", 1)[-1] for c in model.components for q in c.PARAMS}
        for q in model.params:
            spread = "" if q.spread is None else f"{q.spread:g} (log){' free' if q.free else ''}"
            table.add_row(
                q.name,
                f"{q.default:.4g}",
                q.unit,
                f"{q.low:.3g}-{q.high:.3g}",
                spread,
                f"({owner[q.name]}) {q.description}. {q.source}",
            )
        console.print(table)
        console.print(
            "free = fitted by default; between-patient SD = the spread of the fitting prior "
            "and of synthetic patients (its source: carthema.models.virtual.BETWEEN_PATIENT_SD)"
        )

    @app.command()
    def demo(
        out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo_output"),
        patient: Annotated[str, typer.Option(help="Bundled synthetic patient.")] = DEMO_PATIENT,
        sampler: opt.Sampler = "nutpie",
        seed: Annotated[int, typer.Option(help="Random seed.")] = 2026,
    ) -> None:
        """Main job on bundled data: fit a patient, engraftment window, HTML report."""
        clock = _Stages()
        from carthema.api import load_example
        from carthema.cli_fit import print_fit
        from carthema.cli_window import print_window
        from carthema.clinical.window import parse_days, window_from_fit
        from carthema.data.boost import BoostPlan
        from carthema.fitting import fit

        say = progress_to_stderr  # progress on stderr, every few seconds when piped

        ex = load_example("synthetic")
        truth = ex.tables["parameters"]
        truth = truth[truth["patient"] == patient]
        obs = ex.observations
        have = set(obs.loc[obs["patient"] == patient, "analyte"])
        what = ", ".join(v for k, v in DEMO_ANALYTES.items() if k in have)
        phen = truth.groupby("patient")["phenotype"].first()
        about = f"; {phen[patient]} recovery phenotype" if patient in phen.index else ""
        boosted = ex.events.loc[ex.events["patient"] == patient, "kind"].eq("stem_cell_boost")
        about += ", received a boost" if boosted.any() else ", no boost received"
        clock.start(
            "1/2 fit",
            f"virtual patient {patient} of the bundled synthetic cohort ({what}{about}), "
            "full model",
        )
        if sampler != "map":
            console.print(
                f"demo settings: {DEMO_CHAINS} chains x ({DEMO_TUNE} tune + {DEMO_DRAWS} "
                "draws), half of `carthema fit`'s default 4 x (1000 + 1000); the "
                "convergence checks below (R-hat, ESS, divergences) still apply, and the "
                "demo shows no window from a fit that fails them",
                markup=False,
            )
        result = fit(
            ex.observations,
            ex.events,
            patient,
            sampler=sampler,
            draws=DEMO_DRAWS if sampler != "map" else DEMO_WINDOW_DRAWS,
            tune=DEMO_TUNE,
            chains=DEMO_CHAINS,
            seed=seed,
            truth=dict(zip(truth["name"], truth["value"], strict=True)),
            progress=sys.stderr.isatty(),
            log=say,
        )
        paths = result.save(out / "fit")
        print_fit(result, paths)
        clock.end()
        failed = _converged(result)
        if failed:
            console.print(
                "the demo shows no engraftment window from this fit: its chains did not "
                f"converge ({'; '.join(failed)}). Run it again with another --seed; the "
                f"fit is in {out / 'fit'}",
                markup=False,
                style="bold red",
            )
            raise typer.Exit(1)
        clock.start(
            "2/2 engraftment window",
            "an allogeneic CD34-selected boost of 3e6 CD34+ cells/kg on each of days 21-120 "
            "(every 3 days), looking back: as if today were day 21 (the fit used the data to "
            "the last day)",
        )
        # The window takes the fit's posterior in memory (with its diagnostics and
        # residuals for the misfit check), not the folder just written.
        res = window_from_fit(
            result.posterior(),
            parse_days("21:120", 3.0),
            out / "window",
            graft=BoostPlan(None, 3e6, "allogeneic", cd34_selected=True),
            n_draws=DEMO_WINDOW_DRAWS,
            report=True,
            today=21.0,
            log=say,
        )
        console.print(res["decision"], markup=False, style="bold")
        print_window(res)
        clock.end()
        console.print(f"\n[bold]open {res['files']['report']} in a browser[/bold]")
        console.print(f"demo: {clock.total()}", markup=False)


def _converged(result) -> list[str]:
    """Why the fit's chains cannot be trusted (R-hat, ESS, divergences, E-BFMI, a chain
    in a local mode: :func:`carthema.fitting.evaluation.diagnostics.diagnose`'s checks,
    without the misfit warnings that the window reports itself); empty when they pass or
    for MAP (no chains)."""
    from carthema.fitting.evaluation.diagnostics import diagnose

    if result.sampler == "map":
        return []
    return [w.split(":", 1)[0] for w in diagnose(result.idata, result.sampler).warnings]


def _process_age() -> float:
    """Wall seconds since this process started (Linux ``/proc``); 0 elsewhere."""
    import os

    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return max(uptime - start / os.sysconf("SC_CLK_TCK"), 0.0)


class _Stages:
    """The demo's stages: a line on stdout when one starts and one when it ends, with
    its wall and CPU seconds (CPU of this process, all threads: the sampler's included),
    so that ``carthema demo | cat`` shows where the time goes. rich flushes each line."""

    def __init__(self) -> None:
        import time

        self._wall, self._cpu = time.perf_counter, time.process_time
        # Seconds from the process's start (the imports included): CPU by definition of
        # process_time, wall from the kernel's record where there is one (Linux).
        self.t0 = (self._wall() - _process_age(), 0.0)
        self.label = ""
        self.t = self.t0

    def _since(self, t: tuple[float, float]) -> str:
        return f"{self._wall() - t[0]:.1f} s ({self._cpu() - t[1]:.1f} s CPU)"

    def start(self, label: str, what: str) -> None:
        self.label, self.t = label, (self._wall(), self._cpu())
        console.print(f"[bold]{label}[/bold]: {what} (starts at {self._since(self.t0)})")

    def end(self) -> None:
        console.print(f"[bold]{self.label}[/bold]: done in {self._since(self.t)}")

    def total(self) -> str:
        return f"done in {self._since(self.t0)} since the process started"


def _summary(traj) -> None:
    table = Table(title="simulated course")
    table.add_column("day", justify="right")
    for name, obs in zip(traj.model.obs_names, traj.model.observables, strict=True):
        table.add_column(f"{name}\n({obs.unit})", justify="right")
    for day in (0, 7, 14, 21, 28, 42, 60, 90, 120, 180):
        hit = traj.t == day
        if hit.any():
            i = int(hit.argmax())
            table.add_row(str(day), *(f"{v:.3g}" for v in traj.obs[i]))
    console.print(table)
