"""Natural history after CD19 CAR-T without a boost: simulate the calibrated virtual
population and compare its statistics with the published ones (both calibration files:
Rejeski et al. 2021 and natural_history_more.csv).

``natural_history()`` is what ``carthema natural-history`` runs: it picks virtual
patients (by product, CAR-HEMATOTOX group or score), simulates each after its product's
lymphodepletion and dose over days -7..180, and returns the statistics of
:mod:`.statistics` (ICAHT grades included) next to every calibration row that applies
(:func:`.statistics.applicable_rows`), plus the daily ANC and platelet bands for a
visual predictive check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.clinical.population.statistics import (
    DEFINITIONS,
    POOLED,
    applicable_rows,
    definition,
    per_patient,
    responders_only,
    response_per_patient,
    row_source,
    summarise,
    tolerance,
)
from carthema.clinical.population.virtual import (
    LBCL_MIX,
    PRODUCT_LD,
    load_population,
    population_params,
    product_events,
    simulate_obs,
)
from carthema.data.atomic import atomic_path
from carthema.data.errors import InputError
from carthema.models.hematotox import parse_hematotox
from carthema.models.model import get_model

DISEASES = ("lbcl", "b-all", "mcl")
#: Diseases with a population calibrated to their own published natural history
#: (data/populations/<disease>_population.csv). The others are refused
#: (:func:`check_disease`, the one place that decides it).
CALIBRATED_DISEASES = ("lbcl", "b-all", "mcl")
#: Why an uncalibrated disease is refused (measured), by disease; none at present. B-ALL
#: was refused until brexu-cel's own killing potency (models/presets.py
#: BREXU_KILL_FACTOR) and the rebound bound's crowding-aware reference
#: (calibrate._simulate) let one population match its four rows; the measurements are
#: in benchmarks/ball_diagnosis.py and docs/natural_history_ball.md.
NOT_CALIBRATED_WHY: dict[str, str] = {}
#: Diseases whose callers load the LBCL population whatever the disease (callers that do
#: not pass ``own_population``; predict-boost loads the disease's own): only LBCL is
#: right for them.
LBCL_POPULATION_ONLY = ("lbcl",)
#: Product mix of a pooled simulation (``product=None``) per disease: the LBCL cohort's
#: axi-cel : tisa-cel 159 : 76 (Rejeski et al. 2021); B-ALL the two label cohorts'
#: sizes (natural_history_more.csv rows 2-5: tisa-cel 52, brexu-cel 78); MCL brexu-cel.
DISEASE_MIX: dict[str, dict[str, float]] = {
    "lbcl": LBCL_MIX,
    "b-all": {"tisa-cel": 52.0, "brexu-cel": 78.0},
    "mcl": {"brexu-cel": 1.0},
}


def check_disease(disease: str, *, own_population: bool = False) -> str:
    """The canonical name of a disease whose natural history is calibrated; a clear
    error for an unknown or an uncalibrated one. ``own_population``: the caller
    simulates the disease's own calibrated population (natural history); callers that
    do not (they load the LBCL population) accept LBCL only."""
    d = str(disease).strip().lower()
    if d not in DISEASES:
        raise InputError(
            f"unknown disease '{disease}'",
            column="disease",
            fix=f"use one of {', '.join(DISEASES)}",
        )
    if d not in CALIBRATED_DISEASES:
        why = NOT_CALIBRATED_WHY.get(
            d,
            "its virtual population has not been fitted to its "
            "own published natural history (natural_history_more.csv)",
        )
        raise InputError(
            f"disease '{d}' is not calibrated yet: {why}; its blood counts would be guesses",
            column="disease",
            fix=f"use --disease {' or '.join(CALIBRATED_DISEASES)}",
        )
    if not own_population and d not in LBCL_POPULATION_ONLY:
        raise InputError(
            f"disease '{d}' is not calibrated for this command yet: it conditions the LBCL "
            f"population, not the {d} population (data/populations/{d}_population.csv)",
            column="disease",
            fix="use --disease lbcl here; `carthema natural-history --disease "
            f"{d}` simulates the {d} population",
        )
    return d


def _select(pop: pd.DataFrame, product: str | None, hematotox) -> pd.DataFrame:
    sel = pop
    if hematotox is not None:
        score = sel["hematotox"].to_numpy()
        if hematotox == "high":
            sel = sel[score >= 2]
        elif hematotox == "low":
            sel = sel[score <= 1]
        else:
            sel = sel[score == int(hematotox)]
    if product is not None:
        sel = sel[sel["product"] == product]
    return sel


def product_counts(n: int, mix: dict[str, float], rng: np.random.Generator) -> dict[str, int]:
    """How many of ``n`` patients each product of ``mix`` (relative shares) is given, by
    systematic allocation: each product ``floor`` or ``ceil`` of ``n x share``, summing
    to ``n``, each exactly ``n x share`` in expectation. (Rounding would not be: it
    gives the one patient of a 159 : 76 mix axi-cel always, and round-half-even can
    lose a patient.)"""
    names = list(mix)
    if len(names) == 1:
        return {names[0]: int(n)}
    share = np.array([mix[g] for g in names], dtype=float)
    edges = np.floor(np.cumsum(share / share.sum()) * n + rng.random())
    edges[-1] = n  # cumsum may miss 1 by a rounding error
    counts = np.diff(np.concatenate([[0.0], edges])).astype(int)
    return dict(zip(names, counts.tolist(), strict=True))


def balanced_rows(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` of ``size`` equally weighted rows, in a random order: every row
    ``n // size`` times and ``n % size`` more without replacement (the draw of
    :func:`sample_patients`, and of a virtual trial from a posterior's draws)."""
    reps, rest = divmod(int(n), int(size))
    idx = rng.choice(size, size=rest, replace=False)  # in random order
    if reps:
        idx = rng.permutation(np.concatenate([np.tile(np.arange(size), reps), idx]))
    return idx


