"""The cohort's own files: the manifest (``cohort.json``: the settings a restart must
repeat, :func:`write_manifest`), the table of one row per patient (``cohort.parquet``,
``cohort.csv``: :func:`cohort_table`, :func:`write_table`) and the rows as the patient
folders hold them (:func:`patient_rows`: which patients are done, which to fit)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carthema.data.atomic import atomic_path
from carthema.data.errors import InputError
from carthema.fitting.workflows.cohort_folder import (
    dumps_json,
    json_default,
    patient_folder,
    patient_state,
    read_json,
    write_file,
)

#: The manifest's file name.
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


def check_manifest(out: Path, settings: dict, seed_given: bool) -> dict:
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


def cohort_table(rows: list[dict]) -> pd.DataFrame:
    """The cohort table of the patients' rows: :data:`BASE_COLUMNS` first (missing ones
    empty), then the per-parameter columns."""
    df = pd.DataFrame(rows)
    for c in BASE_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    rest = [c for c in df.columns if c not in BASE_COLUMNS]
    df = df[list(BASE_COLUMNS) + rest]
    for c in ("error", "warnings", "worker", "finished", "sampler", "components"):
        df[c] = df[c].where(df[c].notna(), "").astype(str)
    return df


def write_table(out: Path, df: pd.DataFrame) -> dict[str, Path]:
    """Write ``cohort.parquet`` and ``cohort.csv`` (each atomically); their paths."""
    paths = {"table_parquet": out / "cohort.parquet", "table_csv": out / "cohort.csv"}
    with atomic_path(paths["table_parquet"]) as tmp:
        df.to_parquet(tmp, index=False)
    write_file(paths["table_csv"], df.to_csv(index=False))
    return paths


def write_manifest(out: Path, settings: dict, seed_given: bool) -> dict:
    """Check ``settings`` against an earlier run's manifest (its seed is reused when none
    is given), write ``cohort.json`` (keeping its creation time) and return the
    settings in force."""
    settings = check_manifest(out, settings, seed_given)
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


def patient_rows(out: Path, ids: list[str]) -> tuple[dict[str, dict], list[str], list[str]]:
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
