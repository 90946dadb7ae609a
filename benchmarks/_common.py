"""Helpers shared by the benchmark scripts: timing, machine description, output.

Nothing here imports carthema, so a benchmark can describe the machine before it
loads (and possibly compiles) anything.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def smoke_out(filename: str) -> Path:
    """``filename`` in a new temporary folder: where a ``--smoke`` run writes, so that it
    never replaces a measured result in ``benchmarks/results/``."""
    return Path(tempfile.mkdtemp(prefix="carthema-bench-")) / filename


def add_run_options(ap: Any, out_name: str, quick: str, smoke: str) -> None:
    """The options every benchmark has: ``--quick`` and ``--smoke`` (with their help
    texts) and ``--out`` (JSON file, default ``RESULTS_DIR / out_name``)."""
    ap.add_argument("--quick", action="store_true", help=quick)
    ap.add_argument("--smoke", action="store_true", help=smoke)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / out_name, help="JSON results file")


def run_header(benchmark: str, mode: str, packages: Sequence[str]) -> dict[str, Any]:
    """The first keys of a benchmark's JSON: its name, mode and :func:`machine_info`."""
    return {"benchmark": benchmark, "mode": mode, "machine": machine_info(packages)}


def run_mode(args: Any, out_name: str) -> str:
    """The run's mode from the ``--smoke`` and ``--quick`` flags of ``args``: "smoke",
    "quick" or "full". A smoke run whose ``args.out`` is still the default
    ``RESULTS_DIR / out_name`` is pointed at a temporary folder (:func:`smoke_out`)."""
    if args.smoke and args.out == RESULTS_DIR / out_name:
        args.out = smoke_out(out_name)
    return "smoke" if args.smoke else "quick" if args.quick else "full"


def time_calls(fn: Callable[[], Any], n: int) -> np.ndarray:
    """Wall time (seconds) of ``n`` separate calls of ``fn``; each call timed on its own."""
    out = np.empty(n)
    clock = time.perf_counter
    for i in range(n):
        t = clock()
        fn()
        out[i] = clock() - t
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)`` of one call."""
    t = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t


def summary(seconds: np.ndarray, unit: float = 1e6) -> dict[str, float | int]:
    """Median, quartiles and minimum of per-call times, in ``unit`` (default microseconds)."""
    s = np.asarray(seconds, dtype=float) * unit
    q25, q50, q75 = np.percentile(s, [25, 50, 75])
    return {
        "median": float(q50),
        "p25": float(q25),
        "p75": float(q75),
        "min": float(s.min()),
        "n_runs": int(s.size),
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(packages: Sequence[str]) -> dict[str, Any]:
    """CPU, OS, Python and package versions, date, and the load when the run started."""
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in packages},
        "load_average_at_start": load_average(),
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table with rich when it is installed, else aligned plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a carthema dependency
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        print(f"\n{title}")
        print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for r in rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
        return
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(str(c) for c in r))
    Console(width=max(130, len(title) + 4)).print(table)


def fmt_time(seconds: float | None) -> str:
    """Human-readable duration: us below 1 ms, ms below 1 s, else s."""
    if seconds is None or not np.isfinite(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(x: float | None) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:,.0f}x" if x >= 100 else f"{x:.1f}x"
