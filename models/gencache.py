"""The one cache of generated source files: where they live, how they are named, how
they are written.

carthema generates four kinds of Python text per model and keeps them on disk, so that
sympy runs once per change of the equations and numba can cache its machine code next to
a stable file:

- ``codegen/<model>_<key>.py.txt``: the model functions printed by sympy, written by
  :func:`carthema.models.compiled.numba_model`;
- ``numba/<model>_<key>.py``: those joined to the solver template, written by
  :func:`carthema.models.numba_backend.load_numba_module` (numba keeps the machine code
  in ``numba/__pycache__``);
- ``fitting/sens_<model>_<key>.py``: the solver wrapped in a C callback, written by
  :func:`carthema.fitting.op.native.sens_module`;
- ``fastlogp/logp_<model>_<key>.py``: the single-patient log-density and gradient as C
  callbacks, written by :func:`carthema.fitting.op.fastlogp.module`.

``<key>`` is :func:`cache_key`: 16 hex digits of SHA-256 over carthema's version, the
text of every generator source the kind depends on (:data:`KINDS`, paths in
:data:`SOURCES`) and the caller's own input (the equations' source for ``codegen``, the
generated text itself for the other two). Any edit of one of them gives a new file name,
so a stale file is never picked up; superseded files stay behind (delete the folder to
reclaim the space, the next run regenerates what it needs).

:func:`write_generated` writes a file atomically (:func:`carthema.data.atomic.write_atomic`:
a half-written file never carries the final name) and only when its text differs:
numba's on-disk cache index is keyed on the source file's modification time, so
rewriting identical text would make every new process recompile (minutes for the full
model).

A damaged cache heals itself, with one line on stderr: a codegen text is sealed
(:func:`write_sealed`: a first line saying so, a last line holding the SHA-256 of the
rest) and :func:`read_generated` deletes one whose seal does not match (a write cut
short, a disk fault), so that it is generated again; a module (``.py``) is compared
whole with its expected text on every :func:`write_generated`, and numba's cache
entries beside it (``__pycache__/*.nbi``, ``*.nbc``) that cannot be read back (a
truncated index or data file) are deleted before the module is imported, so that numba
compiles afresh instead of failing with an UnpicklingError or EOFError.

:func:`record_compile` and :func:`last_compile` keep the cache's own record of how long
each compile took on this machine (``compile_times.json`` in the cache folder), so that
the next cold compile can say what it compiles and how long it took last time.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import inspect
import json
import os
import pickle
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import platformdirs

from ..data.atomic import write_atomic
from . import components as _components_package
from . import model as _model_module
from . import parameters as _parameters_module
from .model import Model

__all__ = [
    "CACHE_ENV",
    "COMPONENTS_DIR",
    "KINDS",
    "SOURCES",
    "cache_dir",
    "cache_key",
    "last_compile",
    "record_compile",
    "equations_source",
    "generated_path",
    "read_generated",
    "source_text",
    "write_generated",
    "write_sealed",
]

#: Environment variable that moves the cache (empty = unset).
CACHE_ENV = "CARTHEMA_CACHE_DIR"

_MODELS = Path(__file__).parent
#: Generator sources by name. ``native`` is carthema.fitting's C-callback template; its
#: package folder sits beside this one both in the source tree and when installed.
SOURCES: dict[str, Path] = {
    "codegen": _MODELS / "codegen.py",
    "template": _MODELS / "_solver_template.py",
    "kernels": _MODELS / "solver_kernels.py",
    "native": _MODELS.parent / "fitting" / "op" / "native.py",
}

#: Folder of the component modules, all of which count as the equations' source.
COMPONENTS_DIR = Path(inspect.getfile(_components_package)).parent

#: The generator sources each kind of generated file depends on. The numba module does
#: not depend on the C-callback template: editing that must not recompile the solver.
KINDS: dict[str, tuple[str, ...]] = {
    "codegen": ("codegen",),
    "numba": ("codegen", "template", "kernels"),
    "fitting": ("codegen", "template", "kernels", "native"),
    # Its text holds all of its own code and names the C callback's module.
    "fastlogp": ("codegen", "template", "kernels", "native"),
}


def cache_dir() -> Path:
    """Root of carthema's on-disk cache.

    ``$CARTHEMA_CACHE_DIR`` if set (and non-empty, ``~`` expanded), else
    ``platformdirs.user_cache_dir("carthema")`` (``$XDG_CACHE_HOME/carthema`` on Linux).
    The folder is not created here.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("carthema"))


