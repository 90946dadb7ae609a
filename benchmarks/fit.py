"""Fitting benchmark: one synthetic patient, full model, three ways to get NUTS gradients.

Problem: the bundled synthetic patient VP002 (CAR-T qPCR, B cells, marrow blasts, ANC and
platelet series over 180 days; events: flu/cy days -5..-3, CAR-T day 0), the full model,
the 11 default free parameters plus residual SDs (14 unconstrained dimensions), the
same priors and likelihood (:func:`carthema.fitting.model.build.build_model`) for every path:

(a) ``carthema``: nutpie NUTS on PyTensor's numba-compiled log-density with the numba
    ODE solver and forward sensitivities inside (:class:`carthema.fitting.SolveOp`),
    low-rank mass matrix, chains started at the jittered MAP;
(b) ``jax_path``: nutpie NUTS on the JAX-compiled log-density, the ODE solved by diffrax
    (Tsit5, same tolerances) and differentiated by ``jax.grad`` (recursive-checkpoint
    adjoint), same adaptation and MAP start. MEASURED, not extrapolated: its own wall
    time, ESS and R-hat; by default as long as run (a), shorter with ``--jax-draws`` /
    ``--jax-tune`` (then the table says so, and its ESS/s is that of the shorter run);
(c) ``pm_ode``: ``pm.ode.DifferentialEquation`` (scipy ``odeint`` with PyTensor-derived
    forward sensitivities), one ``DifferentialEquation`` per segment between events.
    A run would take days, so it gets a fixed budget of gradient evaluations; its wall
    time is EXTRAPOLATED as (build + compile) + (gradient evaluations of run (a)) x
    (measured seconds per evaluation) / (parallel chains), and its ESS is ASSUMED equal to
    run (a)'s (the same sampler on the same posterior), which flatters it.

Compile reuse (:func:`run_compile_reuse`): seconds from the tables to a compiled nutpie
model of VP002 in a fresh process, of a second patient of the same model structure in the
same process (target < 25 % of the first) and of that patient in another fresh process
that finds the first one's caches on disk (target < 50 %).

Reported per path: wall_s (including model build, compilation and MAP), cpu_s (the
process's CPU seconds over the same span, every thread: the stable figure on shared
cores), sample_s, grad_evals, grad_evals_per_s (during sampling), min_ess_bulk,
ess_bulk_per_s (min bulk ESS / wall_s), max_rhat, divergences, extrapolated. Then a
parameter-recovery run: NUTS (path a) on virtual patients drawn from the population priors
(:func:`carthema.models.virtual.make_virtual_cohort`), with the 90 % interval coverage of
the true parameters, R-hat, ESS and divergences.

Usage::

    python benchmarks/fit.py            # 4 chains x (1000 tune + 1000 draws); 20 patients
    python benchmarks/fit.py --quick    # 4 chains x (150 + 150); 3 patients; small budgets
    python benchmarks/fit.py --skip-jax --skip-pm-ode --skip-recovery   # (a) + compile reuse
    python benchmarks/fit.py --smoke    # (a) 2 chains x (20 + 20), 1 recovery patient, temp out

Writes ``benchmarks/results/fit.json`` (``--out`` to change) and prints tables. Targets
(issue 4, 2-core machine): (a) under 60 s wall, R-hat <= 1.01, bulk ESS >= 400, no
divergences; >= 20x the ESS/s of (b), >= 1000x that of (c). Misses are printed and
recorded; the exit status is 0 unless a path fails outright.

One script (about 690 lines) on purpose: every timed path and its ``--smoke`` run share
one set-up, so what is timed is what the smoke run checks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS_DIR,
    fmt_ratio,
    load_average,
    machine_info,
    print_table,
    run_mode,
    write_json,
)

PATIENT = "VP002"
COMPONENTS = "full"
SEED = 20260101
RECOVERY_SEED = 4242


def _path_record(
    res, *, cpu_s: float | None = None, extrapolated: bool = False, note: str = ""
) -> dict:
    d = res.diagnostics
    t = res.timings
    wall = float(t["total_s"])
    sample = float(t.get("sample_s", np.nan))
    ge = int(t.get("grad_evals", 0))
    return {
        "wall_s": wall,
        # CPU seconds of the whole fit, every thread of this process (on a shared machine
        # the stable figure: wall seconds depend on what else runs); cpu_s / cores is a
        # lower bound of the wall time on idle cores.
        "cpu_s": cpu_s,
        "compile_s": float(t.get("compile_s", 0.0)),
        "map_s": float(t.get("map_s", 0.0)),
        "sample_s": sample,
        "grad_evals": ge,
        "grad_evals_per_s": ge / sample if sample > 0 else None,
        "min_ess_bulk": float(d.min_ess_bulk),
        "min_ess_tail": float(d.min_ess_tail),
        "ess_bulk_per_s": float(d.min_ess_bulk) / wall,
        "max_rhat": float(d.max_rhat),
        "divergences": int(d.divergences),
        "extrapolated": extrapolated,
        "chains": res.settings["chains"],
        "draws": res.settings["draws"],
        "tune": res.settings["tune"],
        "sampler": res.sampler,
        "note": note,
    }


def _fit(obs, ev, patient: str, truth, draws: int, tune: int, chains: int, sampler="nutpie"):
    """carthema's fit of ``patient`` with ``sampler`` (nutpie: path (a); nutpie-jax: path
    (b)), the benchmark's components and seed; (result, CPU seconds of the fit)."""
    from carthema.fitting import fit

    kw = {"draws": draws, "tune": tune, "chains": chains, "seed": SEED, "truth": truth}
    t_cpu = time.process_time()
    res = fit(obs, ev, patient, COMPONENTS, sampler=sampler, **kw)
    return res, time.process_time() - t_cpu


