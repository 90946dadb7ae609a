"""Calibrate a disease's virtual population to the published natural history.

Procedure (virtual-population selection in the manner of Allen, Rieger & Musante 2016,
CPT Pharmacometrics Syst Pharmacol 5:140, with weights found by optimisation as in
the prevalence weighting of Schmidt et al. 2013, BMC Bioinformatics 14:221):

1. Draw ``n`` plausible patients once, from the wide distributions of the plausible
   population (each parameter's ``plausible`` spread, correlated through
   :data:`carthema.clinical.population.virtual.TRAITS`) at the disease's own tumour load
   (the disease preset, e.g. LBCL 300 cells/uL-equivalents), and simulate every one of
   them under every product of the rows (axi-cel, tisa-cel), each with the product's
   own lymphodepletion, dose and CAR-T/CRS kinetics, days -7..180.
2. For every patient and product compute the per-patient values behind every
   statistic of the calibration file
   (:func:`carthema.clinical.population.statistics.per_patient`) and the patient's
   CAR-HEMATOTOX score from its own baseline values (the same under every product).
3. Find ONE weight vector over the patients (a softmax), shared by every product, that
   minimises the squared, tolerance-scaled distance between the weighted statistics and
   every row of the disease in both calibration files (``natural_history.csv``: Table 2
   pooled and per product, Table 3 HT-high and HT-low, with the HT-high share 83 / 180
   from the same rows' ``n``; ``natural_history_more.csv``: for LBCL the early ICAHT
   grade >= 3 row of Rejeski et al. 2024 and the day-90 and day-180 ANC rows of Logue
   et al. 2021), plus a one-sided term that keeps each product's share of patients
   above their own pre-lymphodepletion ANC on days 5-20 within the physiological bound
   of 5 % (issue 17 item 4: no overshoot after flu/cy and CAR-T), plus a
   Kullback-Leibler penalty that keeps the weights close to uniform (so the effective
   sample size stays large). Products differ only by mechanism (their course and
   kinetics on the same patients), never by weights. Pooled statistics mix the
   products 159 : 76 as printed; a median ``m`` is matched through the linear condition
   "weighted share below ``m`` = 1/2".
4. Resample ``n_out`` patients with those weights (systematic resampling) and write
   them, with this provenance, as the disease's population file.

Other diseases (``--disease mcl``, ``--disease b-all``) run the same procedure on their
rows of ``natural_history_more.csv``: the disease preset's load and marrow infiltration,
the pre-lymphodepletion counts of the leukaemic marrow (``crowded_baseline``), each
product under its course in that disease (B-ALL: tisa-cel ELIANA, brexu-cel ZUMA-3; MCL:
brexu-cel ZUMA-2) and no CAR-HEMATOTOX share term (those rows have no strata). The
rebound bound there is measured against the ANC of the marrow cleared of blasts (a
crowded marrow's recovery rises above its crowded pre-treatment ANC). B-ALL adds the
disease preset's own traits (T-cell fitness on ``cart_rho``, the CD19-negative blast
share: :func:`draw_disease_traits`) and facts beside the CSV rows, each with its source
in ``models/presets.py``: the trials' remission rates (marrow blasts < 5 % on day 28;
ELIANA 81 %, ZUMA-3 70.9 %), Mueller et al. 2018's responders' / non-responders'
geometric-mean Cmax (1.74) and Stein et al. 2019's median Cmax and Tmax (matched as
medians); a row that counts responders only (the Kymriah label's ELIANA rows) is
matched among the patients whose marrow is cleared on day 28.

No stem-cell-boost cohort enters. Run ``python -m carthema.clinical.population.calibrate
[--disease lbcl] [--n 24000] [--seed 1] [--out DIR]`` (MCL and B-ALL ship at ``--n 4000``); it
prints every target beside the calibrated value and the effective sample size.
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.clinical.population.statistics import (
    DEFINITIONS,
    MEDIANS,
    POOLED,
    RESPONSE_DEFINITIONS,
    STRATA,
    load_calibration_rows,
    per_patient,
    responders_only,
    response_per_patient,
    tolerance,
)
from carthema.clinical.population.virtual import (
    LBCL_MIX,
    TRAITS,
    crowded_baseline,
    disease_base,
    draw_plausible,
    marrow_normal_share,
    population_files,
    population_params,
    product_course,
    product_events,
    product_params,
    simulate_obs,
)
from carthema.data.atomic import write_atomic
from carthema.models.hematotox import hematotox_points
from carthema.models.model import get_model

#: Product mix of the pooled rows: the cohort's printed 159 axi-cel : 76 tisa-cel (Table 2;
#: the calibration README notes the percentages fit 161 : 74, a difference below 1 %).
POOLED_MIX = LBCL_MIX
#: Tolerance (fraction of patients) that scales each row's squared error: half the
#: acceptance band of 0.10, and a Kullback-Leibler weight that keeps the one weight
#: vector broad. Together they trade closeness to the rows for effective sample size
#: (measured while building this procedure, seed 1: TOL 0.03 / KL 0.02 kept an effective
#: 38 of 3,000 patients; 0.05 / 2.0, 474 of 20,000; 0.05 / 2.5, 498 of 24,000, each
#: with 40/40 rows within 0.10 / 3 days; KL 3.0 gave 456).
TOL = 0.05
KL_PENALTY = 2.0
#: Floor on the effective sample size of the weights (issue 17: at least 500 at the
#: shipped n), held by a smooth barrier on n * sum(w^2) = n / ESS: the KL term alone
#: left it to the optimiser's stopping point (498 at KL 2.5, 456 at KL 3.0).
ESS_FLOOR = 600.0
#: Days -7..180: the Logue et al. 2021 rows count ANC on days 90 and 180.
DAYS = np.arange(-7.0, 181.0)
#: Physiological bound (issue 17 item 4): without G-CSF, no more than 5 % of patients of
#: any product rise above their own pre-lymphodepletion ANC during days 5-20 (after flu/cy
#: and CAR-T no clinical course overshoots; the model's own overshoot is a few per cent of
#: the set point, from the CD34+ pool's regrowth). A one-sided term keeps the weighted
#: share of each product at or below REBOUND_MAX - REBOUND_MARGIN.
REBOUND_WINDOW = (5.0, 20.0)
REBOUND_MAX = 0.05
REBOUND_MARGIN = 0.01


def rebound(days: np.ndarray, anc: np.ndarray, anc0: np.ndarray) -> np.ndarray:
    """Per patient: ANC above the patient's own pre-lymphodepletion ANC (``anc0``, G/L)
    on any day of :data:`REBOUND_WINDOW`."""
    w = (days >= REBOUND_WINDOW[0]) & (days <= REBOUND_WINDOW[1])
    return (anc[:, w] > np.asarray(anc0)[:, None]).any(axis=1)


def _simulate(disease: str, products: list[str], n: int, rng: np.random.Generator):
    """``n`` plausible patients of ``disease``, each simulated under every product (its
    course in that disease: lymphodepletion and dose of the disease's trial)."""
    model = get_model("full")
    base = disease_base(disease)
    P, info = draw_plausible(n, rng, model, base=base)
    P = draw_disease_traits(model, P, disease, rng)
    if "leuk_crowding" in base:
        # A leukaemic marrow: the pre-lymphodepletion counts are those of the crowded
        # marrow (virtual.crowded_baseline), the plausible traits those of its healthy part.
        P = crowded_baseline(model, P)
    info["hematotox"] = hematotox_points(
        P[:, model.index("param", "plt0")],
        P[:, model.index("param", "anc0")],
        info["hemoglobin"].to_numpy(),
        info["crp"].to_numpy(),
        info["ferritin"].to_numpy(),
        check_units=False,
    )["total"]
    ok = np.ones(n, dtype=bool)
    counts = {}
    names = ("anc", "platelets", "marrow_blasts", "cart_copies")
    obs_index = [model.index("obs", k) for k in names]
    for g in products:
        events = product_events(g, disease=disease)
        status, obs = simulate_obs(model, product_params(model, P, g), events, DAYS)
        ok &= status == 0
        counts[g] = tuple(obs[:, :, j] for j in obs_index)
    # The rebound bound's reference: the ANC the patient's marrow holds once clear of
    # blasts (anc0 over the marrow's normal share; anc0 itself without crowding, as in
    # LBCL). In a leukaemic marrow the pre-lymphodepletion ANC is the crowded one, and
    # rising above it as CAR-T clears the blasts is the recovery, not an overshoot
    # (measured: with the crowded ANC as reference the bound held the B-ALL weights on
    # patients who had not recovered by day 20).
    anc0 = P[ok, model.index("param", "anc0")] / marrow_normal_share(model, P[ok])
    values = {g: per_patient(DAYS, c[0][ok], c[1][ok]) for g, c in counts.items()}
    for g, (anc, _, blasts, copies) in counts.items():
        values[g]["rebound"] = rebound(DAYS, anc[ok], anc0)
        values[g].update(response_per_patient(DAYS, blasts[ok]))
        values[g].update(cart_peaks(DAYS, copies[ok]))
    return model, P[ok], info[ok].reset_index(drop=True), values


def draw_disease_traits(model, P: np.ndarray, disease: str, rng: np.random.Generator) -> np.ndarray:
    """``P`` with the disease preset's own traits drawn (``DiseasePreset.traits``: a
    parameter times ``exp(sd * z)``, clipped to its bounds), after the shared traits so
    that a disease without any (LBCL, MCL) draws exactly what it drew before. B-ALL: the
    patient's T-cell fitness on ``cart_rho`` (presets.BALL_FITNESS), the trait behind
    primary non-response. A copy."""
    from carthema.models.presets import DISEASES

    out = np.array(P, dtype=float, copy=True)
    for name, trait in DISEASES[disease].traits.items():
        j = model.index("param", name)
        q = model.params[j]
        z = rng.standard_normal(out.shape[0])
        out[:, j] = np.clip(out[:, j] * np.exp(trait.sd * z), q.low, q.high)
    return out


def disease_products(rows: list[dict]) -> list[str]:
    """Products simulated for a disease's rows: the pooled cohort's (axi-cel, tisa-cel)
    where a row pools products, and every product a row names."""
    out = list(POOLED_MIX) if any(r["product"] == "pooled" for r in rows) else []
    for r in rows:
        if r["product"] != "pooled" and r["product"] not in out:
            out.append(r["product"])
    return out


#: CAR-T kinetics anchors matched as medians (per patient: the peak copies/ug and its day,
#: days 0-60), for a product whose published anchors were measured in the disease
#: (presets.ProductPreset.anchor_disease: tisa-cel in B-ALL, Stein et al. 2019). Without
#: them the weights that make primary non-responders (slow expansion) also slowed the
#: responders' expansion: median Cmax 11,000 copies/ug on day 13 (n 4000, seed 1).
KINETIC_MEDIANS = {"cmax": "median_cart_cmax", "tmax": "median_cart_tmax"}
#: Agreement asked of the kinetics anchors: Cmax within a factor 1.5, Tmax within 3 days
#: (tests/test_ball_rows.py).
CMAX_FACTOR, TMAX_DAYS = 1.5, 3.0


def _is_median(key: str) -> bool:
    return key in MEDIANS or key in KINETIC_MEDIANS.values()


def _within(key: str, model: float, target: float) -> bool:
    if key == KINETIC_MEDIANS["cmax"]:
        return bool(abs(np.log(model / target)) <= np.log(CMAX_FACTOR))
    if key == KINETIC_MEDIANS["tmax"]:
        return bool(abs(model - target) <= TMAX_DAYS)
    return bool(abs(model - target) <= tolerance(key))


def cart_peaks(days: np.ndarray, copies: np.ndarray) -> dict[str, np.ndarray]:
    """Per patient: the CAR-T peak (copies/ug) and its day, over days 0-60, and the log
    of the peak over days 0-28 (``log_cmax_d28``: Mueller et al.'s Cmax window)."""
    w = (days >= 0) & (days <= 60)
    c = copies[:, w]
    early = copies[:, (days >= 0) & (days <= 28)].max(axis=1)
    return {
        KINETIC_MEDIANS["cmax"]: c.max(axis=1),
        KINETIC_MEDIANS["tmax"]: days[w][c.argmax(axis=1)],
        "log_cmax_d28": np.log(np.maximum(early, 1e-9)),
    }


#: The responder/non-responder CAR-T peak ratio's agreement: within a factor 1.5 (its
#: loss term is scaled by half of log 1.5, as a share's by half of 0.10).
RATIO_FACTOR = 1.5


def cmax_ratio(log_cmax: np.ndarray, cleared: np.ndarray, w: np.ndarray | None = None) -> float:
    """Responders' over non-responders' (weighted) geometric-mean CAR-T peak."""
    w = np.ones(log_cmax.size) if w is None else np.asarray(w, dtype=float)
    r = np.asarray(cleared, dtype=float)
    mr = np.sum(w * r * log_cmax) / np.sum(w * r)
    mn = np.sum(w * (1 - r) * log_cmax) / np.sum(w * (1 - r))
    return float(np.exp(mr - mn))


def _indicator(values: dict, key: str, target: float) -> np.ndarray:
    v = values[key]
    if _is_median(key):
        return (v < target) + 0.5 * (v == target)
    return np.asarray(v, dtype=float)


def _rows(targets: pd.DataFrame, disease: str = "lbcl") -> list[dict]:
    """The calibration rows of ``disease`` in both files, each with its file and row.
    A row of several products (``axi-cel+tisa-cel``, ``axi-cel+tisa-cel+liso-cel``) is
    matched by the pooled simulation (axi-cel : tisa-cel 159 : 76, POOLED_MIX): the
    Rejeski et al. 2024 LBCL row does not give its product mix, and liso-cel is not
    simulated in the calibration (assumption, stated)."""
    from carthema.models.presets import DISEASES

    rows = []
    for _, r in targets[targets["disease"] == disease].iterrows():
        pooled = r["product"] in POOLED
        rows.append(
            {
                "file": str(r["file"]),
                "row": int(r["csv_row"]),
                "key": r["statistic"],
                "product": "pooled" if pooled else r["product"],
                "stratum": STRATA.get(r["stratum"], "all"),
                "target": float(r["value"]),
                "table": r["table"],
                "source": r["source"],
                "responders": responders_only(r["cohort"]),
            }
        )
    # The CAR-T kinetics a product's anchors give in this disease (tisa-cel in B-ALL:
    # Stein et al. 2019 Cmax 24,000 copies/ug, Tmax 9.3 d), matched as medians.
    from carthema.models.presets import PRODUCTS

    for product, preset in PRODUCTS.items():
        if preset.anchor_disease != disease or disease == "lbcl":
            continue
        for anchor, key in KINETIC_MEDIANS.items():
            a = preset.anchors.get(anchor)
            if a is None:
                continue
            rows.append(
                {
                    "file": "models/presets.py",
                    "row": f"{product} {anchor}",
                    "key": key,
                    "product": product,
                    "stratum": "all",
                    "target": a.value,
                    "table": "CAR-T kinetics",
                    "source": a.source,
                    "responders": False,
                }
            )
    # The disease preset's published remission rates (facts beside the CSV rows, each
    # with its source: B-ALL ELIANA 81 %, ZUMA-3 70.9 %).
    for product, rem in DISEASES[disease].remission.items():
        rows.append(
            {
                "file": "models/presets.py",
                "row": f"{disease} remission",
                "key": next(iter(RESPONSE_DEFINITIONS)),
                "product": product,
                "stratum": "all",
                "target": rem.value,
                "table": "remission (CR/CRi)",
                "source": rem.source,
                "responders": False,
            }
        )
    return rows


#: A held-out split inside the calibration data (benchmarks/validation.py): fit on
#: Table 2 (pooled and per product) only and report Table 3 (CAR-HEMATOTOX high and
#: low), so that the split of the score is a prediction of the mechanism (the score
#: is computed from each patient's own baseline values), not a fitted number. The
#: HT-high share constraint uses the rows' ``n`` only, not their values.
HOLDOUT_TABLE3 = "Table 3"


def calibrate(
    n: int = 24000,
    seed: int = 1,
    n_out: int = 2000,
    disease: str = "lbcl",
    verbose: bool = True,
    holdout: str | None = None,
):
    """Run the procedure; returns (population frame, provenance dict). ``holdout``: a
    table name (e.g. :data:`HOLDOUT_TABLE3`) whose rows are left out of the fit and
    only reported (``held_out`` in each report row)."""
    import jax
    import jax.numpy as jnp
    from scipy.optimize import minimize

    jax.config.update("jax_enable_x64", True)
    t0 = time.time()
    rng = np.random.default_rng(seed)
    targets = load_calibration_rows()
    rows = _rows(targets, disease)
    products = disease_products(rows)
    model, P, info, values = _simulate(disease, products, n, rng)
    # The CAR-HEMATOTOX share constraint comes from the LBCL strata of natural_history.csv;
    # the other diseases' rows have no strata (their score is a model output).
    strata_n = {s: float(targets.loc[targets["stratum"] == s, "n"].iloc[0]) for s in STRATA}
    ht_share = strata_n["HT-high"] / (strata_n["HT-high"] + strata_n["HT-low"])
    ht_weight = 1.0 if any(r["stratum"] != "all" for r in rows) else 0.0
    # Indicator matrices (patients x rows) per product, and the pooled mix of them.
    X = {
        g: np.column_stack([_indicator(values[g], r["key"], r["target"]) for r in rows])
        for g in products
    }
    if any(r["product"] == "pooled" for r in rows):
        mix = {g: POOLED_MIX[g] / sum(POOLED_MIX.values()) for g in POOLED_MIX}
        X["pooled"] = sum(mix[g] * X[g] for g in POOLED_MIX)
    # Column k of the row's own group (product rows: that product; others: the mix).
    A = jnp.asarray(np.column_stack([X[r["product"]][:, k] for k, r in enumerate(rows)]))
    strat = np.array([r["stratum"] for r in rows])
    # Rows that count responders only (the Kymriah label's ELIANA rows): the weighted
    # share among the row's product's patients whose marrow is cleared on day 28.
    resp_rows = np.array([r["responders"] for r in rows])
    M = jnp.asarray(
        np.column_stack(
            [
                values[r["product"]]["p_marrow_cleared_d28"].astype(float)
                if r["responders"]
                else np.ones(A.shape[0])
                for r in rows
            ]
        )
    )
    is_resp = jnp.asarray(resp_rows)
    h = jnp.asarray((info["hematotox"].to_numpy() >= 2).astype(float))
    is_high, is_low = jnp.asarray(strat == "high"), jnp.asarray(strat == "low")
    goal = jnp.asarray([0.5 if _is_median(r["key"]) else r["target"] for r in rows])
    fitted = jnp.asarray([r["table"] != holdout for r in rows], dtype=float)
    R = jnp.asarray(np.column_stack([values[g]["rebound"] for g in products]).astype(float))
    # Responders' / non-responders' geometric-mean CAR-T peak per product with a source
    # (B-ALL tisa-cel: Mueller et al. 2018, 1.74).
    from carthema.models.presets import DISEASES as PRESETS

    ratios = [
        (
            jnp.asarray(values[g]["log_cmax_d28"]),
            jnp.asarray(values[g]["p_marrow_cleared_d28"].astype(float)),
            float(np.log(a.value)),
        )
        for g, a in PRESETS[disease].cmax_ratio.items()
        if g in products
    ]

    def model_values(w):
        every = w @ A
        high = (w * h) @ A / (w @ h)
        low = (w * (1 - h)) @ A / (w @ (1 - h))
        among = w @ (A * M) / (w @ M)
        every = jnp.where(is_resp, among, every)
        return jnp.where(is_high, high, jnp.where(is_low, low, every))

    def loss(theta):
        w = jax.nn.softmax(theta)
        err = fitted * (model_values(w) - goal) / TOL
        kl = jnp.sum(w * jnp.log(w * w.size + 1e-300))
        excess = jnp.maximum(jnp.sum(w**2) * ESS_FLOOR - 1.0, 0.0)  # > 0 when ESS < floor
        over = jnp.maximum(w @ R - (REBOUND_MAX - REBOUND_MARGIN), 0.0) / TOL
        ht = ht_weight * ((w @ h - ht_share) / TOL) ** 2
        for logc, cleared, goal_ratio in ratios:
            mr = (w * cleared) @ logc / (w @ cleared)
            mn = (w * (1 - cleared)) @ logc / (w @ (1 - cleared))
            ht = ht + ((mr - mn - goal_ratio) / (0.5 * np.log(RATIO_FACTOR))) ** 2
        return jnp.sum(err**2) + ht + KL_PENALTY * kl + 1e3 * excess**2 + jnp.sum(over**2) * 1e2

    vg = jax.jit(jax.value_and_grad(loss))
    res = minimize(
        lambda th: tuple(np.asarray(v, dtype=float) for v in vg(jnp.asarray(th))),
        np.zeros(A.shape[0]),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000},
    )
    weights = np.asarray(jax.nn.softmax(jnp.asarray(res.x)))
    ess = float(1.0 / np.sum(weights**2))
    rebound_share = {g: float(weights @ values[g]["rebound"]) for g in products}

    # Resample n_out patients with the weights; every row reported on the resampled set.
    idx = _systematic(weights, n_out, rng)
    # Every varying trait, and the disease preset's values (constant columns: the
    # simulation of the population reads its disease's load and marrow from the file).
    names = [name for name in TRAITS if name in model.param_names]
    names += [name for name in disease_base(disease) if name not in names]
    cols = {name: P[idx, model.index("param", name)] for name in names}
    pop = pd.DataFrame(cols)
    for lab in ("hemoglobin", "crp", "ferritin"):
        pop[lab] = info[lab].to_numpy()[idx]
    pop.insert(0, "hematotox", info["hematotox"].to_numpy()[idx])
    pop.insert(0, "vp", [f"VP{i + 1:05d}" for i in range(len(pop))])
    report = [{**r, "held_out": r["table"] == holdout} for r in target_report(pop, disease)]
    report += [{**r, "held_out": False} for r in ratio_report(pop, disease)]
    info_out = {
        "procedure": __doc__.strip().split("\n\n")[1],
        "module": "carthema.clinical.population.calibrate",
        "disease": disease,
        "disease_preset": disease_base(disease),
        "products_simulated": products,
        "seed": seed,
        "plausible": n,
        "resampled": n_out,
        "effective_sample_size": ess,
        "held_out": holdout,
        "optimizer": {
            "success": bool(res.success),
            "loss": float(res.fun),
            "iterations": int(res.nit),
        },
        "ht_high_share_target": ht_share if ht_weight else None,
        "product_courses": {g: product_course(g, disease).source for g in products},
        "rebound_bound": {
            "definition": f"ANC above the patient's own pre-lymphodepletion ANC on any day "
            f"{REBOUND_WINDOW[0]:g}-{REBOUND_WINDOW[1]:g} without G-CSF (issue 17 item 4)",
            "max": REBOUND_MAX,
            "weighted_share": rebound_share,
        },
        "targets_files": "../shared/calibration/natural_history.csv and "
        "natural_history_more.csv (bundled copies: carthema/data/calibration/); every row of "
        "the disease, each reported with its file and row",
        "rows": report,
        "definitions": DEFINITIONS,
        "supportive_care": SUPPORTIVE_CARE,
        "seconds": round(time.time() - t0, 1),
    }
    if verbose:
        _print(report, ess)
        print(f"rebound above the pre-LD ANC on days 5-20 (bound {REBOUND_MAX:g}): {rebound_share}")
    return pop, info_out


