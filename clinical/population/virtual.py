"""Virtual populations of patients treated with CD19 CAR-T: plausible patients drawn
from broad distributions, the calibrated population shipped with the package, and their
simulation under each product's own course.

**One trait distribution per disease, products by mechanism.** A virtual patient is a
set of traits (marrow, inflammation, tumour load, CAR-T fitness) that exists before the
product is chosen; the same patients are simulated under every product, each with its
own lymphodepletion, dose (:data:`PRODUCT_LD`, :data:`PRODUCT_DOSE`) and CAR-T/CRS
kinetics (the product presets of :mod:`carthema.models.presets`, applied by
:func:`product_params`). The kinetic columns of a population (``cart_rho``,
``cart_f_dose``, ...) hold the patient's value under the reference kinetics (the
cart.py defaults, Stein et al. 2019); a product multiplies them by its typical value over
the reference, so a patient's between-patient deviation is kept under every product.
The tumour load ``leuk_L0`` is the disease preset's value times the patient's own
factor, set directly per disease (never a ratio on another disease's load).

A virtual patient has two latent traits, marrow *reserve* ``r`` and baseline
*inflammation* ``q`` (standard normal, correlation :data:`LATENT_CORR`). Each varying
model parameter and each of the CAR-HEMATOTOX laboratory values is log-normal with a
median and a total log-SD (a parameter's own ``plausible`` field,
:class:`~carthema.models.parameters.Plausible`; a laboratory value's entry in
:data:`TRAITS`) and correlations with ``r`` and ``q`` (:data:`TRAITS`): low
reserve means low baseline platelets, ANC and haemoglobin, a smaller and slower stem-cell
compartment and more sensitive progenitors; high inflammation means high CRP and
ferritin and a stronger delayed marrow suppression. The CAR-HEMATOTOX score is computed
from the patient's own baseline values with :func:`carthema.models.hematotox.hematotox`,
so a high score goes with a long neutropenia through the mechanism, not by decree.

These distributions are the *plausible* population (assumptions, wide on
purpose). The *calibrated* population (:func:`load_population`) is a weighted resample
of plausible patients that matches the published natural history; it is produced by
:mod:`carthema.clinical.population.calibrate`, which documents the procedure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.data.errors import InputError
from carthema.models.events import build_events
from carthema.models.model import Model, get_model
from carthema.models.scenarios import EVENT_COLUMNS
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import SCREEN, SolverOptions

#: Correlation of the reserve and inflammation traits (assumption: inflamed patients
#: tend to have less reserve; Rejeski et al. 2021 found both in the same high-risk group).
LATENT_CORR = -0.3


@dataclass(frozen=True)
class Trait:
    """Correlations of one varying model parameter with the latent reserve ``r`` and
    inflammation ``q``; its median and total log-SD are the parameter's own
    (:attr:`carthema.models.parameters.Param.plausible`)."""

    rho_r: float = 0.0
    rho_q: float = 0.0


@dataclass(frozen=True)
class Lab:
    """Log-normal distribution of one laboratory value (not a model parameter; it feeds
    only the CAR-HEMATOTOX score): ``log x = log median + sd * (rho_r r + rho_q q + rest
    e)``, and where it comes from."""

    median: float
    sd: float
    rho_r: float
    rho_q: float
    why: str


#: The plausible population, in the order it is drawn (the order fixes the random
#: stream): for each varying model parameter its correlations (:class:`Trait`; median
#: and log-SD on its :class:`~carthema.models.parameters.Param`, ``plausible``); for each
#: laboratory value (``lab_*``) its whole distribution (:class:`Lab`). A parameter's
#: value is ``median * exp(sd * (rho_r r + rho_q q + rest e))``; a median of ``None``
#: varies around the value in the parameter matrix (default, or product or disease preset).
TRAITS: dict[str, Trait | Lab] = {
    "anc0": Trait(0.5, 0.0),
    "plt0": Trait(0.7, -0.1),
    "lab_hemoglobin": Lab(10.8, 0.15, 0.6, -0.2, "pre-LD haemoglobin, median about 11 g/dL"),
    "lab_crp": Lab(
        1.5,
        1.3,
        0.0,
        0.9,
        "pre-LD CRP, median about 1.5 mg/dL, wide; with ferritin centred so that the "
        "CAR-HEMATOTOX high share of the plausible patients (44 %) is near the 46 % of "
        "natural_history.csv Table 3 (n 83 high / 180)",
    ),
    "lab_ferritin": Lab(600.0, 0.9, -0.1, 0.8, "pre-LD ferritin, median about 600 ng/mL"),
    "hsc_mass": Trait(0.7, 0.0),
    "hsc_regen": Trait(0.8, 0.0),
    "hsc_sigma": Trait(0.3, 0.0),
    "ld_kill_prol": Trait(-0.2, 0.0),
    "ld_kill_mpp": Trait(-0.6, 0.0),
    "ld_kill_mk": Trait(-0.3, 0.0),
    "late_supp": Trait(-0.6, 0.6),
    "late_rate": Trait(),
    "late_kill_hsc": Trait(-0.3, 0.3),
    "niche_supp": Trait(-0.4, 0.4),
    "infl_supp": Trait(0.0, 0.3),
    "neu_gamma": Trait(),
    "plt_gamma": Trait(),
    "mpp_rate": Trait(),
    "graft_prog": Trait(),
    "graft_hsc": Trait(),
    "graft_regen": Trait(),
    "rej_rate": Trait(),
    "cart_rho": Trait(),
    "cart_f_dose": Trait(),
    "leuk_L0": Trait(),
}


def plausible_of(model: Model, name: str) -> tuple[float | None, float, float, float]:
    """(median or ``None``, log-SD, rho_r, rho_q) of ``name`` (a key of :data:`TRAITS`)
    in the plausible population: a laboratory value's from :data:`TRAITS`, a parameter's
    median and log-SD from its :class:`~carthema.models.parameters.Param`."""
    t = TRAITS[name]
    if isinstance(t, Lab):
        return t.median, t.sd, t.rho_r, t.rho_q
    spread = model.params[model.index("param", name)].plausible
    if spread is None:
        raise ValueError(f"TRAITS names {name}, which has no plausible spread on its Param")
    return spread.median, spread.sd, t.rho_r, t.rho_q


#: Products and diseases. A disease is simulated only once its population is calibrated
#: (:func:`carthema.clinical.population.natural_history.check_disease`).
PRODUCTS = ("tisa-cel", "axi-cel", "liso-cel", "brexu-cel")

#: Lymphodepletion and dose of each product as given in the LBCL cohorts (product
#: labels): tisagenlecleucel after fludarabine 25 mg/m2 + cyclophosphamide 250 mg/m2,
#: axicabtagene after fludarabine 30 mg/m2 + cyclophosphamide 500 mg/m2, each daily on
#: days -5..-3 (KYMRIAH and YESCARTA prescribing information).
PRODUCT_LD: dict[str, tuple[float, float]] = {
    "tisa-cel": (25.0, 250.0),
    "axi-cel": (30.0, 500.0),
    "liso-cel": (30.0, 300.0),
    "brexu-cel": (30.0, 500.0),
}
#: CAR+ cells/kg given (axi-cel and brexu-cel 2e6/kg; tisa-cel 0.6-6e8 flat, median about
#: 3e8 = 4e6/kg at 75 kg; liso-cel 1e8 flat = 1.3e6/kg). Product labels.
PRODUCT_DOSE: dict[str, float] = {
    "tisa-cel": 4e6,
    "axi-cel": 2e6,
    "liso-cel": 1.3e6,
    "brexu-cel": 2e6,
}
#: The LBCL calibration cohort's mix (Rejeski et al. 2021, Table 2: axi-cel 159, tisa-cel 76).
LBCL_MIX = {"axi-cel": 159.0, "tisa-cel": 76.0}


def product_course(product: str, disease: str = "lbcl"):
    """The product's course in ``disease``: the disease preset's trial course where it
    gives one (B-ALL: ELIANA, ZUMA-3; MCL: ZUMA-2), else the LBCL course of
    :data:`PRODUCT_LD` and :data:`PRODUCT_DOSE` (days -5..-3, dose on day 0)."""
    from carthema.models.presets import DISEASES, Course

    if product not in PRODUCT_LD:
        raise InputError(
            f"unknown product '{product}'",
            column="product",
            fix=f"choose one of {', '.join(PRODUCT_LD)}",
        )
    preset = DISEASES.get(disease)
    if preset is not None and product in preset.courses:
        return preset.courses[product]
    flu, cy = PRODUCT_LD[product]
    days = (-5.0, -4.0, -3.0)
    return Course(flu, days, cy, days, PRODUCT_DOSE[product], "product label (LBCL)")


def product_events(product: str, *, patient: str = "vp", disease: str = "lbcl") -> pd.DataFrame:
    """Events of the product's standard course in ``disease`` (:func:`product_course`):
    its lymphodepletion and its dose on day 0."""
    course = product_course(product, disease)
    rows = []
    for drug, amount, days in (
        ("fludarabine", course.flu_mg_m2, course.flu_days),
        ("cyclophosphamide", course.cy_mg_m2, course.cy_days),
    ):
        for d in days:
            rows.append(
                {
                    "patient": patient,
                    "day": float(d),
                    "kind": "lymphodepletion",
                    "amount": amount,
                    "unit": "mg/m2",
                    "drug": drug,
                }
            )
    rows.sort(key=lambda r: r["day"])
    rows.append(
        {
            "patient": patient,
            "day": 0.0,
            "kind": "cart_infusion",
            "amount": course.dose_per_kg,
            "unit": "cells/kg",
        }
    )
    return pd.DataFrame(rows, columns=EVENT_COLUMNS)


def product_params(model: Model, P: np.ndarray, product: str) -> np.ndarray:
    """``P`` (reference kinetics) under ``product``'s own CAR-T/CRS kinetics: every
    parameter the product preset sets (``apply_presets(product, full=True)``) is
    multiplied by the preset value over the model default, keeping each patient's
    deviation; a copy."""
    if product not in PRODUCT_LD:
        raise InputError(
            f"unknown product '{product}'",
            column="product",
            fix=f"choose one of {', '.join(PRODUCT_LD)}",
        )
    out = np.array(P, dtype=float, copy=True)
    for name, factor in product_factors(model, product).items():
        j = model.index("param", name)
        q = model.params[j]
        out[:, j] = np.clip(out[:, j] * factor, q.low, q.high)
    return out


def product_factors(model: Model, product: str) -> dict[str, float]:
    """Per parameter the product preset sets: its value over the model default (the
    factor that takes a patient from the reference kinetics to the product's)."""
    from carthema.models.presets import apply_presets

    default = model.default_params()
    return {
        name: value / default[model.index("param", name)]
        for name, value in apply_presets(product, full=True).items()
        if name != "cart_dose" and name in model.param_names
    }


def disease_base(disease: str) -> dict[str, float]:
    """The disease preset's parameter values (absolute: its CD19+ load)."""
    from carthema.models.presets import apply_presets

    return apply_presets(disease=disease)


def marrow_normal_share(model: Model, P: np.ndarray) -> np.ndarray:
    """Per patient: the marrow's normal (non-blast) share before treatment, ``1 -
    leuk_crowding * share0`` (targets.py ``marrow_space``'s reference; exactly 1 without
    crowding, as in LBCL). Counts held by the feedback rise by its inverse once CAR-T
    clears the blasts."""
    from carthema.models.components.targets import crowding

    col = {name: model.index("param", name) for name in model.param_names}
    L0, ref = P[:, col["leuk_L0"]], P[:, col["leuk_marrow_ref"]]
    return 1.0 - crowding(P[:, col["leuk_crowding"]]) * L0 / (L0 + ref)


def crowded_baseline(model: Model, P: np.ndarray) -> np.ndarray:
    """``P`` with each patient's pre-lymphodepletion ANC and platelets (``anc0``,
    ``plt0``: the healthy marrow's counts of the plausible traits) lowered by the
    patient's own leukaemic marrow crowding: counts in proportion to the marrow's normal
    share ``1 - leuk_crowding * share0`` (the rule of haematopoiesis.py's feedback with
    targets.py ``marrow_space``), so that after CAR-T clears the blasts the same patient's
    counts return to the healthy level. A copy."""
    out = np.array(P, dtype=float, copy=True)
    col = {name: model.index("param", name) for name in model.param_names}
    free0 = marrow_normal_share(model, out)
    for count in ("anc0", "plt0"):
        j = col[count]
        q = model.params[j]
        out[:, j] = np.clip(out[:, j] * free0, q.low, q.high)
    return out


def draw_plausible(
    n: int, rng: np.random.Generator, model: Model | None = None, base: dict | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """``n`` plausible virtual patients: parameter matrix (natural scale) and a frame of
    their latent traits and laboratory values. ``base`` overrides defaults (presets)."""
    model = model or get_model("full")
    P = np.tile(model.default_params(), (n, 1))
    for name, value in (base or {}).items():
        P[:, model.index("param", name)] = value
    z = rng.standard_normal((n, 2))
    r = z[:, 0]
    q = LATENT_CORR * r + np.sqrt(1.0 - LATENT_CORR**2) * z[:, 1]
    info = {"reserve": r, "inflammation": q}
    for name in TRAITS:
        median, sd, rho_r, rho_q = plausible_of(model, name)
        rest = np.sqrt(max(1.0 - rho_r**2 - rho_q**2, 0.0))
        x = sd * (rho_r * r + rho_q * q + rest * rng.standard_normal(n))
        if name.startswith("lab_"):
            info[name[4:]] = median * np.exp(x)
            continue
        j = model.index("param", name)
        q_ = model.params[j]
        # A trait without a median of its own varies around the (preset) value in P.
        value = P[:, j] * np.exp(x) if median is None else median * np.exp(x)
        P[:, j] = np.clip(value, q_.low, q_.high)
    return P, pd.DataFrame(info)


def simulate_obs(
    model: Model,
    P: np.ndarray,
    events: pd.DataFrame,
    days: np.ndarray,
    options: SolverOptions = SCREEN,
) -> tuple[np.ndarray, np.ndarray]:
    """(status (n,), observables (n, days, n_obs)) of every row of ``P`` under one shared
    events table, from ``days[0]`` on (solver ``options``)."""
    ev = build_events(model, events, model.default_params())
    sched = Schedule.from_events(model, ev, days, t0=float(days[0]))
    sol = solve_batch(model, P, sched, options)
    return sol.status, sol.obs


def simulate_counts(
    model: Model, P: np.ndarray, events: pd.DataFrame, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(status, anc, platelets) of every row of ``P`` under one shared events table."""
    status, obs = simulate_obs(model, P, events, days)
    anc = obs[:, :, model.index("obs", "anc")]
    plt_ = obs[:, :, model.index("obs", "platelets")]
    return status, anc, plt_


# ---- the calibrated population shipped with the package --------------------------------

POPULATION_FILE = "lbcl_population.csv"
POPULATION_INFO = "lbcl_population.json"


def population_files(disease: str = "lbcl") -> tuple[str, str]:
    """File names of a disease's calibrated population and its provenance."""
    return f"{disease}_population.csv", f"{disease}_population.json"


def _population_dir() -> Path:
    return Path(str(resources.files("carthema.data") / "populations"))


def load_population(
    path: str | Path | None = None, disease: str = "lbcl"
) -> tuple[pd.DataFrame, dict]:
    """The calibrated virtual population of ``disease`` (one row per virtual patient:
    CAR-HEMATOTOX score and laboratory values, and every varying parameter, shared by
    every product) and its provenance (how it was produced, what it matches)."""
    if path is None:
        folder = _population_dir()
        name, meta_name = population_files(disease)
        csv, info = folder / name, folder / meta_name
    else:
        csv = Path(path)
        info = csv.with_suffix(".json")
    if not csv.exists():
        raise InputError(
            "population file not found",
            file=str(csv),
            fix="run `python -m carthema.clinical.population.calibrate` to produce it",
        )
    meta = json.loads(info.read_text()) if info.exists() else {}
    return pd.read_csv(csv), meta


def population_params(model: Model, pop: pd.DataFrame) -> np.ndarray:
    """Parameter matrix of ``model`` for the rows of a population frame (columns named
    like parameters override the defaults; the rest stay at their defaults). A frame
    with a ``product`` column (the sampler,
    :func:`~carthema.clinical.population.natural_history.sample_patients`, gives one)
    gets each row's product kinetics (:func:`product_params`); without one, the
    reference kinetics."""
    P = np.tile(model.default_params(), (len(pop), 1))
    for col in pop.columns:
        if col in model.param_names:
            P[:, model.index("param", col)] = pop[col].to_numpy(float)
    if "product" in pop.columns:
        products = pop["product"].to_numpy(str)
        for g in np.unique(products):
            rows = products == g
            P[rows] = product_params(model, P[rows], str(g))
    return P
