"""Start-up benchmark: how long a new user waits before the first result.

Measured, each in a fresh Python process so that nothing is already imported or
compiled in memory:

1. ``cold_compile_cpu_s``: the numba model module of the full model compiled from an
   empty generated-file cache (a temporary ``CARTHEMA_CACHE_DIR``): sympy code
   generation, the compile of ``solve`` and ``solve_sens`` (ahead, inside
   ``numba_model``, which records its time in the cache), then the first calls of
   ``solve``, ``solve_sens`` and ``solve_population``, in CPU seconds of the child
   process (``time.process_time``: the stable figure on shared cores; wall seconds
   are recorded too). numba's cache of the model-independent kernels
   (``models/solver_kernels.py``, cached beside that module) is not emptied: it is
   compiled once per installation;
2. ``first_gradient_fresh_s_pytensor``: a fresh process with a warm cache, from
   ``python`` start to the first log-density gradient of the benchmark patient's
   single-patient fit through the PyMC/PyTensor path that ``carthema fit`` uses
   (``nutpie.compile_pymc_model`` then ``logp_grad`` at the initial point); wall
   seconds, median of ``--repeats`` processes after one warm-up process that fills the
   caches;
3. ``first_gradient_fresh_s``: the same for the generated single-patient log-density
   that ``carthema fit`` uses first (:mod:`carthema.fitting.op.fastlogp`, its check against
   PyMC's log-density included), measured in the same run; ``speedup_first_gradient`` is
   the ratio of the two medians (``speedup_first_gradient_cpu`` of the processes' median
   CPU seconds). ``second_patient_s``: in each fast-path process, after the first
   gradient, building the model of a second patient (``SECOND_PATIENT``) and its first
   gradient by the same path (median wall seconds);
4. ``demo_cold_s`` (full and ``--quick`` modes; ``null`` with the reason in ``--smoke``):
   ``carthema demo`` end to end (``pip install`` excluded) in a fresh process with every
   cache empty (temporary ``CARTHEMA_CACHE_DIR``, ``NUMBA_CACHE_DIR`` and PyTensor
   ``base_compiledir``: what a new user meets after ``make install``), its output piped.
   Wall seconds; ``demo_cold_cpu_s`` is the process's CPU seconds (all threads, from
   ``wait4``); ``demo_cold["stages"]`` splits both at the progress lines the demo prints
   (the child's CPU read from ``/proc`` as each line arrives), and the load average
   before and after is recorded beside them (2 shared cores: wall seconds depend on
   what else runs; CPU seconds barely do). Then ``demo_warm_s`` and ``demo_warm_cpu_s``:
   the same command again in a fresh process with the caches the cold run filled;
5. with ``--before REV``: ``cold_compile_cpu_s_before``, the same cold compile by the
   code generator and solver template of git revision ``REV`` (this checkout's equations
   and kernels) in another fresh process of the same run, and
   ``cold_compile_speedup_cpu``, the ratio of the two.

Usage::

    python benchmarks/startup.py            # full: cold compile + 3 fresh processes + cold demo
    python benchmarks/startup.py --demo-only   # the cold and warm demo only
    python benchmarks/startup.py --quick    # cold compile + 1 fresh process
    python benchmarks/startup.py --smoke    # seconds: a toy model, temp output
    python benchmarks/startup.py --cold-only --before main   # cold compiles, then and now
    python benchmarks/startup.py --quick --no-demo --before HEAD~1   # all but the demo

Writes ``benchmarks/results/startup.json`` (``--out`` to change; ``--smoke`` writes to
a temporary folder and prints its path). A run without the demo (``--cold-only``,
``--no-demo``) keeps the demo measurements the file already holds, with the date of
the run that made them (``demo_carried_over_from``), instead of writing nulls over them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, load_average, machine_info, smoke_out, write_json  # noqa: E402

HERE = Path(__file__).resolve()
#: The benchmark patient of ``benchmarks/fit.py`` (bundled synthetic data).
PATIENT = "VP002"
#: The patient timed second in the same process (``second_patient_s``).
SECOND_PATIENT = "VP003"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------
# Child processes (``--child NAME``): print one JSON line on stdout
# ---------------------------------------------------------------------------------
def _child_cold(model_name: str) -> dict[str, Any]:
    """First calls of every numba entry point of ``model_name``, cache already empty."""
    c = time.process_time
    w = time.perf_counter
    out: dict[str, Any] = {}
    t_c, t_w = c(), w()
    from carthema import get_model
    from carthema.models.compiled import numba_model

    m = get_model(model_name)
    out["import_cpu_s"], out["import_wall_s"] = c() - t_c, w() - t_w

    t_c, t_w = c(), w()
    mod = numba_model(m)
    out["numba_model_cpu_s"], out["numba_model_wall_s"] = c() - t_c, w() - t_w
    # numba_model runs sympy and, where numba's cache is cold, compiles solve and
    # solve_sens ahead, recording how long that took in the cache's own record.
    try:
        from carthema.models.gencache import last_compile

        ahead = last_compile(f"numba solver: {model_name}")
    except ImportError:  # a checkout from before the record (a baseline run)
        ahead = None
    out["compiled_ahead"] = ahead
    ahead_cpu = ahead["cpu_s"] if ahead else 0.0
    ahead_wall = ahead["wall_s"] if ahead else 0.0
    out["codegen_cpu_s"] = out["numba_model_cpu_s"] - ahead_cpu
    out["codegen_wall_s"] = out["numba_model_wall_s"] - ahead_wall
    _first_calls(mod, m, out, ahead_cpu, ahead_wall)
    return out


def _first_calls(mod, m, out: dict[str, Any], numba_cpu: float, numba_wall: float) -> None:
    """Time the first call of each numba entry point of ``mod`` (model ``m``) into
    ``out``, adding them to the compile seconds already spent (``numba_cpu``,
    ``numba_wall``)."""
    from carthema import typical_course
    from carthema.models.events import build_events

    c = time.process_time
    w = time.perf_counter
    p = m.default_params()
    ev = build_events(m, typical_course(), p)
    t_out = np.arange(-5.0, 181.0, 1.0)
    ev_arrays = (ev.t, ev.kind, ev.target, ev.value, ev.scale)
    u0 = np.zeros(m.n_u)
    opts = (1e-6, 1e-8, 100_000, 2)
    free = np.arange(min(10, m.n_p), dtype=np.int64)
    calls = {
        "solve": lambda: mod.solve(p, u0, -5.0, t_out, *ev_arrays, *opts),
        "solve_sens": lambda: mod.solve_sens(p, free, u0, -5.0, t_out, *ev_arrays, *opts),
        "solve_population": lambda: mod.solve_population(
            np.vstack([p, p]), u0, -5.0, t_out, *ev_arrays, *opts
        ),
    }
    for name, fn in calls.items():
        t_c, t_w = c(), w()
        res = fn()
        dc, dw = c() - t_c, w() - t_w
        status = res[0]
        if int(np.max(status)) != 0:
            raise RuntimeError(f"{name} returned status {status}")
        out[f"{name}_cpu_s"], out[f"{name}_wall_s"] = dc, dw
        numba_cpu += dc
        numba_wall += dw
    out["numba_cpu_s"], out["numba_wall_s"] = numba_cpu, numba_wall
    out["module"] = Path(mod.__file__).name


#: Where the generated model text ends and the solver template starts in a numba module.
_TEMPLATE_MARK = "\n\n\n# ==== generic solver: carthema/models/_solver_template.py ====\n"


def _child_cold_before(arg: str) -> dict[str, Any]:
    """``arg`` = ``MODEL:REV``: the cold compile of ``MODEL`` by the code generator and
    solver template of git revision ``REV`` (this checkout's equations and kernels), cache
    already empty: sympy, then the first call of each entry point (that revision may not
    compile ahead)."""
    import importlib.util

    from carthema import get_model
    from carthema.models.gencache import cache_dir, cache_key, generated_path, import_generated

    model_name, rev = arg.split(":", 1)
    root = HERE.parents[1]

    def show(path: str) -> str:
        cmd = ["git", "-C", str(root), "show", f"{rev}:{path}"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    folder = cache_dir() / "before"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "codegen_before.py").write_text(show("models/codegen.py"), encoding="utf-8")
    # Imported as a module of carthema.models, so that its relative imports resolve.
    spec = importlib.util.spec_from_file_location(
        "carthema.models._codegen_before", folder / "codegen_before.py"
    )
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    m = get_model(model_name)
    c, w = time.process_time, time.perf_counter
    out: dict[str, Any] = {"revision": rev}
    t_c, t_w = c(), w()
    text = codegen.numba_source(m).rstrip() + _TEMPLATE_MARK + show("models/_solver_template.py")
    out["codegen_cpu_s"], out["codegen_wall_s"] = c() - t_c, w() - t_w
    key = cache_key("numba", [text])
    path = generated_path("numba", f"before_{model_name}", key)
    t_c, t_w = c(), w()
    mod = import_generated(path, text, f"_carthema_before_{model_name}_{key}")
    _first_calls(mod, m, out, c() - t_c, w() - t_w)
    return out


def _child_gradient(components: str, backend: str) -> dict[str, Any]:
    """``carthema fit``'s path up to its first gradient: build the benchmark patient's
    model, then one log-density-and-gradient at the initial point by ``backend``
    ("fast": the generated log-density and its check; "pytensor": nutpie's PyTensor
    compile) through :func:`carthema.fitting.op.fastlogp.first_gradient`. ``t_done`` is the
    wall clock (epoch seconds) at the end."""
    w = time.perf_counter
    t_w = w()
    from carthema.data import load_example
    from carthema.fitting.model.build import build_patient_model
    from carthema.fitting.op.fastlogp import first_gradient

    out: dict[str, Any] = {"import_s": w() - t_w}
    ex = load_example("synthetic")
    t_w = w()
    fm = build_patient_model(ex.observations, ex.events, PATIENT, components)
    out["build_s"] = w() - t_w
    t_w = w()
    logp, grad = first_gradient(fm, backend)
    out["first_gradient_s"] = w() - t_w
    out["t_done"] = time.time()
    out["cpu_s"] = time.process_time()
    out["logp"] = float(logp)
    out["grad_finite"] = bool(np.all(np.isfinite(grad)))
    # The next patient in the same process (a cohort, a second fit): its model built and
    # its first gradient by the same path, with everything the first one loaded.
    t_w, t_c = w(), time.process_time()
    fm2 = build_patient_model(ex.observations, ex.events, SECOND_PATIENT, components)
    logp2, grad2 = first_gradient(fm2, backend)
    out["second_patient_s"] = w() - t_w
    out["second_patient_cpu_s"] = time.process_time() - t_c
    out["second_patient_same_structure"] = fm2.structure == fm.structure
    out["second_grad_finite"] = bool(np.isfinite(logp2) and np.all(np.isfinite(grad2)))
    return out


CHILDREN = {
    "cold": _child_cold,
    "cold_before": _child_cold_before,
    "gradient_pytensor": lambda c: _child_gradient(c, "pytensor"),
    "gradient_fast": lambda c: _child_gradient(c, "fast"),
}


def run_child(name: str, arg: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``--child name arg`` in a fresh interpreter; its JSON result."""
    cmd = [sys.executable, str(HERE), "--child", name, arg]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_gradient(child: str, components: str, repeats: int) -> dict[str, Any]:
    """Wall seconds from starting a fresh interpreter to the first gradient, warm caches:
    one untimed warm-up process fills them, then ``repeats`` timed processes."""
    run_child(child, components, dict(os.environ))
    runs = []
    for _ in range(repeats):
        t0 = time.time()
        r = run_child(child, components, dict(os.environ))
        r["fresh_s"] = r["t_done"] - t0
        runs.append(r)
    return {
        "median_s": float(np.median([r["fresh_s"] for r in runs])),
        "second_patient_median_s": float(np.median([r["second_patient_s"] for r in runs])),
        "runs": runs,
    }


def cold_compile(model_name: str, child: str = "cold") -> dict[str, Any]:
    """Cold compile of ``model_name`` in a fresh process with an empty temporary cache."""
    with tempfile.TemporaryDirectory(prefix="carthema-cold-") as tmp:
        env = dict(os.environ, CARTHEMA_CACHE_DIR=tmp)
        return run_child(child, model_name, env)


def _gradient_step(res: dict[str, Any], backend: str, components: str, repeats: int) -> float:
    """Time the fresh-process first gradient by ``backend``; store the runs under
    ``res["gradient_<backend>"]``, log them, return the median wall seconds."""
    log(f"fresh process to first gradient, {backend} path: 1 warm-up + {repeats} timed")
    g = fresh_gradient(f"gradient_{backend}", components, repeats)
    res[f"gradient_{backend}"] = g
    log(
        f"  median {g['median_s']:.1f} s wall; CPU of each process: "
        + ", ".join(f"{r['cpu_s']:.1f} s" for r in g["runs"])
        + f"; then {SECOND_PATIENT} in the same process: median "
        f"{g['second_patient_median_s']:.2f} s wall"
    )
    return g["median_s"]


#: The progress lines that end each stage of ``carthema demo`` (the first line that
#: starts with the text ends the stage), in order; time from the previous mark to this one.
DEMO_MARKS = (
    ("start: interpreter, imports, bundled data", "1/2 fit:"),
    ("compile: the log-density (numba solver and generated density)",
     "compiling the log-density for nutpie: done"),
    ("MAP", "finding the posterior mode (MAP): done"),
    ("sampling", "sampling "),
    ("pointwise log-likelihood, fit folder (tables, plots), fit report", "1/2 fit: done"),
    ("window scan and HTML report", "window scan: "),
    ("window summary on the console", "2/2 engraftment window: done"),
)  # fmt: skip


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def demo_run(tmp: str, kind: str, seed: int | None = None) -> dict[str, Any]:
    """``carthema demo`` in a fresh process with its caches in ``tmp`` (empty on the
    first call: a cold run; filled by it: a warm one), output piped: wall and CPU seconds
    in all and per stage (:data:`DEMO_MARKS`), with each line's arrival time. The
    output goes to ``tmp/out-<kind>``."""
    exe = Path(sys.executable).with_name("carthema")
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    env = dict(
        os.environ,
        CARTHEMA_CACHE_DIR=f"{tmp}/carthema",
        NUMBA_CACHE_DIR=f"{tmp}/numba",
        PYTENSOR_FLAGS=",".join(filter(None, [flags, f"base_compiledir={tmp}/pytensor"])),
        PYTHONUNBUFFERED="1",
    )
    cmd = [str(exe), "demo", "--out", f"{tmp}/out-{kind}"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    load_before = load_average()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, float, str]] = []
    for line in proc.stdout:
        try:
            cpu = _cpu_of(proc.pid)
        except (OSError, IndexError, ValueError):  # the process has just ended
            cpu = float("nan")
        lines.append((time.perf_counter() - t0, cpu, line.rstrip()))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        for t, c, text in lines:
            print(f"{t:7.1f} s {c:7.1f} s CPU | {text}", file=sys.stderr)
        raise RuntimeError(f"carthema demo failed ({proc.returncode}): {lines[-1][2]}")
    ok = (Path(tmp) / f"out-{kind}" / "window" / "report.html").stat().st_size > 0
    cpu = usage.ru_utime + usage.ru_stime
    stages, prev, i = [], (0.0, 0.0), 0
    for name, mark in DEMO_MARKS:
        hit = next((k for k in range(i, len(lines)) if lines[k][2].startswith(mark)
                    and (mark != "sampling " and mark != "window scan: "
                         or ": done in" in lines[k][2])), None)  # fmt: skip
        if hit is None:
            continue
        t, c, _ = lines[hit]
        stages.append({"stage": name, "wall_s": t - prev[0], "cpu_s": c - prev[1]})
        prev, i = (t, c), hit + 1
    stages.append({"stage": "exit", "wall_s": wall - prev[0], "cpu_s": cpu - prev[1]})
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "stages": stages,
        "report_written": ok,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "lines": [f"{t:7.1f} s {c:7.1f} s CPU | {text}" for t, c, text in lines],
    }


