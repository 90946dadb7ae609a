"""Global sensitivity analysis of two clinical outputs of the full model (SALib).

Outputs (definitions in :mod:`carthema.clinical.sensitivity`), both in days:

1. ``severe_neutropenia``: days with ANC < 0.5 G/L in days 0-60 after the standard axi-cel
   course (flu/cy days -5..-3, 2e6 CAR+ cells/kg on day 0), around the model defaults;
2. ``engraftment``: days from a 5e6 CD34+/kg autologous boost on day 28 to neutrophil
   engraftment (first of 3 days with ANC > 0.5 G/L; censored at 60 days after the boost,
   0 if already engrafted), around a poor-reserve patient
   (``carthema.models.scenarios.POOR_RESERVE``).

Every non-structural parameter of ``get_model("full")`` varies log-uniformly within its
default (nominal) x/÷ 3, clipped to its plausible bounds. For each output: a Morris
screening (``--trajectories``) and Sobol first-order and total indices on all
parameters (Saltelli scheme, ``n * (D + 2)`` solves with the numba population solver).
For output 2 the nominal patient is also simulated without the boost, and the base
sample's patients with and without it, to say how much the boost matters.

Beside the local box, Spearman correlations in the calibrated LBCL population (correlated
traits, not a Sobol analysis): 1,000 patients per product (``--population-n``) drawn
from the shipped population, each under its product's course, days with ANC < 0.5 G/L
in days 0-60 against Cmax (highest daily ``cart_copies``), the baseline platelets and
ferritin, ``late_supp`` and the CAR-HEMATOTOX score (Rejeski et al. 2021 report
r = -0.43 with baseline platelets and 0.54 with ferritin, and no association with CRS
or peak cytokines).

Usage::

    python benchmarks/sensitivity.py --quick   # n = 256, 6 trajectories: ~1 minute on 2 cores
    python benchmarks/sensitivity.py           # n = 1024, 20 trajectories: a few minutes
    python benchmarks/sensitivity.py --smoke   # n = 16, 2 trajectories, temporary output

Writes ``benchmarks/results/sensitivity.json`` and ``sensitivity.png`` (``--out`` for
another JSON path; the PNG goes beside it), prints the tables, the wall time and the
machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, print_table, run_mode, write_json  # noqa: E402

TOP = 12
LABELS = {
    "severe_neutropenia": "Days with ANC < 0.5 G/L, days 0-60 (axi-cel course, defaults)",
    "engraftment": "Days from autologous boost (5e6 CD34+/kg, day 28) to ANC engraftment "
    "(poor reserve)",
}


def boost_effect(n: int, seed: int) -> dict[str, Any]:
    """Output "engraftment" with and without the boost: nominal patient, and ``n`` patients
    drawn log-uniformly from the same box (the Sobol base sample's distribution)."""
    from carthema.clinical import sensitivity as S
    from carthema.clinical.endpoints import ANC_ENGRAFT, engraftment
    from carthema.clinical.population.virtual import product_events

    s = S.setup_output("engraftment")
    rng = np.random.default_rng(seed)
    b = np.asarray(s.log_bounds)
    X = rng.uniform(b[:, 0], b[:, 1], size=(n, len(s.names)))
    P = np.vstack([s.nominal[None, :], s.params_matrix(X)])
    out: dict[str, Any] = {}
    times = {}
    for label, events in (("boost", s.events), ("no_boost", product_events(S.PRODUCT))):
        s.events = events
        status, anc = s.simulate(P)
        r = engraftment(s.days, anc, reference=S.BOOST_DAY, threshold=ANC_ENGRAFT)
        t = np.where(r.censored, S.ENGRAFT_FOLLOW_UP, r.time)
        t = np.where(r.already, 0.0, t)
        t[status != 0] = np.nan
        times[label] = t
        out[f"nominal_days_{label}"] = float(t[0])
        out[f"nominal_anc_on_boost_day_{label}"] = float(
            anc[0, int(np.flatnonzero(s.days == S.BOOST_DAY)[0])]
        )
        out[f"fraction_censored_{label}"] = float(np.mean(r.censored[1:]))
        out[f"fraction_already_{label}"] = float(np.mean(r.already[1:]))
        out[f"n_failed_{label}"] = int(np.sum(status[1:] != 0))
    d = times["no_boost"][1:] - times["boost"][1:]
    d = d[np.isfinite(d)]
    out["n_patients"] = int(n)
    out["days_saved_median"] = float(np.median(d))
    out["days_saved_q10_q90"] = [float(x) for x in np.quantile(d, [0.1, 0.9])]
    out["fraction_saved_ge_7d"] = float(np.mean(d >= 7))
    return out


def population_correlations(n: int, seed: int) -> dict[str, Any]:
    """Spearman correlations of the days with ANC < 0.5 G/L (days 0-60) with Cmax and the
    marrow traits, ``n`` patients per product of the shipped LBCL population."""
    from scipy.stats import spearmanr

    from carthema.clinical.population.natural_history import sample_patients
    from carthema.clinical.population.virtual import (
        load_population,
        population_params,
        product_events,
        simulate_obs,
    )
    from carthema.models.model import get_model

    model = get_model("full")
    pop, _ = load_population(disease="lbcl")
    days = np.arange(-7.0, 61.0)  # from before lymphodepletion (days -5..-3)
    after = days >= 0
    out: dict[str, Any] = {}
    for product in ("axi-cel", "tisa-cel"):
        pats = sample_patients(pop, n, np.random.default_rng(seed), product=product)
        P = population_params(model, pats)
        status, obs = simulate_obs(model, P, product_events(product), days)
        ok = status == 0
        anc = obs[:, after, model.index("obs", "anc")][ok]
        cmax = obs[:, after, model.index("obs", "cart_copies")][ok].max(axis=1)
        below = anc < 0.5
        days_all, days_early, days_late = below.sum(1), below[:, :15].sum(1), below[:, 15:].sum(1)

        def rho(x, y=days_all):
            return float(spearmanr(x, y).statistic)

        col = {k: pats[k].to_numpy(float)[ok] for k in
               ("plt0", "ferritin", "late_supp", "hematotox", "leuk_L0")}  # fmt: skip
        out[product] = {
            "n": int(ok.sum()),
            "n_failed": int((~ok).sum()),
            "median_days_anc_lt_0.5": float(np.median(days_all)),
            "cmax": rho(cmax),
            "plt0": rho(col["plt0"]),
            "ferritin": rho(col["ferritin"]),
            "late_supp": rho(col["late_supp"]),
            "hematotox": rho(col["hematotox"]),
            "cmax_days_15_60": rho(cmax, days_late),
            "cmax_days_0_14": rho(cmax, days_early),
            "cmax_with_leuk_L0": rho(cmax, col["leuk_L0"]),
            "cmax_with_late_supp": rho(cmax, col["late_supp"]),
        }
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outs = list(results)
    fig, axes = plt.subplots(1, len(outs), figsize=(7 * len(outs), 5.5), squeeze=False)
    for ax, name in zip(axes[0], outs, strict=True):
        rows = results[name]["sobol"][:TOP]
        labels = [r["parameter"] for r in rows][::-1]
        y = np.arange(len(rows))
        st = np.array([r["ST"] for r in rows])[::-1]
        st_c = np.array([r["ST_conf"] for r in rows])[::-1]
        s1 = np.array([r["S1"] for r in rows])[::-1]
        s1_c = np.array([r["S1_conf"] for r in rows])[::-1]
        ax.barh(y + 0.2, st, 0.4, xerr=st_c, label="ST (total)", color="tab:blue", capsize=2)
        ax.barh(y - 0.2, s1, 0.4, xerr=s1_c, label="S1 (first order)", color="tab:orange",
                capsize=2)  # fmt: skip
        ax.set_yticks(y, labels)
        ax.axvline(0.0, color="k", lw=0.5)
        ax.set_xlabel("Sobol index (fraction of output variance), 95% CI")
        a = results[name]["attrs"]
        ax.set_title(
            f"{LABELS[name]}\nmean {a['output_mean']:.1f} d, SD {a['output_sd']:.1f} d; "
            f"n = {a['n']}, {a['n_runs']} runs, {a['n_failed_runs']} failed",
            fontsize=9,
        )
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"carthema global sensitivity (Sobol, SALib): top {TOP} parameters by ST")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _records(df) -> list[dict[str, Any]]:
    out = []
    for name, row in df.iterrows():
        rec = {"parameter": name}
        for k, v in row.items():
            rec[k] = v if isinstance(v, str) else float(v)
        out.append(rec)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 256 and 6 Morris trajectories")
    ap.add_argument("--n", type=int, default=None, help="Sobol base sample (power of 2)")
    ap.add_argument("--trajectories", type=int, default=None, help="Morris trajectories")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "sensitivity.json")
    ap.add_argument("--smoke", action="store_true", help="n = 16, 2 trajectories, temp output")
    ap.add_argument(
        "--population-n", type=int, default=None, help="patients per product (default 1000)"
    )
    args = ap.parse_args(argv)
    n = args.n or (16 if args.smoke else 256 if args.quick else 1024)
    traj = args.trajectories or (2 if args.smoke else 6 if args.quick else 20)
    mode = run_mode(args, "sensitivity.json")

    machine = machine_info(["carthema", "numba", "numpy", "SALib"])
    t_start = time.perf_counter()
    from carthema.clinical import sensitivity as S
    from carthema.models.compiled import numba_model
    from carthema.models.model import get_model

    model = get_model("full")
    t = time.perf_counter()
    numba_model(model)
    load_s = time.perf_counter() - t

    results: dict[str, Any] = {}
    for name in S.OUTPUTS:
        t = time.perf_counter()
        mo = S.morris_screening(name, trajectories=traj, seed=args.seed)
        morris_s = time.perf_counter() - t
        t = time.perf_counter()
        so = S.sobol_indices(name, n=n, seed=args.seed)
        sobol_s = time.perf_counter() - t
        results[name] = {
            "definition": LABELS[name],
            "attrs": dict(so.attrs),
            "morris_attrs": dict(mo.attrs),
            "sobol": _records(so),
            "morris": _records(mo[["mu", "mu_star", "sigma", "mu_star_conf"]]),
            "sobol_s": sobol_s,
            "morris_s": morris_s,
            "solves_per_s": so.attrs["n_runs"] / sobol_s,
        }
        rows = []
        for r in results[name]["sobol"][:TOP]:
            m = mo.loc[r["parameter"]]
            rows.append(
                [r["parameter"], f"{r['ST']:.3f} ± {r['ST_conf']:.3f}",
                 f"{r['S1']:.3f} ± {r['S1_conf']:.3f}", f"{m['mu_star']:.1f}",
                 f"{r['low']:.3g} - {r['high']:.3g} {r['unit']}"]
            )  # fmt: skip
        a = so.attrs
        extra = ""
        if name == "engraftment":
            extra = (
                f"; censored {a['fraction_censored']:.0%}, already engrafted "
                f"{a['fraction_already_engrafted']:.0%}"
            )
        print_table(
            f"{LABELS[name]}\nnominal {a['nominal_value']:g} d, sample mean {a['output_mean']:.1f}"
            f" d, SD {a['output_sd']:.1f} d; {a['n_runs']} solves, {a['n_failed_runs']} failed "
            f"({a['n_blocks_dropped']} of {a['n']} blocks dropped){extra}; "
            f"Sobol {sobol_s:.1f} s, Morris {morris_s:.1f} s",
            ["parameter", "ST", "S1", "Morris mu* (d)", "range"],
            rows,
        )
    results["engraftment"]["boost_effect"] = boost_effect(min(n, 1024), args.seed + 1)
    be = results["engraftment"]["boost_effect"]
    print(
        f"\nBoost effect (poor-reserve nominal): engraftment {be['nominal_days_no_boost']:g} d "
        f"without, {be['nominal_days_boost']:g} d with the boost (ANC on day 28 "
        f"{be['nominal_anc_on_boost_day_boost']:.3f} G/L); over {be['n_patients']} patients "
        f"of the box: median {be['days_saved_median']:g} d saved (10-90%: "
        f"{be['days_saved_q10_q90']}), >= 7 d saved in {be['fraction_saved_ge_7d']:.0%}"
    )
    pop_n = args.population_n or (20 if args.smoke else 1000)
    corr = population_correlations(pop_n, args.seed)
    print_table(
        f"Spearman with days of ANC < 0.5 G/L (days 0-60), calibrated LBCL population, "
        f"{pop_n} patients per product, seed {args.seed}",
        ["with", *corr],
        [[k, *(f"{corr[g][k]:+.2f}" for g in corr)]
         for k in ("cmax", "plt0", "ferritin", "late_supp", "hematotox", "cmax_days_15_60",
                   "cmax_days_0_14", "cmax_with_leuk_L0", "cmax_with_late_supp")],
    )  # fmt: skip
    wall = time.perf_counter() - t_start
    data = {
        "mode": mode,
        "n": n,
        "trajectories": traj,
        "seed": args.seed,
        "factor": S.FACTOR,
        "wall_s": wall,
        "numba_load_s": load_s,
        "machine": machine,
        "device": "CPU only (numba prange); no GPU used",
        "outputs": results,
        "population_correlations": corr,
    }
    write_json(args.out, data)
    png = args.out.with_suffix(".png")
    plot(results, png)
    print(f"\nwall time {wall:.1f} s (numba load {load_s:.1f} s)")
    print(
        f"machine: {machine['cpu_model']}, {machine['cpu_usable']} usable CPUs, "
        f"{machine['platform']}, load at start {machine['load_average_at_start']}; no GPU"
    )
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
