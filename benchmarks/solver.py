"""Solver benchmark: numba vs scipy (LSODA) vs diffrax on the full carthema model.

Problem: the full model (CAR-T, B cells/leukaemia, haematopoiesis, donor graft) from
day -5 to day 180 of a typical tisagenlecleucel-like course (fludarabine +
cyclophosphamide on days -5..-3, 3.1e6 CAR+ cells/kg on day 0), daily outputs, default
parameters. Every solver gets the same tolerances: rtol = 1e-6 and an absolute
tolerance of 1e-8 times each state's typical size (``model.atol_scale``), the same
step limit, and restarts exactly at every event.

Measured (medians of many runs; the first call, which compiles, is excluded from the
medians and reported separately as warm-up):

1. one forward solve: numba Tsit5 / ROS34PW2 (rosenbrock) / auto; scipy
   ``solve_ivp(method="LSODA")`` with the model's Python right-hand side, restarted
   at each event; diffrax Tsit5 and Kvaerno5, jitted;
2. solve + gradient of a scalar loss w.r.t. 12 log-parameters: numba forward
   sensitivities (``solve_sens``) vs ``jax.grad`` through diffrax (and, in full mode,
   scipy forward finite differences);
3. the presets of ``carthema.models.solver_contract`` (FIT, SCREEN, PREDICT, SIMULATE)
   through the ``solve`` facade that every caller uses: one forward solve and, for FIT
   (the likelihood's settings), solve + gradient, each with the accuracy it keeps against
   a REFERENCE-preset solve (rtol 1e-11) of the same problem;
4. a virtual population of 10,000 patients (all parameters log-normal around the
   defaults, sd 0.2 on the log scale): numba ``solve_population`` (prange) vs
   ``jax.jit(jax.vmap(...))`` on the CPU, and on a GPU when ``jax.devices()`` has one.

Usage::

    python benchmarks/solver.py            # full mode (several minutes on 2 cores)
    python benchmarks/solver.py --quick    # about 2-3 minutes once numba's cache is warm
    python benchmarks/solver.py --smoke    # seconds: a few runs, no JAX, temporary output

Writes ``benchmarks/results/solver.json`` (``--out`` to change) and prints tables.
The exit status is 0 even when a target is missed (misses are printed and recorded);
it is 1 only when a solver fails or the backends disagree.

One script (about 990 lines) on purpose: every timed solver and its ``--smoke`` run share
one set of reference problems and tolerances, so what is timed is what the smoke run
checks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_run_options,
    fmt_ratio,
    fmt_time,
    load_average,
    print_table,
    run_header,
    run_mode,
    summary,
    time_calls,
    timed,
    usable_cpus,
    write_json,
)

RTOL = 1e-6
ATOL = 1e-8
MAX_STEPS = 100_000
N_POPULATION = 10_000
POP_LOG_SD = 0.2
SEED = 20240601
#: Floor added inside the log of the gradient loss (observables can be exactly 0:
#: CAR-T copies before the infusion, donor chimerism without a graft).
LOSS_EPS = 1e-6
#: A typical set of fitted parameters (CAR-T kinetics, killing, tumour burden, marrow).
FREE_PARAMS = (
    "cart_rho",
    "cart_alpha",
    "cart_fb",
    "cart_beta",
    "cart_f_dose",
    "kill_EC50",
    "leuk_L0",
    "anc0",
    "plt0",
    "hsc_regen",
    "infl_supp",
    "neu_mtt",
)
#: Observables compared between backends.
COMPARE_OBS = ("anc", "platelets", "cart_copies")
#: Relative differences are taken against max(|reference|, REL_FLOOR * peak of that
#: trajectory), so that values near zero (CAR-T before the infusion) do not blow up.
REL_FLOOR = 1e-3
#: Agreement expected between solvers that each meet rtol 1e-6 (differences add up
#: over 185 days); a larger difference marks a solver failure, not noise.
AGREE_TOL = 1e-3

TARGETS = {
    "forward_us": (100.0, "one numba forward solve < 100 us"),
    "speedup_vs_scipy": (100.0, "numba >= 100x faster than scipy LSODA"),
    "grad_us": (1000.0, "numba solve + gradient < 1 ms"),
    "population_10k_s": (5.0, "10,000 virtual patients (numba) < 5 s"),
}


@dataclass(frozen=True)
class Budget:
    """Number of timed runs per measurement."""

    numba: int
    numba_rosenbrock: int
    numba_grad: int
    scipy: int
    scipy_fd_grad: int
    diffrax_tsit5: int
    diffrax_kvaerno5: int
    jax_grad: int
    numba_population: int
    n_jax_population: int
    #: Virtual patients of the population run (the ``population_10k_*`` keys are for this
    #: many; only ``--smoke`` sets fewer).
    n_population: int = N_POPULATION


QUICK = Budget(
    numba=200,
    numba_rosenbrock=30,
    numba_grad=50,
    scipy=5,
    scipy_fd_grad=0,
    diffrax_tsit5=20,
    diffrax_kvaerno5=5,
    jax_grad=5,
    numba_population=1,
    n_jax_population=2_000,
)
#: Seconds: the same code paths with a handful of runs and 20 virtual patients (JAX left
#: out: diffrax compiles for minutes).
SMOKE = Budget(
    numba=3,
    numba_rosenbrock=2,
    numba_grad=2,
    scipy=1,
    scipy_fd_grad=0,
    diffrax_tsit5=1,
    diffrax_kvaerno5=1,
    jax_grad=1,
    numba_population=1,
    n_jax_population=20,
    n_population=20,
)
FULL = Budget(
    numba=1_000,
    numba_rosenbrock=200,
    numba_grad=300,
    scipy=10,
    scipy_fd_grad=2,
    diffrax_tsit5=100,
    diffrax_kvaerno5=20,
    jax_grad=30,
    numba_population=3,
    n_jax_population=N_POPULATION,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------
# Problem set-up
# ---------------------------------------------------------------------------------
@dataclass
class Problem:
    model: Any
    p: np.ndarray
    ev: Any
    t0: float
    t_out: np.ndarray
    u0: np.ndarray
    free: np.ndarray
    obs_idx: np.ndarray


def make_problem(n_free: int = len(FREE_PARAMS)) -> Problem:
    from carthema import get_model, typical_course
    from carthema.models.events import build_events

    m = get_model("full")
    p = m.default_params()
    ev = build_events(m, typical_course(), p)
    t0 = -5.0
    t_out = np.arange(-5.0, 181.0, 1.0)
    free = np.array([m.index("param", n) for n in FREE_PARAMS[:n_free]], dtype=np.int64)
    obs_idx = np.array([m.index("obs", n) for n in COMPARE_OBS], dtype=np.int64)
    return Problem(m, p, ev, t0, t_out, np.zeros(m.n_u), free, obs_idx)


def rel_diff(a: np.ndarray, ref: np.ndarray, time_axis: int = -2) -> np.ndarray:
    """|a - ref| / max(|ref|, REL_FLOOR * peak of |ref| over time)."""
    ref = np.asarray(ref, dtype=float)
    peak = np.max(np.abs(ref), axis=time_axis, keepdims=True)
    denom = np.maximum(np.abs(ref), REL_FLOOR * peak)
    denom = np.where(denom > 0, denom, 1.0)
    return np.abs(np.asarray(a, dtype=float) - ref) / denom


def agreement(pr: Problem, O: np.ndarray, O_ref: np.ndarray) -> dict[str, float]:
    """Max relative difference per compared observable; O are (..., n_t, n_obs)."""
    out = {}
    for name, j in zip(COMPARE_OBS, pr.obs_idx, strict=True):
        d = rel_diff(O[..., j : j + 1], O_ref[..., j : j + 1])
        out[name] = float(np.nanmax(d)) if np.all(np.isfinite(d)) else float("inf")
    return out


def loss_grad_from_sens(O: np.ndarray, dO: np.ndarray) -> np.ndarray:
    """Gradient of sum(log(O + eps)^2) from the observable sensitivities."""
    w = 2.0 * np.log(O + LOSS_EPS) / (O + LOSS_EPS)
    return np.einsum("tj,tjk->k", w, dO)


# ---------------------------------------------------------------------------------
# numba
# ---------------------------------------------------------------------------------
def bench_numba(pr: Problem, b: Budget, res: dict) -> dict:
    import numba

    from carthema.models.compiled import numba_model

    ev = pr.ev
    warm = res["warmup_s"]
    mod, warm["numba_load_module"] = timed(lambda: numba_model(pr.model))
    args = (pr.u0, pr.t0, pr.t_out, ev.t, ev.kind, ev.target, ev.value, ev.scale)
    out: dict[str, Any] = {}

    def solve(method: int):
        return mod.solve(pr.p, *args, RTOL, ATOL, MAX_STEPS, method)

    for name, code, n in (
        ("tsit5", 0, b.numba),
        ("rosenbrock", 1, b.numba_rosenbrock),
        ("auto", 2, b.numba),
    ):
        log(f"numba forward {name}: warm-up + {n} runs")
        (status, _, O, nsteps), warm[f"numba_first_solve_{name}"] = timed(lambda c=code: solve(c))
        res["status"][f"numba_{name}"] = int(status)
        res["n_steps"][f"numba_{name}"] = int(nsteps)
        res["timings_us"][f"numba_forward_{name}"] = summary(time_calls(lambda c=code: solve(c), n))
        out[f"O_{name}"] = O

    def grad(method: int):
        status, _, O, dO = mod.solve_sens(pr.p, pr.free, *args, RTOL, ATOL, MAX_STEPS, method)
        return status, loss_grad_from_sens(O, dO)

    for name, code in (("tsit5", 0), ("auto", 2)):
        log(f"numba solve_sens {name} ({pr.free.size} log-parameters): warm-up + {b.numba_grad}")
        (status, g), warm[f"numba_first_solve_sens_{name}"] = timed(lambda c=code: grad(c))
        res["status"][f"numba_sens_{name}"] = int(status)
        res["timings_us"][f"numba_grad_{name}"] = summary(
            time_calls(lambda c=code: grad(c), b.numba_grad)
        )
        out[f"grad_{name}"] = g

    out["mod"] = mod
    # The generated module's file name carries the hash of model + solver source.
    res["problem"]["numba_module"] = Path(getattr(mod, "__file__", "") or "?").name
    res["numba_threads"] = int(numba.get_num_threads())
    res["numba_threading_layer"] = _threading_layer()
    return out


def _threading_layer() -> str | None:
    import numba

    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel function has run yet
        return None


# ---------------------------------------------------------------------------------
# presets through the facade
# ---------------------------------------------------------------------------------
#: Presets timed (REFERENCE is the accuracy reference, not timed).
PRESET_NAMES = ("fit", "screen", "predict", "simulate")


def bench_presets(pr: Problem, b: Budget, res: dict) -> dict:
    """Forward solve per preset (and FIT solve + gradient) via ``solve``, with accuracy."""
    from carthema.models.solve import Schedule, solve
    from carthema.models.solver_contract import FIT, PRESETS, REFERENCE

    sched = Schedule.from_events(pr.model, pr.ev, pr.t_out, t0=pr.t0, u0=pr.u0)
    log("REFERENCE preset (rtol 1e-11) solve for the accuracy column")
    ref = solve(pr.model, pr.p, sched, REFERENCE)
    res["status"]["preset_reference"] = int(ref.status)
    out: dict[str, Any] = {}
    for name in PRESET_NAMES:
        opts = PRESETS[name]
        log(f"preset {name} ({opts}): warm-up + {b.numba} runs")
        sol = solve(pr.model, pr.p, sched, opts)
        res["status"][f"preset_{name}"] = int(sol.status)
        res["n_steps"][f"preset_{name}"] = sol.n_steps
        res["timings_us"][f"preset_forward_{name}"] = summary(
            time_calls(lambda o=opts: solve(pr.model, pr.p, sched, o), b.numba)
        )
        d = rel_diff(sol.obs, ref.obs)
        out[name] = {
            "options": repr(opts),
            "max_rel_err_all_obs": float(np.nanmax(d)) if np.all(np.isfinite(d)) else None,
            "max_rel_err": agreement(pr, sol.obs, ref.obs),
        }

    def grad():
        sol = solve(pr.model, pr.p, sched, FIT, free=pr.free)
        return sol.status, loss_grad_from_sens(sol.obs, sol.dobs)

    log(f"preset fit solve + gradient ({pr.free.size} log-parameters): {b.numba_grad} runs")
    (st, g), _ = timed(grad)
    refg = solve(pr.model, pr.p, sched, REFERENCE, free=pr.free)
    g_ref = loss_grad_from_sens(refg.obs, refg.dobs)
    res["status"]["preset_fit_grad"] = int(st)
    res["timings_us"]["preset_grad_fit"] = summary(time_calls(grad, b.numba_grad))
    out["fit"]["grad_max_abs_diff_over_max_abs"] = float(
        np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref))
    )
    return out


# ---------------------------------------------------------------------------------
# the solver of an earlier revision on the same generated model functions
# ---------------------------------------------------------------------------------
#: Where the generated model text ends and the solver template starts in a numba module.
_TEMPLATE_MARK = "\n\n\n# ==== generic solver: carthema/models/_solver_template.py ====\n"


def _git_show(rev: str, path: str) -> str | None:
    """Text of ``path`` at git revision ``rev`` of this checkout (None if absent)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:{path}"], capture_output=True, text=True
    )
    return out.stdout if out.returncode == 0 else None


