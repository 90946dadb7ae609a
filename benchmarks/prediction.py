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
- ``predict_boost_s``: :func:`carthema.predict_boost` for three boost-day states (a
  poor-reserve aplastic patient on day 45, a G-CSF-supported one on day 60, a
  transfusion-dependent one on day 35), each timed once after a warm-up call.

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 boost days x 100 draws")
    ap.add_argument("--peer-sims", type=int, default=20, help="scipy simulations timed")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "prediction.json")
    ap.add_argument(
        "--smoke", action="store_true", help="2 days x 10 draws, one predict_boost case, temp out"
    )
    args = ap.parse_args(argv)
    n_days, n_draws = (2, 10) if args.smoke else (20, 100) if args.quick else (100, 500)
    cases = dict(list(PREDICT_CASES.items())[:1]) if args.smoke else PREDICT_CASES
    if args.smoke:
        args.peer_sims = 2
        if args.out == RESULTS_DIR / "prediction.json":
            args.out = smoke_out("prediction.json")
    res: dict = {"machine_start": machine_info(["numpy", "scipy", "numba", "pymc", "nutpie"])}

    import carthema
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
        pairs = [
            (int(rng.integers(n_draws)), float(rng.choice(days))) for _ in range(args.peer_sims)
        ]
        log(f"peer: {args.peer_sims} scipy LSODA simulations")
        peer = peer_seconds(ff.model, draws, events, pairs, FOLLOW_UP)

    log("predict_boost: warm-up")
    carthema.predict_boost(**PREDICT_CASES["aplastic, day 45"])
    pb = {}
    for name, case in cases.items():
        log(f"predict_boost: {name}")
        t = time.perf_counter()
        out = carthema.predict_boost(**case)
        pb[name] = {"seconds": time.perf_counter() - t, "ess": out["effective_sample_size"]}

    per_sim_us = scan_s / n_sims * 1e6
    peer_us = float(np.median(peer)) * 1e6
    res.update(
        {
            "device": "CPU (no GPU used)",
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
            "predict_boost": pb,
            "predict_boost_median_s": float(np.median([v["seconds"] for v in pb.values()])),
            "machine_end": machine_info([]),
        }
    )
    write_json(args.out, res)
    rows = [
        ["window scan (scan_window)", f"{scan_s:.1f} s", f"{per_sim_us:.0f} us/sim", "1x"],
        ["carthema window job", f"{job_s:.1f} s", "", ""],
        [
            "peer: scipy LSODA (extrapolated)",
            f"{peer_us * n_sims / 1e6:.0f} s",
            f"{peer_us:.0f} us/sim",
            f"{peer_us / per_sim_us:.0f}x slower",
        ],
        *[
            [f"predict_boost: {k}", f"{v['seconds']:.1f} s", f"ESS {v['ess']:.0f}", ""]
            for k, v in pb.items()
        ],
    ]
    print_table(
        f"Prediction speed, {n_days} boost days x {n_draws} draws, CPU "
        f"({res['machine_start']['cpu_usable']} cores)",
        ["what", "wall", "per unit", "ratio"],
        rows,
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
