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

The patient-folder protocol (markers, atomic writes) is in :mod:`.cohort_folder`. This
module stays whole (about 800 lines) because its parts are the one run: the worker task,
the cluster it runs on, the submit/collect loop and the pooled VPC share the settings
and the folder, and the tests drive them through :func:`fit_cohort`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distributed.diagnostics.plugin import WorkerPlugin

from carthema.data.atomic import (
    FolderLock,
    atomic_path,
    probe_output_folder,
)
from carthema.data.errors import InputError
from carthema.fitting.workflows.cohort_folder import (
    commit_patient,
    dumps_json,
    json_default,
    patient_folder,
    patient_state,
    prepare_folder,
    read_json,
    write_file,
)

MANIFEST = "cohort.json"
#: Table columns before the per-parameter ones.
BASE_COLUMNS = (
    "patient",
    "status",
    "error",
    "sampler",
    "components",
    "seed",
    "n_observations",
    "max_rhat",
    "min_ess_bulk",
    "min_ess_tail",
    "divergences",
    "min_ebfmi",
    "maxdepth_hits",
    "n_warnings",
    "warnings",
    "wall_s",
    "fit_s",
    "worker",
    "finished",
)
#: Settings that change the result; a restart in the same folder must repeat them.
RESULT_SETTINGS = (
    "components",
    "free",
    "sampler",
    "draws",
    "tune",
    "chains",
    "seed",
    "init",
    "fit_options",
)
#: How long to keep trying to reach a scheduler given by address.
CONNECT_TIMEOUT = "15s"


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
# Seeds (folder names, atomic writes and markers: cohort_folder.py)
# ---------------------------------------------------------------------------------
def patient_seed(cohort_seed: int, patient: str) -> int:
    """Seed of one patient: a hash of the cohort seed and the patient id (0 <= s < 2**31)."""
    digest = hashlib.sha256(f"carthema-cohort:{int(cohort_seed)}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31)


# ---------------------------------------------------------------------------------
# The task that runs on a worker
# ---------------------------------------------------------------------------------
def _summary_columns(summary: pd.DataFrame) -> dict[str, float]:
    out: dict[str, float] = {}
    for _, r in summary.iterrows():
        name = str(r["name"])
        for q in ("median", "q05", "q95"):
            v = r.get(q)
            out[f"{name}_{q}"] = float(v) if v is not None and v == v else np.nan
        if "true" in summary.columns:
            t = r.get("true")
            if t is not None and t == t:
                out[f"{name}_true"] = float(t)
    return out


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fit_patient_task(
    observations: pd.DataFrame,
    events: pd.DataFrame | None,
    patient: str,
    settings: Mapping[str, Any],
    seed: int,
    truth: Mapping[str, float] | None = None,
) -> dict:
    """Fit one patient (runs on a dask worker); never raises for a failed fit.

    Returns ``{"status": "ok", "row": ..., "files": {name: bytes}}`` or
    ``{"status": "failed", "row": ..., "traceback": str}``.
    """
    from carthema.fitting.sampling.samplers import fit
    from carthema.fitting.sampling.settings import RunSettings

    t0 = time.perf_counter()
    base = {
        "patient": patient,
        "sampler": settings["sampler"],
        "components": settings["components"],
        "seed": int(seed),
        "worker": _worker_name(),
    }
    try:
        opts = dict(settings["fit_options"])
        # Validated by fit_cohort before any task: the fit takes them as they are.
        run = RunSettings(
            sampler=settings["sampler"],
            draws=int(settings["draws"]),
            tune=int(settings["tune"]),
            chains=int(settings["chains"]),
            seed=int(seed),
            cores=int(settings["cores"]),
            init=settings["init"],
            target_accept=float(opts.pop("target_accept", 0.8)),
            low_rank=bool(opts.pop("low_rank", True)),
        )
        result = fit(
            observations,
            events,
            patient,
            components=settings["components"],
            free=settings["free"],
            truth=truth,
            progress=False,
            run=run,
            **opts,
        )
        with tempfile.TemporaryDirectory(prefix="carthema-cohort-") as tmp:
            paths = result.save(tmp, plot=settings["plot"])
            report = Path(tmp) / "report.txt"
            report.write_text("\n".join(result.report()) + "\n")
            paths["report"] = report
            files = {Path(p).name: Path(p).read_bytes() for p in paths.values()}
        diag = result.diagnostics.as_dict()
        row = {
            **base,
            "status": "ok",
            "error": "",
            "n_observations": int(result.fit_model.data.n),
            "max_rhat": diag["max_rhat"],
            "min_ess_bulk": diag["min_ess_bulk"],
            "min_ess_tail": diag["min_ess_tail"],
            "divergences": diag["divergences"],
            "min_ebfmi": diag["min_ebfmi"],
            "maxdepth_hits": diag["maxdepth_hits"],
            "n_warnings": len(diag["warnings"]),
            "warnings": " | ".join(diag["warnings"]),
            "wall_s": time.perf_counter() - t0,
            "fit_s": float(result.timings.get("total_s", np.nan)),
            **_summary_columns(result.summary()),
        }
        return {"status": "ok", "row": row, "files": files}
    except Exception as exc:  # noqa: BLE001 - a failed patient must not stop the cohort
        return _failed(base, exc, time.perf_counter() - t0, traceback.format_exc())


def _failed(base: dict, exc: BaseException, wall: float, tb: str | None = None) -> dict:
    text = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    row = {**base, "status": "failed", "error": text, "wall_s": wall}
    return {"status": "failed", "row": row, "traceback": (tb or text).rstrip() + "\n"}


# ---------------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _client(scheduler: Any, workers: int | None, cores: int) -> Iterator[Any]:
    from distributed import Client

    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # an existing distributed.Client: the caller owns it
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the dask scheduler at {scheduler} ({exc})",
                fix="start one with `dask scheduler` and workers with `dask worker ADDRESS "
                "--nthreads 1`, or leave out --scheduler to use a local cluster",
            ) from None
        with client:
            yield client
        return
    with local_client(workers, cores) as client:
        yield client


