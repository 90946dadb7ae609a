"""Simulation-based calibration of predict-boost inside the model (issue 10, item 6).

Virtual patients of the calibrated population who are cytopenic on a random boost day
(days 21-90; ANC < 0.5 G/L or platelets < 20 G/L) get a boost (1-10e6 CD34+/kg,
autologous or CD34-selected new donor); their true engraftment times come from their own
parameters and graft parameters drawn from the graft distribution, with the one
engraftment definition. ``predict_boost`` sees only the boost-day state (ANC, platelets,
neutropenic days so far, with measurement noise; product; CAR-HEMATOTOX score). The
procedure is in :mod:`carthema.clinical.boost.calibration`.

Writes benchmarks/results/boost_calibration.json and boost_calibration.png (PIT
histograms). The calibration score is the coverage of the central 90 % interval by the
randomised PIT (uniform for a calibrated prediction, ties broken at random), per lineage
and for the days of ANC < 0.5 / platelets < 20 G/L the boost saves: nominal 0.90, target
0.85-0.95 in the full run, with n and Wilson 90 % intervals. Printed beside it, the raw
coverage of the closed interval [q05, q95] as reported, with its expectation under
calibration (the mean predictive mass inside the reported intervals) and the share of
truths on an endpoint: engraftment days and days saved are whole days, so the closed
interval of a discrete distribution holds more than 90 % and its raw coverage exceeds
0.90 by construction (:mod:`carthema.clinical.boost.calibration`). Also: the PIT's tail
shares, variance (1/12 when uniform; smaller: over-dispersed predictions) and KS p-value;
n_patients; median ESS; wall time per prediction.

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

    from carthema.clinical.boost.calibration import LINEAGES, cytopenic_cases, predict_case
    from carthema.clinical.population.virtual import load_population
    from carthema.data.errors import InputError

    pop, meta = load_population(a.population)
    rng = np.random.default_rng(a.seed)
    cases = cytopenic_cases(n, rng, population=pop)
    speed = _speed(cases[: a.speed_cases], pop, a.draws) if a.speed_cases else None
    records, walls, esses, refused = [], [], [], []
    score = Scores()
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
                "withheld": s.get("withheld"),
            }
            if case.cytopenic[key]:
                rec[key].update(score.lineage(key, s, truth, res["draw_engraftment"][key], rng))
                line += f" | {key}: true {_days(truth[0])} "
                line += f"pred {_days(s['q05'])}-{_days(s['q95'])} "
                line += _mark(rec[key]["covered"], rec[key]["pit"])
        for key in SAVED:
            q = res.get(key) or {}
            truth = case.saved.get(key)
            rec[key] = {"truth": truth, **{k: q.get(k) for k in ("median", "q05", "q95")}}
            rec[key].update(score.saved(key, q, truth, res["draw_days_saved"][key], rng))
            line += f" | {key.split('_')[0]} saved: true {_days(truth)} pred "
            line += f"{_days(q.get('q05'))}-{_days(q.get('q95'))} "
            line += _mark(rec[key]["covered"], rec[key]["pit"])
        records.append(rec)
        print(line, flush=True)
        if (j + 1) % 10 == 0 and j + 1 < len(cases):  # a run cut short still leaves results
            _write(a, meta, records, refused, walls, esses, score, speed, folder, partial=True)
    out = _write(a, meta, records, refused, walls, esses, score, speed, folder)
    print("coverage of the central 90% interval by randomised PIT (raw closed [q05, q95] "
          "coverage; its expectation under calibration; truths on an endpoint):")  # fmt: skip
    for key in (*LINEAGES, *SAVED):
        ci = out[f"coverage_90_{key}_interval"] or [float("nan")] * 2
        print(
            f"  {key}: {_f(out[f'coverage_90_{key}'])} (n={out[f'n_{key}']}, Wilson "
            f"{ci[0]:.3f}-{ci[1]:.3f}); raw {_f(out[f'raw_coverage_90_{key}'])} "
            f"(expected {_f(out[f'expected_raw_coverage_90_{key}'])}); on an endpoint "
            f"{_f(out[f'share_on_endpoint_{key}'])}; PIT below 0.05 "
            f"{_f(out[f'pit_{key}_summary']['below_0.05'])}, above 0.95 "
            f"{_f(out[f'pit_{key}_summary']['above_0.95'])}, variance x12 "
            f"{_f(out[f'pit_{key}_summary']['variance_x12'])}"
        )
    ess, wall = out["median_ess"], out["wall_s_per_prediction"]["median"]
    print(
        f"median ESS {'-' if ess is None else f'{ess:.0f}'}; median wall "
        f"{'-' if wall is None else f'{wall:.1f}'} s per prediction; refused {len(refused)}"
    )
    print(f"wrote {folder / 'boost_calibration.json'}")
    return out


#: Days-saved keys of predict-boost scored for coverage (every case).
SAVED = ("neutropenia_days_saved", "thrombocytopenia_days_saved")


class Scores:
    """Per key (lineage or days saved): the central-90 % hit by randomised PIT, the raw
    closed-interval hit, the interval's predictive content, ties on an endpoint."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict]] = {}

    def _add(self, key: str, row: dict) -> dict:
        if row["pit"] is not None:
            self.rows.setdefault(key, []).append(row)
        return row

    def lineage(self, key, summary, truth, draws, rng) -> dict:
        from carthema.clinical.boost import calibration as cal

        u = cal.pit(draws, truth, rng)
        times = None if truth[0] == "already" else cal._times(draws)
        return self._add(key, {
            "pit": u,
            "central_90": cal.central(u),
            "covered": cal.covered(summary, truth),
            "content": cal.content(times, summary["q05"], summary["q95"]),
            "on_endpoint": cal.on_endpoint(summary, truth),
        })  # fmt: skip

    def saved(self, key, summary, truth, draws, rng) -> dict:
        from carthema.clinical.boost import calibration as cal

        if truth is None or draws is None or np.size(draws) == 0:
            return {"pit": None, "central_90": None, "covered": None, "content": None}
        u = cal.randomised_pit(np.asarray(draws), float(truth), rng)
        q05, q95 = summary.get("q05"), summary.get("q95")
        return self._add(key, {
            "pit": u,
            "central_90": cal.central(u),
            "covered": cal.covered_saved(summary, truth),
            "content": cal.content(np.asarray(draws), q05, q95),
            "on_endpoint": q05 is not None and (truth == q05 or truth == q95),
        })  # fmt: skip

    def summary(self, key: str) -> dict:
        """The JSON entries of one key."""
        rows = self.rows.get(key, [])
        hits = [r["central_90"] for r in rows]
        raw = [r["covered"] for r in rows if r["covered"] is not None]
        contents = [r["content"] for r in rows if r["content"] is not None]
        ties = [r["on_endpoint"] for r in rows if r["on_endpoint"] is not None]
        u = np.array([r["pit"] for r in rows], dtype=float)
        return {
            f"coverage_90_{key}": float(np.mean(hits)) if hits else None,
            f"n_{key}": len(hits),
            f"coverage_90_{key}_interval": _binomial_interval(int(np.sum(hits)), len(hits)),
            f"raw_coverage_90_{key}": float(np.mean(raw)) if raw else None,
            f"n_raw_{key}": len(raw),
            f"raw_coverage_90_{key}_interval": _binomial_interval(int(np.sum(raw)), len(raw)),
            f"expected_raw_coverage_90_{key}": float(np.mean(contents)) if contents else None,
            f"share_on_endpoint_{key}": float(np.mean(ties)) if ties else None,
            f"n_withheld_{key}": sum(1 for r in rows if r["covered"] is None),
            f"pit_{key}": u.tolist(),
            f"pit_{key}_summary": _pit_summary(u),
        }


