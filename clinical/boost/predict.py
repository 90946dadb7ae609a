"""Predicting a stem-cell boost from the patient's state on the boost day.

A patient referred for a boost usually comes with a handful of facts, not a time series:
the counts on the boost day (often ANC 0, platelets propped up by transfusions, ANC by
G-CSF), how long the neutropenia has lasted, the CAR-T product, the disease and the
CAR-HEMATOTOX score before lymphodepletion. :func:`predict_boost` turns them into a
predictive distribution of engraftment after the boost.

Prior
-----
The calibrated virtual population of the patient's disease
(:func:`carthema.clinical.population.virtual.load_population`: LBCL or MCL, each fitted to
its own published natural history; the course is the product's in that disease, MCL:
ZUMA-2, and MCL's one product, brexu-cel, when none is given), restricted to the
patient's CAR-HEMATOTOX score (the exact score when at least :data:`MIN_EXACT` distinct
virtual patients have it, else the low (0-1) / high (>= 2) group; the output says
which). Every product shares the population's trait
distribution; the patient's product acts through its own lymphodepletion, dose and
CAR-T/CRS kinetics (the product preset's kinetic values shift the population's
reference kinetics, :func:`carthema.clinical.population.virtual.product_factors`, the
rule of the natural-history simulation). A disease without a calibrated population is
refused (:func:`carthema.clinical.population.natural_history.check_disease`).

The prior density used by the Monte Carlo moves is a **shrunk Gaussian kernel density
over the population rows in log-parameter space** (West 1993; Liu & West 2001): kernel
covariance = h^2 x the rows' covariance (h: Silverman factor), kernel centres pulled
toward the rows' mean by sqrt(1 - h^2), so that the density has exactly the rows' mean
and covariance; duplicated rows of the resampled population count as weights. Why a KDE
and not a multivariate normal: the calibrated population is a weighted resample selected
to match the natural history, and restricting it to a CAR-HEMATOTOX group truncates the
reserve and inflammation traits; a fitted normal would put prior mass on patients the
calibration removed, a KDE keeps the population's shape while giving the random walk a
smooth density. Why shrunk: a plain KDE's covariance is (1 + h^2) x the rows' (h is
0.75-0.85 here: 1.6-1.7 x the variance), a prior much broader than the population the
patient comes from, and predictions over-dispersed (the boost self-calibration covered
0.96 / 1.00 of true times with its nominal 90 % intervals). Initial particles are drawn
from the same density, so the sampler targets exactly prior x likelihood. The density
is truncated to each parameter's plausible range.

Graft and rejection parameters (:data:`carthema.clinical.population.graft.GRAFT_PARAMS`)
do not enter the pre-boost likelihood and are not prior dimensions: they are drawn per
particle after the conditioning from :func:`carthema.clinical.population.graft.draw_graft`
(the population column, the Param's plausible spread, or ASSUMPTION: log-normal SD 0.3 around the
default), so every prediction carries the graft's own uncertainty.

Likelihood
----------
The residual model of the fits (:data:`carthema.fitting.priors.RESIDUALS`: log-normal,
typical SD, floor) for ANC and platelets on the boost day and for earlier observations;
censored (M3) terms for an ANC below the laboratory's limit (``anc=0``: below
``anc_lloq``, default 0.05 G/L) and, for a platelet-transfusion-dependent patient, for
the patient's *own* platelet count being below 20 G/L (the measured count is the
transfused one and is not used); a normal term with SD 2 days + 10 % of the particle's
own count (:func:`neutropenia_sd`) for the number of days with ANC < 0.5 G/L before the
boost; with the five CAR-HEMATOTOX values, log-normal terms (SD :data:`LAB_SD`) for the
baseline ANC and platelets (the model's set points ``anc0``, ``plt0``) and for
haemoglobin, CRP and ferritin (population columns correlated with the marrow
parameters). A failed solve is a rejected particle (-inf), never an
exception.

Support. ``gcsf``: G-CSF is in the simulated course over the 14 days before the boost, so
the ANC is conditioned on *with* that support; the boost day is a G-CSF day too (the
count measured on it is a supported count), and G-CSF stops after it (or ``gcsf_after``
days later). Days on G-CSF never count toward engraftment, so a patient on G-CSF at the
boost is never "already engrafted": engraftment is the first 3-day run above 0.5 G/L off
G-CSF, after the first fall below it when the count falls once the support stops.
``gcsf_dependent`` ("the ANC falls below 0.5 G/L whenever G-CSF stops"): on G-CSF as
above, and in the same particle's course with G-CSF stopped after the boost day and no
boost, the lowest ANC of the next :data:`GCSF_FALL_DAYS` days is conditioned below 0.5
G/L (a censored term; one more solve per particle). The own count on the boost day alone
does not say it: the G-CSF-driven precursors keep the count up for days after the stop,
so a supported 0.6 G/L with an own count of 0.35 G/L may never fall below 0.5. It
combines with ``neutropenia_days`` (counted on the supported course, as measured).
``tpo``: a TPO-receptor agonist over the 14 days before the boost and continued through
follow-up (assumption: it is not stopped at the boost). ``plt_transfused``: the
patient's own count is conditioned below 20 G/L; the last transfusion (1 unit) is placed
on the boost day, so the 7 days after it do not count toward platelet engraftment.

Sampler
-------
Sequential Monte Carlo with adaptive tempering, from ``n`` particles drawn from the prior
(more, in batches of ``n`` up to :data:`~carthema.clinical.boost.smc.POOL_BATCHES` x
``n``, while none of them reproduces every conditioned value together; the first stage
resamples ``n`` from them all): the likelihood is raised to a
temperature that climbs from 0 to 1, each next temperature chosen by bisection so that
the effective sample size of the incremental weights stays at or above half the
particles; systematic resampling after every stage; then random-walk Metropolis moves in
log-parameter space with the particles' covariance (scale 2.38 / sqrt(d), adapted to the
acceptance rate) and delayed acceptance (a proposal is simulated only once it passes the
prior ratio; Christen & Fox 2005), repeated until at least
:data:`~carthema.clinical.boost.smc.MOVED` of the particles have moved (at least
``MIN_MOVES``, at most ``MAX_MOVES`` moves). Simulations use the numba
population solver. The reported ``effective_sample_size`` is the smaller of the last
stage's importance ESS and the number of distinct particles after its moves; below
:data:`MIN_ESS` (1,000) the prediction is refused, as it is when the counts are
impossible under the population (the conditioned draws still cannot reproduce them).
Modules
-------
:mod:`~carthema.clinical.boost.inputs` (the inputs checked, the courses with their
support, the likelihood terms), :mod:`~carthema.clinical.boost.prior` (the population
prior), :mod:`~carthema.clinical.boost.likelihood` (the terms on simulated particles and
the refusals), :mod:`~carthema.clinical.boost.smc` (the sampler),
:mod:`~carthema.clinical.boost.outcome` (the solves with and without the boost) and
:mod:`~carthema.clinical.boost.summary` (the result); :func:`predict_boost` runs them in
that order.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from carthema.clinical.boost.inputs import (
    DEFAULT_PRODUCT_COURSE,
    SUPPORT_DAYS,
    boost_courses,
    likelihood_terms,
    read_inputs,
)
from carthema.clinical.boost.likelihood import (
    ANC_LLOQ,
    GCSF_FALL_DAYS,
    LAB_SD,
    NEUTROPENIA_SD,
    Conditioner,
    neutropenia_sd,
)
from carthema.clinical.boost.outcome import boost_outcome, own_counts
from carthema.clinical.boost.prior import (
    LAB_COLUMNS,
    MIN_EXACT,
    PopulationPrior,
    population_prior,
    posterior_prior,
    prior_draws,
)
from carthema.clinical.boost.smc import MIN_ESS, condition, smc
from carthema.clinical.boost.summary import BoostPrediction, summarise
from carthema.clinical.population.graft import GRAFT_PARAMS
from carthema.clinical.population.virtual import load_population, product_factors
from carthema.data.boost import BoostPlan
from carthema.data.errors import InputError
from carthema.models.model import Model, get_model
from carthema.models.posterior import Posterior

#: Default number of particles.
N_PARTICLES = 2400


def base_params(model: Model, prior: PopulationPrior, product: str | None, chim) -> np.ndarray:
    """The parameter vector the particles' dimensions are written into: the defaults,
    with the product's kinetics for the parameters the population does not vary (the
    rest are shifted in the prior) and the baseline donor chimerism."""
    base = model.default_params().copy()
    if product is not None:
        for name, factor in product_factors(model, product).items():
            if name not in prior.names:
                base[model.index("param", name)] *= factor
    return _with_chimerism(model, base, chim)


def _with_chimerism(model: Model, base: np.ndarray, chim: float | None) -> np.ndarray:
    """``base`` with the baseline donor chimerism ``chim`` (None: as it is)."""
    if chim is not None:
        q = model.params[model.index("param", "donor_chim0")]
        base[model.index("param", "donor_chim0")] = float(np.clip(chim, q.low, q.high))
    return base


def _posterior_prior(model: Model, posterior: Posterior, inp) -> tuple[PopulationPrior, np.ndarray]:
    """The KDE prior over a Posterior's draws and the parameter vector its dimensions are
    written into (the posterior's fixed values, with the baseline donor chimerism)."""
    if not isinstance(posterior, Posterior):
        raise InputError(
            f"prior must be a carthema Posterior, got {type(posterior).__name__}",
            column="prior",
            fix="pass carthema.Posterior.from_fit_folder(...) or VirtualPopulation.sample(...)",
        )
    if inp.hematotox is not None and inp.labs is None:
        raise InputError(
            "--hematotox selects rows of the population; a given posterior is not restricted",
            column="hematotox",
            fix="leave out hematotox with a posterior prior (or sample the population with it)",
        )
    if posterior.model.name != model.name:
        raise InputError(
            f"the posterior is of the '{posterior.model.name}' model; predict-boost needs "
            f"the '{model.name}' model",
            column="prior",
            fix="fit (or sample) the full model",
        )
    kde = posterior_prior(model, posterior, disease=inp.disease)
    base = np.asarray(posterior.fixed, dtype=float).copy()
    return kde, _with_chimerism(model, base, inp.donor_chimerism)


def predict_boost(
    graft: BoostPlan,
    *,
    anc: float | None = None,
    anc_lloq: float = ANC_LLOQ,
    platelets: float | None = None,
    gcsf: bool = False,
    gcsf_after: float = 0.0,
    gcsf_dependent: bool = False,
    gcsf_since: float | None = None,
    plt_transfused: bool = False,
    tpo: bool = False,
    neutropenia_days: float | None = None,
    product: str | None = None,
    disease: str = "lbcl",
    hematotox: int | str | None = None,
    hematotox_labs=None,
    donor_chimerism: float | None = None,
    events: pd.DataFrame | None = None,
    observations: pd.DataFrame | None = None,
    n_draws: int = N_PARTICLES,
    seed: int = 0,
    horizon_days: float = 120.0,
    population: str | pd.DataFrame | None = None,
    return_draws: bool = False,
    prior: Posterior | None = None,
) -> BoostPrediction:
    """Predicted engraftment after the boost ``graft`` (a
    :class:`~carthema.data.boost.BoostPlan`: its day, days since CAR-T, CD34+ cells/kg,
    source, CD34 selection and CD3+ or MNC dose, with the CD3+ rule of
    :meth:`~carthema.data.boost.BoostPlan.t_cells`), from the patient's state on the
    boost day.

    The other parameters mirror ``carthema predict-boost``: ``anc`` (0 = below ``anc_lloq``) and
    ``platelets`` on the boost day (G/L); ``gcsf`` (ANC supported; G-CSF given through
    the boost day and continued ``gcsf_after`` days after it), ``gcsf_since`` (the day
    G-CSF started, implies ``gcsf``; default: the 14 days before the boost, recorded as
    assumed in the result); ``gcsf_dependent`` (the ANC falls below 0.5 G/L whenever
    G-CSF stops: the patient's own ANC off G-CSF on the boost day is conditioned below
    0.5 G/L; implies ``gcsf``); ``plt_transfused`` (the
    platelet count is not the patient's own); ``tpo`` (on a TPO-receptor agonist);
    ``neutropenia_days`` (days with ANC < 0.5 before the boost); ``product``, ``disease``,
    ``hematotox`` (a score 0-7, or the group "low"/"high") or ``hematotox_labs``
    (platelets, ANC, haemoglobin, CRP, ferritin before lymphodepletion);
    ``donor_chimerism`` (baseline donor fraction 0-1 after an earlier allogeneic
    transplant; default 1.0 for a prior-donor graft); ``events``,
    ``observations`` (earlier values to condition on); ``n_draws`` particles;
    ``population`` (a population CSV path or frame; default: the package's own);
    ``prior`` (a :class:`~carthema.models.posterior.Posterior`: a fitted patient's
    posterior or draws of :meth:`~carthema.clinical.population.posterior.VirtualPopulation.
    sample`, conditioned on instead of the population's rows: the KDE over its draws,
    :func:`~carthema.clinical.boost.prior.posterior_prior`, its own parameters for the
    rest and its events as the course unless ``events`` is given; the population still
    gives the graft parameters' distribution; ``hematotox`` cannot restrict it).

    Returns a JSON-ready dict: "neutrophil", "platelet", "anc_gt_1" (each with
    ``median_days``, ``q05``, ``q95``, ``p_within_14d``, ``p_within_30d``, ``p_never``,
    ``p_already``, ``n_draws``; the one definition of
    :mod:`carthema.clinical.endpoints`; ``withheld`` and ``n_effective_not_engrafted``:
    :func:`~carthema.clinical.boost.summary.withhold_sparse`), ``no_boost`` (the same
    for the same draws without the boost), ``p_never``, ``neutropenia_days_saved`` and
    ``thrombocytopenia_days_saved``, ``effective_sample_size``, ``inputs`` (as
    understood), ``own_counts_at_boost`` (the conditioned draws' counts without any
    support), the sampler's diagnostics and wall time; with ``return_draws`` also
    ``draw_engraftment`` (per-draw :class:`~carthema.clinical.endpoints.Engraftment`,
    not JSON) and ``draw_days_saved``. On G-CSF, ``gcsf_tail``
    (:func:`~carthema.clinical.boost.summary.gcsf_tail`). Raises :class:`InputError` for
    bad input, impossible counts or fewer than 1,000 effective draws.
    """
    t0 = time.perf_counter()
    inp = read_inputs(
        graft, anc=anc, anc_lloq=anc_lloq, platelets=platelets, gcsf=gcsf,
        gcsf_after=gcsf_after, gcsf_dependent=gcsf_dependent, gcsf_since=gcsf_since,
        plt_transfused=plt_transfused, tpo=tpo, neutropenia_days=neutropenia_days,
        product=product, disease=disease, hematotox=hematotox, hematotox_labs=hematotox_labs,
        donor_chimerism=donor_chimerism, n_draws=n_draws, min_ess=MIN_ESS,
        default_draws=N_PARTICLES, horizon_days=horizon_days,
    )  # fmt: skip
    model = get_model("full")
    rng = np.random.default_rng(seed)
    if isinstance(population, pd.DataFrame):
        pop = population
    else:  # the disease's own calibrated population (data/populations/<disease>_population.csv)
        pop = load_population(population, disease=inp.disease)[0]
    if prior is None:
        kde = population_prior(model, pop, product=inp.product, hematotox=inp.hematotox,
                               disease=inp.disease, labs=inp.labs is not None)  # fmt: skip
        base = base_params(model, kde, inp.product, inp.donor_chimerism)
    else:
        kde, base = _posterior_prior(model, prior, inp)
        if events is None:
            events = prior.events
    courses = boost_courses(inp, events)
    terms = likelihood_terms(model, inp, courses, base, kde.names, observations)
    cond = Conditioner(model, kde, base, courses.conditioned, inp.day, terms.terms,
                       terms.days, own_events=courses.off_gcsf)  # fmt: skip
    if prior is not None:
        cond.source = f"the given posterior (patient {prior.patient or 'not named'})"
    res = condition(cond, kde, int(n_draws), rng)
    t_cond = time.perf_counter() - t0
    own = own_counts(model, cond, res["X"], courses, res.get("evaluation"))
    outcome = boost_outcome(model, cond, res["X"], inp, courses, pop, rng)
    return summarise(
        model,
        inp,
        courses,
        terms,
        kde.description,
        pop,
        res,
        cond.n_sims,
        own,
        outcome,
        n_draws=int(n_draws),
        wall={"conditioning": t_cond, "total": time.perf_counter() - t0},
        return_draws=return_draws,
    )


__all__ = [
    "ANC_LLOQ",
    "DEFAULT_PRODUCT_COURSE",
    "GCSF_FALL_DAYS",
    "GRAFT_PARAMS",
    "LAB_COLUMNS",
    "LAB_SD",
    "MIN_ESS",
    "MIN_EXACT",
    "NEUTROPENIA_SD",
    "N_PARTICLES",
    "SUPPORT_DAYS",
    "BoostPrediction",
    "PopulationPrior",
    "base_params",
    "neutropenia_sd",
    "population_prior",
    "predict_boost",
    "prior_draws",
    "smc",
]