@contextlib.contextmanager
def local_client(workers: int | None = None, cores: int = 1) -> Iterator[Any]:
    """A :class:`distributed.Client` on a new LocalCluster, closed on exit.

    ``workers`` processes (default ``cpu_count // cores``) with one thread each; each
    fit in a worker may use ``cores`` cores (``NUMBA_NUM_THREADS``).
    """
    from distributed import Client, LocalCluster

    n = int(workers) if workers else max(1, (os.cpu_count() or 1) // max(1, int(cores)))
    with (
        LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"NUMBA_NUM_THREADS": str(max(1, int(cores)))},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(FastExit(), name=FastExit.name)
        yield client


def _exit_now() -> None:  # pragma: no cover - runs in worker processes at exit
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(0)


class FastExit(WorkerPlugin):
    """Worker plugin: the worker process skips interpreter finalisation at exit.

    A worker that has loaded PyMC, PyTensor and numba-compiled solvers takes seconds to
    finalise the interpreter after the worker itself has closed (tearing down compiled
    code), longer than the nanny's 4 s grace period on a busy machine; the nanny then
    kills it and logs a warning. Only used for the local cluster's own processes: the
    handler is registered last, so it runs first (after the worker has closed and removed
    its scratch folder) and ends the process.
    """

    name = "carthema-fast-exit"

    def setup(self, worker: Any) -> None:
        import atexit

        atexit.register(_exit_now)


def _n_workers(client: Any) -> int:
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - informational only
        return 0


# ---------------------------------------------------------------------------------
# The cohort
# ---------------------------------------------------------------------------------
def _normalise_free(free: str | Iterable[str] | None) -> list[str] | None:
    if free is None:
        return None
    items = free.split(",") if isinstance(free, str) else list(free)
    names = [str(s).strip() for s in items if str(s).strip()]
    return names or None


def _check_manifest(out: Path, settings: dict, seed_given: bool) -> dict:
    """Reuse the recorded seed when none is given; refuse other result settings."""
    path = out / MANIFEST
    if not path.exists():
        return settings
    old = read_json(path)
    if old is None or not isinstance(old.get("settings"), dict):
        return settings  # unreadable manifest: it is rewritten below
    prev = old["settings"]
    if not seed_given and prev.get("seed") is not None:
        settings = {**settings, "seed": int(prev["seed"])}
    diff = [k for k in RESULT_SETTINGS if _jsonable(prev.get(k)) != _jsonable(settings.get(k))]
    if diff:
        what = ", ".join(f"{k} {prev.get(k)!r} -> {settings.get(k)!r}" for k in diff)
        raise InputError(
            f"{out} holds a cohort fitted with other settings ({what})",
            file=str(path),
            fix="repeat the first run's settings to resume it, or write to another --out "
            "folder (or delete this one to start again)",
        )
    return settings


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=json_default))