def _pit_summary(u: np.ndarray) -> dict:
    """Tail shares (0.05 each when uniform), variance x 12 (1 when uniform; below 1: the
    predictions are over-dispersed, above: too narrow), KS p-value against uniform."""
    if u.size == 0:
        return {"below_0.05": None, "above_0.95": None, "variance_x12": None, "ks_p": None}
    from scipy.stats import kstest

    return {
        "below_0.05": float(np.mean(u < 0.05)),
        "above_0.95": float(np.mean(u > 0.95)),
        "variance_x12": float(np.var(u) * 12.0),
        "ks_p": float(kstest(u, "uniform").pvalue),
    }


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _days(x) -> str:
    """A number of days as printed: a day count to one decimal (the days-saved quantiles
    interpolate between whole days: 96.04999999999973 reads 96); text as it is."""
    return f"{round(x, 1):g}" if isinstance(x, int | float) else str(x)


def _mark(c: bool | None, u: float | None) -> str:
    """Raw closed-interval hit and the randomised PIT, or "not scored" (truth already
    engrafted on the boost day)."""
    if u is None:
        return "not scored"
    raw = "withheld" if c is None else ("in" if c else "OUT")
    return f"{raw} (PIT {u:.2f})"


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


def _write(a, meta, records, refused, walls, esses, score, speed, folder, partial=False):
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
        "scoring": "coverage_90_*: share of randomised PIT values in [0.05, 0.95] (the "
        "calibration score; ties broken at random); raw_coverage_90_*: share of truths in "
        "the closed reported interval [q05, q95], above 0.90 by construction for whole "
        "days (expected_raw_coverage_90_*: its mean predictive content)",
        "population": {
            "file": "package default" if a.population is None else a.population,
            "effective_sample_size": meta.get("effective_sample_size"),
        },
        "seed": a.seed,
        "speed_before_after": speed,
        "machine": machine_info(["numpy", "numba", "scipy"]),
    }
    for key in (*LINEAGES, *SAVED):
        out.update(score.summary(key))
    out["cases"] = records
    write_json(folder / "boost_calibration.json", out)
    _plot({k: out[f"pit_{k}"] for k in (*LINEAGES, *SAVED)}, out,
          folder / "boost_calibration.png")  # fmt: skip
    return out


def _plot(pits: dict, out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (key, u) in zip(np.ravel(axes), pits.items(), strict=True):
        bins = np.linspace(0, 1, 11)
        ax.hist(u, bins=bins, color="C0", alpha=0.7, edgecolor="white", label="PIT of the truth")
        if u:
            ax.axhline(len(u) / 10, color="0.3", ls="--", lw=1, label="uniform (calibrated)")
        cov, raw = out.get(f"coverage_90_{key}"), out.get(f"raw_coverage_90_{key}")
        ax.set_title(f"{key}: n={len(u)}\n90% coverage by PIT {_f(cov)} (raw closed {_f(raw)})",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("randomised PIT of the truth")
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
