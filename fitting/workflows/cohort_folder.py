"""A cohort's patient folders: what "done" means and how a result is committed.

Every file is written to a temporary name in the same folder, fsynced and renamed over
its final name; a patient is done when ``done.json`` (written last) parses and lists
files that all exist with the sizes it records (:func:`patient_state`). A failed fit
leaves ``failed.json`` and ``error.txt``. The layout is in
:mod:`carthema.fitting.workflows.cohort`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from carthema.data.atomic import TMP_MARK, write_atomic

#: Files a successful patient folder holds (``unused_observations.csv`` and ``fit.png``
#: when they apply), besides ``done.json``.
DONE = "done.json"
FAILED = "failed.json"
ERROR = "error.txt"
_TMP_RE = re.compile(re.escape(TMP_MARK))


def patient_folder(patient: str) -> str:
    """Folder name of a patient: the id when it is a safe file name, else a cleaned id
    plus a short hash (so two ids never share a folder)."""
    pid = str(patient)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", pid).strip(".") or "patient"
    if safe == pid and len(pid) <= 100:
        return pid
    return f"{safe[:80]}-{hashlib.sha256(pid.encode()).hexdigest()[:8]}"


def write_file(path: Path, data: bytes | str) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over ``path``."""
    write_atomic(path, data, fsync=True)


def json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def clean_floats(d: Mapping[str, Any]) -> dict[str, Any]:
    """NaN/inf -> None so that the markers are plain JSON."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float | np.floating) and not np.isfinite(v):
            v = None
        out[k] = v
    return out


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=json_default, allow_nan=False) + "\n"


def read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def patient_state(pdir: Path) -> tuple[str, dict | None]:
    """``("done", row)``, ``("failed", row)`` or ``("missing", None)`` of a patient folder.

    Done only when ``done.json`` parses and lists files that all exist with the recorded
    sizes; anything else (no marker, a truncated marker, a missing or resized file, only
    temporary files) is not done.
    """
    marker = read_json(pdir / DONE)
    if marker is not None and marker.get("status") == "ok":
        files = marker.get("files")
        if isinstance(files, dict) and files:
            try:
                intact = all((pdir / n).stat().st_size == int(s) for n, s in files.items())
            except (OSError, TypeError, ValueError):
                intact = False
            if intact and isinstance(marker.get("row"), dict):
                return "done", marker["row"]
    failed = read_json(pdir / FAILED)
    if failed is not None and isinstance(failed.get("row"), dict):
        return "failed", failed["row"]
    return "missing", None


def prepare_folder(pdir: Path) -> None:
    """Before (re)fitting a patient: drop temporary files and a stale done marker."""
    pdir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (pdir / DONE).unlink()
    for p in pdir.iterdir():
        if _TMP_RE.search(p.name) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def commit_patient(pdir: Path, payload: dict) -> None:
    """Write one patient's result (client side); the marker goes last."""
    prepare_folder(pdir)
    row = clean_floats(payload["row"])
    finished = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    row["finished"] = finished
    if payload["status"] == "ok":
        sizes = {}
        for name, data in payload["files"].items():
            write_file(pdir / name, data)
            sizes[name] = len(data)
        for stale in (FAILED, ERROR):
            with contextlib.suppress(FileNotFoundError):
                (pdir / stale).unlink()
        marker = {"patient": row["patient"], "status": "ok", "files": sizes, "row": row}
        write_file(pdir / DONE, dumps_json(marker))
    else:
        write_file(pdir / ERROR, payload.get("traceback") or row.get("error") or "")
        marker = {"patient": row["patient"], "status": "failed", "row": row}
        write_file(pdir / FAILED, dumps_json(marker))
    payload["row"] = row