def _table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in BASE_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    rest = [c for c in df.columns if c not in BASE_COLUMNS]
    df = df[list(BASE_COLUMNS) + rest]
    for c in ("error", "warnings", "worker", "finished", "sampler", "components"):
        df[c] = df[c].where(df[c].notna(), "").astype(str)
    return df


def _write_table(out: Path, df: pd.DataFrame) -> dict[str, Path]:
    paths = {"table_parquet": out / "cohort.parquet", "table_csv": out / "cohort.csv"}
    with atomic_path(paths["table_parquet"]) as tmp:
        df.to_parquet(tmp, index=False)
    write_file(paths["table_csv"], df.to_csv(index=False))
    return paths


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

    t_start = time.perf_counter()
    say = log or (lambda _msg: None)
    out = Path(out)
    _check_cohort_options(components, sampler, draws, tune, chains, seed, cores, init)
    _check_cluster_options(scheduler, workers)
    ids = select_patients(observations, patients, order="table", duplicates="drop")
    seed_given = seed is not None
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0] % (2**31))
    settings = {
        "components": components,
        "free": _normalise_free(free),
        "sampler": sampler,
        "draws": int(draws),
        "tune": int(tune),
        "chains": int(chains),
        "seed": int(seed),
        "init": init,
        "fit_options": {k: v for k, v in sorted(fit_options.items())},
        "cores": max(1, int(cores)),
        "plot": bool(plot),
    }
    probe_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    # One run per folder: a second run is refused with the holder's pid (a lock left
    # by a killed run is taken over).
    with FolderLock(out, "fit-cohort"):
        settings = _write_manifest(out, settings, seed_given)
        drawn = "" if seed_given else " (drawn; recorded in cohort.json)"
        say(f"cohort seed {settings['seed']}{drawn}")
        rows, todo, skipped = _patient_rows(out, ids)
        say(
            f"{len(ids)} patient(s): {len(skipped)} already done, {len(todo)} to fit"
            + (f" ({', '.join(todo[:10])}{', ...' if len(todo) > 10 else ''})" if todo else "")
        )
        paths = _write_table(out, _table(list(rows.values())))
        paths["manifest"] = out / MANIFEST
        fitted: list[str] = []
        failed: list[str] = []
        timings: dict[str, float] = {"startup_s": 0.0, "fit_s": 0.0}
        if todo:
            tasks = _patient_tasks(observations, events, truth)
            say(f"starting {_cluster_name(scheduler)}")
            t0 = time.perf_counter()
            with _client(scheduler, workers, settings["cores"]) as client:
                timings["startup_s"] = time.perf_counter() - t0
                n_workers = _n_workers(client)
                timings["workers"] = n_workers
                say(
                    f"{n_workers} worker(s) connected"
                    if n_workers
                    else "no workers connected yet: waiting for `dask worker` processes"
                )
                t_fit = time.perf_counter()
                futures = _submit(client, out, todo, tasks, settings)
                for pid, row in _collect(out, futures, rows, settings, progress, say):
                    (fitted if row["status"] == "ok" else failed).append(pid)
                timings["fit_s"] = time.perf_counter() - t_fit
        table = _table(list(rows.values()))
        paths.update(_write_table(out, table))
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


