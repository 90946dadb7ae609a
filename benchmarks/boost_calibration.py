"""Simulation-based calibration of predict-boost inside the model (issue 10, item 6).

Virtual patients of the calibrated population who are cytopenic on a random boost day
(days 21-90; ANC < 0.5 G/L or platelets < 20 G/L) get a boost (1-10e6 CD34+/kg,
autologous or CD34-selected new donor); their true engraftment times come from their own
parameters and graft parameters drawn from the graft distribution, with the one
engraftment definition. ``predict_boost`` sees only the boost-day state (ANC, platelets,
neutropenic days so far, with measurement noise; product; CAR-HEMATOTOX score). The
procedure is in :mod:`carthema.clinical.boost.calibration`.

Writes benchmarks/results/boost_calibration.json (coverage of the 90 % interval per
lineage and of the days of ANC < 0.5 / platelets < 20 G/L the boost saves, nominal
0.90, target 0.85-0.95 in the full run; n_patients; median ESS; wall time per
prediction) and boost_calibration.png (PIT histograms).

    python benchmarks/boost_calibration.py --quick     # 30 patients
    python benchmarks/boost_calibration.py             # 200 patients
    python benchmarks/boost_calibration.py --smoke     # seconds: 1 patient, temporary folder
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, smoke_out, write_json  # noqa: E402

from carthema.models.solver_contract import CONDITION  # noqa: E402


def _binomial_interval(k: int, n: int) -> list[float] | None:
    """Wilson 90 % interval of a proportion."""
    if n == 0:
        return None
    z, p = 1.645, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(centre - half), float(centre + half)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 patients")
    ap.add_argument("--smoke", action="store_true", help="seconds: 1 patient, temporary output")
    ap.add_argument("--n", type=int, default=None, help="virtual patients (default 200)")
    ap.add_argument("--draws", type=int, default=None, help="particles per prediction")
    ap.add_argument("--seed", type=int, default=20240610)
    ap.add_argument("--population", default=None, help="population CSV (default: the package's)")
    ap.add_argument("--out", default=str(RESULTS_DIR))
    ap.add_argument(
        "--speed-cases",
        type=int,
        default=3,
        help="cases predicted with the earlier sampler settings too, for the before/after "
        "wall time (0: none)",
    )
    a = ap.parse_args(argv)
    n = a.n if a.n is not None else (1 if a.smoke else 30 if a.quick else 200)
    if a.smoke:
        a.speed_cases = 0
        a.out = str(smoke_out("boost_calibration.json").parent)

    from carthema.clinical.boost.calibration import (
        LINEAGES,
        covered,
        covered_saved,
        cytopenic_cases,
        pit,
        predict_case,
    )
    from carthema.clinical.population.virtual import load_population
    from carthema.data.errors import InputError

    pop, meta = load_population(a.population)
    rng = np.random.default_rng(a.seed)
    cases = cytopenic_cases(n, rng, population=pop)
    speed = _speed(cases[: a.speed_cases], pop, a.draws) if a.speed_cases else None
    records, walls, esses, refused = [], [], [], []
    hits = {k: [] for k in (*LINEAGES, *SAVED)}
    pits = {k: [] for k in LINEAGES}
    folder = Path(a.out)
    folder.mkdir(parents=True, exist_ok=True)
    for j, case in enumerate(cases):
        t = time.perf_counter()
        try:
            res = predict_case(case, seed=j, n_draws=a.draws, population=pop)
        except InputError as exc:
            refused.append({"case": j, "vp": case.vp, "reason": str(exc)})
            print(f"[{j + 1}/{len(cases)}] {case.vp}: refused: {exc}", flush=True)
            continue
        wall = time.perf_counter() - t
        walls.append(wall)
        esses.append(res["effective_sample_size"])
        rec = {
            "vp": case.vp,
            "product": case.product,
            "hematotox": case.hematotox,
            "boost_day": case.day,
            "dose": case.dose,
            "source": case.source,
            "anc_observed": case.anc_obs,
            "platelets_observed": case.plt_obs,
            "neutropenia_days_observed": case.neutropenia_days_obs,
            "effective_sample_size": res["effective_sample_size"],
            "wall_s": wall,
        }
        ess = rec["effective_sample_size"]
        line = f"[{j + 1}/{len(cases)}] {case.vp} day {case.day:g} ESS {ess:.0f} {wall:.1f} s"
        for key in LINEAGES:
            s, truth = res[key], case.truth[key]
            rec[key] = {
                "truth": truth[0],
                "truth_censored": truth[1],
                "cytopenic": bool(case.cytopenic[key]),
                **{q: s[q] for q in ("median_days", "q05", "q95", "p_already", "p_never")},
            }
            if case.cytopenic[key]:
                c = covered(s, truth)
                u = pit(res["draw_engraftment"][key], truth, rng)
                rec[key]["covered"] = c
                rec[key]["pit"] = u
                if c is not None:
                    hits[key].append(bool(c))
                if u is not None:
                    pits[key].append(u)
                line += f" | {key}: true {truth[0]} pred {s['q05']}-{s['q95']} {_mark(c)}"
        for key in SAVED:
            q = res.get(key) or {}
            c = covered_saved(q, case.saved.get(key))
            rec[key] = {"truth": case.saved.get(key), "covered": c,
                        **{k: q.get(k) for k in ("median", "q05", "q95")}}  # fmt: skip
            if c is not None:
                hits[key].append(c)
            line += f" | {key.split('_')[0]} saved: true {case.saved.get(key)} pred "
            line += f"{q.get('q05')}-{q.get('q95')} {_mark(c)}"
        records.append(rec)
        print(line, flush=True)
        if (j + 1) % 10 == 0 and j + 1 < len(cases):  # a run cut short still leaves results
            _write(a, meta, records, refused, walls, esses, hits, pits, speed, folder, partial=True)
    out = _write(a, meta, records, refused, walls, esses, hits, pits, speed, folder)
    print(
        f"coverage of the 90% interval: neutrophils {out['coverage_90_neutrophil']} "
        f"(n={out['n_neutrophil']}), platelets {out['coverage_90_platelet']} "
        f"(n={out['n_platelet']}); days saved: neutropenia "
        f"{out['coverage_90_neutropenia_days_saved']}, thrombocytopenia "
        f"{out['coverage_90_thrombocytopenia_days_saved']}; median ESS {out['median_ess']}; "
        "median wall "
        f"{out['wall_s_per_prediction']['median']} s per prediction; refused {len(refused)}"
    )
    print(f"wrote {folder / 'boost_calibration.json'}")
    return out


#: Days-saved keys of predict-boost scored for coverage (every case).
SAVED = ("neutropenia_days_saved", "thrombocytopenia_days_saved")


def _mark(c: bool | None) -> str:
    """in / OUT, or "not scored" for a truth already engrafted on the boost day."""
    return "not scored" if c is None else ("in" if c else "OUT")


#: The sampler and solver settings before the speed-up (issue 10 follow-up): conditioning
#: solves at rtol 1e-5 / atol 1e-7 and up to 5 Metropolis moves per tempering stage.
BEFORE = {
    "OPTIONS": CONDITION.replace(rtol=1e-5, atol=1e-7),
    "MIN_MOVES": 2,
    "MAX_MOVES": 5,
    "MOVED": 0.75,
}


def _speed(cases, pop, draws) -> dict:
    """Wall time of the same predictions with the earlier settings and the current ones,
    interleaved so that both see the same machine load."""
    from carthema.clinical.boost import likelihood, smc
    from carthema.clinical.boost.calibration import predict_case

    home = {k: likelihood if k == "OPTIONS" else smc for k in BEFORE}
    now = {k: getattr(home[k], k) for k in BEFORE}
    rows = []
    for j, case in enumerate(cases):
        row = {"vp": case.vp}
        for label, settings in (("before", BEFORE), ("after", now)):
            for k, v in settings.items():
                setattr(home[k], k, v)
            t = time.perf_counter()
            res = predict_case(case, seed=1000 + j, n_draws=draws, population=pop)
            row[label] = {
                "wall_s": time.perf_counter() - t,
                "simulations": res["sampler"]["simulations"],
                "effective_sample_size": res["effective_sample_size"],
                "neutrophil": [res["neutrophil"][q] for q in ("q05", "median_days", "q95")],
                "platelet": [res["platelet"][q] for q in ("q05", "median_days", "q95")],
            }
        for k, v in now.items():
            setattr(home[k], k, v)
        print(
            f"speed {case.vp}: before {row['before']['wall_s']:.1f} s "
            f"({row['before']['simulations']} solves), after {row['after']['wall_s']:.1f} s "
            f"({row['after']['simulations']} solves)",
            flush=True,
        )
        rows.append(row)
    return {
        "before_settings": {k: str(v) for k, v in BEFORE.items()},
        "after_settings": {k: str(v) for k, v in now.items()},
        "median_wall_s_before": float(np.median([r["before"]["wall_s"] for r in rows])),
        "median_wall_s_after": float(np.median([r["after"]["wall_s"] for r in rows])),
        "median_simulations_before": float(np.median([r["before"]["simulations"] for r in rows])),
        "median_simulations_after": float(np.median([r["after"]["simulations"] for r in rows])),
        "cases": rows,
    }


def _write(a, meta, records, refused, walls, esses, hits, pits, speed, folder, partial=False):
    from carthema.clinical.boost.calibration import LINEAGES
    from carthema.clinical.boost.predict import N_PARTICLES

    out = {
        "benchmark": "boost_calibration",
        "mode": ("smoke" if a.smoke else "quick" if a.quick else "full")
        + (" (partial: still running)" if partial else ""),
        "n_patients": len(records),
        "n_refused": len(refused),
        "refused": refused,
        "particles": a.draws or N_PARTICLES,
        "median_ess": float(np.median(esses)) if esses else None,
        "min_ess": float(np.min(esses)) if esses else None,
        "wall_s_per_prediction": {
            "median": float(np.median(walls)) if walls else None,
            "max": float(np.max(walls)) if walls else None,
            "min": float(np.min(walls)) if walls else None,
        },
        "nominal": 0.90,
        "target": [0.85, 0.95],
        "population": {
            "file": "package default" if a.population is None else a.population,
            "effective_sample_size": meta.get("effective_sample_size"),
        },
        "seed": a.seed,
        "speed_before_after": speed,
        "machine": machine_info(["numpy", "numba", "scipy"]),
    }
    for key in LINEAGES:
        h = hits[key]
        out[f"coverage_90_{key}"] = float(np.mean(h)) if h else None
        out[f"n_{key}"] = len(h)
        out[f"coverage_90_{key}_interval"] = _binomial_interval(int(np.sum(h)), len(h))
        out[f"pit_{key}"] = pits[key]
    for key in SAVED:
        h = hits[key]
        out[f"coverage_90_{key}"] = float(np.mean(h)) if h else None
        out[f"n_{key}"] = len(h)
        out[f"coverage_90_{key}_interval"] = _binomial_interval(int(np.sum(h)), len(h))
    out["cases"] = records
    write_json(folder / "boost_calibration.json", out)
    _plot(pits, out, folder / "boost_calibration.png")
    return out


def _plot(pits: dict, out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pits), figsize=(10, 3.6))
    for ax, (key, u) in zip(np.atleast_1d(axes), pits.items(), strict=True):
        bins = np.linspace(0, 1, 11)
        ax.hist(u, bins=bins, color="C0", alpha=0.7, edgecolor="white", label="PIT of the truth")
        if u:
            ax.axhline(len(u) / 10, color="0.3", ls="--", lw=1, label="uniform (calibrated)")
        cov = out.get(f"coverage_90_{key}")
        cov_txt = "-" if cov is None else f"{cov:.2f}"
        ax.set_title(f"{key}: n={len(u)}, 90% coverage {cov_txt}")
        ax.set_xlabel("predictive probability of engraftment by the true time")
        ax.set_ylabel("virtual patients")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"predict-boost self-calibration ({out['mode']}, {out['n_patients']} virtual patients)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