def _model_text_of(rev: str, mod, model) -> tuple[str, str]:
    """(generated model functions, what printed them): the code generator of ``rev`` on
    this checkout's equations when it runs on them, else this checkout's generator."""
    import types

    src = _git_show(rev, "models/codegen.py")
    if src is not None:
        cg = types.ModuleType("carthema.models._codegen_before")
        cg.__package__ = "carthema.models"
        try:
            exec(compile(src, f"{rev}:models/codegen.py", "exec"), cg.__dict__)
            return cg.numba_source(model), f"the code generator of {rev}"
        except Exception as e:  # an older generator may not know this model's API
            log(f"the code generator of {rev} fails on this model ({e!r}); using this one")
    text = Path(mod.__file__).read_text(encoding="utf-8").split(_TEMPLATE_MARK)[0]
    return text, "this checkout's code generator"


def before_module(mod, rev: str, model=None):
    """The numba module of revision ``rev``'s solver: ``git show REV:models/
    _solver_template.py`` joined to this checkout's equations printed by the code generator
    of ``rev`` (:func:`_model_text_of`; the equations are the same, only how they are
    turned into code differs). Cached like any numba module: only its first use compiles.
    Returns ``(module, what printed the model functions)``."""
    from carthema.models.gencache import cache_key, generated_path, import_generated

    old = _git_show(rev, "models/_solver_template.py")
    if old is None:
        raise SystemExit(f"--before {rev}: no models/_solver_template.py at that revision")
    model_text, printer = _model_text_of(rev, mod, model)
    text = model_text.rstrip() + _TEMPLATE_MARK + old
    key = cache_key("numba", [text])
    stem = f"before_{''.join(c for c in rev if c.isalnum())[:12]}"
    path = generated_path("numba", stem, key)
    return import_generated(path, text, f"_bench_{stem}_{key}"), printer