def run_carthema(obs, ev, truth, draws, tune, chains):
    res, cpu = _fit(obs, ev, PATIENT, truth, draws, tune, chains)
    note = "nutpie + numba (PyTensor numba backend), MAP init"
    return res, _path_record(res, cpu_s=cpu, note=note)


def run_jax(obs, ev, truth, draws, tune, chains):
    """A real nutpie-jax run (diffrax solve, ``jax.grad``), measured as it is: its own wall
    time, gradient evaluations, ESS and R-hat. Nothing is extrapolated; when the run is
    shorter than (a)'s (``--jax-draws``/``--jax-tune``), its ESS per second is still its
    own and the table says how long it was."""
    res, cpu = _fit(obs, ev, PATIENT, truth, draws, tune, chains, sampler="nutpie-jax")
    return _path_record(
        res,
        cpu_s=cpu,
        note=f"nutpie + JAX (diffrax, jax.grad), measured: {chains} x ({tune} + {draws})",
    )


# ---------------------------------------------------------------------------------------
# Compile reuse: one compile per model structure
# ---------------------------------------------------------------------------------------
def _ready_log_density(obs, ev, patient: str) -> dict:
    """Seconds from the patient's tables to nutpie's compiled model and a first MAP
    log-density-and-gradient value (model build, PyTensor -> numba, nutpie's C callback),
    the compile part of a nutpie fit."""
    from carthema.fitting import compiled
    from carthema.fitting.model.build import build_patient_model
    from carthema.fitting.sampling.laplace import value_grad_function

    before = dict(compiled.COMPILES)
    t0 = time.perf_counter()
    fm = build_patient_model(obs, ev, patient, COMPONENTS)
    t_build = time.perf_counter() - t0
    cm = compiled.nutpie_model(fm)
    t_nutpie = time.perf_counter() - t0 - t_build
    x0 = value_grad_function(fm, compile=False)[3]
    logp, _ = compiled.logp_grad(fm, cm)(x0)
    total = time.perf_counter() - t0
    new = {k: v - before.get(k, 0) for k, v in compiled.COMPILES.items()}
    return {
        "patient": patient,
        "build_s": t_build,
        "compile_s": t_nutpie,
        "total_s": total,
        "logp_at_start": float(logp),
        "compiles": {k: v for k, v in new.items() if v},
        "structure": repr(fm.structure),
    }


