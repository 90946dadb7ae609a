"""Simulation-based calibration of :func:`carthema.clinical.boost.predict.predict_boost`
inside the model (issue 10, item 6).

Virtual patients are rows of the calibrated population. Each is simulated after its own
product's course without a boost and given a boost day drawn at random (days 21-90 after
CAR-T, independently of the patient); it is kept when it is cytopenic on that day as
measured (reported ANC < 0.5 G/L or platelets < 20 G/L: the selection uses only what
the prediction sees). Its *true*
engraftment times come from its own parameters, graft parameters drawn from the graft
distribution (:func:`carthema.clinical.population.graft.draw_graft`) and the boost, with the one
definition of :mod:`carthema.clinical.endpoints`. The prediction sees only the
boost-day state, with measurement noise as the likelihood assumes: ANC and platelets
(log-normal, the residual SDs of :data:`carthema.fitting.priors.RESIDUALS`; an ANC below
0.05 G/L is reported as 0), the days with ANC < 0.5 G/L before the boost (normal, SD
2 days + 10 % of the true number, rounded), the product and the CAR-HEMATOTOX score.

Engraftment times and days saved are whole days, so their predictive distributions are
discrete, and a closed interval ``q05 <= t <= q95`` of a discrete distribution holds at
least 90 % of its mass, often more (the endpoint days carry whole steps of probability;
when more than 5 % of draws never engraft by the horizon the interval is open above and
holds at least 95 %). Its coverage is therefore above 0.90 for a perfectly calibrated
prediction, and is not the calibration check. The check is the randomised probability
integral transform (PIT; Czado, Gneiting & Held 2009 for count data; the rank statistic
with ties broken at random of Talts et al. 2018, simulation-based calibration): the
predictive probability of a value below the truth plus a uniform share of the truth's own
step, ``u ~ U(F(t-), F(t))`` (over ``[F(horizon), 1]`` for a truth censored at the
horizon). It is uniform on [0, 1] for a calibrated prediction, so the share of ``u`` in
[0.05, 0.95] (:func:`central`) is the coverage of an exact 90 % central interval,
nominal 0.90. Beside it the benchmark reports the closed interval's raw coverage
(:func:`covered`, :func:`covered_saved`) with its expectation under calibration, the
predictive mass inside each reported interval (:func:`content`), and the share of truths
on an endpoint.

Engraftment is scored per lineage over the patients measured cytopenic in that lineage on
the boost day whose truth is not "already engrafted", among the draws not already
engrafted (the interval is the Kaplan-Meier interval over them, the same conditional); a
true time censored at the horizon is covered by the closed interval when q95 is None.
Days saved by the boost (days with ANC < 0.5 G/L, platelets < 20 G/L from the boost day
to the horizon, the same patient without the boost minus with it) are scored over every
case, against the per-draw days saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carthema.clinical.boost.predict import ANC_LLOQ, neutropenia_sd, predict_boost
from carthema.clinical.endpoints import Engraftment, days_below, lineage_engraftment
from carthema.clinical.plans import DAYS_SAVED, Plan, simulate_plan
from carthema.clinical.population.graft import draw_graft
from carthema.clinical.population.natural_history import sample_patients
from carthema.clinical.population.virtual import (
    load_population,
    population_params,
    product_events,
)
from carthema.fitting.priors import RESIDUALS
from carthema.models.model import get_model

LINEAGES = {"neutrophil": ("anc", 0.5), "platelet": ("platelets", 20.0)}
BOOST_DAYS = (21.0, 90.0)


@dataclass
class VirtualCase:
    vp: str
    product: str
    hematotox: int
    day: float
    dose: float
    source: str
    anc_true: float
    plt_true: float
    anc_obs: float
    plt_obs: float
    neutropenia_days_true: int
    neutropenia_days_obs: int
    truth: dict  # lineage -> (time or None, censored)
    cytopenic: dict  # lineage -> bool
    #: True days the boost saves (no boost minus boost, boost day to the horizon) per
    #: key of :data:`carthema.clinical.plans.DAYS_SAVED`; None when a solve failed.
    saved: dict = field(default_factory=dict)


def cytopenic_cases(
    n: int, rng: np.random.Generator, *, population=None, horizon_days: float = 120.0
) -> list[VirtualCase]:
    """``n`` virtual patients cytopenic on a random boost day, with their true
    engraftment after a boost of random dose (1-10e6 CD34+/kg, log-uniform) and source
    (autologous or a CD34-selected new allogeneic donor)."""
    model = get_model("full")
    pop = population if isinstance(population, pd.DataFrame) else load_population(population)[0]
    # Every patient once, in a random order, given a product in the LBCL cohort's
    # fixed shares (products by mechanism on shared traits; a frame with a product
    # column keeps its own): the one sampler, natural_history.sample_patients.
    patients = sample_patients(pop, len(pop), rng)
    out: list[VirtualCase] = []
    ia, ip = model.index("obs", "anc"), model.index("obs", "platelets")
    batch = 200
    for start in range(0, len(patients), batch):
        rows = patients.iloc[start : start + batch]
        sims = {}
        for product, sub in rows.groupby("product"):
            P = population_params(model, sub)
            ev = product_events(product, patient="vp")
            days, status, obs, _ = simulate_plan(model, P, ev, Plan(), horizon=BOOST_DAYS[1])
            for k in range(len(sub)):
                sims[sub.index[k]] = (sub.iloc[k], P[k], ev, status[k], obs[k])
        for label in rows.index:  # in the random order, products mixed
            row, p, ev, st, ob = sims[label]
            if st != 0:
                continue
            anc, plt_ = ob[:, ia], ob[:, ip]
            # The boost day is drawn independently of the patient, and the patient is kept
            # when cytopenic on it: drawing it among the patient's own cytopenic days would
            # favour short cytopenias (a day of a long one is less likely to be picked), a
            # selection the prediction knows nothing about.
            d = float(rng.integers(int(BOOST_DAYS[0]), int(BOOST_DAYS[1]) + 1))
            i = int(np.searchsorted(days, d))
            # Selected on what the prediction sees (the measured counts), not on the true
            # ones: a selection on the truth would be information the prediction lacks.
            seen = observe(anc, plt_, i, rng)
            if not (seen["anc"] < 0.5 or seen["platelets"] < 20.0):
                continue
            out.append(_case(model, pop, row, p, ev, days, anc, plt_, i, seen, rng, horizon_days))
            if len(out) >= n:
                return out
    return out


def observe(anc: np.ndarray, plt_: np.ndarray, i: int, rng: np.random.Generator) -> dict:
    """The boost-day state as reported, with the observation model the likelihood of
    :func:`predict_boost` assumes: log-normal ANC and platelets (typical residual SDs; an
    ANC below :data:`ANC_LLOQ` reported as 0), the number of days before the boost with
    ANC < 0.5 G/L with normal error of SD :func:`neutropenia_sd` (rounded, within
    0 ... days so far)."""
    sd_a, sd_p = RESIDUALS["anc"].typical_sd, RESIDUALS["platelets"].typical_sd
    anc_obs = float(anc[i] * np.exp(sd_a * rng.standard_normal()))
    anc_obs = 0.0 if anc_obs < ANC_LLOQ else round(anc_obs, 2)
    plt_obs = max(1.0, round(float(plt_[i] * np.exp(sd_p * rng.standard_normal()))))
    n_true = int((anc[:i] < 0.5).sum())
    sd_n = float(neutropenia_sd(n_true))
    # A count of days cannot be negative or exceed the days before the boost.
    n_obs = int(np.clip(round(n_true + sd_n * rng.standard_normal()), 0, i))
    return {"anc": anc_obs, "platelets": plt_obs, "n_true": n_true, "n_obs": n_obs}


def _case(model, pop, row, p, ev, days, anc, plt_, i, seen, rng, horizon_days) -> VirtualCase:
    day = float(days[i])
    dose = float(np.exp(rng.uniform(np.log(1e6), np.log(1e7))))
    source = "autologous" if rng.random() < 0.5 else "allogeneic"
    pt = draw_graft(model, p[None, :], rng, population=pop, dose=dose)
    plan = Plan(day, dose, source, cd34_selected=True)
    d2, st, obs, _ = simulate_plan(model, pt, ev, plan, horizon=day + horizon_days)
    # The same patient (same parameters) without the boost: the true days saved.
    d0, st0, obs0, _ = simulate_plan(model, pt, ev, Plan(), horizon=day + horizon_days)
    saved = {}
    for _, name, thr, key in DAYS_SAVED:
        j = model.index("obs", name)
        if st[0] != 0 or st0[0] != 0 or not np.array_equal(d0, d2):
            saved[key] = None
            continue
        without = days_below(d2, obs0[0, :, j], thr, start=day)
        with_ = days_below(d2, obs[0, :, j], thr, start=day)
        saved[key] = float(without - with_)
    res = lineage_engraftment(
        d2,
        reference=day,
        anc=obs[:, :, model.index("obs", "anc")],
        platelets=obs[:, :, model.index("obs", "platelets")],
    )
    truth = {}
    for key in LINEAGES:
        e = res[key]
        if st[0] != 0:
            truth[key] = (None, True)
        elif bool(e.already[0]):
            truth[key] = ("already", False)
        elif bool(e.censored[0]):
            truth[key] = (None, True)
        else:
            truth[key] = (float(e.time[0]), False)
    return VirtualCase(
        vp=str(row.get("vp", "")),
        product=str(row["product"]),
        hematotox=int(row["hematotox"]),
        day=day,
        dose=dose,
        source=source,
        anc_true=float(anc[i]),
        plt_true=float(plt_[i]),
        anc_obs=seen["anc"],
        plt_obs=seen["platelets"],
        neutropenia_days_true=seen["n_true"],
        neutropenia_days_obs=seen["n_obs"],
        truth=truth,
        cytopenic={"neutrophil": seen["anc"] < 0.5, "platelet": seen["platelets"] < 20.0},
        saved=saved,
    )


def predict_case(case: VirtualCase, *, seed: int = 0, n_draws: int | None = None, population=None):
    """predict_boost from the case's boost-day state only."""
    kw = {} if n_draws is None else {"n_draws": n_draws}
    return predict_boost(
        Plan(case.day, case.dose, case.source, cd34_selected=True),
        anc=case.anc_obs,
        platelets=case.plt_obs,
        neutropenia_days=case.neutropenia_days_obs,
        product=case.product,
        hematotox=case.hematotox,
        seed=seed,
        population=population,
        return_draws=True,
        **kw,
    )