def source_text(name: str) -> str:
    """Text of the generator source ``name`` (a key of :data:`SOURCES`), read from disk
    at every call: it is hashed, never imported."""
    return SOURCES[name].read_text(encoding="utf-8")


def _version() -> str:
    import carthema  # the package is fully imported by the time anything is generated

    return carthema.__version__


def equations_source(model: Model) -> str:
    """Text the model's equations are written in: the modules of :class:`Model` and of
    the parameter records, every module of the components package (components import
    each other's helpers: the ``haematopoiesis`` equations call ``cart.antigen_drive``),
    the whole file of any component defined elsewhere (a test's toy class), and the
    model's list of components."""
    names = []
    files = [Path(_model_module.__file__), Path(_parameters_module.__file__)]
    files += sorted(COMPONENTS_DIR.glob("*.py"))
    for comp in model.components:
        module = comp.__name__ if inspect.ismodule(comp) else comp.__module__
        names.append(comp.__name__ if inspect.ismodule(comp) else f"{module}.{comp.__qualname__}")
        if not module.startswith(_components_package.__name__ + "."):
            files.append(Path(inspect.getfile(comp)))
    # The composition too: the same files make different models from different lists.
    parts = [_labelled("components", " ".join(names))]
    parts += [_labelled(f.name, f.read_text(encoding="utf-8")) for f in files]
    return "".join(parts)


def _labelled(label: str, text: str) -> str:
    # Length-prefixed, so that no two different lists of parts join to the same text.
    return f"{label}:{len(text)}:{text}"


def cache_key(kind: str, inputs: Iterable[str]) -> str:
    """Key of a generated file of ``kind`` (a key of :data:`KINDS`): 16 hex digits of
    SHA-256 over carthema's version, the text of each generator source of ``kind`` and
    ``inputs`` (the caller's own inputs, in order)."""
    parts = [_labelled("version", _version())]
    parts += [_labelled(name, source_text(name)) for name in KINDS[kind]]
    parts += [_labelled("input", text) for text in inputs]
    return hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()[:16]


def generated_path(kind: str, stem: str, key: str, suffix: str = ".py") -> Path:
    """``cache_dir() / kind / f"{stem}_{key}{suffix}"``."""
    if kind not in KINDS:
        raise ValueError(f"unknown generated-file kind {kind!r}; choose one of {list(KINDS)}")
    return cache_dir() / kind / f"{stem}_{key}{suffix}"