def compile_probe(patients: list[str]) -> list[dict]:
    """Run in a fresh process: :func:`_ready_log_density` of ``patients`` in order. With
    ``"auto"`` as the second id, the first other synthetic patient of the same structure
    (chosen untimed, after the first patient is timed)."""
    from carthema.data import load_example

    ex = load_example("synthetic")
    obs, ev = ex.observations, ex.events
    out = [_ready_log_density(obs, ev, patients[0])]
    for pid in patients[1:]:
        if pid == "auto":
            pid = same_structure_partner(obs, ev, patients[0])
        out.append(_ready_log_density(obs, ev, pid))
    return out


def same_structure_partner(obs, ev, patient: str) -> str:
    """The first other patient whose model has ``patient``'s structure."""
    from carthema.fitting.model.build import build_patient_model

    key = build_patient_model(obs, ev, patient, COMPONENTS).structure
    for pid in sorted(obs["patient"].astype(str).unique()):
        if pid != patient and build_patient_model(obs, ev, pid, COMPONENTS).structure == key:
            return pid
    raise RuntimeError(f"no other synthetic patient has the structure of {patient}")


def _probe_in_fresh_process(patients: list[str], compiledir: Path) -> list[dict]:
    import json
    import os
    import subprocess

    env = dict(os.environ)
    env["PYTENSOR_FLAGS"] = f"base_compiledir={compiledir}"
    cmd = [sys.executable, __file__, "--compile-probe", ",".join(patients)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_compile_reuse() -> dict:
    """First patient's compile in a fresh process with an empty PyTensor cache, a second
    patient of the same structure in that process, and that second patient in another
    fresh process that finds the first one's caches on disk (PyTensor's numba cache;
    carthema's generated solver is cached in both). Targets: second in-process < 25 %
    of the first, fresh process < 50 %."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="carthema-pytensor-") as tmp:
        first, second = _probe_in_fresh_process([PATIENT, "auto"], Path(tmp))
        (fresh,) = _probe_in_fresh_process([second["patient"]], Path(tmp))
    t1 = first["total_s"]
    return {
        "first": first,
        "second_same_process": second,
        "second_fresh_process": fresh,
        "ratio_same_process": second["total_s"] / t1,
        "ratio_fresh_process": fresh["total_s"] / t1,
        "note": "seconds from the tables to a compiled nutpie model and a first MAP "
        "log-density value; each probe is a new Python process (imports not counted); "
        "PyTensor's cache directory starts empty for the first probe",
    }


def pm_ode_predictor(data, free):
    """``theta -> (pred, ok)`` built from ``pm.ode.DifferentialEquation`` segments."""
    import pymc as pm
    import pytensor.tensor as pt

    model = data.model
    ev = data.events
    free_idx = [model.index("param", n) for n in free]
    p_fixed = [float(v) for v in data.p_fixed]
    times = data.times
    t0 = float(data.t0)

    def params(theta):
        p = list(p_fixed)
        for k, i in enumerate(free_idx):
            p[i] = pt.exp(theta[k])
        return p

    def stack(values):
        return pt.stack([pt.as_tensor_variable(v).astype("float64") for v in values])

    def predictor(theta):
        p = params(theta)
        y = stack(model.init(p, pt))
        y_init = y
        u = [0.0] * model.n_u
        bounds = sorted({float(t) for t in ev.t if t < times[-1]} | {t0})
        ends = [*bounds[1:], float(times[-1])]
        at: dict[float, object] = {}
        for a, b in zip(bounds, ends, strict=True):
            for k in np.flatnonzero(ev.t == a):
                if ev.kind[k] == 0:
                    amount = ev.value[k] * (p[ev.scale[k]] if ev.scale[k] >= 0 else 1.0)
                    y = pt.inc_subtensor(y[ev.target[k]], amount)
                else:
                    u[ev.target[k]] = float(ev.value[k])
            if b <= a:
                continue
            ts = times[(times > a) & (times <= b)]
            ts_solve = np.unique(np.append(ts, b))
            u_seg = list(u)

            def func(yv, t, th, u_seg=u_seg):
                return [pt.as_tensor_variable(d) for d in model.rhs(t, yv, params(th), u_seg, pt)]

            ode = pm.ode.DifferentialEquation(
                func=func, times=ts_solve, n_states=model.n_y, n_theta=len(free_idx), t0=a
            )
            Y = ode(y0=y, theta=theta)
            for j, tt in enumerate(ts_solve):
                if tt in ts:
                    at[float(tt)] = Y[j]
            y = Y[-1]
        if times[0] == t0:
            at[t0] = y_init
        preds = []
        for ti, oi in zip(data.t_idx, data.o_idx, strict=True):
            t = float(times[ti])
            yy = at[t]
            o = model.observe(t, [yy[i] for i in range(model.n_y)], p, pt)
            preds.append(pt.as_tensor_variable(o[oi]))
        return pt.stack(preds), pt.constant(1.0)

    return predictor


def run_pm_ode(obs, ev, budget: int, carthema_rec: dict, cores: int):
    """Fixed budget of pm.ode gradient evaluations, extrapolated to run (a)'s count."""
    from carthema import get_model
    from carthema.fitting.model.build import build_model
    from carthema.fitting.model.data import prepare_patient
    from carthema.fitting.model.priors import resolve_free

    model = get_model(COMPONENTS)
    data = prepare_patient(model, obs, ev, PATIENT)
    free = resolve_free(model, None)
    t0 = time.perf_counter()
    fm = build_model(data, free, predictor=pm_ode_predictor(data, free))
    fn = fm.pymc_model.logp_dlogp_function(ravel_inputs=True)
    fn.set_extra_values({})
    setup_s = time.perf_counter() - t0
    ip = fm.pymc_model.initial_point()
    x0 = np.concatenate([np.ravel(ip[v.name]) for v in fm.pymc_model.value_vars])
    rng = np.random.default_rng(0)
    fn(x0)  # first call: any lazy compilation is part of the setup
    setup_s = time.perf_counter() - t0
    times = []
    for _ in range(budget):
        x = x0 + 0.1 * rng.standard_normal(x0.size)
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    per_eval = float(np.mean(times))
    # Check: same log-density as the carthema path at the prior median.
    fm_ref = build_model(data, free)
    ref = fm_ref.pymc_model.logp_dlogp_function(ravel_inputs=True, mode="NUMBA")
    ref.set_extra_values({})
    lp_ode, g_ode = fn(x0)
    lp_ref, g_ref = ref(x0)
    n_eval = carthema_rec["grad_evals"]
    parallel = min(carthema_rec["chains"], cores)
    wall = setup_s + n_eval * per_eval / parallel
    ess = carthema_rec["min_ess_bulk"]
    return {
        "wall_s": wall,
        "compile_s": setup_s,
        "sample_s": n_eval * per_eval / parallel,
        "grad_evals": n_eval,
        "grad_evals_per_s": parallel / per_eval,
        "seconds_per_grad_eval": per_eval,
        "measured_grad_evals": budget,
        "min_ess_bulk": ess,
        "ess_bulk_per_s": ess / wall,
        "max_rhat": None,
        "divergences": None,
        "extrapolated": True,
        "chains": carthema_rec["chains"],
        "draws": carthema_rec["draws"],
        "tune": carthema_rec["tune"],
        "logp_abs_diff_vs_carthema": float(abs(lp_ode - lp_ref)),
        "grad_max_rel_diff_vs_carthema": float(
            np.max(np.abs(g_ode - g_ref)) / max(np.max(np.abs(g_ref)), 1e-12)
        ),
        "note": (
            f"EXTRAPOLATED from {budget} measured gradient evaluations: wall = setup + "
            f"{n_eval} evaluations (those of the carthema run) x {per_eval:.2f} s / "
            f"{parallel} parallel chains; ESS assumed equal to the carthema run's"
        ),
    }


def run_recovery(n: int, draws: int, tune: int, chains: int) -> dict:
    from carthema.models.virtual import make_virtual_cohort

    cohort = make_virtual_cohort(n, seed=RECOVERY_SEED)
    rows, per_patient = [], []
    for pid in sorted(cohort.observations["patient"].unique()):
        truth = cohort.parameters[cohort.parameters["patient"] == pid]
        truth = dict(zip(truth["name"], truth["value"], strict=True))
        t = time.perf_counter()
        res, _ = _fit(cohort.observations, cohort.events, pid, truth, draws, tune, chains)
        s = res.summary()
        s = s[s["kind"] == "parameter"]
        for _, r in s.iterrows():
            rows.append(
                {
                    "patient": pid,
                    "name": r["name"],
                    "true": r["true"],
                    "q05": r["q05"],
                    "q95": r["q95"],
                    "inside": bool(r["true_in_90"]),
                    "information": r["information"],
                }
            )
        d = res.diagnostics
        per_patient.append(
            {
                "patient": pid,
                "wall_s": time.perf_counter() - t,
                "max_rhat": d.max_rhat,
                "min_ess_bulk": d.min_ess_bulk,
                "divergences": d.divergences,
                "coverage_90": float(np.mean(s["true_in_90"].astype(bool))),
            }
        )
        print(
            f"  recovery {pid}: coverage {per_patient[-1]['coverage_90']:.2f}, R-hat "
            f"{d.max_rhat:.3f}, min ESS {d.min_ess_bulk:.0f}, divergences {d.divergences}, "
            f"{per_patient[-1]['wall_s']:.0f} s",
            flush=True,
        )
    inside = np.array([r["inside"] for r in rows])
    by_param = {}
    for name in dict.fromkeys(r["name"] for r in rows):
        v = [r["inside"] for r in rows if r["name"] == name]
        by_param[name] = float(np.mean(v))
    k = inside.size
    cover = float(inside.mean())
    return {
        "n_patients": len(per_patient),
        "n_intervals": int(k),
        "coverage_90": cover,
        # Binomial standard error of a 90 % coverage over k intervals (not independent
        # within a patient, so a lower bound on the real uncertainty).
        "coverage_se_if_nominal": float(np.sqrt(0.9 * 0.1 / k)),
        "coverage_by_parameter": by_param,
        "max_rhat": float(max(p["max_rhat"] for p in per_patient)),
        "min_ess_bulk": float(min(p["min_ess_bulk"] for p in per_patient)),
        "divergences": int(sum(p["divergences"] for p in per_patient)),
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "patients": per_patient,
        "intervals": rows,
    }


def _fmt(x, digits=3):
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if not np.isfinite(x):
        return "n/a"
    return f"{x:.{digits}g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (minutes)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "fit.json")
    ap.add_argument("--skip-jax", action="store_true", help="leave out path (b)")
    ap.add_argument("--skip-recovery", action="store_true")
    ap.add_argument("--skip-pm-ode", action="store_true", help="leave out path (c)")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the compile reuse")
    ap.add_argument("--jax-draws", type=int, default=None, help="draws of (b) (default: (a)'s)")
    ap.add_argument("--jax-tune", type=int, default=None, help="tuning of (b) (default: (a)'s)")
    ap.add_argument("--only-jax", action="store_true", help="run (b) alone, in this fresh process")
    ap.add_argument("--only-compile", action="store_true", help="measure the compile reuse alone")
    ap.add_argument("--compile-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="(a) with 2 chains x (20 + 20) and 1 recovery patient; no (b), (c) or compile "
        "reuse (each compiles for minutes); temporary output",
    )
    args = ap.parse_args(argv)
    mode = run_mode(args, "fit.json")
    if args.smoke:
        args.skip_jax = args.skip_pm_ode = args.skip_compile = True
    if args.compile_probe:
        import json

        print(json.dumps(compile_probe(args.compile_probe.split(","))))
        return 0
    quick = args.quick
    draws, tune, chains = (20, 20, 2) if args.smoke else (150, 150, 4) if quick else (1000, 1000, 4)
    jax_draws = draws if args.jax_draws is None else args.jax_draws
    jax_tune = tune if args.jax_tune is None else args.jax_tune
    jax_chains = chains
    budget = 3 if quick else 10
    n_rec, rec_draws, rec_tune = (
        (1, 20, 20) if args.smoke else (3, 200, 200) if quick else (20, 500, 500)
    )

    info = machine_info(["carthema", "pymc", "pytensor", "nutpie", "numba", "jax", "diffrax"])
    from carthema.data import load_example

    ex = load_example("synthetic")
    obs, ev = ex.observations, ex.events
    par = ex.tables["parameters"]
    par = par[par["patient"] == PATIENT]
    truth = dict(zip(par["name"], par["value"], strict=True))
    cores = info["cpu_usable"]

    if args.only_compile:
        c = run_compile_reuse()
        write_json(args.out, {"benchmark": "fit", "mode": "only-compile", "compile_reuse": c})
        for key in ("first", "second_same_process", "second_fresh_process"):
            r = c[key]
            print(f"  compile {key} ({r['patient']}): {r['total_s']:.2f} s {r['compiles']}")
        print(
            f"  second / first: same process {c['ratio_same_process']:.3f}, fresh process "
            f"{c['ratio_fresh_process']:.3f}"
        )
        return 0
    if args.only_jax:
        print(f"(b) JAX path: nutpie + diffrax, {jax_chains} chains x ({jax_tune} + {jax_draws})")
        rec_b = run_jax(obs, ev, truth, jax_draws, jax_tune, jax_chains)
        write_json(
            args.out,
            {
                "benchmark": "fit",
                "mode": "only-jax",
                "machine": info,
                "load_average_at_end": load_average(),
                "paths": {"jax_path": rec_b},
            },
        )
        print(
            f"jax_path: wall {rec_b['wall_s']:.1f} s (compile {rec_b['compile_s']:.1f}, MAP "
            f"{rec_b['map_s']:.1f}, sampling {rec_b['sample_s']:.1f}), "
            f"{rec_b['grad_evals']} gradient evaluations "
            f"({rec_b['grad_evals_per_s']:.1f}/s), min bulk ESS {rec_b['min_ess_bulk']:.0f} "
            f"({rec_b['ess_bulk_per_s']:.3f}/s), max R-hat {rec_b['max_rhat']:.4f}, "
            f"divergences {rec_b['divergences']}"
        )
        print(f"wrote {args.out}")
        return 0

    print(f"(a) carthema: nutpie + numba, {chains} chains x ({tune} + {draws})", flush=True)
    res_a, rec_a = run_carthema(obs, ev, truth, draws, tune, chains)
    paths = {"carthema": rec_a}
    cover_a = res_a.summary()
    cover_a = cover_a[cover_a["kind"] == "parameter"]
    rec_a["true_in_90"] = int(cover_a["true_in_90"].astype(bool).sum())
    rec_a["n_params"] = len(cover_a)

    if not args.skip_jax:
        print(f"(b) JAX path: nutpie + diffrax, {jax_chains} chains x ({jax_tune} + {jax_draws})")
        paths["jax_path"] = run_jax(obs, ev, truth, jax_draws, jax_tune, jax_chains)
    if not args.skip_pm_ode:
        print(f"(c) pm.ode.DifferentialEquation: {budget} gradient evaluations, extrapolated")
        paths["pm_ode"] = run_pm_ode(obs, ev, budget, rec_a, cores)
    compile_reuse = None
    if not args.skip_compile:
        print("compile reuse: first patient, second in the same process, second fresh")
        compile_reuse = run_compile_reuse()

    ratios = {}
    for other in ("jax_path", "pm_ode"):
        if other in paths:
            o = paths[other]
            ratios[f"ess_bulk_per_s_carthema_over_{other}"] = (
                rec_a["ess_bulk_per_s"] / (o["ess_bulk_per_s"])
            )
            ratios[f"grad_evals_per_s_carthema_over_{other}"] = (
                rec_a["grad_evals_per_s"] / (o["grad_evals_per_s"])
            )
    targets = {
        "carthema_wall_under_60s": rec_a["wall_s"] < 60.0,
        "carthema_rhat_le_1.01": rec_a["max_rhat"] <= 1.01,
        "carthema_min_ess_bulk_ge_400": rec_a["min_ess_bulk"] >= 400,
        "carthema_no_divergences": rec_a["divergences"] == 0,
    }
    if "ess_bulk_per_s_carthema_over_jax_path" in ratios:
        targets["ess_per_s_ge_20x_jax_path"] = ratios["ess_bulk_per_s_carthema_over_jax_path"] >= 20
    if "ess_bulk_per_s_carthema_over_pm_ode" in ratios:
        targets["ess_per_s_ge_1000x_pm_ode"] = ratios["ess_bulk_per_s_carthema_over_pm_ode"] >= 1000
    if compile_reuse is not None:
        targets["second_compile_same_process_under_25pct"] = (
            compile_reuse["ratio_same_process"] < 0.25
        )
        targets["second_compile_fresh_process_under_50pct"] = (
            compile_reuse["ratio_fresh_process"] < 0.50
        )

    recovery = None
    if not args.skip_recovery:
        print(f"recovery: {n_rec} virtual patients, {chains} chains x ({rec_tune} + {rec_draws})")
        recovery = run_recovery(n_rec, rec_draws, rec_tune, chains)

    result = {
        "benchmark": "fit",
        "mode": mode,
        "machine": info,
        "load_average_at_end": load_average(),
        "problem": {
            "patient": PATIENT,
            "data": "carthema.data.load_example('synthetic')",
            "components": COMPONENTS,
            "free": list(res_a.fit_model.free),
            "residual_sd_free": list(res_a.fit_model.sigma_free),
            "n_observations": int(res_a.fit_model.data.n),
            "unconstrained_dims": len(res_a.fit_model.free) + len(res_a.fit_model.sigma_free),
            "rtol": res_a.settings["rtol"],
            "atol": res_a.settings["atol"],
            "seed": SEED,
        },
        "paths": paths,
        "ratios": ratios,
        "compile_reuse": compile_reuse,
        "targets": targets,
        "recovery": recovery,
    }
    write_json(args.out, result)

    header = [
        "path",
        "wall",
        "CPU",
        "grad evals",
        "grad evals/s",
        "min bulk ESS",
        "ESS/s",
        "max R-hat",
        "divergences",
        "extrapolated",
    ]
    rows = []
    for name, r in paths.items():
        rows.append(
            [
                name,
                f"{r['wall_s']:.1f} s",
                "n/a" if r.get("cpu_s") is None else f"{r['cpu_s']:.1f} s",
                _fmt(int(r["grad_evals"])),
                _fmt(r["grad_evals_per_s"]),
                _fmt(r["min_ess_bulk"]),
                _fmt(r["ess_bulk_per_s"]),
                _fmt(r["max_rhat"], 4),
                _fmt(r["divergences"]),
                _fmt(r["extrapolated"]),
            ]
        )
    print_table(
        f"fit benchmark ({result['mode']}): patient {PATIENT}, full model, "
        f"{chains} chains x ({tune} tune + {draws} draws)",
        header,
        rows,
    )
    for k, v in ratios.items():
        print(f"  {k}: {fmt_ratio(v)}")
    if "pm_ode" in paths:
        print(f"  pm_ode: {paths['pm_ode']['note']}")
    if compile_reuse is not None:
        c = compile_reuse
        for label, key in (
            ("first patient", "first"),
            ("second, same process", "second_same_process"),
            ("second, fresh process", "second_fresh_process"),
        ):
            r = c[key]
            print(
                f"  compile {label} ({r['patient']}): {r['total_s']:.2f} s "
                f"(build {r['build_s']:.2f}, nutpie {r['compile_s']:.2f}; compiles {r['compiles']})"
            )
        print(
            f"  second / first: same process {c['ratio_same_process']:.3f}, fresh process "
            f"{c['ratio_fresh_process']:.3f}"
        )
    for k, v in targets.items():
        print(f"  target {k}: {'met' if v else 'MISSED'}")
    if recovery is not None:
        print(
            f"recovery over {recovery['n_patients']} virtual patients: 90 % interval coverage "
            f"{recovery['coverage_90']:.2f} of {recovery['n_intervals']} (nominal 0.90, "
            f"+-{recovery['coverage_se_if_nominal']:.2f}), max R-hat {recovery['max_rhat']:.3f}, "
            f"min bulk ESS {recovery['min_ess_bulk']:.0f}, divergences {recovery['divergences']}"
        )
        for name, c in recovery["coverage_by_parameter"].items():
            print(f"  {name}: {c:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
