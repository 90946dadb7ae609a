"""The numba model module of a :class:`Model`: generated once, cached on disk.

The generated text is stored under the cache directory keyed by the hash of the
equations' source, so sympy runs only when the equations change; numba then caches
its machine code next to the joined model + solver module.
"""

from __future__ import annotations

import functools
from types import ModuleType

from ..data.atomic import write_atomic
from .codegen import numba_source, source_hash
from .model import Model
from .numba_backend import cache_dir, load_numba_module


@functools.cache
def numba_model(model: Model) -> ModuleType:
    """Compiled numba module (model functions + solver) for ``model``."""
    path = cache_dir() / "codegen" / f"{model.name}_{source_hash(model)}.py.txt"
    if path.exists():
        text = path.read_text()
    else:
        text = numba_source(model)
        write_atomic(path, text, mkdir=True)
    return load_numba_module(model.name, text)