def write_generated(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, creating the folder; a file that already
    holds exactly ``text`` is left untouched (its mtime is numba's cache key). For a
    module (``.py``), numba cache entries beside it that cannot be read back are
    deleted (:func:`heal_numba_cache`) before anything imports it."""
    write_atomic(path, text, unless_same=True, mkdir=True)
    if path.suffix == ".py":
        heal_numba_cache(path)
    return path


def import_generated(path: Path, text: str, name: str) -> ModuleType:
    """Write the generated module ``text`` to ``path`` (:func:`write_generated`) and
    import it as ``name``. The module is registered in ``sys.modules`` before it runs,
    as importlib does, so that numba (and pickling of its cached functions) can find it
    by name; a module whose execution fails is removed again. Callers hold their own
    lock and memo: this imports every time it is called."""
    write_generated(path, text)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - importlib contract
        raise ImportError(f"cannot import generated module {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


_LOAD_LOCK = threading.Lock()


def load_generated(kind: str, stem: str, text: str, prefix: str) -> ModuleType:
    """The generated module ``text`` of ``kind``: written to ``<cache>/<kind>/<stem>_<key>.py``
    (the key from :func:`cache_key` over ``text``) when new, imported once per process as
    ``<prefix>_<key>`` (later calls return that module)."""
    key = cache_key(kind, [text])
    name = f"{prefix}_{key}"
    with _LOAD_LOCK:
        if name in sys.modules:
            return sys.modules[name]
        return import_generated(generated_path(kind, stem, key), text, name)


#: First line of a sealed generated text, and the start of its last line.
SEAL_HEAD = "# carthema generated file; its last line holds the SHA-256 of the lines above\n"
SEAL_TAIL = "# carthema-sha256: "


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_sealed(path: Path, text: str) -> str:
    """Write ``text`` sealed (:data:`SEAL_HEAD` first, its SHA-256 last) with
    :func:`write_generated`; return the sealed text (what :func:`read_generated` gives)."""
    body = SEAL_HEAD + text + ("" if text.endswith("\n") else "\n")
    sealed = f"{body}{SEAL_TAIL}{_digest(body)}\n"
    write_generated(path, sealed)
    return sealed


def _say_rebuilt(path: Path, why: str) -> None:
    sys.stderr.write(f"carthema: cache file {path} was {why}; deleted, rebuilding it\n")


def read_generated(path: Path) -> str | None:
    """The text of a generated file, or None when it is missing, or damaged (a sealed
    text whose last line does not hold the SHA-256 of the rest, or unreadable bytes):
    the damaged file is deleted, with one line on stderr, for the caller to rebuild.
    A text written before seals existed (no :data:`SEAL_HEAD`) is returned as it is."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        raw = None
    if raw is not None and not raw.startswith(SEAL_HEAD):
        return raw
    if raw is not None and raw.endswith("\n"):
        body, _, last = raw[:-1].rpartition("\n")
        if last == SEAL_TAIL + _digest(body + "\n"):
            return raw
    _say_rebuilt(path, "damaged (its checksum does not match)")
    path.unlink(missing_ok=True)
    return None


def _pickle_complete(data: bytes) -> bool:
    """Whether ``data`` looks like one whole pickle: a protocol header and the STOP
    opcode at the end (a truncated file lacks it). Cheap: nothing is unpickled."""
    return len(data) > 2 and data[:1] == b"\x80" and data.endswith(pickle.STOP)


def heal_numba_cache(module: Path) -> list[Path]:
    """Delete numba's cache entries of the generated ``module`` that cannot be read back
    (an index, ``*.nbi``, that does not unpickle, or a data file, ``*.nbc``, that is
    not a whole pickle), each with one line on stderr; numba then compiles that
    function again. Returns the files deleted."""
    cache = module.parent / "__pycache__"
    removed: list[Path] = []
    if not cache.is_dir():
        return removed
    for index in sorted(cache.glob(f"{module.stem}.*.nbi")):
        stem = index.name[: -len(".nbi")]
        data_files = sorted(cache.glob(f"{stem}.*.nbc"))
        try:
            with open(index, "rb") as fh:
                pickle.load(fh)  # numba's version
                pickle.loads(fh.read())  # (source stamp, overloads)
            ok = all(_pickle_complete(f.read_bytes()) for f in data_files)
        except Exception:  # any unreadable index is rebuilt, whatever pickle raises
            ok = False
        if not ok:
            _say_rebuilt(index, "unreadable (a numba cache entry)")
            for f in (index, *data_files):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


#: File in :func:`cache_dir` with the record of compile times.
COMPILE_TIMES = "compile_times.json"


def _compile_times() -> dict[str, dict]:
    try:
        data = json.loads((cache_dir() / COMPILE_TIMES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no record yet, or one cut short: the next compile writes a new one
    return data if isinstance(data, dict) else {}


def record_compile(what: str, wall_s: float, cpu_s: float, file: str) -> None:
    """Record that compiling ``what`` (e.g. ``"numba solver: full"``) took ``wall_s``
    and ``cpu_s`` seconds on this machine, for the generated file named ``file``.
    Only the latest compile of each ``what`` is kept; a cache folder that cannot be
    written is skipped (the record is a courtesy, never needed to run)."""
    data = _compile_times()
    data[what] = {
        "wall_s": round(float(wall_s), 2),
        "cpu_s": round(float(cpu_s), 2),
        "file": file,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        write_atomic(cache_dir() / COMPILE_TIMES, json.dumps(data, indent=1), mkdir=True)
    except OSError:
        pass


def last_compile(what: str) -> dict | None:
    """The latest :func:`record_compile` entry of ``what`` (keys ``wall_s``, ``cpu_s``,
    ``file``, ``date``), or None when this cache has none."""
    entry = _compile_times().get(what)
    return entry if isinstance(entry, dict) else None
