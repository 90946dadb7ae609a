"""Prediction speed: a 100-day engraftment-window scan of a fitted patient and
``predict_boost``, against a hand-rolled scipy peer measured in the same run.

Run with::

    .venv/bin/python benchmarks/prediction.py           # 100 boost days x 500 draws
    .venv/bin/python benchmarks/prediction.py --quick   # 20 boost days x 100 draws
    .venv/bin/python benchmarks/prediction.py --smoke   # 2 x 10, one predict_boost, temp out

What is measured
----------------
- The fitted patient is VP004 of the bundled synthetic cohort, fitted by MAP (Laplace
  draws) in this run; the scan takes ``window_draws`` of it (posterior draws with graft
  parameters from the calibrated population), as ``carthema window`` does.
- ``scan_s``: one :func:`carthema.clinical.plans.scan_window` over boost days 1..N (each
  day: every draw with the boost, compared with the same draws without it), after a
  warm-up scan of 2 days x 10 draws (numba loads from its disk cache then).
- ``window_from_fit_s``: the whole ``carthema window`` job on the same days and draws
  (scan, no-boost baseline, transplant signals, bands, plot, files), without the report.
- Peer: the scan's simulations done one at a time with scipy's LSODA (``solve_ivp`` per
  segment between events, the model's equations evaluated with numpy; the independent
  reference of the test suite, ``tests/scipy_reference.py``) at the scan's tolerances.
  Running the peer over the whole scan would take hours, so it is timed on
  ``--peer-sims`` (draw, day) pairs picked at random and its per-simulation median is
  multiplied by the scan's number of simulations; the JSON marks that number as
  ``extrapolated``. The ratio is per simulation, both measured here.
- ``predict_boost_s``: :func:`carthema.predict_boost` (the conditioning, the boosted and
  the no-boost courses) for four boost-day states (issue 18's base case: axi-cel,
  CAR-HEMATOTOX 3, ANC 0 on day 45 after 30 neutropenic days, autologous 3e6 CD34+/kg;
  a poor-reserve aplastic patient on day 45, a G-CSF-supported one on day 60, a
  transfusion-dependent one on day 35), each timed ``--repeats`` times after a warm-up
  call (numba loads from its disk cache then); the median over cases and repeats is
  the figure against the issue's target of 5 s on 2 cores.
- Peer of ``predict_boost``: the same solves done one at a time by scipy's LSODA (the
  suite's reference solver): for each case, ``--boost-peer-sims`` (default 5) prior
  draws of the population are solved over the conditioning course (first event to the
  boost day, at the conditioning's rtol, 1e-4) and over the boosted and the
  no-boost course to 120 days after the boost (at the courses' rtol, 1e-6); their
  per-simulation medians times the call's own solve counts (``sampler.simulations``
  conditioning solves, one boosted course per particle, one no-boost course per
  distinct particle) give the peer's extrapolated wall time (marked
  ``extrapolated``), and the ratio is peer / measured, per case, in the same run.

``--boost-only`` skips the fit and the window scan (the predict_boost rows only; results
in ``benchmarks/results/prediction_boost.json``).

Each timed predict_boost call is interleaved with one under the solver settings before
the Tsit5 change ("before": the conditioning at CONDITION with the "auto" method, the
courses at PREDICT, the no-boost course for every particle; ``--no-before`` skips them),
so both see the same load; CPU seconds (this process, all threads) are reported beside
the wall time, and the ratio to the peer for both. A late boost the population cannot
reach (ANC 0 on day 200 after 30 neutropenic days) is timed to its refusal (issue 18:
within 30 s).

Results go to ``benchmarks/results/prediction.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import RESULTS_DIR, machine_info, print_table, smoke_out, write_json  # noqa: E402

from carthema.data.boost import BoostPlan  # noqa: E402

PATIENT = "VP004"
PREDICT_CASES = {
    "issue 18 base case, day 45": dict(
        graft=BoostPlan(45, 3e6, "autologous"),
        anc=0.0,
        neutropenia_days=30,
        product="axi-cel",
        hematotox=3,
    ),
    "aplastic, day 45": dict(
        graft=BoostPlan(45, 3e6, "autologous"), anc=0.1, platelets=12, neutropenia_days=40
    ),
    "on G-CSF, day 60": dict(
        graft=BoostPlan(60, 3e6, "autologous"), anc=0.8, platelets=30, gcsf=True
    ),
    "platelet-transfused, day 35": dict(
        graft=BoostPlan(35, 4e6, "prior-donor"), anc=0.3, platelets=25, plt_transfused=True
    ),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fitted_patient(folder: Path):
    import carthema
    from carthema.data import load_example
    from carthema.fitting.results.fitdir import load_fit

    ex = load_example("synthetic")
    r = carthema.fit(ex.observations, ex.events, PATIENT, sampler="map", draws=500, seed=3)
    r.save(folder, plot=False)
    return load_fit(folder)


def peer_seconds(model, draws, events, pairs, follow_up: float) -> np.ndarray:
    """Wall time of each scipy LSODA simulation of (draw, boost day) pairs."""
    from carthema.clinical.plans import Plan
    from carthema.models.events import build_events
    from carthema.models.scenarios import with_plan

    from scipy_reference import reference_solve

    out = np.empty(len(pairs))
    for k, (i, day) in enumerate(pairs):
        ev_df = with_plan(events, Plan(day=day))  # the graft scan_window scans by default
        t = time.perf_counter()
        ev = build_events(model, ev_df, draws[i])
        start = min(ev.first_time if ev.first_time is not None else 0.0, 0.0)
        days = np.arange(np.floor(start), day + follow_up + 0.5, 1.0)
        reference_solve(model, draws[i], ev, days, days[0], rtol=1e-7, method="LSODA")
        out[k] = time.perf_counter() - t
    return out


def boost_peer_seconds(case: dict, n: int, seed: int = 0) -> dict[str, float]:
    """Per-simulation wall time (median, s) of scipy LSODA on ``n`` population prior
    draws over a predict_boost case's conditioning course and its boosted and no-boost
    courses (see the module docstring)."""
    from carthema.clinical.boost import likelihood, outcome
    from carthema.clinical.boost.inputs import boost_courses, read_inputs
    from carthema.clinical.boost.predict import N_PARTICLES, prior_draws
    from carthema.clinical.boost.smc import MIN_ESS
    from carthema.data.boost import BoostPlan as Plan
    from carthema.models.events import build_events
    from carthema.models.model import get_model
    from carthema.models.scenarios import with_plan

    from scipy_reference import reference_solve

    model = get_model("full")
    keys = ("anc", "platelets", "gcsf", "gcsf_dependent", "plt_transfused", "tpo",
            "neutropenia_days", "product", "hematotox")  # fmt: skip
    kw = {k: case.get(k) for k in keys}
    for k in ("gcsf", "gcsf_dependent", "plt_transfused", "tpo"):
        kw[k] = bool(kw[k])
    inp = read_inputs(case["graft"], anc_lloq=0.05, gcsf_after=0.0, gcsf_since=None,
                      disease="lbcl", hematotox_labs=None, donor_chimerism=None,
                      n_draws=N_PARTICLES, min_ess=MIN_ESS, default_draws=N_PARTICLES,
                      horizon_days=120.0, **kw)  # fmt: skip
    courses = boost_courses(inp, None)
    course_rtol = outcome.COURSE_OPTIONS.rtol
    P = prior_draws(model, n, np.random.default_rng(seed), product=inp.product)
    horizon = inp.day + 120.0
    runs = {
        "conditioning": (courses.conditioned, inp.day, likelihood.OPTIONS.rtol),
        "boosted": (with_plan(courses.predicted, case["graft"]), horizon, course_rtol),
        "no_boost": (with_plan(courses.predicted, Plan()), horizon, course_rtol),
    }
    out = {}
    for name, (ev_df, end, rtol) in runs.items():
        secs = []
        for p in P:
            t = time.perf_counter()
            ev = build_events(model, ev_df, p)
            start = min(ev.first_time if ev.first_time is not None else 0.0, 0.0)
            days = np.arange(np.floor(start), end + 0.5, 1.0)
            reference_solve(model, p, ev, days, days[0], rtol=rtol, method="LSODA")
            secs.append(time.perf_counter() - t)
        out[name] = float(np.median(secs))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 boost days x 100 draws")
    ap.add_argument("--peer-sims", type=int, default=20, help="scipy simulations timed")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "prediction.json")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per predict_boost case")
    ap.add_argument(
        "--boost-peer-sims", type=int, default=5, help="scipy simulations per predict_boost course"
    )
    ap.add_argument(
        "--boost-only", action="store_true", help="only the predict_boost rows (no fit, no scan)"
    )
    ap.add_argument(
        "--smoke", action="store_true", help="2 days x 10 draws, one predict_boost case, temp out"
    )
    ap.add_argument(
        "--no-before",
        action="store_true",
        help="skip the predict_boost calls under the earlier solver settings",
    )
    args = ap.parse_args(argv)
    n_days, n_draws = (2, 10) if args.smoke else (20, 100) if args.quick else (100, 500)
    cases = dict(list(PREDICT_CASES.items())[:1]) if args.smoke else PREDICT_CASES
    if args.smoke:
        args.peer_sims, args.boost_peer_sims, args.repeats = 2, 2, 1
        if args.out == RESULTS_DIR / "prediction.json":
            args.out = smoke_out("prediction.json")
    elif args.boost_only and args.out == RESULTS_DIR / "prediction.json":
        args.out = RESULTS_DIR / "prediction_boost.json"  # the full run's file keeps its scan
    res: dict = {"machine_start": machine_info(["numpy", "scipy", "numba", "pymc", "nutpie"])}
    res["device"] = "CPU (no GPU used)"
    rows = [] if args.boost_only else scan_rows(res, n_days, n_draws, args.peer_sims)
    rows += boost_rows(res, cases, args.repeats, args.boost_peer_sims, before=not args.no_before)
    res["machine_end"] = machine_info([])
    write_json(args.out, res)
    print_table(
        f"Prediction speed, CPU ({res['machine_start']['cpu_usable']} cores, load average "
        f"{res['machine_start'].get('load_average_at_start')} at the start, "
        f"{res['machine_end'].get('load_average_at_start')} at the end)",
        ["what", "wall", "per unit", "ratio"],
        rows,
    )
    print(f"wrote {args.out}")
    return 0


def scan_rows(res: dict, n_days: int, n_draws: int, peer_sims: int) -> list[list[str]]:
    """The window scan of the fitted patient and its scipy peer (into ``res``)."""
    from carthema.clinical.plans import FOLLOW_UP, scan_window
    from carthema.clinical.window import window_draws, window_from_fit, without_boosts

    with tempfile.TemporaryDirectory() as tmp:
        log(f"MAP fit of {PATIENT} (synthetic cohort)")
        ff = fitted_patient(Path(tmp) / "fit")
        draws, _ = window_draws(ff, n_draws, seed=0)
        events, _ = without_boosts(ff.events)
        days = [float(d) for d in range(1, n_days + 1)]
        log("warm-up scan (2 days x 10 draws)")
        scan_window(ff.model, draws[:10], events, days[:2])
        log(f"scan: {n_days} boost days x {n_draws} draws")
        t = time.perf_counter()
        scan_window(ff.model, draws, events, days)
        scan_s = time.perf_counter() - t
        n_sims = n_draws * (n_days + 1)  # every day with the boost, plus the no-boost run
        log(f"window_from_fit: {n_days} boost days x {n_draws} draws")
        t = time.perf_counter()
        window_from_fit(ff, days, Path(tmp) / "window", n_draws=n_draws, seed=0, today=days[0])
        job_s = time.perf_counter() - t

        rng = np.random.default_rng(1)
        pairs = [(int(rng.integers(n_draws)), float(rng.choice(days))) for _ in range(peer_sims)]
        log(f"peer: {peer_sims} scipy LSODA simulations")
        peer = peer_seconds(ff.model, draws, events, pairs, FOLLOW_UP)

    per_sim_us = scan_s / n_sims * 1e6
    peer_us = float(np.median(peer)) * 1e6
    res.update(
        {
            "patient": PATIENT,
            "n_boost_days": n_days,
            "n_draws": n_draws,
            "n_simulations": n_sims,
            "scan_s": scan_s,
            "window_from_fit_s": job_s,
            "scan_per_simulation_us": per_sim_us,
            "peer": {
                "name": "scipy solve_ivp LSODA, numpy right-hand side, one simulation at a time",
                "n_timed": int(peer.size),
                "per_simulation_median_us": peer_us,
                "scan_s_extrapolated": peer_us * n_sims / 1e6,
                "extrapolated": True,
            },
            "speedup_per_simulation_vs_peer": peer_us / per_sim_us,
        }
    )
    return [
        ["window scan (scan_window)", f"{scan_s:.1f} s", f"{per_sim_us:.0f} us/sim", "1x"],
        ["carthema window job", f"{job_s:.1f} s", "", ""],
        [
            "peer: scipy LSODA (extrapolated)",
            f"{peer_us * n_sims / 1e6:.0f} s",
            f"{peer_us:.0f} us/sim",
            f"{peer_us / per_sim_us:.0f}x slower",
        ],
    ]


#: The issue's target for one predict_boost call (median, 2 cores, warm numba cache).
TARGET_S = 5.0


def _before_settings() -> dict:
    """The solver settings of predict_boost before the Tsit5 change (7c62f59): the
    conditioning at CONDITION with the "auto" method, the courses at PREDICT, the
    no-boost course solved for every particle (module attributes, set and restored)."""
    from carthema.models.solver_contract import CONDITION, PREDICT

    return {
        ("likelihood", "OPTIONS"): CONDITION,
        ("outcome", "COURSE_OPTIONS"): PREDICT,
        ("outcome", "DISTINCT_NO_BOOST"): False,
    }


def _apply(settings: dict) -> dict:
    """Set module attributes of carthema.clinical.boost; returns the previous values."""
    from carthema.clinical.boost import likelihood, outcome

    mods = {"likelihood": likelihood, "outcome": outcome}
    old = {}
    for (mod, name), value in settings.items():
        old[(mod, name)] = getattr(mods[mod], name)
        setattr(mods[mod], name, value)
    return old


def _timed(case: dict) -> tuple[float, float, dict]:
    import carthema

    t, c = time.perf_counter(), time.process_time()
    out = carthema.predict_boost(**case)
    return time.perf_counter() - t, time.process_time() - c, out


#: A late boost the population cannot reach (issue 18): ANC 0 on day 200 after only 30
#: neutropenic days; timed to its refusal (target: within 30 s).
REFUSED_CASE = dict(
    graft=BoostPlan(200, 3e6, "autologous"),
    anc=0.0,
    neutropenia_days=30,
    product="axi-cel",
    hematotox=3,
    seed=2,
)


def boost_rows(
    res: dict, cases: dict, repeats: int, peer_sims: int, before: bool = True
) -> list[list[str]]:
    """predict_boost per case (``repeats`` timed calls after a warm-up; with ``before``
    each interleaved with a call under the earlier solver settings, so that both see
    the same load), the refusal of :data:`REFUSED_CASE`, and the scipy peer (into
    ``res``)."""
    import carthema
    from carthema.data.errors import InputError

    log("predict_boost: warm-up")
    carthema.predict_boost(**next(iter(cases.values())))
    if before:
        old = _apply(_before_settings())
        carthema.predict_boost(**next(iter(cases.values())))  # the "auto" kernels' cache
        _apply(old)
    pb: dict = {}
    for name, case in cases.items():
        secs, cpu, secs_b, cpu_b = [], [], [], []
        for _ in range(repeats):
            log(f"predict_boost: {name}")
            w, c, out = _timed(case)
            secs.append(w)
            cpu.append(c)
            if before:
                old = _apply(_before_settings())
                try:
                    w, c, _ = _timed(case)
                finally:
                    _apply(old)
                secs_b.append(w)
                cpu_b.append(c)
        log(f"peer for {name}: {peer_sims} scipy LSODA simulations per course")
        per = boost_peer_seconds(case, peer_sims)
        n_cond = int(out["sampler"]["simulations"])
        # boosted: one solve per draw; no-boost: one per distinct conditioned particle
        n_course = int(out["n_draws"])
        n_none = int(out["sampler"]["distinct_particles"])
        peer_s = n_cond * per["conditioning"] + n_course * per["boosted"] + n_none * per["no_boost"]
        median = float(np.median(secs))
        pb[name] = {
            "seconds": secs,
            "median_s": median,
            # CPU seconds of this process (all its threads): less sensitive to the other
            # processes on the machine than the wall time.
            "cpu_seconds": cpu,
            "ess": out["effective_sample_size"],
            "conditioning_solves": n_cond,
            "course_solves": n_course + n_none,
            "peer": {
                "name": "scipy solve_ivp LSODA, numpy right-hand side, one simulation at a "
                "time, the same solves",
                "per_simulation_median_s": per,
                "n_timed_per_course": peer_sims,
                "seconds_extrapolated": peer_s,
                "extrapolated": True,
            },
            "speedup_vs_peer": peer_s / median,
            "speedup_vs_peer_cpu": peer_s / float(np.median(cpu)),
        }
        if before:
            pb[name]["before"] = {
                "settings": "conditioning CONDITION (auto), courses PREDICT (auto, rtol 1e-7), "
                "no-boost course for every particle",
                "seconds": secs_b,
                "cpu_seconds": cpu_b,
                "median_s": float(np.median(secs_b)),
                "median_cpu_s": float(np.median(cpu_b)),
            }
    all_secs = [x for v in pb.values() for x in v["seconds"]]
    median = float(np.median(all_secs))
    log("predict_boost: a late boost the population cannot reach (refusal)")
    t, c = time.perf_counter(), time.process_time()
    try:
        carthema.predict_boost(**REFUSED_CASE)
        refusal = {"refused": False}
    except InputError as exc:
        refusal = {"refused": True, "message": str(exc)}
    refusal.update(
        wall_s=time.perf_counter() - t,
        cpu_s=time.process_time() - c,
        case="ANC 0 on day 200 after 30 neutropenic days, axi-cel, CAR-HEMATOTOX 3",
    )
    res.update(
        {
            "predict_boost_refusal": refusal,
            "predict_boost": pb,
            "predict_boost_median_s": median,
            "predict_boost_target_s": TARGET_S,
            "predict_boost_target_met": median <= TARGET_S,
            "predict_boost_cpu_median_s": float(
                np.median([x for v in pb.values() for x in v["cpu_seconds"]])
            ),
        }
    )
    if before:
        res["predict_boost_before_median_s"] = float(
            np.median([x for v in pb.values() for x in v["before"]["seconds"]])
        )
    rows = [
        [
            f"predict_boost: {k}",
            f"{v['median_s']:.1f} s",
            f"ESS {v['ess']:.0f}, {v['conditioning_solves']} + {v['course_solves']} solves, "
            f"CPU {np.median(v['cpu_seconds']):.1f} s"
            + (
                f"; before {v['before']['median_s']:.1f} s, CPU {v['before']['median_cpu_s']:.1f} s"
                if "before" in v
                else ""
            ),
            f"peer {v['peer']['seconds_extrapolated']:.0f} s: {v['speedup_vs_peer']:.0f}x "
            f"(CPU {v['speedup_vs_peer_cpu']:.0f}x)",
        ]
        for k, v in pb.items()
    ]
    rows.append(
        [
            "predict_boost refusal, day 200",
            f"{refusal['wall_s']:.1f} s",
            f"CPU {refusal['cpu_s']:.1f} s, {'refused' if refusal['refused'] else 'NOT refused'}",
            "target <= 30 s",
        ]
    )
    rows.append(
        [
            "predict_boost median (all calls)",
            f"{median:.1f} s",
            f"target <= {TARGET_S:g} s",
            "met" if median <= TARGET_S else "not met",
        ]
    )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