def sample_patients(
    pop: pd.DataFrame,
    n: int | None,
    rng: np.random.Generator,
    product: str | None = None,
    hematotox=None,
    disease: str = "lbcl",
    *,
    assign_product: bool = True,
) -> pd.DataFrame:
    """``n`` virtual patients of the population ``pop`` in a CAR-HEMATOTOX group, each
    given a product: the one function that draws virtual patients (natural history,
    :meth:`~carthema.clinical.population.posterior.VirtualPopulation.sample`, the
    virtual trial, the boost prior's draws, the boost calibration's cases, the
    benchmarks).

    Every caller estimates an expectation over the population (a cohort statistic, a
    policy's outcome, a prior), whose rows are equally weighted draws of the calibrated
    trait distribution, so the draw is balanced (:func:`balanced_rows`): each row of the
    group ``n // size`` times and a further ``n % size`` rows without replacement (``n`` up
    to the group's size: a simple random sample without replacement; every row once
    at ``n = size``). It is as unbiased as drawing with replacement and has less Monte
    Carlo variance: no row is left out or counted twice by chance. The rows come in a
    random order, products mixed (``n`` None: every row once, in the population's
    order), so a caller that takes the first ``k`` takes a random ``k``.

    Products: one trait distribution is shared by every product (the population has
    no product column; a product acts through its course and CAR-T/CRS kinetics), so a
    product is given independently of the traits. ``product`` gives it to every row;
    ``None`` mixes the disease's cohorts (:data:`DISEASE_MIX`; LBCL axi-cel : tisa-cel
    159 : 76) in fixed shares (:func:`product_counts`, randomly assigned to the rows:
    a stratified draw, the cohort's own mix rather than a binomial draw of it), unless
    the frame has a ``product`` column of its own (patients of known product: kept).
    ``assign_product=False`` gives none (a frame without a product column keeps the
    population's reference kinetics: the unconditioned boost prior without a
    product, as :func:`~carthema.clinical.boost.prior.population_prior`'s).
    """
    if product is not None and product not in PRODUCT_LD:
        raise InputError(
            f"unknown product '{product}'",
            column="product",
            fix=f"use one of {', '.join(PRODUCT_LD)}",
        )
    sel = _select(pop, None, hematotox)
    if len(sel) == 0:
        raise InputError(
            f"the population has no patients with CAR-HEMATOTOX {hematotox}",
            column="hematotox",
            fix="choose low, high or a score that occurs",
        )
    idx = np.arange(len(sel)) if n is None else balanced_rows(len(sel), int(n), rng)
    rows = sel.iloc[idx].reset_index(drop=True)
    if not assign_product or (product is None and "product" in rows.columns):
        return rows
    mix = {product: 1.0} if product is not None else DISEASE_MIX[disease]
    counts = product_counts(len(rows), mix, rng)
    labels = np.repeat(list(counts), list(counts.values()))
    return rows.assign(product=labels if len(counts) == 1 else rng.permutation(labels))