def _demo_step(res: dict[str, Any]) -> None:
    """The cold demo (every cache empty), then the same command again (warm caches)."""
    with tempfile.TemporaryDirectory(prefix="carthema-demo-cold-") as tmp:
        for kind in ("cold", "warm"):
            caches = "every cache empty" if kind == "cold" else "the caches of the cold run"
            log(f"{kind} `carthema demo` (fresh process, output piped, {caches})")
            d = demo_run(tmp, kind)
            res[f"demo_{kind}"] = d
            res[f"demo_{kind}_s"] = d["wall_s"]
            res[f"demo_{kind}_cpu_s"] = d["cpu_s"]
            res[f"demo_{kind}_stages_cpu_s"] = {
                s["stage"]: round(s["cpu_s"], 1) for s in d["stages"]
            }
            log(
                f"  {d['wall_s']:.0f} s wall, {d['cpu_s']:.0f} s CPU (load average "
                f"{d['load_average_before'][0]:.1f} before, {d['load_average_after'][0]:.1f} after)"
            )
            for s in d["stages"]:
                log(f"    {s['stage']}: {s['wall_s']:.1f} s wall, {s['cpu_s']:.1f} s CPU")


#: The result keys a demo run sets (:func:`_demo_step`).
DEMO_KEYS = ("demo_cold_s", "demo_cold_cpu_s", "demo_warm_s", "demo_warm_cpu_s")