#: How supportive care is represented (stated in the population file's provenance).
SUPPORTIVE_CARE = (
    "The calibration cohorts (Rejeski et al. 2021) received supportive care by "
    "institutional practice: G-CSF for many patients and transfusions. The virtual "
    "population does not switch the model's G-CSF input on: the published counts are "
    "matched as observed under that care, so the calibrated recovery parameters carry its "
    "average effect. Platelet counts are the patient's own (no transfusion jumps are "
    "simulated); the published thresholds (< 50, < 20 G/L) count nadirs, which transfusion "
    "triggers reach before a transfusion. Explicit G-CSF or transfusion events of a real "
    "patient act on top of this (carthema predict-boost --gcsf-since, --plt-transfused)."
)


def _systematic(w: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(w), positions), w.size - 1)


def target_report(pop: pd.DataFrame, disease: str = "lbcl") -> list[dict]:
    """Every calibration row of ``disease`` (both files) beside the value of the
    population ``pop``."""
    from carthema.clinical.population.natural_history import population_statistics

    cache: dict = {}
    peaks: dict = {}  # one simulation per product serves its Cmax and Tmax rows
    out = []
    for r in _rows(load_calibration_rows(), disease):
        if r["key"] in KINETIC_MEDIANS.values():
            if r["product"] not in peaks:
                peaks[r["product"]] = _peaks(pop, r["product"], disease)
            model_value = float(np.median(peaks[r["product"]][r["key"]]))
            out.append(
                {
                    **r,
                    "model": model_value,
                    "within_tolerance": _within(r["key"], model_value, r["target"]),
                }
            )
            continue
        group = (r["product"], r["stratum"], r["responders"])
        if group not in cache:
            product = None if r["product"] == "pooled" else r["product"]
            hematotox = None if r["stratum"] == "all" else r["stratum"]
            cache[group] = population_statistics(
                pop,
                product=product,
                hematotox=hematotox,
                disease=disease,
                responders=r["responders"],
            )
        model_value = cache[group][r["key"]]
        out.append(
            {
                **r,
                "model": model_value,
                "within_tolerance": _within(r["key"], model_value, r["target"]),
            }
        )
    return out