def _check_cohort_options(
    components: str,
    sampler: str,
    draws: int,
    tune: int,
    chains: int,
    seed: int | None,
    cores: int,
    init: str,
) -> None:
    """Validate the run settings once for every patient: a bad setting stops the run
    before any fit."""
    from carthema.fitting.sampling.samplers import SAMPLERS
    from carthema.fitting.sampling.settings import RunSettings

    RunSettings.validated(
        SAMPLERS,
        components,
        sampler=sampler,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=0 if seed is None else seed,
        cores=max(1, int(cores)),
        init=init,
    )


def _check_cluster_options(scheduler: Any, workers: int | None) -> None:
    """``workers`` is at least 1 and applies to the local cluster only."""
    if workers is not None and int(workers) < 1:
        raise InputError(f"workers must be at least 1, got {workers}")
    if workers is not None and isinstance(scheduler, str) and scheduler:
        raise InputError(
            "--workers applies to the local cluster only",
            fix="leave out --workers with --scheduler (start workers with `dask worker`)",
        )


def _write_manifest(out: Path, settings: dict, seed_given: bool) -> dict:
    """Check ``settings`` against an earlier run's manifest (its seed is reused when none
    is given), write ``cohort.json`` (keeping its creation time) and return the
    settings in force."""
    settings = _check_manifest(out, settings, seed_given)
    manifest = {
        "settings": {k: settings[k] for k in RESULT_SETTINGS},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "layout": "patients/<id>/: fit folder (posterior.nc, fit.json, ...), report.txt, "
        "done.json (written last)",
    }
    old = read_json(out / MANIFEST)
    if old is not None and isinstance(old.get("created"), str):
        manifest["created"] = old["created"]
    write_file(out / MANIFEST, dumps_json(manifest))
    return settings


def _patient_rows(out: Path, ids: list[str]) -> tuple[dict[str, dict], list[str], list[str]]:
    """The table rows by patient as the folder holds them (patients done by earlier runs
    in this folder, also those not asked for now, stay in the table), the patients to
    fit (not done, or failed: failures are retried) and those already done."""
    rows: dict[str, dict] = {}
    todo: list[str] = []
    skipped: list[str] = []
    for pid in ids:
        state, row = patient_state(out / "patients" / patient_folder(pid))
        if state == "done":
            rows[pid] = row
            skipped.append(pid)
        else:
            todo.append(pid)
            rows[pid] = row if row is not None else {"patient": pid, "status": "pending"}
            if state == "failed":
                rows[pid] = {**row, "status": "pending"}
    pdirs = out / "patients"
    for pdir in sorted(pdirs.iterdir()) if pdirs.exists() else []:
        state, row = patient_state(pdir)
        if row is not None and str(row.get("patient")) not in rows:
            rows[str(row["patient"])] = row
    return rows, todo, skipped


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


def _cluster_name(scheduler: Any) -> str:
    """Where the fits run, for the log."""
    if isinstance(scheduler, str) and scheduler:
        return f"the dask scheduler at {scheduler}"
    return "the given dask client" if scheduler is not None else "a local dask cluster"


def _submit(
    client: Any, out: Path, todo: list[str], tasks: _PatientTasks, settings: Mapping[str, Any]
) -> dict[Any, str]:
    """One :func:`fit_patient_task` per patient to fit, its folder prepared first;
    returns future -> patient."""
    futures = {}
    for pid in todo:
        prepare_folder(out / "patients" / patient_folder(pid))
        fut = client.submit(
            fit_patient_task,
            tasks.observations[pid],
            tasks.events.get(pid, tasks.no_events),
            pid,
            settings,
            patient_seed(settings["seed"], pid),
            tasks.truth.get(pid),
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
                payload = _failed(base, exc, float("nan"))
            fut.release()
            commit_patient(out / "patients" / patient_folder(pid), payload)
            row = payload["row"]
            rows[pid] = row
            _write_table(out, _table(list(rows.values())))
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