def simulate_patients(
    patients: pd.DataFrame, days: np.ndarray, disease: str = "lbcl", *, blasts: bool = False
):
    """(anc, platelets) of every patient row, each under its product's course in
    ``disease`` and its kinetics (:func:`carthema.clinical.population.virtual.product_events`);
    the rows carry the disease's own tumour load and marrow (population columns). Any
    known disease: the calibration of an uncalibrated one simulates it too. ``blasts``:
    also return the marrow blasts (%), (anc, platelets, blasts)."""
    if disease not in DISEASES:
        check_disease(disease)  # the unknown-disease refusal
    model = get_model("full")
    names = ("anc", "platelets", "marrow_blasts")
    out = {k: np.full((len(patients), days.size), np.nan) for k in names}
    for g in patients["product"].unique():
        rows = np.flatnonzero(patients["product"].to_numpy() == g)
        # population_params applies each row's product kinetics (its product column).
        P = population_params(model, patients.iloc[rows])
        status, obs = simulate_obs(model, P, product_events(g, disease=disease), days)
        for k in names:
            x = obs[:, :, model.index("obs", k)]
            x[status != 0] = np.nan
            out[k][rows] = x
    if blasts:
        return out["anc"], out["platelets"], out["marrow_blasts"]
    return out["anc"], out["platelets"]


#: Diseases whose statistics carry the marrow response (``p_marrow_cleared_d28``): a
#: marrow leukaemia with published remission rates (models/presets.py
#: ``DiseasePreset.remission``). In LBCL the model's blast share is no marrow measure.
RESPONSE_DISEASES = ("b-all",)


def _statistics(
    days, anc, plt_, blasts, ok, disease: str, weights: np.ndarray | None = None
) -> tuple[dict, dict]:
    """(statistics of every solved patient, statistics of the responders among them:
    marrow cleared on the response day), each patient counted with its ``weights``
    (None: equally); for :data:`RESPONSE_DISEASES` the former carry the response share.
    Elsewhere the second is empty."""
    w = None if weights is None else weights[ok]
    stats = summarise(per_patient(days, anc[ok], plt_[ok]), w)
    if disease not in RESPONSE_DISEASES:
        return stats, {}
    resp = response_per_patient(days, blasts[ok])
    stats.update(summarise(resp, w))
    cleared = resp["p_marrow_cleared_d28"]
    responders = {}
    if cleared.any():
        responders = summarise(
            per_patient(days, anc[ok][cleared], plt_[ok][cleared]),
            None if w is None else w[cleared],
        )
    return stats, responders