def _peaks(pop: pd.DataFrame, product: str, disease: str) -> dict[str, np.ndarray]:
    """Per patient of ``pop`` under ``product``'s course in ``disease``: the CAR-T peaks
    (:func:`cart_peaks`) and the marrow cleared on day 28."""
    model = get_model("full")
    P = product_params(model, population_params(model, pop), product)
    status, obs = simulate_obs(model, P, product_events(product, disease=disease), DAYS)
    ok = status == 0
    out = cart_peaks(DAYS, obs[ok, :, model.index("obs", "cart_copies")])
    out.update(response_per_patient(DAYS, obs[ok, :, model.index("obs", "marrow_blasts")]))
    return out


def ratio_report(pop: pd.DataFrame, disease: str) -> list[dict]:
    """The responders' / non-responders' geometric-mean CAR-T peak of ``pop`` beside each
    published ratio of the disease (presets ``DiseasePreset.cmax_ratio``)."""
    from carthema.models.presets import DISEASES as PRESETS

    out = []
    for product, a in PRESETS[disease].cmax_ratio.items():
        v = _peaks(pop, product, disease)
        model_value = cmax_ratio(v["log_cmax_d28"], v["p_marrow_cleared_d28"])
        out.append(
            {
                "file": "models/presets.py",
                "row": f"{product} Cmax R/NR",
                "key": "cmax_ratio_responders",
                "product": product,
                "stratum": "all",
                "target": a.value,
                "table": "CAR-T kinetics by response",
                "source": a.source,
                "responders": False,
                "model": model_value,
                "within_tolerance": bool(
                    abs(np.log(model_value / a.value)) <= np.log(RATIO_FACTOR)
                ),
            }
        )
    return out


