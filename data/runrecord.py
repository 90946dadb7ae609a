"""The run record: what made an output folder, written as ``run.json`` in it.

A run record holds carthema's version and git commit (when the package runs from a git
checkout), the command line, every input file with its size and SHA-256, the seed, the
versions of the packages the numbers depend on, and the time. Every command that writes
an output folder writes one (:func:`write_run_record`), and the HTML report shows it as
its footer. ``run.json`` also marks a folder as a carthema output folder: a tool may
replace a folder that holds one, and only such a folder.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

#: File name of the run record inside an output folder.
RUN_JSON = "run.json"

#: Packages whose versions can change the numbers (solver, sampler, statistics).
PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "numba",
    "jax",
    "diffrax",
    "pymc",
    "pytensor",
    "nutpie",
    "arviz",
    "xarray",
    "matplotlib",
)


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    """Commit of the carthema checkout this code runs from (with ``+dirty`` when it has
    uncommitted changes), or None when it is not a git checkout or git is missing."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}+dirty" if dirty else rev


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


#: The command line of this run, as the CLI received it (set by ``carthema.cli.main``);
#: ``sys.argv`` when None.
COMMAND: list[str] | None = None


def set_command(argv: Iterable[str] | None) -> None:
    """Record the command line (``carthema`` and its arguments) for :func:`run_record`."""
    global COMMAND
    COMMAND = None if argv is None else ["carthema", *argv]


def _input(path: str | Path) -> dict:
    text = str(path)
    if text.startswith("example:"):
        from carthema.data.examples import example_path

        folder = example_path(text.split(":", 1)[1])
        return {
            "path": text,
            "files": [_input(p) for p in sorted(folder.glob("*.csv"))],
        }
    p = Path(path)
    if p.is_dir():
        return {"path": str(p.resolve()), "files": [_input(f) for f in sorted(p.glob("*.csv"))]}
    if not p.is_file():
        return {"path": str(p), "sha256": None, "note": "not found when the run was recorded"}
    return {"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": sha256(p)}


def run_record(
    inputs: Iterable[str | Path | None] = (),
    *,
    seed: int | None = None,
    argv: Iterable[str] | None = None,
    settings: Mapping | None = None,
    subcommand: str | None = None,
) -> dict:
    """The run record of this process: version, git commit, command line (``argv``,
    default ``sys.argv``), ``inputs`` (files, folders or ``example:NAME``; each with
    SHA-256), ``seed``, ``settings`` (anything else worth keeping), package versions,
    Python and platform, and the time (UTC, ISO 8601). ``subcommand`` names the
    ``carthema`` command whose output folder this is (the output-folder contract,
    :func:`carthema.data.atomic.check_out_folder`, recognises a command's own folder by
    it)."""
    from carthema import __version__

    return {
        "carthema_version": __version__,
        "subcommand": subcommand,
        "git_commit": git_commit(),
        "command": list(argv if argv is not None else COMMAND or sys.argv),
        "inputs": [_input(p) for p in inputs if p is not None],
        "seed": seed,
        "settings": dict(settings or {}),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_run_record(folder: str | Path, record: Mapping | None = None, **kw) -> Path:
    """Write ``folder/run.json`` (``record``, else :func:`run_record` with ``kw``) and
    return its path. Values JSON cannot hold become strings; NaN becomes null."""
    from carthema.data.jsonsafe import dumps

    rec = dict(record) if record is not None else run_record(**kw)
    path = Path(folder) / RUN_JSON
    path.write_text(dumps(rec), encoding="utf-8")
    return path


def read_run_record(folder: str | Path) -> dict | None:
    """``folder/run.json`` as a dict, or None when the folder has none (or it is not
    JSON)."""
    try:
        return json.loads((Path(folder) / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