def _keep_earlier_demo(res: dict[str, Any], out: Path) -> bool:
    """Copy the demo measurements of the results file ``out`` (an earlier run) into
    ``res``, with that run's date and load average; False if it holds none."""
    try:
        old = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if old.get("demo_cold_s") is None:
        return False
    for key, value in old.items():
        if key.startswith("demo_") and key != "demo_carried_over_from":
            res[key] = value
    res["demo_carried_over_from"] = old.get("demo_carried_over_from") or {
        "date": old["machine"]["date"],
        "mode": old.get("mode"),
        "load_average_at_start": old["machine"].get("load_average_at_start"),
    }
    log(f"demo not run: keeping the measurements of {res['demo_carried_over_from']['date']}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one timed fresh process")
    ap.add_argument(
        "--smoke", action="store_true", help="seconds: the CAR-T-only model, temp output"
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed fresh processes")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--before",
        metavar="REV",
        help="also compile cold with the code generator and solver template of git "
        "revision REV, in the same run (e.g. the main branch before a solver change)",
    )
    ap.add_argument(
        "--cold-only", action="store_true", help="the cold compile(s) only, no gradients"
    )
    ap.add_argument("--demo-only", action="store_true", help="the cold and warm demo only")
    ap.add_argument(
        "--no-demo", action="store_true", help="everything but the demo (kept from the file)"
    )
    ap.add_argument("--child", nargs=2, metavar=("NAME", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        name, arg = args.child
        print(json.dumps(CHILDREN[name](arg)), flush=True)
        return 0
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    components = "cart" if args.smoke else "full"
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if args.smoke:
        out = args.out or smoke_out("startup.json")
    else:
        out = args.out or RESULTS_DIR / "startup.json"
    res: dict[str, Any] = {
        "benchmark": "startup",
        "mode": mode,
        "components": components,
        "machine": machine_info(["carthema", "numba", "numpy", "pymc", "pytensor", "nutpie"]),
        "reasons": {},
    }
    if args.demo_only:
        _demo_step(res)
        res["machine"]["load_average_at_end"] = load_average()
        write_json(out, res)
        log(f"wrote {out}")
        return 0
    log(f"cold compile of the '{components}' model (fresh process, empty temporary cache)")
    cold = cold_compile(components)
    res["cold"] = cold
    res["cold_compile_cpu_s"] = cold["codegen_cpu_s"] + cold["numba_cpu_s"]
    res["cold_compile_wall_s"] = cold["codegen_wall_s"] + cold["numba_wall_s"]
    log(
        f"  {res['cold_compile_cpu_s']:.1f} s CPU ({res['cold_compile_wall_s']:.1f} s wall): "
        f"sympy {cold['codegen_cpu_s']:.1f}, solve and solve_sens "
        f"{cold['numba_cpu_s'] - cold['solve_population_cpu_s']:.1f}, solve_population "
        f"{cold['solve_population_cpu_s']:.1f}"
    )
    if args.before:
        log(f"cold compile by the code generator and solver template of {args.before}")
        before = cold_compile(f"{components}:{args.before}", "cold_before")
        res["cold_before"] = before
        res["cold_compile_cpu_s_before"] = before["codegen_cpu_s"] + before["numba_cpu_s"]
        res["cold_compile_speedup_cpu"] = (
            res["cold_compile_cpu_s_before"] / res["cold_compile_cpu_s"]
        )
        log(
            f"  {res['cold_compile_cpu_s_before']:.1f} s CPU: sympy {before['codegen_cpu_s']:.1f}, "
            f"solve {before['solve_cpu_s']:.1f}, solve_sens {before['solve_sens_cpu_s']:.1f}, "
            f"solve_population {before['solve_population_cpu_s']:.1f} "
            f"({res['cold_compile_speedup_cpu']:.2f}x this checkout's)"
        )
    if args.cold_only:
        res["first_gradient_fresh_s"] = res["first_gradient_fresh_s_pytensor"] = None
        res["reasons"]["first_gradient_fresh_s"] = "not run (--cold-only)"
        res["reasons"]["first_gradient_fresh_s_pytensor"] = "not run (--cold-only)"
    else:
        res["first_gradient_fresh_s"] = _gradient_step(res, "fast", components, repeats)
        res["second_patient_s"] = res["gradient_fast"]["second_patient_median_s"]
        res["first_gradient_fresh_cpu_s"] = float(
            np.median([r["cpu_s"] for r in res["gradient_fast"]["runs"]])
        )
    if args.cold_only:
        pass
    elif args.smoke:
        res["first_gradient_fresh_s_pytensor"] = None
        res["reasons"]["first_gradient_fresh_s_pytensor"] = (
            "not run in --smoke (PyTensor compiles for a minute even with warm caches)"
        )
    else:
        slow = _gradient_step(res, "pytensor", components, repeats)
        res["first_gradient_fresh_s_pytensor"] = slow
        res["speedup_first_gradient"] = slow / res["first_gradient_fresh_s"]
        res["first_gradient_fresh_cpu_s_pytensor"] = float(
            np.median([r["cpu_s"] for r in res["gradient_pytensor"]["runs"]])
        )
        res["speedup_first_gradient_cpu"] = (
            res["first_gradient_fresh_cpu_s_pytensor"] / res["first_gradient_fresh_cpu_s"]
        )
        log(
            f"  fast path {res['speedup_first_gradient']:.1f}x faster to the first gradient "
            f"({res['speedup_first_gradient_cpu']:.1f}x in CPU seconds)"
        )
    if args.smoke or args.cold_only or args.no_demo:
        why = "--smoke" if args.smoke else "--cold-only" if args.cold_only else "--no-demo"
        if not _keep_earlier_demo(res, out):
            for key in DEMO_KEYS:
                res[key] = None
                res["reasons"][key] = (
                    f"not run in {why} (`carthema demo` compiles and samples for minutes)"
                )
    else:
        _demo_step(res)
    res["machine"]["load_average_at_end"] = load_average()
    write_json(out, res)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