def population_statistics(
    pop: pd.DataFrame,
    product: str | None = None,
    hematotox=None,
    disease: str = "lbcl",
    responders: bool = False,
) -> dict[str, float]:
    """Statistics of the population's patients of a product and CAR-HEMATOTOX group
    (every such patient), each under the product's course in ``disease``, with the share
    whose marrow is cleared on day 28 (``p_marrow_cleared_d28``). ``product`` None: the
    disease's pooled cohort, every patient of the group under each product of its mix
    (:data:`DISEASE_MIX`) weighted by the product's share, the mixture itself rather
    than a draw of it (no seed: a pooled median at a tolerance's edge does not move with
    one). ``responders``: the counts' statistics among the patients whose marrow is
    cleared (rows that count responders only,
    :func:`~carthema.clinical.population.statistics.responders_only`)."""
    rng = np.random.default_rng(0)  # unused: every row once, one product per part
    mix = {product: 1.0} if product is not None else DISEASE_MIX[disease]
    total = sum(mix.values())
    parts = [sample_patients(pop, None, rng, g, hematotox, disease) for g in mix]
    patients = pd.concat(parts, ignore_index=True)
    weights = np.concatenate(
        [np.full(len(p), mix[g] / total / len(p)) for g, p in zip(mix, parts, strict=True)]
    )
    days = np.arange(-7.0, 181.0)  # the late rows count days 90 and 180
    anc, plt_, blasts = simulate_patients(patients, days, disease, blasts=True)
    ok = np.isfinite(anc).all(axis=1) & np.isfinite(plt_).all(axis=1)
    stats, among_responders = _statistics(days, anc, plt_, blasts, ok, disease, weights)
    if responders:
        return {**among_responders, "p_marrow_cleared_d28": stats["p_marrow_cleared_d28"]}
    return stats


@dataclass(frozen=True)
class NaturalHistory:
    """A simulated natural history and its comparison with the published rows."""

    statistics: dict[str, float]
    published: list[dict]
    days: np.ndarray
    bands: dict[str, np.ndarray]
    settings: dict
    notes: list[str] = field(default_factory=list)
    #: The counts' statistics among the responders (marrow cleared on day 28), for the
    #: published rows that count responders only (the Kymriah label's ELIANA rows).
    responder_statistics: dict[str, float] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per statistic: model value (five fractions for a grade distribution),
        published value and source row where a calibration row applies, and whether the
        model lies within its tolerance (0.10 for fractions, 3 days for medians). A row
        that counts responders only is compared with the model's responders."""
        pub = {r["statistic"]: r for r in self.published}
        rows = []
        for key, value in self.statistics.items():
            r = pub.get(key)
            if r is not None and r.get("responders_only"):
                value = self.responder_statistics.get(key, float("nan"))
            rows.append(
                {
                    "statistic": key,
                    "model": value,
                    "published": None if r is None else r["value"],
                    "within_tolerance": None
                    if r is None or _missing(value)
                    else bool(abs(value - r["value"]) <= tolerance(key)),
                    "source": "" if r is None else r["source"],
                    "definition": definition(key)
                    + (" (among responders)" if r is not None and r.get("responders_only") else ""),
                }
            )
        return pd.DataFrame(rows)

    def to_json(self) -> dict:
        return _finite_json(
            {
                "settings": self.settings,
                "statistics": self.statistics,
                "responder_statistics": self.responder_statistics,
                "published": self.published,
                "table": self.table().to_dict("records"),
                "notes": self.notes,
            }
        )


def _missing(value) -> bool:
    return isinstance(value, float) and not np.isfinite(value)


def _finite_json(x):
    """NaN (a median nobody has, e.g. no patient recovers) as JSON null."""
    if isinstance(x, dict):
        return {k: _finite_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_json(v) for v in x]
    if isinstance(x, float | np.floating) and not np.isfinite(x):
        return None
    return x


def _published(product: str | None, disease: str, hematotox) -> list[dict]:
    """Every row of both calibration files that applies (an exact CAR-HEMATOTOX score
    has none)."""
    return [
        {
            "statistic": r.statistic,
            "value": float(r.value),
            "n": int(r.n),
            "tolerance": float(r.tolerance),
            "file": r.file,
            "row": int(r.csv_row),
            "source": row_source(r),
            "responders_only": responders_only(r.cohort),
        }
        for r in applicable_rows(product, disease, hematotox).itertuples()
    ] + remission_rows(product, disease, hematotox)


