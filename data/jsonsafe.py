"""Valid JSON from results that hold numpy numbers and NaN.

``json.dumps`` writes ``NaN`` and ``Infinity``, which are not JSON (RFC 8259) and which
strict readers (browsers' ``JSON.parse``, jq, R's jsonlite in strict mode) refuse. Every
JSON file carthema writes goes through :func:`dumps`: a missing or undefined number is
``null``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def clean(x: Any) -> Any:
    """``x`` with numpy scalars and arrays as Python values, NaN and infinities as None,
    tuples as lists, paths as strings; other objects unknown to JSON as ``str(x)``."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set):
        return [clean(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return str(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return clean(float(x))
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    return str(x)


def dumps(x: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``x`` (:func:`clean` first; ``allow_nan=False`` as a guard)."""
    return json.dumps(clean(x), indent=indent, allow_nan=False)