def bench_before(pr: Problem, b: Budget, res: dict, mod, revs: list[str]) -> None:
    """FIT solve + gradient by this checkout's solver against the solver (code generator
    and template) of each revision in ``revs`` on the same equations in the same process,
    all alternated in rounds: wall medians of every call, and CPU time per call of each
    round (the stable figure on a loaded machine). ``res["before"]`` holds the first
    revision's comparison, ``res["before_all"]`` every revision's."""
    from carthema.models.solver_contract import FIT

    ev = pr.ev
    args = (pr.u0, pr.t0, pr.t_out, ev.t, ev.kind, ev.target, ev.value, ev.scale)
    opts = (FIT.rtol, FIT.atol, FIT.max_steps, FIT.numba_method)

    def grad(m):
        status, _, O, dO = m.solve_sens(pr.p, pr.free, *args, *opts)
        return status, loss_grad_from_sens(O, dO)

    mods: dict[str, Any] = {"after": mod}
    printers: dict[str, str] = {}
    first: dict[str, tuple] = {"after": grad(mod)}
    for rev in revs:
        log(f"the solver of {rev} on this checkout's equations (compiles once)")
        (mods[rev], printers[rev]), res["warmup_s"][f"before_module_{rev}"] = timed(
            lambda rev=rev: before_module(mod, rev, pr.model)
        )
        first[rev], res["warmup_s"][f"before_first_solve_sens_{rev}"] = timed(
            lambda rev=rev: grad(mods[rev])
        )
    rounds, n = 3, max(1, b.numba_grad // 3)
    wall: dict[str, list[np.ndarray]] = {k: [] for k in mods}
    cpu: dict[str, list[float]] = {k: [] for k in mods}
    log(f"FIT solve + gradient, this checkout vs {', '.join(revs)}: {rounds} rounds x {n} calls")
    for _ in range(rounds):
        for name, m in mods.items():
            c = time.process_time()
            wall[name].append(time_calls(lambda m=m: grad(m), n))
            cpu[name].append((time.process_time() - c) / n * 1e6)
    after = summary(np.concatenate(wall["after"]))
    st_new, g_new = first["after"]
    res["before_all"] = []
    for rev in revs:
        st_old, g_old = first[rev]
        before = summary(np.concatenate(wall[rev]))
        res["status"][f"before_fit_grad_{rev}"] = int(st_old)
        res["before_all"].append(
            {
                "revision": rev,
                "what": "FIT preset solve + gradient (solve_sens + loss gradient), "
                f"{pr.free.size} free log-parameters; the solver template of {rev} joined to "
                f"this checkout's equations as printed by {printers[rev]}, alternated with "
                "this checkout's solver",
                "wall_us_after": after,
                "wall_us_before": before,
                "cpu_us_per_call_after": cpu["after"],
                "cpu_us_per_call_before": cpu[rev],
                "speedup_wall_median": before["median"] / after["median"],
                "speedup_cpu": float(np.median(cpu[rev]) / np.median(cpu["after"])),
                "grad_max_abs_diff_over_max_abs": float(
                    np.max(np.abs(g_new - g_old)) / np.max(np.abs(g_old))
                ),
                "status_after": int(st_new),
            }
        )
    res["before"] = res["before_all"][0]


# ---------------------------------------------------------------------------------
# scipy (LSODA, Python right-hand side, restarted at each event)
# ---------------------------------------------------------------------------------
def scipy_solve(pr: Problem, p: np.ndarray) -> tuple[bool, np.ndarray, int, int]:
    """Observables at ``t_out``; an output at an event time is the pre-event state.

    Returns ``(success, O, nfev, njev)``.
    """
    from scipy.integrate import solve_ivp

    m, ev, t_out = pr.model, pr.ev, pr.t_out
    u = pr.u0.copy()
    y = np.array(m.init(p, np), dtype=float)
    atol = ATOL * m.atol_scale
    Y = np.full((t_out.size, m.n_y), np.nan)

    def rhs(t, yy):
        return np.array(m.rhs(t, yy, p, u, np))

    Y[t_out == pr.t0] = y
    bounds = sorted({float(x) for x in ev.t if pr.t0 < x < t_out[-1]} | {float(t_out[-1])})
    t, k, nfev, njev, ok = pr.t0, 0, 0, 0, True
    for tb in bounds:
        # events at t (the segment start) apply before integrating from t
        while k < ev.n and ev.t[k] <= t:
            if ev.kind[k] == 0:
                factor = p[ev.scale[k]] if ev.scale[k] >= 0 else 1.0
                y[ev.target[k]] += ev.value[k] * factor
            else:
                u[ev.target[k]] = ev.value[k]
            k += 1
        mask = (t_out > t) & (t_out <= tb)
        t_eval = np.unique(np.append(t_out[mask], tb))
        sol = solve_ivp(rhs, (t, tb), y, method="LSODA", rtol=RTOL, atol=atol, t_eval=t_eval)
        nfev += int(sol.nfev)
        njev += int(sol.njev)
        if not sol.success:
            ok = False
            break
        Y[mask] = sol.y[:, np.searchsorted(t_eval, t_out[mask])].T
        y = sol.y[:, -1].copy()
        t = tb
    O = np.array([m.observe(0.0, yy, p, np) for yy in Y], dtype=float)
    return ok, O, nfev, njev


def scipy_fd_grad(pr: Problem, h: float = 1e-4) -> tuple[bool, np.ndarray]:
    """Forward finite differences of the loss in log-parameters (1 + n_free solves)."""

    def loss(p):
        ok, O, _, _ = scipy_solve(pr, p)
        return ok, float(np.sum(np.log(O + LOSS_EPS) ** 2))

    ok0, l0 = loss(pr.p)
    g = np.empty(pr.free.size)
    for k, i in enumerate(pr.free):
        q = pr.p.copy()
        q[i] *= np.exp(h)
        ok, lk = loss(q)
        ok0 = ok0 and ok
        g[k] = (lk - l0) / h
    return ok0, g


def bench_scipy(pr: Problem, b: Budget, res: dict) -> dict:
    import scipy

    log(f"scipy LSODA (Python rhs, scipy {scipy.__version__}): {b.scipy} runs")
    (ok, O, nfev, njev), res["warmup_s"]["scipy_first_solve"] = timed(lambda: scipy_solve(pr, pr.p))
    res["status"]["scipy_lsoda"] = 0 if ok else 1
    res["n_steps"]["scipy_lsoda_nfev"] = nfev
    res["n_steps"]["scipy_lsoda_njev"] = njev
    res["timings_us"]["scipy_forward_lsoda"] = summary(
        time_calls(lambda: scipy_solve(pr, pr.p), b.scipy)
    )
    out: dict[str, Any] = {"O_scipy": O}
    if b.scipy_fd_grad > 0:
        log(f"scipy finite-difference gradient ({1 + pr.free.size} solves): {b.scipy_fd_grad}")
        ok, g = scipy_fd_grad(pr)
        res["status"]["scipy_fd_grad"] = 0 if ok else 1
        res["timings_us"]["scipy_fd_grad"] = summary(
            time_calls(lambda: scipy_fd_grad(pr), b.scipy_fd_grad)
        )
        out["grad_scipy_fd"] = g
    return out


# ---------------------------------------------------------------------------------
# JAX / diffrax
# ---------------------------------------------------------------------------------
def _jax_device_string(dev) -> str:
    import jax

    if dev.platform == "cpu":
        return (
            f"cpu: {dev.device_kind} device {dev.id} (jax {jax.__version__}, {usable_cpus()} cores)"
        )
    return f"{dev.platform}: {dev.device_kind} (jax {jax.__version__})"


def bench_jax(pr: Problem, b: Budget, res: dict) -> dict:
    import jax
    import jax.numpy as jnp

    from carthema.models import jax_backend  # enables float64 before any array exists

    ev = pr.ev
    warm = res["warmup_s"]
    out: dict[str, Any] = {}
    cpu = jax.devices("cpu")[0]
    res["jax_default_device"] = _jax_device_string(jax.devices()[0])

    def make(solver: str):
        return jax_backend.make_solver(
            pr.model, pr.t0, pr.t_out, ev.t, ev.kind, ev.target, ev.scale,
            solver=solver, rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS,
        )  # fmt: skip

    with jax.default_device(cpu):
        p_j = jnp.asarray(pr.p)
        u0_j = jnp.asarray(pr.u0)
        val_j = jnp.asarray(ev.value)
        for name, n in (("tsit5", b.diffrax_tsit5), ("kvaerno5", b.diffrax_kvaerno5)):
            f = jax.jit(make(name))

            def run(f=f):
                st, o = f(p_j, u0_j, val_j)
                return int(st), o.block_until_ready()

            log(f"diffrax {name} (jit, cpu): compile + {n} runs")
            (st, o), warm[f"jax_compile_and_first_solve_{name}"] = timed(run)
            res["status"][f"diffrax_{name}"] = st
            res["timings_us"][f"diffrax_forward_{name}"] = summary(time_calls(run, n))
            out[f"O_diffrax_{name}"] = np.asarray(o)

        # Gradient of the same scalar loss w.r.t. the free log-parameters, reverse mode
        # (diffrax's default RecursiveCheckpointAdjoint).
        solve_t5 = make("tsit5")
        free_j = jnp.asarray(pr.free)

        def loss(lq):
            pp = p_j.at[free_j].set(jnp.exp(lq))
            _, o = solve_t5(pp, u0_j, val_j)
            return jnp.sum(jnp.log(o + LOSS_EPS) ** 2)

        g_fn = jax.jit(jax.grad(loss))
        lq0 = jnp.log(p_j[free_j])
        log(f"jax.grad through diffrax tsit5 (jit, cpu): compile + {b.jax_grad} runs")
        g, warm["jax_compile_and_first_grad_tsit5"] = timed(
            lambda: np.asarray(g_fn(lq0).block_until_ready())
        )
        res["timings_us"]["jax_grad_tsit5"] = summary(
            time_calls(lambda: g_fn(lq0).block_until_ready(), b.jax_grad)
        )
        out["grad_jax"] = g
    return out


def population_params(pr: Problem, n: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    z = rng.standard_normal((n, pr.model.n_p))
    return np.ascontiguousarray(pr.p * np.exp(POP_LOG_SD * z))


def bench_population(pr: Problem, b: Budget, res: dict, mod, with_jax: bool = True) -> dict:
    ev = pr.ev
    warm = res["warmup_s"]
    P = population_params(pr, b.n_population)
    args = (pr.u0, pr.t0, pr.t_out, ev.t, ev.kind, ev.target, ev.value, ev.scale)
    pop: dict[str, Any] = {
        "n": b.n_population,
        "log_sd": POP_LOG_SD,
        "seed": SEED,
        "drawn": "every parameter log-normal around its default",
    }

    def run_numba(PP):
        return mod.solve_population(PP, *args, RTOL, ATOL, MAX_STEPS, 0)

    log("numba solve_population: warm-up on 2 patients")
    _, warm["numba_first_solve_population"] = timed(lambda: run_numba(P[:2].copy()))
    res["numba_threading_layer"] = _threading_layer()
    times = []
    for r in range(b.numba_population):
        log(f"numba solve_population, {b.n_population} patients, run {r + 1}/{b.numba_population}")
        (st_n, O_n), s = timed(lambda: run_numba(P))
        times.append(s)
    pop["numba_runs_s"] = [round(x, 4) for x in times]
    pop["numba_s"] = float(np.median(times))
    pop["numba_failed"] = int(np.sum(st_n != 0))
    pop["numba_status_counts"] = {
        str(k): int(v) for k, v in zip(*np.unique(st_n, return_counts=True), strict=True)
    }

    if not with_jax:
        return pop

    import jax

    from carthema.models import jax_backend

    solve = jax_backend.make_solver(
        pr.model, pr.t0, pr.t_out, ev.t, ev.kind, ev.target, ev.scale,
        solver="tsit5", rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS,
    )  # fmt: skip
    vsolve = jax.jit(jax.vmap(solve, in_axes=(0, None, None)))
    n_j = min(b.n_jax_population, N_POPULATION)
    pop["n_jax_measured"] = n_j
    pop["jax_extrapolated"] = n_j < N_POPULATION

    def run_jax(dev, key: str) -> tuple[float, np.ndarray, np.ndarray]:
        Pj = jax.device_put(P[:n_j], dev)
        u0j = jax.device_put(pr.u0, dev)
        vj = jax.device_put(ev.value, dev)
        log(f"jax.jit(jax.vmap) on {dev.platform}: compile for {n_j} patients")
        compiled, warm[f"jax_compile_population_{key}"] = timed(
            lambda: vsolve.lower(Pj, u0j, vj).compile()
        )
        log(f"jax.jit(jax.vmap) on {dev.platform}: {n_j} patients")
        (st, o), s = timed(lambda: jax.block_until_ready(compiled(Pj, u0j, vj)))
        return s, np.asarray(st), np.asarray(o)

    s, st_j, O_j = run_jax(jax.devices("cpu")[0], "cpu")
    pop["jax_cpu_s_measured"] = s
    pop["jax_cpu_s_10k"] = s * N_POPULATION / n_j
    pop["jax_failed"] = int(np.sum(st_j != 0))
    res["device"] = _jax_device_string(jax.devices("cpu")[0])

    ok = (st_n[:n_j] == 0) & (st_j == 0)
    pop["n_compared"] = int(ok.sum())
    pop["agreement_numba_vs_jax_max_rel"] = agreement(pr, O_j[ok], O_n[:n_j][ok])

    gpus = [d for d in jax.devices() if d.platform != "cpu"]
    if gpus:
        s, st_g, O_g = run_jax(gpus[0], "gpu")
        pop["jax_gpu_s_measured"] = s
        pop["jax_gpu_s_10k"] = s * N_POPULATION / n_j
        pop["jax_gpu_failed"] = int(np.sum(st_g != 0))
        okg = ok & (st_g == 0)
        pop["agreement_numba_vs_jax_gpu_max_rel"] = agreement(pr, O_g[okg], O_n[:n_j][okg])
        res["gpu_device"] = _jax_device_string(gpus[0])
    else:
        res["gpu_device"] = None
        pop["gpu_note"] = "jax.devices() shows no GPU; the JAX population ran on the CPU only"
    return pop


# ---------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------
def _med(res: dict, key: str) -> float | None:
    t = res["timings_us"].get(key)
    return None if t is None else t["median"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    smoke = "seconds: a few runs, no JAX, temporary output"
    add_run_options(ap, "solver.json", quick="fewer runs (about 2-3 minutes)", smoke=smoke)
    ap.add_argument("--skip-jax", action="store_true", help="numba and scipy only")
    ap.add_argument(
        "--n-free",
        type=int,
        default=len(FREE_PARAMS),
        help=f"differentiate w.r.t. the first N of the {len(FREE_PARAMS)} free parameters",
    )
    ap.add_argument(
        "--before",
        metavar="REV",
        action="append",
        help="also time FIT solve + gradient with the solver of git revision REV (its code "
        "generator and solver template) on this checkout's equations, alternated with this "
        "checkout's (e.g. b7b48a0, the solver before the fused sensitivities); repeatable",
    )
    args = ap.parse_args(argv)
    mode = run_mode(args, "solver.json")
    b = {"smoke": SMOKE, "quick": QUICK, "full": FULL}[mode]
    args.skip_jax = args.skip_jax or args.smoke
    t_start = time.perf_counter()

    packages = ["carthema", "numpy", "scipy", "numba", "llvmlite", "jax", "jaxlib", "diffrax"]
    res: dict[str, Any] = {
        **run_header("solver", mode, [*packages, "equinox"]),
        "rtol": RTOL,
        "atol": ATOL,
        "tolerances": (
            f"same for every solver: rtol={RTOL:g}; absolute tolerance of state i = "
            f"{ATOL:g} * model.atol_scale[i] (each state's typical size); "
            f"max_steps={MAX_STEPS}"
        ),
        "warmup_s": {},
        "timings_us": {},
        "status": {},
        "n_steps": {},
    }
    log(f"solver benchmark ({res['mode']} mode); load average {load_average()}")
    pr = make_problem(args.n_free)
    m = pr.model
    res["problem"] = {
        "model": m.name,
        "n_states": m.n_y,
        "n_params": m.n_p,
        "n_observables": m.n_obs,
        "t0": pr.t0,
        "t_end": float(pr.t_out[-1]),
        "n_outputs": int(pr.t_out.size),
        "course": "typical_course(): fludarabine 30 + cyclophosphamide 500 mg/m2 days -5..-3, "
        "CAR-T 3.1e6 cells/kg day 0",
        "n_solver_events": pr.ev.n,
        "free_params": list(FREE_PARAMS[: pr.free.size]),
        "gradient_loss": f"sum over days and observables of log(obs + {LOSS_EPS:g})^2, "
        "gradient w.r.t. the log of the free parameters",
    }

    nb = bench_numba(pr, b, res)
    if args.before:
        bench_before(pr, b, res, nb["mod"], args.before)
    res["presets"] = bench_presets(pr, b, res)
    sp = bench_scipy(pr, b, res)
    jx = {} if args.skip_jax else bench_jax(pr, b, res)
    pop = bench_population(pr, b, res, nb["mod"], with_jax=not args.skip_jax)

    # ---- agreement between solvers (forward: vs numba tsit5; gradient: vs numba) ----
    ref = nb["O_tsit5"]
    fwd_agree = {
        "numba_rosenbrock": agreement(pr, nb["O_rosenbrock"], ref),
        "numba_auto": agreement(pr, nb["O_auto"], ref),
        "scipy_lsoda": agreement(pr, sp["O_scipy"], ref),
    }
    for k in ("tsit5", "kvaerno5"):
        if f"O_diffrax_{k}" in jx:
            fwd_agree[f"diffrax_{k}"] = agreement(pr, jx[f"O_diffrax_{k}"], ref)
    g_ref = nb["grad_tsit5"]

    def g_rel(g):
        return float(np.max(np.abs(g - g_ref)) / np.max(np.abs(g_ref)))

    grad_agree = {"numba_auto": g_rel(nb["grad_auto"])}
    if "grad_jax" in jx:
        grad_agree["jax_grad"] = g_rel(jx["grad_jax"])
    if "grad_scipy_fd" in sp:
        grad_agree["scipy_forward_fd"] = g_rel(sp["grad_scipy_fd"])
    res["agreement"] = {
        "forward_max_rel_vs_numba_tsit5": fwd_agree,
        "gradient_max_abs_diff_over_max_abs_vs_numba_tsit5": grad_agree,
        "relative_difference": f"|x - ref| / max(|ref|, {REL_FLOOR:g} * peak of the trajectory)",
        "tolerance_for_ok": AGREE_TOL,
    }

    # ---- headline numbers ----
    res["numba_forward_us"] = _med(res, "numba_forward_tsit5")
    res["numba_forward_rosenbrock_us"] = _med(res, "numba_forward_rosenbrock")
    res["numba_forward_auto_us"] = _med(res, "numba_forward_auto")
    res["numba_grad_us"] = _med(res, "numba_grad_tsit5")
    res["numba_grad_auto_us"] = _med(res, "numba_grad_auto")
    res["scipy_forward_us"] = _med(res, "scipy_forward_lsoda")
    res["scipy_fd_grad_us"] = _med(res, "scipy_fd_grad")
    res["diffrax_tsit5_forward_us"] = _med(res, "diffrax_forward_tsit5")
    res["diffrax_kvaerno5_forward_us"] = _med(res, "diffrax_forward_kvaerno5")
    res["jax_grad_us"] = _med(res, "jax_grad_tsit5")
    res["speedup_vs_scipy"] = _ratio(res["scipy_forward_us"], res["numba_forward_us"])
    res["preset_forward_us"] = {n: _med(res, f"preset_forward_{n}") for n in PRESET_NAMES}
    res["preset_fit_grad_us"] = _med(res, "preset_grad_fit")
    res["population_10k_s_numba"] = pop["numba_s"]
    res["population_10k_s_jax"] = pop.get("jax_cpu_s_10k")
    res["population_10k_s_jax_gpu"] = pop.get("jax_gpu_s_10k")
    res.setdefault("device", None)
    res["population"] = pop
    res["ratios"] = {
        "scipy_lsoda_over_numba_forward": res["speedup_vs_scipy"],
        "diffrax_tsit5_over_numba_forward": _ratio(
            res["diffrax_tsit5_forward_us"], res["numba_forward_us"]
        ),
        "diffrax_kvaerno5_over_numba_forward": _ratio(
            res["diffrax_kvaerno5_forward_us"], res["numba_forward_us"]
        ),
        "numba_grad_over_numba_forward": _ratio(res["numba_grad_us"], res["numba_forward_us"]),
        "jax_grad_over_numba_grad": _ratio(res["jax_grad_us"], res["numba_grad_us"]),
        "scipy_fd_grad_over_numba_grad": _ratio(res["scipy_fd_grad_us"], res["numba_grad_us"]),
        "jax_population_over_numba_population": _ratio(
            res["population_10k_s_jax"], res["population_10k_s_numba"]
        ),
    }

    # ---- targets: reported, never hidden ----
    values = {
        "forward_us": res["numba_forward_us"],
        "speedup_vs_scipy": res["speedup_vs_scipy"],
        "grad_us": res["numba_grad_us"],
        "population_10k_s": res["population_10k_s_numba"],
    }
    targets = {}
    for key, (limit, text) in TARGETS.items():
        v = values[key]
        met = None if v is None else (v >= limit if key == "speedup_vs_scipy" else v < limit)
        targets[key] = {"target": text, "limit": limit, "value": v, "met": met}
    res["targets"] = targets
    res["machine"]["load_average_at_end"] = load_average()
    res["total_runtime_s"] = time.perf_counter() - t_start

    failures = [k for k, v in res["status"].items() if v != 0]
    if pop["numba_failed"] or pop.get("jax_failed"):
        failures.append(
            f"population: {pop['numba_failed']} numba / {pop.get('jax_failed')} jax patients failed"
        )
    disagree = [
        f"{solver} {obs}: {d:.2e}"
        for solver, dd in fwd_agree.items()
        for obs, d in dd.items()
        if not d <= AGREE_TOL
    ]
    disagree += [
        f"population numba vs jax {obs}: {d:.2e}"
        for obs, d in pop.get("agreement_numba_vs_jax_max_rel", {}).items()
        if not d <= AGREE_TOL
    ]
    res["failures"] = failures
    res["disagreements"] = disagree
    res["misses"] = [t["target"] for t in targets.values() if t["met"] is False]

    write_json(args.out, res)
    report(res, pr)
    log(f"wrote {args.out} (total {res['total_runtime_s']:.0f} s)")
    return 1 if failures or disagree else 0


def report(res: dict, pr: Problem) -> None:
    us = 1e-6
    tu = res["timings_us"]

    def row(label, key, steps="", ratio=None):
        t = tu.get(key)
        if t is None:
            return [label, "skipped", "", "", steps, "" if ratio is None else fmt_ratio(ratio)]
        return [
            label,
            fmt_time(t["median"] * us),
            f"{fmt_time(t['p25'] * us)} - {fmt_time(t['p75'] * us)}",
            str(t["n_runs"]),
            steps,
            "" if ratio is None else fmt_ratio(ratio),
        ]

    ns = res["n_steps"]
    fwd = res["numba_forward_us"]
    print()
    print(
        f"Full model ({res['problem']['n_states']} states), day -5..180, typical course "
        f"({res['problem']['n_solver_events']} solver events), daily outputs."
    )
    print(f"Tolerances: {res['tolerances']}.")
    print(
        f"Machine: {res['machine']['cpu_model']}, {res['machine']['cpu_usable']} cores; "
        f"load average {res['machine']['load_average_at_start']} at start, "
        f"{res['machine']['load_average_at_end']} at end."
    )
    hdr = ["solver", "median", "p25 - p75", "runs", "steps / rhs evals", "vs numba tsit5"]
    print_table(
        "1. One forward solve (warm-up excluded)",
        hdr,
        [
            row("numba tsit5", "numba_forward_tsit5", f"{ns.get('numba_tsit5')} steps", 1.0),
            row(
                "numba rosenbrock (ROS34PW2)",
                "numba_forward_rosenbrock",
                f"{ns.get('numba_rosenbrock')} steps",
                _ratio(res["numba_forward_rosenbrock_us"], fwd),
            ),
            row(
                "numba auto",
                "numba_forward_auto",
                f"{ns.get('numba_auto')} steps",
                _ratio(res["numba_forward_auto_us"], fwd),
            ),
            row(
                "scipy LSODA, Python rhs",
                "scipy_forward_lsoda",
                f"{ns.get('scipy_lsoda_nfev')} rhs, {ns.get('scipy_lsoda_njev')} jac",
                res["speedup_vs_scipy"],
            ),
            row(
                "diffrax Tsit5 (jit)",
                "diffrax_forward_tsit5",
                "",
                _ratio(res["diffrax_tsit5_forward_us"], fwd),
            ),
            row(
                "diffrax Kvaerno5 (jit)",
                "diffrax_forward_kvaerno5",
                "",
                _ratio(res["diffrax_kvaerno5_forward_us"], fwd),
            ),
        ],
    )
    g = res["numba_grad_us"]
    nf = len(res["problem"]["free_params"])
    print_table(
        f"2. Solve + gradient of a scalar loss w.r.t. {nf} log-parameters",
        [*hdr[:4], "method", "vs numba tsit5"],
        [
            row("numba tsit5 solve_sens", "numba_grad_tsit5", "forward sensitivities", 1.0),
            row(
                "numba auto solve_sens",
                "numba_grad_auto",
                "forward sensitivities",
                _ratio(res["numba_grad_auto_us"], g),
            ),
            row(
                "jax.grad, diffrax Tsit5 (jit)",
                "jax_grad_tsit5",
                "reverse mode (checkpointed)",
                _ratio(res["jax_grad_us"], g),
            ),
            row(
                "scipy LSODA finite differences",
                "scipy_fd_grad",
                f"forward FD, {1 + nf} solves",
                _ratio(res["scipy_fd_grad_us"], g),
            ),
        ],
    )
    pr_rows = []
    for name in PRESET_NAMES:
        acc = res["presets"][name]
        err = acc["max_rel_err_all_obs"]
        pr_rows.append(
            row(
                f"{name}: {acc['options'].removeprefix('SolverOptions')}",
                f"preset_forward_{name}",
                f"{ns.get(f'preset_{name}')} steps; max rel err {err:.1e}"
                if err is not None
                else "failed",
                _ratio(res["preset_forward_us"][name], fwd),
            )
        )
    ge = res["presets"]["fit"]["grad_max_abs_diff_over_max_abs"]
    pr_rows.append(
        row(
            "fit: solve + gradient (forward sensitivities)",
            "preset_grad_fit",
            f"gradient max diff / max {ge:.1e}",
            _ratio(res["preset_fit_grad_us"], fwd),
        )
    )
    print_table(
        "3. Presets through solve() (accuracy: all observables vs the REFERENCE preset)",
        hdr,
        pr_rows,
    )
    pop = res["population"]
    rows = [
        [
            f"numba solve_population (prange, {res['numba_threads']} threads)",
            fmt_time(pop["numba_s"]),
            f"{len(pop['numba_runs_s'])} runs, median",
            str(pop["numba_failed"]),
            "1.0x",
        ]
    ]
    if "n_jax_measured" in pop:
        n_j = pop["n_jax_measured"]
        extra = f" (extrapolated from {n_j})" if pop["jax_extrapolated"] else ""
        rows.append(
            [
                f"jax.jit(jax.vmap) diffrax Tsit5 on {res['device']}",
                fmt_time(pop["jax_cpu_s_10k"]) + extra,
                f"{fmt_time(pop['jax_cpu_s_measured'])} for {n_j}",
                str(pop["jax_failed"]),
                fmt_ratio(res["ratios"]["jax_population_over_numba_population"]),
            ]
        )
        if pop.get("jax_gpu_s_10k") is not None:
            rows.append(
                [
                    f"jax.jit(jax.vmap) on {res['gpu_device']}",
                    fmt_time(pop["jax_gpu_s_10k"]) + extra,
                    f"{fmt_time(pop['jax_gpu_s_measured'])} for {n_j}",
                    str(pop["jax_gpu_failed"]),
                    fmt_ratio(_ratio(pop["jax_gpu_s_10k"], pop["numba_s"])),
                ]
            )
        else:
            rows.append(["GPU", "none", "jax.devices() shows no GPU", "", ""])
    print_table(
        f"4. Virtual population of {pop['n']:,} patients (log-normal, sd {pop['log_sd']})",
        ["backend", f"{pop['n']:,} patients", "measured", "failed", "vs numba"],
        rows,
    )
    if "agreement_numba_vs_jax_max_rel" in pop:
        agr = pop["agreement_numba_vs_jax_max_rel"]
        print(
            f"numba vs jax population, {pop['n_compared']} patients: max relative difference "
            + ", ".join(f"{k} {v:.1e}" for k, v in agr.items())
        )
    print("Forward solves vs numba tsit5, max relative difference:")
    for solver, dd in res["agreement"]["forward_max_rel_vs_numba_tsit5"].items():
        print(f"  {solver:18s} " + ", ".join(f"{k} {v:.1e}" for k, v in dd.items()))
    print(
        "Gradient vs numba tsit5 solve_sens, max |g - g_ref| / max |g_ref|: "
        + ", ".join(
            f"{k} {v:.1e}"
            for k, v in res["agreement"][
                "gradient_max_abs_diff_over_max_abs_vs_numba_tsit5"
            ].items()
        )
    )
    for bf in res.get("before_all", []):
        print_table(
            f"FIT solve + gradient ({pr.free.size} log-parameters): this checkout vs the "
            f"solver of {bf['revision']} (same equations, same process, alternated)",
            ["solver", "median (wall)", "CPU per call (3 rounds)"],
            [
                [
                    name,
                    fmt_time(bf[f"wall_us_{name}"]["median"] * us),
                    ", ".join(f"{c:.0f} us" for c in bf[f"cpu_us_per_call_{name}"]),
                ]
                for name in ("after", "before")
            ],
        )
        print(
            f"speed-up: {fmt_ratio(bf['speedup_wall_median'])} (wall medians), "
            f"{fmt_ratio(bf['speedup_cpu'])} (CPU); gradients agree to "
            f"{bf['grad_max_abs_diff_over_max_abs']:.1e}"
        )
    print_table(
        "Warm-up (compilation or cache load; excluded from the medians)",
        ["step", "seconds"],
        [[k, f"{v:.2f}"] for k, v in res["warmup_s"].items()],
    )
    print_table(
        "Targets (2-core machine)",
        ["target", "measured", "met"],
        [
            [
                t["target"],
                "n/a"
                if t["value"] is None
                else (
                    fmt_ratio(t["value"])
                    if k == "speedup_vs_scipy"
                    else fmt_time(t["value"] * (1.0 if k == "population_10k_s" else us))
                ),
                {True: "yes", False: "NO", None: "not measured"}[t["met"]],
            ]
            for k, t in res["targets"].items()
        ],
    )
    for miss in res["misses"]:
        print(f"MISSED TARGET: {miss}")
    for f in res["failures"]:
        print(f"SOLVER FAILURE: {f}")
    for d in res["disagreements"]:
        print(f"DISAGREEMENT above {AGREE_TOL:g}: {d}")
    load = res["machine"]["load_average_at_start"]
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        print(
            f"note: load average {load[0]} at start on {os.cpu_count()} CPUs; other processes "
            "were running and the timings are noisier and slower than on an idle machine."
        )


if __name__ == "__main__":
    sys.exit(main())