def remission_rows(product: str | None, disease: str, hematotox=None) -> list[dict]:
    """The product's published remission rate in ``disease`` (a fact of the disease
    preset, :attr:`carthema.models.presets.DiseasePreset.remission`, not a row of the
    shared CSV files) as a published row of ``p_marrow_cleared_d28``; none for a
    CAR-HEMATOTOX group (the trials do not report it by score)."""
    from carthema.models.presets import DISEASES as PRESETS

    rem = PRESETS[disease].remission.get(product) if product is not None else None
    if rem is None or hematotox is not None:
        return []
    return [
        {
            "statistic": "p_marrow_cleared_d28",
            "value": rem.value,
            "n": rem.n,
            "tolerance": tolerance("p_marrow_cleared_d28"),
            "file": "models/presets.py",
            "row": rem.cite,
            "source": rem.source,
            "responders_only": False,
        }
    ]


def natural_history(
    product: str | None = None,
    disease: str = "lbcl",
    hematotox: str | int | None = None,
    *,
    n: int = 1000,
    seed: int = 0,
    horizon: float = 180.0,
) -> NaturalHistory:
    """Simulate ``n`` virtual patients of the calibrated population without a boost.

    Parameters
    ----------
    product:
        ``tisa-cel``, ``axi-cel``, ``liso-cel`` or ``brexu-cel``; ``None`` mixes the
        disease's cohorts (:data:`DISEASE_MIX`; LBCL: axi-cel and tisa-cel 159 : 76 as
        the calibration cohort of Rejeski et al. 2021; MCL: brexu-cel).
    disease:
        ``lbcl``, ``b-all`` or ``mcl``: that disease's calibrated population
        (data/populations), each product under its course in that disease (B-ALL:
        ELIANA for tisa-cel, ZUMA-3 for brexu-cel; MCL: ZUMA-2); an uncalibrated
        disease is refused (:func:`check_disease`).
    hematotox:
        ``low`` (score 0-1), ``high`` (>= 2), a score 0-7, or ``None`` for everyone.
    n, seed:
        Number of virtual patients and random seed.
    horizon:
        Last day simulated (>= 60), days since CAR-T; simulation starts on day -7
        (lymphodepletion). Statistics of later days (day 90 and 180 counts, late ICAHT
        to day 100) are left out, with a note, when the horizon stops short of them.
    """
    if not (isinstance(n, int | np.integer) and n >= 10):
        raise InputError(f"--n must be an integer >= 10, got {n}", column="n", fix="e.g. --n 1000")
    if horizon < 60:
        raise InputError("the horizon must reach day 60", column="horizon", fix="e.g. 90")
    disease = check_disease(disease, own_population=True)
    if product is None and len(DISEASE_MIX[disease]) == 1:
        # One product in the disease's cohorts (MCL: brexu-cel): its rows apply.
        product = next(iter(DISEASE_MIX[disease]))
    hematotox = parse_hematotox(hematotox)
    pop, meta = load_population(disease=disease)
    rng = np.random.default_rng(seed)
    patients = sample_patients(pop, n, rng, product, hematotox, disease)
    days = np.arange(-7.0, float(horizon) + 1.0)
    anc, plt_, blasts = simulate_patients(patients, days, disease, blasts=True)
    ok = np.isfinite(anc).all(axis=1) & np.isfinite(plt_).all(axis=1)
    notes = []
    if (~ok).any():
        notes.append(
            f"{int((~ok).sum())} of {ok.size} virtual patients failed to solve and are left out"
        )
    mix = DISEASE_MIX[disease]
    if product is not None and product not in mix:
        notes.append(
            f"{product}: the {disease} population's patients under the product's own "
            "lymphodepletion, dose and CAR-T/CRS kinetics; the calibration files have no "
            f"{disease} row of this product"
        )
    stats, among_responders = _statistics(days, anc, plt_, blasts, ok, disease)
    qs = (5, 50, 95)
    bands = {
        "anc": np.nanpercentile(anc[ok], qs, axis=0),
        "platelets": np.nanpercentile(plt_[ok], qs, axis=0),
    }
    settings = {
        "product": product or "+".join(mix) + " (" + ":".join(f"{v:g}" for v in mix.values()) + ")",
        "disease": disease,
        "hematotox": hematotox,
        "n": int(ok.sum()),
        "seed": seed,
        "population": meta.get("module", "calibrated population"),
    }
    settings["days"] = [float(days[0]), float(days[-1])]
    left_out = [k for k in DEFINITIONS if k not in stats]
    if left_out:
        notes.append(f"not simulated to their day (horizon {horizon:g}): {', '.join(left_out)}")
    pub = _published(product, disease, hematotox)
    if any(r["responders_only"] for r in pub if r["statistic"] in stats):
        notes.append(
            "rows counting responders only are compared with the model's patients whose "
            f"marrow is cleared on day 28 ({stats['p_marrow_cleared_d28']:.0%} of them)"
        )
    group = (
        f"{settings['product']}, {disease}, CAR-HEMATOTOX "
        f"{hematotox if hematotox is not None else 'all'}"
    )
    if not pub:
        notes.append(
            f"no published row for {group} in natural_history.csv or "
            "natural_history_more.csv: nothing to compare with"
        )
    if product is None and any(r["file"] == "natural_history_more.csv" for r in pub):
        pooled = sorted({p for p in POOLED if p != "axi-cel+tisa-cel"})
        notes.append(
            f"rows of pooled cohorts ({', '.join(pooled)}) are compared with this "
            "simulation's axi-cel : tisa-cel mix"
        )
    return NaturalHistory(stats, pub, days, bands, settings, notes, among_responders)


