"""The numba model module of a :class:`Model`: generated once, cached on disk.

The sympy-generated text is kept in the generated-file cache (:mod:`.gencache`, kind
``codegen``) under a key over the equations' source and the code generator, so sympy
runs only when one of them changes; :func:`.numba_backend.load_numba_module` then joins
it to the solver template (kind ``numba``) and numba caches its machine code next to
that file.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from .codegen import numba_source
from .gencache import (
    cache_key,
    equations_source,
    generated_path,
    last_compile,
    read_generated,
    record_compile,
    write_sealed,
)
from .model import Model
from .numba_backend import event_arrays, load_numba_module, module_path

#: Entry points compiled ahead when numba's cache holds no machine code for them.
_AHEAD = ("solve", "solve_sens")


@functools.cache
def numba_model(model: Model) -> ModuleType:
    """Compiled numba module (model functions + solver) for ``model``."""
    key = cache_key("codegen", [equations_source(model)])
    path = generated_path("codegen", model.name, key, ".py.txt")
    text = read_generated(path)  # None when missing, or damaged (then deleted)
    if text is None:
        text = write_sealed(path, numba_source(model))
    if _machine_code_cached(module_path(model.name, text)):
        return load_numba_module(model.name, text)
    return _compile_ahead(text, model)


def _machine_code_cached(path: Path) -> bool:
    """True if numba's on-disk cache beside the generated file ``path`` holds code for
    the solver's C callback (compiled when the module is imported) and every entry point
    of :data:`_AHEAD` (numba names it ``<file stem>.<function>-<line>...``)."""
    folder = path.parent / "__pycache__"
    return all(any(folder.glob(f"{path.stem}.{name}-*.nbc")) for name in ("solve_c", *_AHEAD))


def _compile_ahead(text: str, model: Model) -> ModuleType:
    """Load the module (which compiles the solver's C callback) and compile ``solve`` and
    ``solve_sens`` now, saying on stderr first what is compiled and how long it took last
    time on this machine (the cache's own record, :func:`last_compile`), and record how
    long it took this time."""
    from .._console import progress_to_stderr as say  # stderr, silent with --quiet

    what = f"numba solver: {model.name}"
    last = last_compile(what)
    if last is None:
        when = (
            "no earlier compile recorded on this machine (the full model takes about 20 s "
            "of CPU time, 1-2 minutes of wall time on 2 busy cores)"
        )
    else:
        when = f"last time on this machine {last['wall_s']:.0f} s ({last['cpu_s']:.0f} s CPU)"
    say(
        f"compiling the numba solver of the '{model.name}' model ({model.n_y} states, "
        f"{model.n_p} parameters: the solver's C callback solve_c, then "
        f"{', '.join(_AHEAD)}), once per change of the "
        f"equations or the solver; {when}"
    )
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    mod = load_numba_module(model.name, text)
    p = np.ascontiguousarray(model.default_params(), dtype=np.float64)
    args = (np.zeros(model.n_u), 0.0, np.array([0.0, 1.0]), *event_arrays())
    opts = (1e-6, 1e-8, 1000, 2)
    mod.solve(p, *args, *opts)
    mod.solve_sens(p, np.zeros(1, dtype=np.int64), *args, *opts)
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    record_compile(what, wall, cpu, Path(mod.__file__).name)
    say(f"compiled in {wall:.0f} s ({cpu:.0f} s CPU)")
    return mod