def _print(report: list[dict], ess: float) -> None:
    print(
        f"{'file':24} {'row':>4} {'product':9} {'stratum':7} {'statistic':32} "
        f"{'published':>9} {'model':>7}"
    )
    for r in report:
        mark = "" if r["within_tolerance"] else "  <- outside tolerance"
        mark += "  (held out)" if r.get("held_out") else ""
        mark += "  (among responders)" if r.get("responders") else ""
        print(
            f"{r['file']:24} {r['row']:>4} {r['product']:9} {r['stratum']:7} {r['key']:32} "
            f"{r['target']:>9.3g} {r['model']:>7.3g}{mark}"
        )
        if not str(r["file"]).endswith(".csv"):
            print(f"{'':29} source: {r['source']}")
    hit = sum(r["within_tolerance"] for r in report)
    print(
        f"{hit}/{len(report)} rows within tolerance (0.10 for fractions, 3 days for medians; "
        f"CAR-T Cmax within a factor {CMAX_FACTOR:g})"
    )
    print(f"effective sample size of the one weight vector (shared by every product): {ess:.0f}")


def write_population(pop: pd.DataFrame, info: dict, folder: str | Path) -> None:
    """Write the population CSV and its provenance JSON atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_name, json_name = population_files(info.get("disease", "lbcl"))
    for name, text in (
        (csv_name, pop.to_csv(index=False, float_format="%.6g")),
        (json_name, json.dumps(info, indent=1, default=float)),
    ):
        write_atomic(folder / name, text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24000, help="plausible patients (shared by products)")
    ap.add_argument("--n-out", type=int, default=2000, help="resampled patients")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--disease",
        default="lbcl",
        choices=("lbcl", "b-all", "mcl"),
        help="whose rows to calibrate to (b-all and mcl: natural_history_more.csv)",
    )
    ap.add_argument(
        "--out",
        default=str(resources.files("carthema.data") / "populations"),
        help="folder for the population file (default: the package's own)",
    )
    a = ap.parse_args(argv)
    pop, info = calibrate(a.n, a.seed, a.n_out, disease=a.disease)
    write_population(pop, info, a.out)
    print(f"wrote {Path(a.out) / population_files(info['disease'])[0]}")


if __name__ == "__main__":
    main()
