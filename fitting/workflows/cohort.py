"""Cohort fits: independent per-patient fits on dask.distributed, resumable.

:func:`fit_cohort` fits every patient of an observations table with :func:`fit`, one
patient per dask task, on a :class:`distributed.LocalCluster` (worker processes with one
thread each) or on an existing cluster (``scheduler="tcp://host:port"``).

Output layout (``out``)::

    cohort.json                  settings of the cohort (seed included); a restart must match
    cohort.parquet, cohort.csv   one row per patient: status, error, diagnostics, wall time,
                                 posterior median and 90 % interval of each free parameter
    vpc.csv, vpc.png             prediction-corrected VPC of the fitted patients pooled
                                 (:func:`carthema.fitting.evaluation.vpc.cohort_vpc`; 3 or more)
    patients/<id>/               a fit folder as ``carthema fit`` writes it
                                 (:meth:`FitResult.save`: posterior.nc, fit.json,
                                 summary.csv, priors.csv, events.csv, observations.csv;
                                 ``carthema window`` reads it), plus
    patients/<id>/report.txt     the lines ``carthema fit`` prints
    patients/<id>/done.json      written last: the patient is done
    patients/<id>/error.txt      a failed fit: the error and its traceback
    patients/<id>/failed.json    a failed fit: its table row

What "done" means: a patient is done when ``done.json`` exists, parses, and every file it
lists exists with the size it records. Every file is written to a temporary name in the
same folder and renamed over its final name (``os.replace``, atomic), and ``done.json`` is
written after all the others; a run killed at any point therefore leaves no patient that
looks done without being done. A restarted run (same ``out``, same settings) fits only the
patients that are not done: the missing ones and the failed ones (failures are retried).
Leftover temporary files are ignored and removed.

Seeds: each patient's seed is derived from the cohort seed and the patient id
(:func:`patient_seed`), so a resumed run gives the same results as an uninterrupted one and
a patient's result does not depend on which other patients are in the run. When no seed is
given one is drawn and recorded in ``cohort.json``; a restart reuses it.

Workers fit and write the patient's files to a local temporary folder and send the bytes
back; only the client writes to ``out``. Workers of a remote cluster therefore need the
same carthema installed but no shared file system. Compile caches: worker processes of the
local cluster inherit the environment, so they share PyTensor's compile directory and
carthema's numba cache (``$CARTHEMA_CACHE_DIR``) with the client; both are safe to share
between processes (PyTensor locks its directory, numba modules are written atomically).
Each worker process compiles the log-density once per model structure and reuses it for
every later patient of that structure (:mod:`carthema.fitting.op.compiled`); run settings are
validated once, by :func:`fit_cohort`, before any task (:class:`~.settings.RunSettings`).

The patient-folder protocol (markers, atomic writes) is in :mod:`.cohort_folder`, the
task a worker runs in :mod:`.cohort_task`, the cluster in :mod:`.cluster`; this module
holds the run itself: settings and manifest, submitting and collecting, the cohort table
and the pooled VPC.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carthema.data.atomic import (
    FolderLock,
    atomic_path,
    probe_output_folder,
)
from carthema.data.errors import InputError
from carthema.fitting.workflows.cluster import (  # noqa: F401 (local_client: public here)
    cluster_client,
    cluster_name,
    count_workers,
    local_client,
)
from carthema.fitting.workflows.cohort_folder import (  # noqa: F401 (patient_state: public here)
    commit_patient,
    patient_folder,
    patient_state,
    prepare_folder,
)
from carthema.fitting.workflows.cohort_table import (  # noqa: F401 (public here)
    BASE_COLUMNS,
    MANIFEST,
    RESULT_SETTINGS,
    cohort_table,
    patient_rows,
    write_manifest,
    write_table,
)
from carthema.fitting.workflows.cohort_task import (  # noqa: F401 (public here)
    failed_row,
    fit_patient_task,
    patient_seed,
)

if TYPE_CHECKING:
    from carthema.fitting.sampling.settings import RunSettings


@dataclass
class CohortResult:
    """Result of :func:`fit_cohort`.

    Attributes
    ----------
    table:
        One row per patient (columns :data:`BASE_COLUMNS`, then ``<param>_median``,
        ``<param>_q05``, ``<param>_q95`` and, for synthetic patients, ``<param>_true``).
    out, paths:
        The output folder; the cohort table files and the manifest.
    fitted, skipped, failed:
        Patients fitted in this run, found already done, and failed in this run.
    settings:
        The cohort settings (``seed`` included), as in ``cohort.json``.
    timings:
        ``startup_s`` (cluster start), ``fit_s`` (first submission to last result),
        ``total_s``; ``workers``: how many workers the cluster had.
    """

    table: pd.DataFrame
    out: Path
    paths: dict[str, Path]
    fitted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(len(self.table)) and bool((self.table["status"] == "ok").all())


# ---------------------------------------------------------------------------------
# The cohort
# ---------------------------------------------------------------------------------
def _normalise_free(free: str | Iterable[str] | None) -> list[str] | None:
    if free is None:
        return None
    items = free.split(",") if isinstance(free, str) else list(free)
    names = [str(s).strip() for s in items if str(s).strip()]
    return names or None


def fit_cohort(
    observations: pd.DataFrame,
    events: pd.DataFrame | None,
    out: str | Path,
    *,
    patients: Iterable[str] | None = None,
    scheduler: Any = None,
    workers: int | None = None,
    components: str = "full",
    free: str | Iterable[str] | None = None,
    sampler: str = "nutpie",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    cores: int = 1,
    init: str = "map",
    truth: pd.DataFrame | None = None,
    plot: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    **fit_options: Any,
) -> CohortResult:
    """Fit every patient (or ``patients``) independently on dask.distributed.

    Parameters
    ----------
    observations, events:
        Data-layer tables holding all patients.
    out:
        Output folder (layout in the module docstring). A folder of an earlier run with
        the same settings is resumed: done patients are kept, the others are fitted.
    patients:
        Patient ids to fit (default: every patient in ``observations``).
    scheduler:
        ``None``: a LocalCluster of ``workers`` processes with one thread each (default
        ``cpu_count // cores``). A string ``"tcp://host:port"``: an existing dask
        scheduler. A :class:`distributed.Client`: used as it is (not closed).
    workers:
        Number of local worker processes (LocalCluster only).
    components, free, sampler, draws, tune, chains, init:
        As :func:`carthema.fitting.fit`, the same for every patient.
    seed:
        Cohort seed; each patient gets :func:`patient_seed` (cohort seed, id). Drawn and
        recorded when None (a restart reuses the recorded one).
    cores:
        Cores per fit (chains run in parallel up to this); keep 1 with one-thread
        workers. PyMC's own sampler needs ``cores=1`` on dask workers (daemon processes
        cannot start the processes it would use for parallel chains).
    truth:
        True parameters (columns patient, name, value) of synthetic patients: added to
        each patient's summary and as ``<param>_true`` columns.
    plot:
        Also write ``fit.png`` per patient.
    progress:
        Show a rich progress bar (on stderr).
    log:
        Called with one line per step and per finished patient.
    **fit_options:
        Passed on to :func:`fit` (``target_accept``, ``low_rank``, ``history_days``,
        ``prior_sd``, ``sigma``, ``params``, solver options).
    """
    from carthema.data.patients import select_patients
    from carthema.fitting.sampling.settings import RUN_FIELDS, run_args

    t_start = time.perf_counter()
    say = log or (lambda _msg: None)
    out = Path(out)
    given = {**run_args(locals()), **run_args(fit_options), "cores": max(1, int(cores))}
    run = _check_settings(given, components, seed, scheduler, workers)
    ids = select_patients(observations, patients, order="table", duplicates="drop")
    seed_given = seed is not None
    settings = _cohort_settings(run, components, free, seed, fit_options, plot)
    # What each patient's fit is given besides the run settings (target_accept and
    # low_rank are run settings, recorded among the fit options of cohort.json).
    opts = {k: v for k, v in settings["fit_options"].items() if k not in RUN_FIELDS}
    probe_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    # One run per folder: a second run is refused with the holder's pid (a lock left
    # by a killed run is taken over).
    with FolderLock(out, "fit-cohort"):
        settings = write_manifest(out, settings, seed_given)
        run = run.with_seed(settings["seed"])  # the recorded seed, on a restart
        rows, todo, skipped = _plan(out, ids, settings["seed"], seed_given, say)
        paths = write_table(out, cohort_table(list(rows.values())))
        paths["manifest"] = out / MANIFEST
        fitted: list[str] = []
        failed: list[str] = []
        timings: dict[str, float] = {"startup_s": 0.0, "fit_s": 0.0}
        if todo:
            tasks = _patient_tasks(observations, events, truth)
            submit = (tasks, settings, run, opts)
            fitted, failed = _fit_on_cluster(
                out, todo, submit, rows, (scheduler, workers), timings, progress, say
            )
        table = cohort_table(list(rows.values()))
        paths.update(write_table(out, table))
        paths.update(_write_vpc(out, table, settings, say))
        timings["total_s"] = time.perf_counter() - t_start
        return CohortResult(
            table=table,
            out=out,
            paths=paths,
            fitted=fitted,
            skipped=skipped,
            failed=failed,
            settings={k: settings[k] for k in (*RESULT_SETTINGS, "cores")},
            timings=timings,
        )


def _check_settings(
    given: Mapping[str, Any], components: str, seed: int | None, scheduler: Any, workers: int | None
) -> RunSettings:
    """The run settings, validated once for every patient: a bad one stops the run before
    any fit (the seed is drawn later; a worker's fit takes the settings as they are)."""
    from carthema.fitting.sampling.samplers import SAMPLERS
    from carthema.fitting.sampling.settings import RunSettings

    run = RunSettings.of(None, SAMPLERS, components, {**given, "seed": 0 if seed is None else seed})
    _check_cluster_options(scheduler, workers)
    return run


def _cohort_settings(
    run: RunSettings,
    components: str,
    free: str | Iterable[str] | None,
    seed: int | None,
    fit_options: Mapping[str, Any],
    plot: bool,
) -> dict[str, Any]:
    """The settings cohort.json records (a seed drawn when None)."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] % (2**31))
    return {
        "components": components,
        "free": _normalise_free(free),
        "sampler": run.sampler,
        "draws": run.draws,
        "tune": run.tune,
        "chains": run.chains,
        "seed": int(seed),
        "init": run.init,
        "fit_options": {k: v for k, v in sorted(fit_options.items())},
        "cores": run.cores,
        "plot": bool(plot),
    }


def _plan(
    out: Path, ids: list[str], seed: int, seed_given: bool, say: Callable[[str], None]
) -> tuple[dict[str, dict], list[str], list[str]]:
    """Say the seed, and which patients are done and which to fit: (rows, todo, skipped)
    as :func:`patient_rows` gives them."""
    drawn = "" if seed_given else " (drawn; recorded in cohort.json)"
    say(f"cohort seed {seed}{drawn}")
    rows, todo, skipped = patient_rows(out, ids)
    say(
        f"{len(ids)} patient(s): {len(skipped)} already done, {len(todo)} to fit"
        + (f" ({', '.join(todo[:10])}{', ...' if len(todo) > 10 else ''})" if todo else "")
    )
    return rows, todo, skipped


def _fit_on_cluster(
    out: Path,
    todo: list[str],
    submit: tuple[_PatientTasks, Mapping[str, Any], RunSettings, Mapping[str, Any]],
    rows: dict[str, dict],
    cluster: tuple[Any, int | None],
    timings: dict[str, Any],
    progress: bool,
    say: Callable[[str], None],
) -> tuple[list[str], list[str]]:
    """Start (or connect to) the ``cluster`` (scheduler, workers), fit every patient of
    ``todo`` (``submit``: tasks, settings, run and fit options, as :func:`_submit` takes
    them) and collect them into ``rows``; records the startup and fit times and the
    workers in ``timings``. Returns (fitted, failed) patients."""
    scheduler, workers = cluster
    tasks, settings, run, opts = submit
    fitted: list[str] = []
    failed: list[str] = []
    say(f"starting {cluster_name(scheduler)}")
    t0 = time.perf_counter()
    with cluster_client(scheduler, workers, settings["cores"]) as client:
        timings["startup_s"] = time.perf_counter() - t0
        n_workers = count_workers(client)
        timings["workers"] = n_workers
        say(
            f"{n_workers} worker(s) connected"
            if n_workers
            else "no workers connected yet: waiting for `dask worker` processes"
        )
        t_fit = time.perf_counter()
        futures = _submit(client, out, todo, tasks, settings, run, opts)
        for pid, row in _collect(out, futures, rows, settings, progress, say):
            (fitted if row["status"] == "ok" else failed).append(pid)
        timings["fit_s"] = time.perf_counter() - t_fit
    return fitted, failed


def _check_cluster_options(scheduler: Any, workers: int | None) -> None:
    """``workers`` is at least 1 and applies to the local cluster only."""
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if workers is not None and isinstance(scheduler, str) and scheduler:
        raise InputError(
            "--workers applies to the local cluster only",
            fix="leave out --workers with --scheduler (start workers with `dask worker`)",
        )


@dataclass
class _PatientTasks:
    """Each patient's own tables, as the tasks send them to the workers."""

    observations: dict[str, pd.DataFrame]
    events: dict[str, pd.DataFrame]
    no_events: pd.DataFrame | None  # for a patient without events (None: no table)
    truth: dict[str, dict[str, float]]  # true parameters of synthetic patients


def _patient_tasks(
    observations: pd.DataFrame, events: pd.DataFrame | None, truth: pd.DataFrame | None
) -> _PatientTasks:
    """Split the cohort's tables by patient."""
    truth_by: dict[str, dict[str, float]] = {}
    if truth is not None and len(truth):
        for pid, g in truth.groupby(truth["patient"].astype(str)):
            truth_by[str(pid)] = dict(
                zip(g["name"].astype(str), g["value"].astype(float), strict=True)
            )
    obs_by = {str(k): g for k, g in observations.groupby(observations["patient"].astype(str))}
    ev_by: dict[str, pd.DataFrame] = {}
    if events is not None and len(events) and "patient" in events.columns:
        ev_by = {str(k): g for k, g in events.groupby(events["patient"].astype(str))}
    return _PatientTasks(obs_by, ev_by, None if events is None else events.iloc[0:0], truth_by)


def _submit(
    client: Any,
    out: Path,
    todo: list[str],
    tasks: _PatientTasks,
    settings: Mapping[str, Any],
    run: RunSettings,
    opts: Mapping[str, Any],
) -> dict[Any, str]:
    """One :func:`fit_patient_task` per patient to fit, its folder prepared first, with
    the cohort's ``run`` settings under the patient's own seed (:func:`patient_seed`) and
    the fit options ``opts``; returns future -> patient."""
    futures = {}
    for pid in todo:
        prepare_folder(out / "patients" / patient_folder(pid))
        fut = client.submit(
            fit_patient_task,
            tasks.observations[pid],
            tasks.events.get(pid, tasks.no_events),
            pid,
            run.with_seed(patient_seed(run.seed, pid)),
            components=settings["components"],
            free=settings["free"],
            plot=settings["plot"],
            truth=tasks.truth.get(pid),
            options=opts,
            key=f"carthema-fit-{patient_folder(pid)}-{os.getpid()}-{time.time_ns()}",
            pure=False,
            retries=0,
        )
        futures[fut] = pid
    return futures


def _collect(
    out: Path,
    futures: Mapping[Any, str],
    rows: dict[str, dict],
    settings: Mapping[str, Any],
    progress: bool,
    say: Callable[[str], None],
) -> Iterator[tuple[str, dict]]:
    """As each fit finishes: commit its patient folder, update ``rows`` and rewrite the
    cohort table (so a killed run leaves a current table), say one line; yields
    (patient, row). A task that raised (e.g. its worker died) is a failed patient."""
    from distributed import as_completed

    with _progress(progress, len(futures)) as (advance, print_line):
        emit = print_line if progress else say
        for k, fut in enumerate(as_completed(futures), start=1):
            pid = futures[fut]
            try:
                payload = fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. the worker died
                base = {
                    "patient": pid,
                    "sampler": settings["sampler"],
                    "components": settings["components"],
                    "seed": patient_seed(settings["seed"], pid),
                }
                payload = failed_row(base, exc, float("nan"))
            fut.release()
            commit_patient(out / "patients" / patient_folder(pid), payload)
            row = payload["row"]
            rows[pid] = row
            write_table(out, cohort_table(list(rows.values())))
            emit(f"[{k}/{len(futures)}] {_describe(row)}")
            advance()
            yield pid, row


#: Fitted patients a pooled VPC needs (as a population fit).
VPC_MIN_PATIENTS = 3


def _write_vpc(out: Path, table: pd.DataFrame, settings: Mapping, say) -> dict[str, Path]:
    """``vpc.csv`` and ``vpc.png``: the prediction-corrected VPC of every fitted patient
    pooled (:func:`carthema.fitting.evaluation.vpc.cohort_vpc_from_folders`), each file
    written under a temporary name and renamed; with fewer than :data:`VPC_MIN_PATIENTS` fitted
    patients none is written and the reason is said."""
    from carthema.fitting.evaluation.vpc import cohort_vpc_from_folders, plot_vpc, write_vpc_csv

    ok = [str(p) for p in table.loc[table["status"] == "ok", "patient"]]
    if len(ok) < VPC_MIN_PATIENTS:
        say(f"no VPC: {len(ok)} fitted patient(s), a pooled VPC needs {VPC_MIN_PATIENTS}")
        return {}
    say(f"prediction-corrected VPC of {len(ok)} patients (vpc.csv, vpc.png)")
    opts = dict(settings["fit_options"])
    solver = {k: opts[k] for k in ("rtol", "atol", "max_steps", "method") if k in opts}
    vpc = cohort_vpc_from_folders(
        [out / "patients" / patient_folder(p) for p in ok],
        history_days=float(opts.get("history_days", 30.0)),
        seed=int(settings["seed"]),
        **solver,
    )
    paths = {"vpc_csv": out / "vpc.csv", "vpc_png": out / "vpc.png"}
    with atomic_path(paths["vpc_csv"]) as tmp:
        write_vpc_csv(vpc, tmp)
    with atomic_path(paths["vpc_png"]) as tmp:
        plot_vpc(vpc, tmp)
    return paths


def _describe(row: Mapping[str, Any]) -> str:
    pid, wall = row["patient"], row.get("wall_s")
    took = f" in {wall:.1f} s" if isinstance(wall, float) and np.isfinite(wall) else ""
    if row["status"] != "ok":
        return f"{pid}: FAILED{took}: {row.get('error', '')}"
    bits = []
    if row.get("sampler") != "map":
        r = row.get("max_rhat")
        e = row.get("min_ess_bulk")
        bits.append(f"max R-hat {r:.3f}" if isinstance(r, float) else "max R-hat n/a")
        bits.append(f"min bulk ESS {e:.0f}" if isinstance(e, float) else "")
        bits.append(f"{row.get('divergences', 0)} divergences")
    n_w = row.get("n_warnings") or 0
    if n_w:
        bits.append(f"{n_w} warning(s)")
    return f"{pid}: ok{took}" + (f" ({', '.join(b for b in bits if b)})" if bits else "")


@contextlib.contextmanager
def _progress(show: bool, total: int):
    if not show:
        yield (lambda: None), (lambda _msg: None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    console = Console(stderr=True, highlight=False)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("fitting patients", total=total)
        yield (lambda: bar.advance(task)), (lambda msg: bar.console.print(msg, markup=False))