def covered(summary: dict, truth: tuple) -> bool | None:
    """Is the true time inside the predicted closed 90 % interval (rules in the module
    docstring)? None when the truth is "already engrafted" (no time to cover) or the
    interval is withheld (too few draws not engrafted)."""
    t, censored = truth
    if t == "already" or summary.get("withheld"):
        return None
    q05, q95 = summary["q05"], summary["q95"]
    if censored:
        return q95 is None
    if q05 is None:  # the whole curve lies beyond the horizon
        return False
    return q05 <= t and (q95 is None or t <= q95)


def covered_saved(summary: dict, truth: float | None) -> bool | None:
    """Are the true days saved inside the predicted 90 % interval ``q05 <= t <= q95``
    (the ``neutropenia_days_saved`` / ``thrombocytopenia_days_saved`` of
    :func:`predict_boost`)? None when either is undefined. Days saved are integers with
    ties (often 0 on both sides), so the closed interval is the right one."""
    if truth is None or summary.get("q05") is None or summary.get("q95") is None:
        return None
    return bool(summary["q05"] <= truth <= summary["q95"])


def _times(e: Engraftment) -> np.ndarray | None:
    """Per-draw times of the draws not already engrafted (inf: censored at the horizon)."""
    keep = ~np.asarray(e.already, dtype=bool)
    time = np.where(e.censored, np.inf, e.time)[keep]
    return time if time.size else None


