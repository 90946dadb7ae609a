"""Cohort benchmark: fits per second with 1 vs 2 dask workers; virtual-trial throughput.

1. Cohort fitting (:func:`carthema.fitting.workflows.cohort.fit_cohort`) on a LocalCluster of
   worker processes with one thread each. Patients: the bundled synthetic patients
   (``example:synthetic``), replicated under new ids to ``n_patients`` so that both
   workers stay busy to the end. Each patient is fitted independently (component set
   ``cart``; full mode: nutpie, quick mode: MAP). The same patients are fitted with 1 and
   with 2 workers; before timing, every worker imports carthema and loads the compiled
   solvers (``client.run``), and the cluster start-up is excluded. Timed: first
   submission to last result (``CohortResult.timings["fit_s"]``), median of repeats.
   Peer: 1 worker. ``speedup_2_workers`` = time with 1 worker / time with 2 workers
   (2.0 is perfect scaling; on a 2-core machine anything else running competes).
2. Virtual-trial simulation: ``n`` virtual patients drawn from the population priors
   (:func:`carthema.clinical.trial.population_draws`), full model, typical course
   (flu/cy days -5..-3, CAR-T day 0), daily outputs from day -5 to day 180, Tsit5 at the
   virtual trial's tolerances (rtol 1e-7, atol 1e-9 x state scale) on both backends:
   numba ``solve_population`` (prange over patients; peer) and JAX
   ``jax_backend.simulate_population`` (``jax.jit(jax.vmap)``, on ``jax.devices()[0]``,
   a GPU when there is one). Throughput = virtual patients x days simulated / second,
   compile and first call excluded (medians of repeats).

Usage::

    python benchmarks/cohort.py            # full mode (several minutes on 2 cores)
    python benchmarks/cohort.py --quick    # 1-3 minutes: MAP fits, small populations
    python benchmarks/cohort.py --smoke    # 2 MAP fits, 20 virtual patients, no JAX, temp out

Writes ``benchmarks/results/cohort.json`` (``--out`` to change) and prints tables. JSON
keys: ``speedup_2_workers``, ``virtual_patient_days_per_s_numba``,
``virtual_patient_days_per_s_jax``, ``device``, plus details under ``cohort`` and
``virtual_trial``. Exit status 1 only when a fit or a simulation fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
    usable_cpus,
    write_json,
)

SEED = 20240601
RTOL = 1e-7
ATOL = 1e-9
MAX_STEPS = 200_000
DAYS = np.arange(-5.0, 181.0, 1.0)


@dataclass(frozen=True)
class Budget:
    n_patients: int
    sampler: str
    draws: int
    tune: int
    chains: int
    repeats: int
    n_numba: int
    n_jax: int
    sim_repeats: int


QUICK = Budget(
    n_patients=4,
    sampler="map",
    draws=100,
    tune=0,
    chains=1,
    repeats=1,
    n_numba=1_000,
    n_jax=200,
    sim_repeats=1,
)
#: Seconds of numba, plus one PyTensor compile per worker: 2 patients by MAP, 20
#: virtual patients, no JAX.
SMOKE = Budget(
    n_patients=2,
    sampler="map",
    draws=10,
    tune=0,
    chains=1,
    repeats=1,
    n_numba=20,
    n_jax=10,
    sim_repeats=1,
)
FULL = Budget(
    n_patients=10,
    sampler="nutpie",
    draws=300,
    tune=300,
    chains=2,
    repeats=2,
    n_numba=10_000,
    n_jax=2_000,
    sim_repeats=3,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------
# 1. Cohort fitting, 1 vs 2 workers
# ---------------------------------------------------------------------------------
def replicated_patients(n: int):
    """Observations and events of ``n`` patients: the synthetic ones under new ids."""
    import pandas as pd

    from carthema.data import load_example

    ex = load_example("synthetic")
    ids = list(dict.fromkeys(ex.observations["patient"].astype(str)))
    obs, ev = [], []
    for i in range(n):
        src = ids[i % len(ids)]
        new = f"{src}-r{i // len(ids) + 1}"
        obs.append(ex.observations[ex.observations["patient"] == src].assign(patient=new))
        ev.append(ex.events[ex.events["patient"] == src].assign(patient=new))
    return pd.concat(obs, ignore_index=True), pd.concat(ev, ignore_index=True)


def _warm_worker() -> str:
    """Runs on each worker: import the fitting stack and load the compiled solvers."""
    import os

    from carthema.fitting import samplers  # noqa: F401
    from carthema.fitting.op.native import sens_module
    from carthema.models.compiled import numba_model
    from carthema.models.model import get_model

    model = get_model("cart")
    numba_model(model)
    sens_module("cart")
    return str(os.getpid())


def bench_cohort(b: Budget, res: dict) -> dict:
    from carthema.fitting.workflows.cohort import fit_cohort, local_client

    obs, ev = replicated_patients(b.n_patients)
    out: dict[str, Any] = {
        "n_patients": b.n_patients,
        "patients": "bundled synthetic patients VP001-VP005 replicated under new ids",
        "components": "cart",
        "sampler": b.sampler,
        "draws": b.draws,
        "tune": b.tune,
        "chains": b.chains,
        "threads_per_worker": 1,
        "cores_per_fit": 1,
        "timed": "first submission to last result; cluster start and warm-up excluded",
        "repeats": b.repeats,
        "by_workers": {},
    }
    failures = 0
    for workers in (1, 2):
        log(f"cohort: starting a LocalCluster with {workers} worker(s)")
        t0 = time.perf_counter()
        with local_client(workers) as client:
            start_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            pids = client.run(_warm_worker)
            warm_s = time.perf_counter() - t0
            times, per_patient = [], []
            for r in range(b.repeats):
                log(
                    f"cohort: {b.n_patients} patients, {b.sampler}, {workers} worker(s), "
                    f"run {r + 1}/{b.repeats}"
                )
                with tempfile.TemporaryDirectory(prefix="carthema-bench-cohort-") as tmp:
                    cr = fit_cohort(
                        obs,
                        ev,
                        tmp,
                        scheduler=client,
                        components="cart",
                        sampler=b.sampler,
                        draws=b.draws,
                        tune=b.tune,
                        chains=b.chains,
                        seed=SEED + r,
                        cores=1,
                    )
                failures += len(cr.failed)
                times.append(cr.timings["fit_s"])
                per_patient += [float(x) for x in cr.table["wall_s"]]
        out["by_workers"][str(workers)] = {
            "workers": len(pids),
            "cluster_start_s": start_s,
            "warmup_s": warm_s,
            "runs_s": [round(x, 3) for x in times],
            "median_s": float(np.median(times)),
            "patients_per_min": 60.0 * b.n_patients / float(np.median(times)),
            "per_patient_wall_s_median": float(np.median(per_patient)),
        }
    t1 = out["by_workers"]["1"]["median_s"]
    t2 = out["by_workers"]["2"]["median_s"]
    out["speedup_2_workers"] = t1 / t2 if t2 > 0 else None
    out["failed_fits"] = failures
    if failures:
        res["failures"].append(f"{failures} cohort fit(s) failed")
    return out


# ---------------------------------------------------------------------------------
# 2. Virtual-trial throughput, numba prange vs JAX vmap
# ---------------------------------------------------------------------------------
def bench_virtual(b: Budget, res: dict, with_jax: bool) -> dict:
    import numba

    from carthema.clinical.trial import population_draws
    from carthema.models.compiled import numba_model
    from carthema.models.events import build_events
    from carthema.models.model import get_model
    from carthema.models.numba_backend import METHODS
    from carthema.models.scenarios import typical_course

    model = get_model("full")
    ev = build_events(model, typical_course(patient="virtual"), model.default_params())
    n = max(b.n_numba, b.n_jax)
    P = np.ascontiguousarray(population_draws(model, n, np.random.default_rng(SEED)))
    patient_days = DAYS[-1] - DAYS[0]
    out: dict[str, Any] = {
        "model": model.name,
        "days": f"{DAYS[0]:g}..{DAYS[-1]:g} (daily outputs)",
        "days_per_patient": float(patient_days),
        "course": "typical_course(): flu/cy days -5..-3, CAR-T day 0",
        "draws": "population_draws(): population priors of the boost-prediction parameters",
        "solver": f"tsit5, rtol {RTOL:g}, atol {ATOL:g} x state scale, max_steps {MAX_STEPS}",
        "seed": SEED,
    }
    mod = numba_model(model)
    args = (np.zeros(model.n_u), DAYS[0], DAYS, ev.t, ev.kind, ev.target, ev.value, ev.scale)

    def run_numba(PP):
        return mod.solve_population(PP, *args, RTOL, ATOL, MAX_STEPS, METHODS["tsit5"])

    log("virtual trial, numba solve_population: warm-up")
    t0 = time.perf_counter()
    run_numba(P[:2].copy())
    out["numba_warmup_s"] = time.perf_counter() - t0
    Pn = np.ascontiguousarray(P[: b.n_numba])
    times = []
    for r in range(b.sim_repeats):
        log(f"virtual trial, numba: {b.n_numba} patients, run {r + 1}/{b.sim_repeats}")
        t0 = time.perf_counter()
        st_n, O_n = run_numba(Pn)
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    out["numba"] = {
        "n": b.n_numba,
        "threads": int(numba.get_num_threads()),
        "runs_s": [round(x, 4) for x in times],
        "median_s": s,
        "failed": int(np.sum(st_n != 0)),
        "patient_days_per_s": b.n_numba * patient_days / s,
    }
    if out["numba"]["failed"]:
        res["failures"].append(f"{out['numba']['failed']} numba virtual patients failed")
    if not with_jax:
        return out

    from carthema.models import jax_backend

    res["device"] = jax_backend.device_description()
    Pj = P[: b.n_jax]

    def run_jax():
        return jax_backend.simulate_population(
            model, Pj, DAYS, t0=DAYS[0], ev_t=ev.t, ev_kind=ev.kind, ev_target=ev.target,
            ev_value=ev.value, ev_scale=ev.scale, solver="tsit5", rtol=RTOL, atol=ATOL,
            max_steps=MAX_STEPS, chunk_size=max(b.n_jax, 1),
        )  # fmt: skip

    log(f"virtual trial, jax vmap on {res['device']}: compile + first call ({b.n_jax} patients)")
    t0 = time.perf_counter()
    run_jax()
    out["jax_compile_and_first_call_s"] = time.perf_counter() - t0
    times = []
    for r in range(b.sim_repeats):
        log(f"virtual trial, jax: {b.n_jax} patients, run {r + 1}/{b.sim_repeats}")
        t0 = time.perf_counter()
        st_j, O_j = run_jax()
        times.append(time.perf_counter() - t0)
    s = float(np.median(times))
    out["jax"] = {
        "n": b.n_jax,
        "device": res["device"],
        "runs_s": [round(x, 4) for x in times],
        "median_s": s,
        "failed": int(np.sum(st_j != 0)),
        "patient_days_per_s": b.n_jax * patient_days / s,
    }
    if out["jax"]["failed"]:
        res["failures"].append(f"{out['jax']['failed']} jax virtual patients failed")
    # Same draws, same solver and tolerances: the backends should agree closely.
    k = min(b.n_jax, b.n_numba)
    ok = (st_n[:k] == 0) & (st_j[:k] == 0)
    if ok.any():
        a, r_ = O_j[:k][ok], O_n[:k][ok]
        denom = np.maximum(np.abs(r_), 1e-3 * np.max(np.abs(r_), axis=1, keepdims=True))
        denom = np.where(denom > 0, denom, 1.0)
        out["agreement_max_rel_numba_vs_jax"] = float(np.nanmax(np.abs(a - r_) / denom))
    return out


# ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    smoke = "2 MAP fits, 20 virtual patients, no JAX, temp output"
    add_run_options(ap, "cohort.json", quick="MAP fits, small populations", smoke=smoke)
    ap.add_argument("--skip-jax", action="store_true", help="no JAX virtual trial")
    ap.add_argument("--skip-cohort", action="store_true", help="virtual trial only")
    args = ap.parse_args(argv)
    mode = run_mode(args, "cohort.json")
    b = {"smoke": SMOKE, "quick": QUICK, "full": FULL}[mode]
    args.skip_jax = args.skip_jax or args.smoke
    t_start = time.perf_counter()
    packages = ["carthema", "numpy", "numba", "jax", "jaxlib", "diffrax", "pymc", "pytensor"]
    res: dict[str, Any] = {
        **run_header("cohort", mode, [*packages, "nutpie", "dask", "distributed"]),
        "failures": [],
        "device": None,
    }
    log(f"cohort benchmark ({res['mode']} mode); load average {load_average()}")
    if not args.skip_cohort:
        res["cohort"] = bench_cohort(b, res)
        res["speedup_2_workers"] = res["cohort"]["speedup_2_workers"]
    else:
        res["speedup_2_workers"] = None
    vt = bench_virtual(b, res, with_jax=not args.skip_jax)
    res["virtual_trial"] = vt
    res["virtual_patient_days_per_s_numba"] = vt["numba"]["patient_days_per_s"]
    res["virtual_patient_days_per_s_jax"] = vt.get("jax", {}).get("patient_days_per_s")
    nb, jx = res["virtual_patient_days_per_s_numba"], res["virtual_patient_days_per_s_jax"]
    res["ratios"] = {
        "cohort_2_workers_over_1_worker_throughput": res["speedup_2_workers"],
        "jax_over_numba_patient_days_per_s": None if jx is None else jx / nb,
    }
    res["machine"]["load_average_at_end"] = load_average()
    res["total_runtime_s"] = time.perf_counter() - t_start
    write_json(args.out, res)
    report(res)
    log(f"wrote {args.out} (total {res['total_runtime_s']:.0f} s)")
    return 1 if res["failures"] else 0


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def report(res: dict) -> None:
    m = res["machine"]
    print()
    print(
        f"Machine: {m['cpu_model']}, {m['cpu_usable']} cores; load average "
        f"{m['load_average_at_start']} at start, {m['load_average_at_end']} at end."
    )
    if "cohort" in res:
        c = res["cohort"]
        rows = []
        for w, d in c["by_workers"].items():
            rows.append(
                [
                    f"{w} worker(s) x 1 thread",
                    fmt_time(d["median_s"]),
                    f"{d['patients_per_min']:.1f}",
                    fmt_time(d["per_patient_wall_s_median"]),
                    fmt_time(d["cluster_start_s"]),
                    fmt_ratio(c["by_workers"]["1"]["median_s"] / d["median_s"]),
                ]
            )
        print_table(
            f"1. Cohort fits: {c['n_patients']} patients, '{c['components']}' model, "
            f"{c['sampler']}" + ("" if c["sampler"] == "map" else f" {c['chains']} chains x "
                                 f"({c['tune']} tune + {c['draws']} draws)"),
            ["cluster", "all patients", "patients/min", "per patient", "cluster start",
             "vs 1 worker"],
            rows,
        )  # fmt: skip
    vt = res["virtual_trial"]
    rows = [
        [
            f"numba solve_population (prange, {vt['numba']['threads']} threads)",
            f"{vt['numba']['n']:,}",
            fmt_time(vt["numba"]["median_s"]),
            _rate(vt["numba"]["patient_days_per_s"]),
            str(vt["numba"]["failed"]),
            "1.0x",
        ]
    ]
    if "jax" in vt:
        rows.append(
            [
                f"jax.jit(jax.vmap) on {vt['jax']['device']}",
                f"{vt['jax']['n']:,}",
                fmt_time(vt["jax"]["median_s"]),
                _rate(vt["jax"]["patient_days_per_s"]),
                str(vt["jax"]["failed"]),
                fmt_ratio(res["ratios"]["jax_over_numba_patient_days_per_s"]),
            ]
        )
    print_table(
        f"2. Virtual trial: full model, {vt['days']}, {vt['solver']}",
        ["backend", "patients", "time", "patient-days/s", "failed", "vs numba"],
        rows,
    )
    if "agreement_max_rel_numba_vs_jax" in vt:
        print(f"numba vs jax, max relative difference: {vt['agreement_max_rel_numba_vs_jax']:.1e}")
    if res["speedup_2_workers"] is not None:
        print(f"speedup_2_workers = {res['speedup_2_workers']:.2f} (2.0 = perfect scaling)")
    load = m["load_average_at_start"]
    if load and load[0] > 0.5 * usable_cpus():
        print(
            f"note: load average {load[0]} at start on {usable_cpus()} usable CPUs; other "
            "processes were running, so the timings (and the speedup) are not meaningful."
        )
    for f in res["failures"]:
        print(f"FAILURE: {f}")


if __name__ == "__main__":
    sys.exit(main())
