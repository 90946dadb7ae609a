"""Numba backend: one cached module per model (generated source + generic solver).

numba's ``cache=True`` cannot cache a jitted function that takes other jitted functions
as arguments, nor a closure: both are recompiled in every new process. So instead of
passing the model's functions to a generic solver, :func:`load_numba_module` writes the
model's generated source followed by the text of ``_solver_template.py`` to one file in
the generated-file cache (:mod:`.gencache`, kind ``numba``),

    <cache_dir>/numba/<key>_<cache_key("numba", [joined text])>.py

and imports it under a unique module name. Inside that module the solver calls the
model functions as module globals, which numba caches on disk next to the file
(``__pycache__``). The template itself imports the model-independent kernels
(tableaux, step control, LU) from the ordinary module :mod:`.solver_kernels`; numba
does not notice when such a callee changes, so the key covers that module's text too
(and the code generator's, and carthema's version). Any change of the model source, the
template or the kernels changes the key, hence the file name, so a stale cache is never
picked up; an unchanged file is never rewritten (numba's index keys on its mtime).

The loaded module exposes ``solve``, ``solve_sens`` and ``solve_population`` (see the
docstring of ``_solver_template.py`` for signatures, event encoding, status codes and
the pre-dose output convention) next to the model's own names (``N_Y``, ``rhs``, ...).
"""

from __future__ import annotations

import re
import threading
import types
from pathlib import Path

import numpy as np

from .gencache import cache_dir, cache_key, generated_path, import_generated, source_text
from .solver_contract import NUMBA_METHODS, Status

__all__ = [
    "cache_dir",
    "load_numba_module",
    "module_path",
    "template_source",
    "kernels_source",
    "event_arrays",
    "STATUS_MESSAGES",
    "METHODS",
]

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_LOCK = threading.Lock()
_LOADED: dict[str, types.ModuleType] = {}

#: Meaning of the ``status`` returned by the solver functions (see ``Status``).
STATUS_MESSAGES = {int(s): s.message for s in Status if s != Status.SOLVER_FAILED}
#: ``method`` codes accepted by the solver functions.
METHODS = NUMBA_METHODS


def template_source() -> str:
    """Text of the generic solver template (read from disk, never imported)."""
    return source_text("template")


def kernels_source() -> str:
    """Text of :mod:`.solver_kernels`, which the generated module imports."""
    return source_text("kernels")


def _module_text(model_source: str) -> str:
    return (
        model_source.rstrip()
        + "\n\n\n# ==== generic solver: carthema/models/_solver_template.py ====\n"
        + template_source()
    )


def module_path(key: str, model_source: str) -> Path:
    """Where :func:`load_numba_module` keeps the module of ``model_source`` (nothing is
    written or compiled here)."""
    if not _KEY_RE.match(key):
        raise ValueError(f"invalid model key {key!r}: use [A-Za-z_][A-Za-z0-9_]*, <= 64 chars")
    return generated_path("numba", key, cache_key("numba", [_module_text(model_source)]))


def load_numba_module(key: str, model_source: str) -> types.ModuleType:
    """Return the compiled-on-demand numba module for one model.

    Parameters
    ----------
    key : str
        Short identifier of the model (``[A-Za-z_][A-Za-z0-9_]*``, at most 64
        characters), used in the file and module names only.
    model_source : str
        Generated model source following the contract in ``_solver_template.py``
        (module-level ``@njit(cache=True)`` functions ``rhs``, ``jac_y``, ...).

    Returns
    -------
    module : types.ModuleType
        A module holding the model's names and the solver's ``solve``,
        ``solve_sens`` and ``solve_population``. Functions compile on first call (or
        load from numba's on-disk cache). The same module object is returned for the
        same file within a process.

    Raises
    ------
    ValueError
        If ``key`` is not a valid identifier.
    """
    if not _KEY_RE.match(key):
        raise ValueError(f"invalid model key {key!r}: use [A-Za-z_][A-Za-z0-9_]*, <= 64 chars")
    text = _module_text(model_source)
    digest = cache_key("numba", [text])
    path = generated_path("numba", key, digest)
    memo = str(path.resolve())
    with _LOCK:
        mod = _LOADED.get(memo)
        if mod is not None:
            return mod
        mod = import_generated(path, text, f"_carthema_numba_{key}_{digest}")
        _LOADED[memo] = mod
        return mod


def event_arrays(
    ev_t=(), ev_kind=(), ev_target=(), ev_value=(), ev_scale=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coerce event columns to the contiguous dtypes the solver is compiled for.

    Returns ``(ev_t float64, ev_kind int64, ev_target int64, ev_value float64,
    ev_scale int64)``; ``ev_scale`` defaults to -1 (unscaled) for every event. Sorting
    is the caller's job (the solver returns status 4 for unsorted events).
    """
    t = np.ascontiguousarray(ev_t, dtype=np.float64).reshape(-1)
    n = t.shape[0]
    kind = np.ascontiguousarray(ev_kind, dtype=np.int64).reshape(-1)
    target = np.ascontiguousarray(ev_target, dtype=np.int64).reshape(-1)
    value = np.ascontiguousarray(ev_value, dtype=np.float64).reshape(-1)
    if ev_scale is None:
        scale = np.full(n, -1, dtype=np.int64)
    else:
        scale = np.ascontiguousarray(ev_scale, dtype=np.int64).reshape(-1)
    return t, kind, target, value, scale
