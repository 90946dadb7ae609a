"""The task of a cohort fit that runs on a dask worker: one patient's fit
(:func:`fit_patient_task`, with its seed from :func:`patient_seed`), returned as the table
row and the bytes of the patient's files, never raising for a failed fit. The cohort
(:func:`carthema.fitting.workflows.cohort.fit_cohort`) submits it and writes what comes
back; workers write nothing to the output folder."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from carthema.data.errors import InputError

if TYPE_CHECKING:
    from carthema.fitting.sampling.settings import RunSettings


def patient_seed(cohort_seed: int, patient: str) -> int:
    """Seed of one patient: a hash of the cohort seed and the patient id (0 <= s < 2**31)."""
    digest = hashlib.sha256(f"carthema-cohort:{int(cohort_seed)}:{patient}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31)


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
    run: RunSettings,
    *,
    components: str,
    free: list[str] | None = None,
    plot: bool = False,
    truth: Mapping[str, float] | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict:
    """Fit one patient (runs on a dask worker); never raises for a failed fit.

    ``run``: the cohort's run settings (validated by the cohort before any task) with
    this patient's seed; ``options``: the other keywords of :func:`fit` (solver options,
    ``history_days``, ...). Returns ``{"status": "ok", "row": ..., "files": {name:
    bytes}}`` or ``{"status": "failed", "row": ..., "traceback": str}``.
    """
    from carthema.fitting.sampling.samplers import fit

    t0 = time.perf_counter()
    base = {
        "patient": patient,
        "sampler": run.sampler,
        "components": components,
        "seed": int(run.seed),
        "worker": _worker_name(),
    }
    try:
        result = fit(
            observations,
            events,
            patient,
            components=components,
            free=free,
            truth=truth,
            progress=False,
            run=run,
            **dict(options or {}),
        )
        with tempfile.TemporaryDirectory(prefix="carthema-cohort-") as tmp:
            paths = result.save(tmp, plot=plot)
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
        return failed_row(base, exc, time.perf_counter() - t0, traceback.format_exc())


def failed_row(base: dict, exc: BaseException, wall: float, tb: str | None = None) -> dict:
    """The payload of a failed patient: its row (status, one-line error, wall time) and
    the traceback (or the error) for ``error.txt``."""
    text = exc.message if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    row = {**base, "status": "failed", "error": text, "wall_s": wall}
    return {"status": "failed", "row": row, "traceback": (tb or text).rstrip() + "\n"}