def pit(e: Engraftment, truth: tuple, rng: np.random.Generator) -> float | None:
    """Randomised PIT of the true time under the per-draw predictive times of the draws
    not already engrafted (the truth is not: the same conditional the interval is)."""
    t, censored = truth
    time = None if t == "already" else _times(e)
    if time is None:
        return None
    if censored:
        lo = float(np.mean(time <= e.follow_up))
        return float(rng.uniform(lo, 1.0))
    return randomised_pit(time, float(t), rng)


def randomised_pit(draws: np.ndarray, truth: float, rng: np.random.Generator) -> float:
    """``U(F(t-), F(t))`` of ``truth`` under the empirical distribution of ``draws`` (a
    discrete value's step shared at random: uniform for a calibrated prediction)."""
    below = float(np.mean(draws < truth))
    at = float(np.mean(draws <= truth))
    return float(rng.uniform(below, at))


def central(u: float | None, level: float = 0.90) -> bool | None:
    """Is a randomised PIT value inside the central ``level`` interval? Its share over
    calibrated predictions is ``level`` exactly, ties or not."""
    if u is None:
        return None
    a = (1.0 - level) / 2.0
    return bool(a <= u <= 1.0 - a)


def content(draws: np.ndarray | None, q05: float | None, q95: float | None) -> float | None:
    """Predictive mass of the closed interval [q05, q95] (q95 None: open above) under
    ``draws`` (inf: beyond the horizon): the raw coverage this interval has on average
    when the prediction is calibrated."""
    if draws is None or draws.size == 0 or q05 is None:
        return None
    hi = np.inf if q95 is None else q95
    return float(np.mean((draws >= q05) & (draws <= hi)))


def on_endpoint(summary: dict, truth: tuple) -> bool | None:
    """Does a timed truth fall exactly on an endpoint of the interval (a tie)?"""
    t, censored = truth
    if t == "already" or censored or summary.get("q05") is None:
        return None
    return bool(t == summary["q05"] or t == summary.get("q95"))
