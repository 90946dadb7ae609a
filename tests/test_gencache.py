"""Tests of the one generated-file cache (models/gencache.py).

The expectations are stated here, independently of the module: which sources each kind
of generated file depends on (issue 12: the equations' source, models/codegen.py, the
solver template, models/solver_kernels.py, the rows template of fitting/op/native.py
where it is used, carthema's version), located on disk independently of
``gencache.SOURCES``; that a file holding the same text keeps its mtime (numba's cache
index keys on it); that a write cut short leaves only the earlier file (or none) under
the final name; that two models get two files of each kind.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from solver_toys import BLOWUP, LINEAR, ROBERTSON

import carthema
from carthema.data import atomic
from carthema.models import codegen, compiled, gencache, numba_backend, solver_kernels
from carthema.models import model as model_module
from carthema.models import parameters as parameters_module
from carthema.models.components import cart, targets
from carthema.models.model import Model, get_model

# What each kind of generated file must be keyed on (besides carthema's version and the
# caller's own input: the equations' source for codegen, the generated text otherwise).
DEPENDS_ON = {
    "codegen": {"codegen"},
    "numba": {"codegen", "template", "kernels"},
    "fitting": {"codegen", "template", "kernels", "native"},
    "fastlogp": {"codegen", "template", "kernels", "native"},
}
KINDS = sorted(DEPENDS_ON)
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _real_source_files() -> dict[str, Path]:
    """The generator sources, located without gencache (find_spec does not execute the
    module it finds, only the packages above it)."""
    native = importlib.util.find_spec("carthema.fitting.op.native")
    assert native is not None and native.origin is not None
    return {
        "codegen": Path(inspect.getfile(codegen)),
        "template": Path(inspect.getfile(numba_backend)).with_name("_solver_template.py"),
        "kernels": Path(inspect.getfile(solver_kernels)),
        "native": Path(native.origin),
    }


def _keys(inputs: list[str]) -> dict[str, str]:
    return {kind: gencache.cache_key(kind, inputs) for kind in KINDS}


def _edited_copy(src: Path, tmp_path: Path) -> Path:
    edited = tmp_path / f"edited_{src.name}"
    edited.write_text(src.read_text(encoding="utf-8") + "\n# one edit\n", encoding="utf-8")
    return edited


# ---------------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------------
def test_sources_are_the_files_the_generators_run_from():
    real = _real_source_files()
    assert set(gencache.SOURCES) == set(real)
    for name, path in real.items():
        assert path.is_file()
        assert gencache.SOURCES[name].resolve() == path.resolve(), name
    assert set(gencache.KINDS) == set(DEPENDS_ON)
    for kind, deps in DEPENDS_ON.items():
        assert set(gencache.KINDS[kind]) == deps


@pytest.mark.parametrize("source", ["codegen", "template", "kernels", "native"])
def test_key_changes_with_each_generator_source(source, tmp_path, monkeypatch):
    before = _keys(["model text"])
    edited = _edited_copy(_real_source_files()[source], tmp_path)
    monkeypatch.setitem(gencache.SOURCES, source, edited)
    after = _keys(["model text"])
    for kind in KINDS:
        assert all(_HEX16.match(k) for k in (before[kind], after[kind]))
        changed = after[kind] != before[kind]
        assert changed == (source in DEPENDS_ON[kind]), (source, kind)


def test_key_changes_with_carthema_version(monkeypatch):
    before = _keys(["model text"])
    monkeypatch.setattr(carthema, "__version__", carthema.__version__ + ".post1")
    after = _keys(["model text"])
    assert all(after[k] != before[k] for k in KINDS)


def test_key_changes_with_the_callers_input():
    # The input is length-prefixed: ["ab"] and ["a", "b"] are different inputs.
    for kind in KINDS:
        keys = {
            gencache.cache_key(kind, inputs) for inputs in (["a"], ["b"], ["ab"], ["a", "b"], [])
        }
        assert len(keys) == 5, kind
        assert gencache.cache_key(kind, ["a"]) == gencache.cache_key(kind, ["a"])


@pytest.mark.parametrize("module", [model_module, parameters_module], ids=["model", "parameters"])
def test_codegen_key_changes_with_the_model_modules(module, tmp_path, monkeypatch):
    full = get_model("full")
    key = gencache.cache_key("codegen", [gencache.equations_source(full)])
    edited = _edited_copy(Path(module.__file__), tmp_path)
    monkeypatch.setattr(module, "__file__", str(edited))
    assert gencache.cache_key("codegen", [gencache.equations_source(full)]) != key


@pytest.mark.parametrize("name", ["cart", "haematopoiesis", "full"])
def test_codegen_key_changes_with_any_component_module(name, tmp_path, monkeypatch):
    # The haematopoiesis equations call cart.antigen_drive: an edit of cart.py must
    # change the key of the haematopoiesis-only model too.
    model = get_model(name)
    key = gencache.cache_key("codegen", [gencache.equations_source(model)])
    package = Path(inspect.getfile(cart)).parent
    copy = tmp_path / "components"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(gencache, "COMPONENTS_DIR", copy)
    assert gencache.cache_key("codegen", [gencache.equations_source(model)]) == key
    (copy / "cart.py").write_text((package / "cart.py").read_text() + "\n# one edit\n")
    assert gencache.cache_key("codegen", [gencache.equations_source(model)]) != key


def test_equations_source_covers_a_component_class_whole_file():
    # A component class's helpers live in its module: the whole file is keyed.
    text = gencache.equations_source(LINEAR)
    toys = Path(inspect.getfile(LINEAR.components[0])).read_text(encoding="utf-8")
    assert toys in text
    assert gencache.equations_source(get_model("cart")) != gencache.equations_source(
        get_model("full")
    )
    # Same name, same files, another list of components: another key.
    one = Model("same_name", (cart,))
    two = Model("same_name", (cart, targets))
    keys = {gencache.cache_key("codegen", [gencache.equations_source(m)]) for m in (one, two)}
    assert len(keys) == 2


def test_edited_template_gives_a_new_numba_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(tmp_path / "cache"))
    src = codegen.numba_source(BLOWUP)
    mod = numba_backend.load_numba_module("gctemplate", src)
    edited = _edited_copy(_real_source_files()["template"], tmp_path)
    monkeypatch.setitem(gencache.SOURCES, "template", edited)
    mod2 = numba_backend.load_numba_module("gctemplate", src)
    assert mod2.__file__ != mod.__file__
    assert Path(mod2.__file__).read_text(encoding="utf-8").endswith("# one edit\n")
    assert len(list((tmp_path / "cache" / "numba").glob("gctemplate_*.py"))) == 2


# ---------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------
def test_unchanged_text_is_not_rewritten(tmp_path):
    path = tmp_path / "numba" / "m_0123456789abcdef.py"
    gencache.write_generated(path, "x = 1\n")
    old = 1_000_000_000_000_000_000  # 2001-09-09, far from "now" at any mtime resolution
    os.utime(path, ns=(old, old))
    gencache.write_generated(path, "x = 1\n")
    assert path.stat().st_mtime_ns == old
    gencache.write_generated(path, "x = 2\n")
    assert path.read_text() == "x = 2\n"
    assert path.stat().st_mtime_ns != old


class _DiesHalfway:
    """File object whose write stores half the bytes, records what a reader sees at that
    moment, then fails as a full disk would."""

    def __init__(self, fh, final: Path, seen: dict):
        self.fh, self.final, self.seen = fh, final, seen

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        self.seen["final"] = self.final.read_text() if self.final.exists() else None
        self.seen["others"] = sorted(p.name for p in self.final.parent.iterdir())
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("earlier", ["old = 1\n", None], ids=["replacing", "new"])
def test_partial_write_is_never_visible_under_the_final_name(earlier, tmp_path, monkeypatch):
    path = tmp_path / "fitting" / "sens_m_0123456789abcdef.py"
    if earlier is not None:
        gencache.write_generated(path, earlier)
    seen: dict = {}
    real_open = open
    monkeypatch.setattr(
        atomic, "open", lambda f, mode: _DiesHalfway(real_open(f, mode), path, seen), raising=False
    )
    with pytest.raises(OSError, match="No space"):
        gencache.write_generated(path, "new = 2\n" * 100)
    # While half the bytes were written they were under a temporary name only ...
    assert seen["final"] == earlier
    temps = [n for n in seen["others"] if n != path.name]
    assert len(temps) == 1 and atomic.TMP_MARK in temps[0]
    # ... and after the failure the final name holds the earlier text (or nothing) and
    # the temporary file is gone.
    assert (path.read_text() if path.exists() else None) == earlier
    assert sorted(p.name for p in path.parent.iterdir()) == ([path.name] if earlier else [])


# ---------------------------------------------------------------------------------
# The callers
# ---------------------------------------------------------------------------------
def test_two_models_get_their_own_files_and_reuse_them(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(cache))
    assert numba_backend.cache_dir() == gencache.cache_dir() == cache
    # Names of their own, so that these modules never share a module name with the
    # toys the solver tests load from the default cache.
    a = Model("gctest_linear", LINEAR.components)
    b = Model("gctest_robertson", ROBERTSON.components)
    mods = {m.name: compiled.numba_model.__wrapped__(m) for m in (a, b)}  # no process cache
    codegen_files = sorted((cache / "codegen").iterdir())
    numba_files = sorted((cache / "numba").glob("*.py"))
    assert [f.name.split("_")[1] for f in codegen_files] == ["linear", "robertson"]
    assert [f.name.split("_")[1] for f in numba_files] == ["linear", "robertson"]
    for m, cg, nb in zip((a, b), codegen_files, numba_files, strict=True):
        assert re.fullmatch(rf"{m.name}_[0-9a-f]{{16}}\.py\.txt", cg.name)
        assert re.fullmatch(rf"{m.name}_[0-9a-f]{{16}}\.py", nb.name)
        assert nb.read_text().startswith(cg.read_text().rstrip())
        assert mods[m.name].__file__ == str(nb)
        assert (mods[m.name].N_Y, mods[m.name].N_P) == (m.n_y, m.n_p)

    # A fresh load (as in a new process) reuses both files: sympy does not run and
    # neither file is rewritten.
    old = 1_000_000_000_000_000_000
    for f in (*codegen_files, *numba_files):
        os.utime(f, ns=(old, old))

    def no_sympy(model):
        raise AssertionError("the cached codegen text should have been used")

    monkeypatch.setattr(compiled, "numba_source", no_sympy)
    monkeypatch.setattr(numba_backend, "_LOADED", {})
    again = compiled.numba_model.__wrapped__(a)
    assert again.__file__ == mods[a.name].__file__
    assert all(f.stat().st_mtime_ns == old for f in (*codegen_files, *numba_files))


def test_sens_callback_lives_in_the_same_cache():
    from carthema.fitting.op.native import sens_module

    native = sens_module("cart")
    path = Path(native.__file__)
    assert path.parent == gencache.cache_dir() / "fitting"
    assert re.fullmatch(r"sens_cart_[0-9a-f]{16}\.py", path.name)
    numba_mod = compiled.numba_model(get_model("cart"))
    assert f'sys.modules["{numba_mod.__name__}"]' in path.read_text()


def test_two_threads_writing_one_file_both_succeed(tmp_path, monkeypatch):
    # Both threads are made to be midway through writing at the same moment (a barrier
    # inside write): with one shared temporary name the first rename would take the
    # other's file away and the second would fail.
    path = tmp_path / "codegen" / "m_0123456789abcdef.py.txt"
    barrier = threading.Barrier(2, timeout=10)
    real_open = open

    class _Meets:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data: bytes) -> int:
            barrier.wait()
            return self.fh.write(data)

    monkeypatch.setattr(atomic, "open", lambda f, mode: _Meets(real_open(f, mode)), raising=False)
    errors: list[BaseException] = []

    def work():
        try:
            gencache.write_generated(path, "text = 1\n")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_text() == "text = 1\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_compile_times_are_recorded_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(tmp_path / "cache"))
    assert gencache.last_compile("numba solver: x") is None
    gencache.record_compile("numba solver: x", 12.345, 10.0, "x_0123456789abcdef.py")
    gencache.record_compile("numba solver: y", 3.0, 2.0, "y.py")
    got = gencache.last_compile("numba solver: x")
    assert (got["wall_s"], got["cpu_s"], got["file"]) == (12.35, 10.0, "x_0123456789abcdef.py")
    gencache.record_compile("numba solver: x", 7.0, 6.0, "x2.py")  # the latest one is kept
    assert gencache.last_compile("numba solver: x")["wall_s"] == 7.0
    assert gencache.last_compile("numba solver: y")["wall_s"] == 3.0
    # A record cut short is no record (the next compile writes a whole one).
    (tmp_path / "cache" / gencache.COMPILE_TIMES).write_text('{"numba solver: x": {')
    assert gencache.last_compile("numba solver: x") is None


def test_a_cold_compile_says_what_it_compiles_and_how_long_it_took_last_time(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(tmp_path / "cache"))
    m = Model("gctest_msg_linear", LINEAR.components)
    mod = compiled.numba_model.__wrapped__(m)
    err = capsys.readouterr().err
    assert "compiling the numba solver of the 'gctest_msg_linear' model" in err
    assert (
        "(2 states, 5 parameters: the solver's C callback solve_c, then solve, solve_sens)" in err
    )
    assert "no earlier compile recorded on this machine" in err
    rec = gencache.last_compile("numba solver: gctest_msg_linear")
    assert rec is not None and rec["file"] == Path(mod.__file__).name
    assert rec["wall_s"] > 0.0
    assert f"compiled in {rec['wall_s']:.0f} s" in err
    # numba's machine code is now on disk: a new load compiles nothing and says nothing.
    monkeypatch.setattr(numba_backend, "_LOADED", {})
    compiled.numba_model.__wrapped__(m)
    assert capsys.readouterr().err == ""
    # With that machine code gone (an edited solver), the message quotes the record.
    for f in (Path(mod.__file__).parent / "__pycache__").glob("*.nbc"):
        f.unlink()
    monkeypatch.setattr(numba_backend, "_LOADED", {})
    compiled.numba_model.__wrapped__(m)
    err = capsys.readouterr().err
    assert f"last time on this machine {rec['wall_s']:.0f} s ({rec['cpu_s']:.0f} s CPU)" in err


# ---------------------------------------------------------------------------------------
# A cache that heals (issue 22): damaged files are deleted and rebuilt, with one line
# ---------------------------------------------------------------------------------------
def test_a_truncated_codegen_text_is_deleted_and_generated_again(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CARTHEMA_CACHE_DIR", str(cache))
    m = Model("gcheal_linear", LINEAR.components)
    made = []

    def fake_source(model):
        made.append(model.name)
        return "N_Y = 1\ndef rhs(t, y):\n    return -y\n"

    monkeypatch.setattr(compiled, "numba_source", fake_source)
    monkeypatch.setattr(compiled, "load_numba_module", lambda name, text: text)
    monkeypatch.setattr(compiled, "_machine_code_cached", lambda mod: True)  # nothing to compile
    first = compiled.numba_model.__wrapped__(m)
    (path,) = (cache / "codegen").iterdir()
    assert path.read_text() == first and first.startswith(gencache.SEAL_HEAD)
    assert compiled.numba_model.__wrapped__(m) == first and made == [m.name]  # reused
    path.write_text(first[: len(first) // 2])  # a write cut short
    capsys.readouterr()
    again = compiled.numba_model.__wrapped__(m)
    assert again == first and made == [m.name, m.name]  # generated again
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "checksum" in err[0]
    # a text from before seals existed is used as it is
    path.write_text("N_Y = 1\n")
    assert gencache.read_generated(path) == "N_Y = 1\n"


_TOY_NUMBA = """
import importlib.util, sys
from pathlib import Path
from carthema.models.gencache import write_generated
path = Path(sys.argv[1])
text = "from numba import njit\\n\\n@njit(cache=True)\\ndef f(x):\\n    return 2.0 * x + 1.0\\n"
write_generated(path, text)
spec = importlib.util.spec_from_file_location("toy_heal_nb", path)
m = importlib.util.module_from_spec(spec)
sys.modules["toy_heal_nb"] = m
spec.loader.exec_module(m)
print(m.f(2.0))
"""


@pytest.mark.parametrize("damaged", ["nbc", "nbi"])
def test_an_unreadable_numba_cache_entry_is_deleted_and_compiled_again(tmp_path, damaged):
    """numba fails with an UnpicklingError/EOFError on a truncated cache entry; the
    module's write_generated deletes it first (one line), and numba compiles again."""
    import subprocess
    import sys

    path = tmp_path / "numba" / "toy_heal_nb.py"

    def run():
        return subprocess.run([sys.executable, "-c", _TOY_NUMBA, str(path)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    first = run()
    assert first.returncode == 0 and first.stdout.strip() == "5.0", first.stderr
    (entry,) = (path.parent / "__pycache__").glob(f"*.{damaged}")
    entry.write_bytes(entry.read_bytes()[:40])
    second = run()
    assert second.returncode == 0 and second.stdout.strip() == "5.0", second.stderr
    lines = [x for x in second.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "numba cache entry" in lines[0]
    third = run()  # healed: no message
    assert third.returncode == 0 and third.stderr.strip() == ""
