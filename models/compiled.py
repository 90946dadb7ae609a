"""The numba model module of a :class:`Model`: generated once, cached on disk.

The sympy-generated text is kept in the generated-file cache (:mod:`.gencache`, kind
``codegen``) under a key over the equations' source and the code generator, so sympy
runs only when one of them changes; :func:`.numba_backend.load_numba_module` then joins
it to the solver template (kind ``numba``) and numba caches its machine code next to
that file.
"""

from __future__ import annotations

import functools
from types import ModuleType

from .codegen import numba_source
from .gencache import cache_key, equations_source, generated_path, read_generated, write_sealed
from .model import Model
from .numba_backend import load_numba_module


@functools.cache
def numba_model(model: Model) -> ModuleType:
    """Compiled numba module (model functions + solver) for ``model``."""
    key = cache_key("codegen", [equations_source(model)])
    path = generated_path("codegen", model.name, key, ".py.txt")
    text = read_generated(path)  # None when missing, or damaged (then deleted)
    if text is None:
        text = write_sealed(path, numba_source(model))
    return load_numba_module(model.name, text)