def plot_natural_history(nh: NaturalHistory, path) -> None:
    """Visual predictive check: ANC and platelet 5/50/95 % bands over the simulated days
    from day 0, with the published thresholds and fractions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, unit, lines in (
        (axes[0], "anc", "ANC (G/L)", (0.1, 0.5, 1.0)),
        (axes[1], "platelets", "platelets (G/L)", (20.0, 50.0)),
    ):
        lo, mid, hi = nh.bands[key]
        ax.fill_between(nh.days, lo, hi, color="tab:blue", alpha=0.25, label="model 5-95 %")
        ax.plot(nh.days, mid, color="tab:blue", label="model median")
        for y in lines:
            ax.axhline(y, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlim(0, nh.days[-1])
        ax.set_xlabel("days since CAR-T")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    pub = {r["statistic"]: r["value"] for r in nh.published}
    text = []
    for key in (
        "p_anc_le_0.5",
        "p_anc_le_0.1",
        "median_days_anc_lt_0.5_d0_60",
        "p_severe_neutropenia_ge_14d",
        "p_anc_le_1_after_d21",
        "p_plt_lt_50",
        "p_early_icaht_ge3",
        "p_anc_lt_1_d90",
        "p_anc_lt_1_d180",
        "p_marrow_cleared_d28",
    ):
        if key in nh.statistics:
            p = pub.get(key)
            text.append(
                f"{key}: model {nh.statistics[key]:.2f}"
                + ("" if p is None else f", published {p:.2f}")
            )
    axes[0].text(
        0.98,
        0.02,
        "\n".join(text),
        transform=axes[0].transAxes,
        ha="right",
        va="bottom",
        fontsize=7,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    axes[0].legend(loc="upper right", fontsize=8)
    s = nh.settings
    fig.suptitle(
        f"Natural history without a boost: {s['product']}, {s['disease']}, "
        f"CAR-HEMATOTOX {s['hematotox'] or 'all'} (n = {s['n']})"
    )
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
