"""Predicting a stem-cell boost from the patient's state on the boost day.

A patient referred for a boost usually comes with a handful of facts, not a time series:
the counts on the boost day (often ANC 0, platelets propped up by transfusions, ANC by
G-CSF), how long the neutropenia has lasted, the CAR-T product, the disease and the
CAR-HEMATOTOX score before lymphodepletion. :func:`predict_boost` turns them into a
predictive distribution of engraftment after the boost.

Prior
-----
The calibrated virtual population (:func:`carthema.clinical.population.virtual.load_population`),
restricted to the patient's CAR-HEMATOTOX score (the exact score when at least
:data:`MIN_EXACT` distinct virtual patients have it, else the low (0-1) / high (>= 2)
group; the output says which). Every product shares the population's trait
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
(the population column, TRAITS spread, or ASSUMPTION: log-normal SD 0.3 around the
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
Sequential Monte Carlo with adaptive tempering: the likelihood is raised to a
temperature that climbs from 0 to 1, each next temperature chosen by bisection so that
the effective sample size of the incremental weights stays at or above half the
particles; systematic resampling after every stage; then random-walk Metropolis moves in
log-parameter space with the particles' covariance (scale 2.38 / sqrt(d), adapted to the
acceptance rate), repeated until at least :data:`MOVED` of the particles have moved (at
least :data:`MIN_MOVES`, at most :data:`MAX_MOVES` moves). Simulations use the numba
population solver. The reported ``effective_sample_size`` is the smaller of the last
stage's importance ESS and the number of distinct particles after its moves; below
:data:`MIN_ESS` (1,000) the prediction is refused, as it is when the counts are
impossible under the population (the conditioned draws still cannot reproduce them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from scipy.stats import norm

from carthema.clinical.endpoints import (
    ANC_ENGRAFT,
    PLT_ENGRAFT,
    WITHIN,
    lineage_engraftment,
    support_from_events,
)
from carthema.clinical.plans import (
    Plan,
    _plan_summary,
    astuple_course,
    counterfactual,
    require_cd3,
    simulate_course,
)
from carthema.clinical.population.graft import (
    GRAFT_FAILURE_SOURCE,
    GRAFT_PARAMS,
    draw_graft,
    graft_sources,
    p_graft_failure,
)
from carthema.clinical.population.natural_history import check_disease
from carthema.clinical.population.virtual import (
    PRODUCT_LD,
    load_population,
    product_events,
    product_factors,
)
from carthema.data.errors import InputError
from carthema.fitting.priors import RESIDUALS
from carthema.models.compiled import numba_model
from carthema.models.components.haematopoiesis import CD3_FRACTION_OF_MNC, graft_source
from carthema.models.events import build_events
from carthema.models.hematotox import hematotox as hematotox_score
from carthema.models.model import Model, get_model
from carthema.models.scenarios import EVENT_COLUMNS
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import CONDITION

#: Fewest effective draws a prediction may rest on; below it the prediction is refused.
MIN_ESS = 1000.0
#: Default number of particles.
N_PARTICLES = 2400
#: Fewest distinct virtual patients with the exact CAR-HEMATOTOX score for the prior to
#: use that score; else the low / high group.
MIN_EXACT = 60
#: Days of G-CSF (and of a TPO agonist) before the boost put into the simulated course.
SUPPORT_DAYS = 14.0
#: Days after G-CSF stops over which a G-CSF-dependent patient's ANC falls below 0.5 G/L
#: (the G-CSF-driven surplus drains with the post-mitotic marrow transit, about 6.4 days:
#: Dancey et al. 1976, J Clin Invest 58:705; a week is taken).
GCSF_FALL_DAYS = 7.0
#: ANC quantification limit assumed for ``anc=0`` when none is given (G/L).
ANC_LLOQ = 0.05
#: Log-scale SD of a pre-lymphodepletion laboratory value against the model's set point
#: (assumption: a single measurement, CV about 15 %).
LAB_SD = 0.15
#: SD of the reported number of neutropenic days: 2 days + 10 % of the true number.
NEUTROPENIA_SD = (2.0, 0.10)


def neutropenia_sd(n_true):
    """SD (days) of a reported count of neutropenic days whose true value is ``n_true``
    (assumption: recall and record gaps, 2 days + 10 %)."""
    return NEUTROPENIA_SD[0] + NEUTROPENIA_SD[1] * np.asarray(n_true, dtype=float)


#: Product course used when none is given: the commoner product of the LBCL calibration
#: cohort (Rejeski et al. 2021: axi-cel 159, tisa-cel 76).
DEFAULT_PRODUCT_COURSE = "axi-cel"
#: SMC settings. At most 3 random-walk moves per tempering stage (was 5): the moves are
#: most of the cost (2,400 solves each), and with 3 the particles stay diverse (measured:
#: 5 moves left about 2,200 distinct of 2,400, 2 moves about 1,470, both giving the same
#: intervals within a day); the 1,000-draw floor is checked on every prediction.
ESS_FRACTION = 0.5
MIN_MOVES, MAX_MOVES, MOVED = 2, 3, 0.75
#: Solver options of the conditioning simulations: the CONDITION preset (rtol 1e-4, looser
#: than the prediction's 1e-7; its accuracy is stated where it is defined). A module
#: attribute so that benchmarks/boost_calibration.py can time the earlier settings.
OPTIONS = CONDITION
#: A conditioned count is "reproduced" by a particle when it lies within this many
#: residual SDs; fewer than MIN_FIT of the conditioned particles reproducing it means the
#: counts are impossible under the population.
FIT_Z, MIN_FIT = 3.0, 0.05
#: Fewest initial particles (drawn from the population prior) that must reproduce all
#: conditioned values together for the conditioning to start; fewer: refused at once,
#: naming the value (issue 18 reports a boost on day 200 refused only after 209 s of
#: conditioning, with 807 effective draws). Measured here, axi-cel, CAR-HEMATOTOX 3, ANC
#: 0 after 30 neutropenic days, 2,400 particles: 97 on day 45 and 5 on day 60 (both
#: conditioned to >= 1,000 effective draws), 0 on day 75 (refused after 77 s by the
#: final check before this one).
MIN_START = 1
LAB_COLUMNS = ("hemoglobin", "crp", "ferritin")


# --------------------------------------------------------------------------------------
# the prior: calibrated population rows for the product and the CAR-HEMATOTOX score


@dataclass
class PopulationPrior:
    """Gaussian KDE over population rows in log space, truncated to plausible ranges."""

    names: list[str]  # particle dimensions (parameters, then laboratory columns)
    rows: np.ndarray  # (m, d) kernel centres: distinct rows shrunk toward their mean, log
    logw: np.ndarray  # (m,) log weights of the distinct rows (duplicates)
    chol: np.ndarray  # kernel covariance Cholesky factor
    low: np.ndarray
    high: np.ndarray
    description: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return len(self.names)

    def _whiten(self, X: np.ndarray) -> np.ndarray:
        from scipy.linalg import solve_triangular

        return solve_triangular(self.chol, X.T, lower=True).T

    def logpdf(self, X: np.ndarray) -> np.ndarray:
        """Log density up to a constant (the kernels' normalisation is common)."""
        if not hasattr(self, "_V"):  # whitened centres, computed once
            self._V = self._whiten(self.rows)
            self._V2 = (self._V**2).sum(1)
        U, V = self._whiten(X), self._V
        d2 = (U**2).sum(1)[:, None] + self._V2[None, :] - 2.0 * U @ V.T
        lp = logsumexp(-0.5 * np.maximum(d2, 0.0) + self.logw[None, :], axis=1)
        inside = np.all((X >= self.low) & (X <= self.high), axis=1)
        return np.where(inside, lp, -np.inf)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, self.d))
        todo = np.arange(n)
        w = np.exp(self.logw - logsumexp(self.logw))
        for _ in range(100):
            j = rng.choice(self.rows.shape[0], todo.size, p=w)
            x = self.rows[j] + rng.standard_normal((todo.size, self.d)) @ self.chol.T
            ok = np.all((x >= self.low) & (x <= self.high), axis=1)
            out[todo[ok]] = x[ok]
            todo = todo[~ok]
            if todo.size == 0:
                return out
        out[todo] = np.clip(out[todo], self.low, self.high)
        return out


def population_prior(
    model: Model,
    pop: pd.DataFrame,
    *,
    product: str | None,
    hematotox: int | None,
    disease: str,
    labs: bool,
) -> PopulationPrior:
    """The KDE prior of the rows of ``pop`` for ``product`` and CAR-HEMATOTOX ``hematotox``
    (see the module docstring for the rules)."""
    desc: dict = {"population_rows": int(len(pop))}
    rows = pop
    # One trait distribution shared by every product (the population has no product
    # column); the product acts through its own kinetics (a shift below) and course.
    desc["product_rows"] = "all (one trait distribution shared by every product)" + (
        "" if product is None else f"; {product}'s own CAR-T/CRS kinetics and course"
    )
    # Every parameter column but the graft's (redrawn per particle after the conditioning,
    # see the module docstring).
    pcols = [c for c in rows.columns if c in model.param_names and c not in GRAFT_PARAMS]
    if hematotox is not None and "hematotox" in rows:
        exact = rows[rows["hematotox"] == hematotox]
        n_exact = len(exact[pcols].drop_duplicates())
        if n_exact >= MIN_EXACT:
            rows = exact
            desc["hematotox_rows"] = f"exact score {hematotox} ({n_exact} distinct patients)"
        else:
            high = hematotox >= 2
            rows = rows[(rows["hematotox"] >= 2) == high]
            group = "high (>= 2)" if high else "low (0-1)"
            desc["hematotox_rows"] = (
                f"CAR-HEMATOTOX group {group}: only {n_exact} distinct virtual patients have "
                f"score {hematotox} (fewer than {MIN_EXACT})"
            )
    else:
        desc["hematotox_rows"] = "all scores (no CAR-HEMATOTOX given)"
    cols = pcols + ([c for c in LAB_COLUMNS if c in rows] if labs else [])
    X = np.log(rows[cols].to_numpy(float))
    # The refusal of uncalibrated diseases lives in one place (natural_history).
    check_disease(disease)
    if product is not None:
        # The product's kinetics multiply the reference values the population holds
        # (the natural-history simulation's own rule, virtual.product_factors).
        for name, factor in product_factors(model, product).items():
            if name in cols:
                X[:, cols.index(name)] += np.log(factor)
    keep = np.std(X, axis=0) > 1e-9
    names = [c for c, k in zip(cols, keep, strict=True) if k]
    X = X[:, keep]
    uniq, counts = np.unique(X, axis=0, return_counts=True)
    m, d = uniq.shape
    if m < d + 2:
        raise InputError(
            f"only {m} distinct virtual patients match the prior restriction "
            f"({desc['hematotox_rows']})",
            column="hematotox",
            fix="give a CAR-HEMATOTOX group with more patients, or omit --hematotox",
        )
    w = counts / counts.sum()
    mean = w @ uniq
    cov = (uniq - mean).T @ ((uniq - mean) * w[:, None]) / (1.0 - np.sum(w**2))
    n_eff = 1.0 / np.sum(w**2)
    h = (4.0 / (d + 2.0)) ** (1.0 / (d + 4.0)) * n_eff ** (-1.0 / (d + 4.0))
    kern = h**2 * cov + 1e-8 * np.eye(d)
    # Shrunk kernel centres: the mixture keeps the rows' mean and covariance
    # (a^2 cov + h^2 cov = cov) instead of inflating it by 1 + h^2.
    a = np.sqrt(max(1.0 - h**2, 0.0))
    centres = mean + a * (uniq - mean)
    low, high = np.full(d, -np.inf), np.full(d, np.inf)
    for k, name in enumerate(names):
        if name in model.param_names:
            q = model.params[model.index("param", name)]
            low[k], high[k] = np.log(q.low), np.log(q.high)
    low = np.minimum(low, uniq.min(0))
    high = np.maximum(high, uniq.max(0))
    desc.update(
        rows_used=int(len(rows)),
        distinct_patients=int(m),
        dimensions=names,
        density=(
            "Gaussian kernel density over the rows in log space (Silverman bandwidth "
            f"factor {h:.2f}; centres shrunk by {a:.2f} toward the mean, so that it has the "
            "rows' mean and covariance), truncated to the plausible ranges"
        ),
    )
    return PopulationPrior(
        names=names,
        rows=centres,
        logw=np.log(w),
        chol=np.linalg.cholesky(kern),
        low=low,
        high=high,
        description=desc,
    )


def prior_draws(
    model: Model,
    n: int,
    rng: np.random.Generator,
    *,
    product: str | None = None,
    population: str | pd.DataFrame | None = None,
) -> np.ndarray:
    """``n`` parameter vectors (natural scale) of virtual patients of the calibrated
    population (of ``product`` when given), resampled, each with graft and rejection
    parameters of its own (:func:`carthema.clinical.population.graft.draw_graft`). Unconditioned:
    :func:`predict_boost` conditions on the patient's state."""
    from carthema.clinical.population.virtual import population_params, product_params

    pop = population if isinstance(population, pd.DataFrame) else load_population(population)[0]
    rows = pop.iloc[rng.integers(0, len(pop), n)]
    P = population_params(model, rows)
    if product is not None:
        P = product_params(model, P, product)
    return draw_graft(model, P, rng, population=pop)


# --------------------------------------------------------------------------------------
# likelihood


@dataclass
class _Term:
    kind: str  # "obs", "below", "off_gcsf" (the fall once G-CSF stops), "days", "lab"
    label: str
    day_index: int = -1
    obs: int = -1  # observable column, or particle dimension for "lab"
    value: float = np.nan  # log value / log limit / days
    sd: float = 1.0
    floor: float = 0.0


class _Conditioner:
    """Log-likelihood of particles (log-scale dimensions of a :class:`PopulationPrior`)."""

    def __init__(self, model, prior, base, events, day, terms, days, own_events=None):
        self.model, self.prior, self.base = model, prior, base
        self.idx = [model.index("param", n) if n in model.param_names else -1 for n in prior.names]
        self.ev = build_events(model, events, base)
        # The course with G-CSF stopped on the boost day, followed GCSF_FALL_DAYS more days
        # without a boost, for the "off_gcsf" term (--gcsf-dependent).
        self.ev_off = None if own_events is None else build_events(model, own_events, base)
        self.days_off = np.arange(days[0], days[-1] + GCSF_FALL_DAYS + 0.5, 1.0)
        self.days = days
        self.terms = terms
        self.mod = numba_model(model)
        self.n_sims = 0
        self.anc_col = model.index("obs", "anc")
        self.day = day

    def params(self, X: np.ndarray) -> np.ndarray:
        P = np.tile(self.base, (X.shape[0], 1))
        for k, j in enumerate(self.idx):
            if j >= 0:
                P[:, j] = np.exp(X[:, k])
        return P

    def simulate(self, X: np.ndarray, events=None, days=None):
        ev = self.ev if events is None else events
        days = self.days if days is None else days
        P = np.ascontiguousarray(self.params(X))
        self.n_sims += X.shape[0]
        sched = Schedule.from_events(self.model, ev, days, t0=float(days[0]))
        status, obs = solve_batch(self.model, P, sched, OPTIONS).astuple()
        return status, obs

    def term_values(self, X: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list]:
        """(status, per-term standardised values, per-term SDs) — z for "obs"/"days"/"lab",
        the censoring z ((log limit - mu) / sd) for "below". The SD of a "days" term is
        the particle's own (:func:`neutropenia_sd` of its simulated count)."""
        need_sim = any(t.kind in ("obs", "below", "days") for t in self.terms)
        if need_sim:
            status, obs = self.simulate(X)
        else:
            status, obs = np.zeros(X.shape[0], dtype=int), None
        if any(t.kind == "off_gcsf" for t in self.terms):
            st_off, obs_off = self.simulate(X, self.ev_off, self.days_off)
            status = np.where(status == 0, st_off, status)
        out, sds = [], []
        for t in self.terms:
            sd = t.sd
            if t.kind in ("obs", "below"):
                mu = np.log(np.maximum(obs[:, t.day_index, t.obs], 0.0) + t.floor)
                out.append((t.value - mu) / t.sd)
            elif t.kind == "off_gcsf":  # the lowest count in the days after G-CSF stops
                low = obs_off[:, t.day_index + 1 :, t.obs].min(axis=1)
                mu = np.log(np.maximum(low, 0.0) + t.floor)
                out.append((t.value - mu) / t.sd)
            elif t.kind == "days":
                anc = obs[:, : t.day_index, self.anc_col]
                n = (anc < ANC_ENGRAFT).sum(axis=1)
                sd = neutropenia_sd(n)
                out.append((t.value - n) / sd)
            else:  # lab: a particle dimension
                out.append((X[:, t.obs] - t.value) / t.sd)
            sds.append(sd)
        return status, out, sds

    def loglik(self, X: np.ndarray) -> np.ndarray:
        if X.shape[0] == 0:
            return np.zeros(0)
        return self.loglik_of(X.shape[0], *self.term_values(X))

    def loglik_of(self, n: int, status, zs, sds) -> np.ndarray:
        """Log-likelihood from :meth:`term_values`' output (one simulation for both)."""
        ll = np.zeros(n)
        for t, z, sd in zip(self.terms, zs, sds, strict=True):
            if t.kind in ("below", "off_gcsf"):
                ll += norm.logcdf(z)
            else:
                ll += -0.5 * z**2 - np.log(sd)
        ok = (status == 0) & np.isfinite(ll)
        return np.where(ok, ll, -np.inf)


# --------------------------------------------------------------------------------------
# sequential Monte Carlo


def _systematic_resample(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = w.size
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(w), positions), n - 1)


def _ess(logw: np.ndarray) -> float:
    if not np.isfinite(logw).any():
        return 0.0
    w = np.exp(logw - logw.max())
    return float(w.sum() ** 2 / np.sum(w**2))


def _fits(cond: _Conditioner, X: np.ndarray, values=None) -> np.ndarray:
    """(terms, particles): whether each particle reproduces each likelihood term (within
    :data:`FIT_Z` residual SDs; a censored term: not above the limit by more).
    ``values``: :meth:`_Conditioner.term_values` of ``X`` when already computed."""
    status, zs, _ = cond.term_values(X) if values is None else values
    ok = status == 0
    rows = [
        ((z >= -FIT_Z) if t.kind in ("below", "off_gcsf") else (np.abs(z) <= FIT_Z)) & ok
        for t, z in zip(cond.terms, zs, strict=True)
    ]
    return np.array(rows, dtype=bool).reshape(len(cond.terms), X.shape[0])


def _reproduced(cond: _Conditioner, X: np.ndarray, values=None) -> list[tuple[str, int]]:
    """Per likelihood term: how many of the particles ``X`` reproduce it (:func:`_fits`)."""
    F = _fits(cond, X, values)
    return [(t.label, int(f.sum())) for t, f in zip(cond.terms, F, strict=True)]


def _start_check(cond: _Conditioner, X: np.ndarray, values) -> None:
    """Refuse at once when fewer than :data:`MIN_START` initial particles reproduce every
    conditioned value together, naming the value: one no particle reproduces, else the
    one whose removal lets the most particles reproduce the rest."""
    F = _fits(cond, X, values)
    if not F.size or F.all(axis=0).sum() >= MIN_START:
        return
    alone = F.sum(axis=1)
    n = X.shape[0]
    if alone.min() < MIN_START:
        k = int(alone.argmin())
        what = f"{cond.terms[k].label} is reproduced by {alone[k]} of {n} virtual patients"
    else:
        rest = [int(np.delete(F, k, axis=0).all(axis=0).sum()) for k in range(F.shape[0])]
        k = int(np.argmax(rest))
        what = (
            f"{cond.terms[k].label} is reproduced together with the other values by none of "
            f"{n} virtual patients (without it: {rest[k]})"
        )
    raise InputError(
        f"the given state is impossible under the calibrated population: {what} drawn from it",
        fix="check the value and its unit (G/L, days); if it is right, the population has no "
        "patients like this one (e.g. a late boost in a population without late aplasia) and "
        "no prediction can rest on it",
    )


def _refuse_early(cond: _Conditioner, X: np.ndarray, why: str) -> None:
    """Refuse naming the input that the fewest particles reproduce."""
    counts = _reproduced(cond, X)
    label, k = min(counts, key=lambda c: c[1]) if counts else ("the given state", 0)
    raise InputError(
        f"the given state is incompatible with the calibrated population: {why}; the "
        f"input fewest virtual patients reproduce is '{label}' ({k} of {X.shape[0]})",
        fix="check that value (and its unit); if it is right, the population has no patients "
        "like this one (e.g. a late boost in a population without late aplasia) and no "
        f"prediction resting on {MIN_ESS:.0f} effective draws can be made",
    )


def smc(cond: _Conditioner, prior: PopulationPrior, n: int, rng: np.random.Generator) -> dict:
    """Tempered SMC from the KDE prior to prior x likelihood. Returns the particles and
    diagnostics.

    Refuses early (:class:`InputError` naming the input the fewest particles reproduce)
    when the conditioning cannot end with :data:`MIN_ESS` effective draws: when fewer than
    :data:`MIN_START` of the initial particles reproduce all conditioned values together
    (the population has no patients in that state), and when a stage's moves leave fewer than
    :data:`MIN_ESS` distinct particles (later stages only narrow the target, so the count
    does not recover; the final ESS is at most the distinct count)."""
    X = prior.sample(n, rng)
    # The early checks need the terms of a _Conditioner; any object with loglik samples.
    checked = isinstance(cond, _Conditioner)
    values = cond.term_values(X) if checked else None
    ll = cond.loglik_of(n, *values) if checked else cond.loglik(X)
    if not np.isfinite(ll).any():
        raise InputError(
            "no virtual patient of the population reproduces the given state (every "
            "simulation failed or every count has zero likelihood)",
            fix="check the counts and their units (G/L) and the boost day",
        )
    if checked:
        _start_check(cond, X, values)
    lp = prior.logpdf(X)
    beta, stages, log_evidence = 0.0, [], 0.0
    scale = 2.38 / np.sqrt(prior.d)
    last_ess, moved_frac = float(n), 1.0
    while beta < 1.0:
        safe = np.where(np.isfinite(ll), ll, -np.inf)

        def ess_at(b, beta=beta, safe=safe):
            return _ess(np.where(np.isfinite(safe), (b - beta) * safe, -np.inf))

        if ess_at(1.0) >= ESS_FRACTION * n:
            nb = 1.0
        else:
            lo, hi = beta, 1.0
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if ess_at(mid) >= ESS_FRACTION * n:
                    lo = mid
                else:
                    hi = mid
            nb = max(lo, beta + 1e-12)
        inc = np.where(np.isfinite(safe), (nb - beta) * safe, -np.inf)
        log_evidence += float(logsumexp(inc) - np.log(n))
        w = np.exp(inc - inc.max())
        w /= w.sum()
        last_ess = float(1.0 / np.sum(w**2))
        beta = nb
        idx = _systematic_resample(w, rng)
        X, ll, lp = X[idx], ll[idx], lp[idx]
        cov = np.cov(X.T) + 1e-10 * np.eye(prior.d)
        L = np.linalg.cholesky(cov)
        moved = np.zeros(n, dtype=bool)
        acc_rates = []
        for k in range(MAX_MOVES):
            Xp = X + scale * rng.standard_normal(X.shape) @ L.T
            lpp = prior.logpdf(Xp)
            llp = np.full(n, -np.inf)
            fin = np.isfinite(lpp)
            llp[fin] = cond.loglik(Xp[fin])
            with np.errstate(invalid="ignore"):
                log_a = (lpp + beta * llp) - (lp + beta * ll)
            acc = np.log(rng.random(n)) < np.nan_to_num(log_a, nan=-np.inf)
            X[acc], ll[acc], lp[acc] = Xp[acc], llp[acc], lpp[acc]
            moved |= acc
            rate = float(acc.mean())
            acc_rates.append(rate)
            scale *= float(np.exp(rate - 0.234))
            if k + 1 >= MIN_MOVES and moved.mean() >= MOVED:
                break
        moved_frac = float(moved.mean())
        distinct_now = int(np.unique(X, axis=0).shape[0])
        if checked and distinct_now < MIN_ESS:
            _refuse_early(
                cond, X, f"after tempering stage {len(stages) + 1} (temperature {beta:.3g}) "
                f"only {distinct_now} distinct particles remain (fewer than {MIN_ESS:.0f})"
            )  # fmt: skip
        stages.append(
            {
                "temperature": beta,
                "ess": last_ess,
                "moves": len(acc_rates),
                "acceptance": float(np.mean(acc_rates)),
                "moved": moved_frac,
            }
        )
        if len(stages) > 200:
            raise InputError(
                "the conditioning did not converge (more than 200 tempering stages)",
                fix="check the counts; they may be incompatible with each other",
            )
    distinct = int(np.unique(X, axis=0).shape[0])
    return {
        "X": X,
        "loglik": ll,
        "effective_sample_size": float(min(last_ess, distinct)),
        "final_stage_ess": last_ess,
        "distinct_particles": distinct,
        "stages": stages,
        "log_evidence": log_evidence,
    }


# --------------------------------------------------------------------------------------
# the prediction


def _row(day, kind, amount, unit, duration=None, **extra) -> dict:
    r = {c: None for c in EVENT_COLUMNS}
    r.update(patient="patient", day=float(day), kind=kind, amount=amount, unit=unit,
             duration=duration, **extra)  # fmt: skip
    return r


def _add(events: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return events
    cols = list(events.columns) if len(events.columns) else EVENT_COLUMNS
    for c in EVENT_COLUMNS:
        if c not in cols:
            cols.append(c)
    recs = events.to_dict("records") + rows
    out = pd.DataFrame.from_records([{c: r.get(c) for c in cols} for r in recs], columns=cols)
    return out.sort_values("day", kind="stable").reset_index(drop=True)


def _check_number(name, value, *, low=0.0, allow_zero=True, fix=""):
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", column=name, fix=fix) from None
    if not np.isfinite(v) or v < low or (v == low and not allow_zero):
        raise InputError(f"{name} = {value!r} is not allowed", column=name, fix=fix)
    return v


def _resolve_hematotox(hematotox, hematotox_labs) -> tuple[int | None, dict]:
    info: dict = {"score": None, "group": None, "from": None}
    labs = None
    if hematotox_labs is not None:
        vals = list(hematotox_labs)
        if len(vals) != 5:
            raise InputError(
                "CAR-HEMATOTOX needs five values before lymphodepletion: platelets, ANC, "
                "haemoglobin, CRP, ferritin",
                column="hematotox-labs",
                fix="e.g. --hematotox-labs 110,0.95,10.1,4.2,540 (G/L, G/L, g/dL, mg/dL, ng/mL)",
            )
        s = hematotox_score(*vals)
        labs = dict(zip(("platelets", "anc", "hemoglobin", "crp", "ferritin"), vals, strict=True))
        if hematotox is not None and int(hematotox) != s.total:
            raise InputError(
                f"--hematotox {hematotox} disagrees with the score of the given values ({s.total})",
                column="hematotox",
                fix="give either the score or the five values",
            )
        info.update(score=s.total, group=s.group, labs=labs, **{"from": "laboratory values"})
        return s.total, info
    if hematotox is not None:
        h = _check_number("hematotox", hematotox, fix="a score from 0 to 7")
        if h != int(h) or not 0 <= h <= 7:
            raise InputError(
                f"CAR-HEMATOTOX score must be an integer 0-7, got {hematotox}",
                column="hematotox",
                fix="give the score (0-7) or the five values with --hematotox-labs",
            )
        info.update(score=int(h), group="high" if h >= 2 else "low", **{"from": "given score"})
        return int(h), info
    return None, info


def _quantiles(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"median": None, "q05": None, "q95": None}
    q05, med, q95 = np.quantile(x, [0.05, 0.5, 0.95])
    return {"median": float(med), "q05": float(q05), "q95": float(q95)}


def predict_boost(
    day: float,
    dose: float,
    source: str = "allogeneic",
    *,
    selected: bool = False,
    cd3: float | None = None,
    mnc: float | None = None,
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
    hematotox: int | None = None,
    hematotox_labs=None,
    donor_chimerism: float | None = None,
    events: pd.DataFrame | None = None,
    observations: pd.DataFrame | None = None,
    n_draws: int = N_PARTICLES,
    seed: int = 0,
    horizon_days: float = 120.0,
    population: str | pd.DataFrame | None = None,
    return_draws: bool = False,
) -> dict:
    """Predicted engraftment after a boost on ``day`` (days since CAR-T) of ``dose``
    CD34+ cells/kg, from the patient's state on the boost day.

    Parameters mirror ``carthema predict-boost``: ``source`` autologous / prior-donor /
    allogeneic (a new donor); ``selected`` CD34-selected graft; ``cd3`` CD3+ cells/kg
    (required for an unselected new-donor graft; or ``mnc``, mononuclear cells/kg, of
    which the model takes a quarter as CD3+); ``anc`` (0 = below ``anc_lloq``) and
    ``platelets`` on the boost day (G/L); ``gcsf`` (ANC supported; G-CSF given through
    the boost day and continued ``gcsf_after`` days after it), ``gcsf_since`` (the day
    G-CSF started, implies ``gcsf``; default: the 14 days before the boost, recorded as
    assumed in the result); ``gcsf_dependent`` (the ANC falls below 0.5 G/L whenever
    G-CSF stops: the patient's own ANC off G-CSF on the boost day is conditioned below
    0.5 G/L; implies ``gcsf``); ``plt_transfused`` (the
    platelet count is not the patient's own); ``tpo`` (on a TPO-receptor agonist);
    ``neutropenia_days`` (days with ANC < 0.5 before the boost); ``product``, ``disease``,
    ``hematotox`` (0-7) or ``hematotox_labs`` (platelets, ANC, haemoglobin, CRP, ferritin before
    lymphodepletion); ``donor_chimerism`` (baseline donor fraction 0-1 after an earlier
    allogeneic transplant; default 1.0 for a prior-donor graft); ``events``,
    ``observations`` (earlier values to condition on); ``n_draws`` particles;
    ``population`` (a population CSV path or frame; default: the package's own).

    Returns a JSON-ready dict: "neutrophil", "platelet", "anc_gt_1" (each with
    ``median_days``, ``q05``, ``q95``, ``p_within_14d``, ``p_within_30d``, ``p_never``,
    ``p_already``, ``n_draws``; the one definition of
    :mod:`carthema.clinical.endpoints`), ``effective_sample_size``, ``inputs`` (as
    understood), ``own_counts_at_boost`` (the conditioned draws' counts without any
    support), the sampler's diagnostics and wall time; with ``return_draws`` also
    ``draw_engraftment`` (per-draw :class:`~carthema.clinical.endpoints.Engraftment`,
    not JSON). Raises :class:`InputError` for
    bad input, impossible counts or fewer than 1,000 effective draws.
    """
    t0 = time.perf_counter()
    # ---- inputs
    source = graft_source(source)
    dose = _check_number("dose", dose, allow_zero=False, fix="CD34+ cells/kg, e.g. --dose 3.1e6")
    if dose is None:
        raise InputError("the CD34+ dose is required", column="dose", fix="e.g. --dose 3.1e6")
    day = _check_number("day", day, allow_zero=False, fix="the boost day after CAR-T, e.g. 45")
    cd3 = _check_number("cd3", cd3, fix="CD3+ cells/kg, e.g. --cd3 1e7")
    mnc = _check_number("mnc", mnc, fix="mononuclear cells/kg, e.g. --mnc 1.8e8")
    cd3_note = None
    if cd3 is None and mnc is not None and source == "allogeneic" and not selected:
        cd3 = CD3_FRACTION_OF_MNC * mnc
        cd3_note = (
            f"CD3+ dose estimated as {CD3_FRACTION_OF_MNC:g} x {mnc:.3g} MNC/kg = {cd3:.3g}/kg "
            "(the model's assumption for a graft given by its MNC dose)"
        )
    require_cd3(source, bool(selected), cd3, mnc=True)
    fix_counts = "counts in G/L, e.g. --anc 0.3 --plt 15 (--anc 0: below the lab's limit)"
    anc = _check_number("anc", anc, fix=fix_counts)
    platelets = _check_number("plt", platelets, allow_zero=False, fix=fix_counts)
    anc_lloq = _check_number("anc-lloq", anc_lloq, allow_zero=False, fix="e.g. 0.05 G/L")
    gcsf_after = _check_number("gcsf-after", gcsf_after, fix="days of G-CSF after the boost")
    gcsf_note = None
    if gcsf_dependent and not gcsf:
        gcsf = True
        gcsf_note = "--gcsf-dependent: the patient is on G-CSF on the boost day"
    if gcsf_since is not None:  # G-CSF from that day (days since CAR-T) through the boost
        gcsf = True
        if not (np.isfinite(gcsf_since) and gcsf_since <= day):
            raise InputError(f"G-CSF since day {gcsf_since:g} is not on or before the boost "
                             f"day {day:g}", column="gcsf-since",
                             fix="give the day G-CSF started, e.g. --gcsf-since 19")  # fmt: skip
    # Without a start day, the stated assumption: G-CSF over the SUPPORT_DAYS before the boost.
    gcsf_start = float(gcsf_since) if gcsf_since is not None else day - SUPPORT_DAYS
    if gcsf_after and not gcsf:
        raise InputError("--gcsf-after needs G-CSF", column="gcsf-after", fix="add --gcsf-since")
    neutropenia_days = _check_number(
        "neutropenia-days", neutropenia_days, fix="days with ANC < 0.5 G/L before the boost"
    )
    if neutropenia_days is not None and neutropenia_days > day + 7:
        raise InputError(
            f"{neutropenia_days:g} neutropenic days before a boost on day {day:g} is more "
            "days than the course has",
            column="neutropenia-days",
            fix="count the days with ANC < 0.5 G/L between lymphodepletion and the boost",
        )
    disease = check_disease(disease)
    if product is not None:
        product = str(product).strip().lower()
        if product not in PRODUCT_LD:
            raise InputError(f"unknown product '{product}'", column="product",
                             fix=f"choose one of {', '.join(sorted(PRODUCT_LD))}")  # fmt: skip
    if not isinstance(n_draws, int | np.integer) or n_draws < 2 * MIN_ESS:
        raise InputError(
            f"{n_draws} particles cannot give {MIN_ESS:.0f} effective draws",
            column="draws",
            fix=f"use at least {2 * MIN_ESS:.0f} (default {N_PARTICLES})",
        )
    ht, ht_info = _resolve_hematotox(hematotox, hematotox_labs)
    chim = _check_number("donor-chimerism", donor_chimerism, fix="a fraction 0-1, e.g. 0.95")
    if chim is not None and chim > 1.0:
        raise InputError(f"donor chimerism {chim:g} is not a fraction", column="donor-chimerism",
                         fix="give a fraction 0-1 (95 % = 0.95)")  # fmt: skip
    if chim is None and source == "prior-donor":
        chim = 1.0

    model = get_model("full")
    rng = np.random.default_rng(seed)
    pop = population if isinstance(population, pd.DataFrame) else load_population(population)[0]
    labs = ht_info.get("labs")
    prior = population_prior(
        model, pop, product=product, hematotox=ht, disease=disease, labs=labs is not None
    )
    base = model.default_params().copy()
    if product is not None:
        # Product kinetics of parameters the population does not vary (the rest are
        # shifted in the prior).
        for name, factor in product_factors(model, product).items():
            if name not in prior.names:
                base[model.index("param", name)] *= factor
    if chim is not None:
        q = model.params[model.index("param", "donor_chim0")]
        base[model.index("param", "donor_chim0")] = float(np.clip(chim, q.low, q.high))

    # ---- the course before the boost, with its support
    course = product or DEFAULT_PRODUCT_COURSE
    ev = events if events is not None else product_events(course, patient="patient")
    later = (ev["kind"] == "stem_cell_boost") & (ev["day"] >= day)
    replaced = [f"stem_cell_boost on day {d:g}" for d in ev.loc[later, "day"]]
    ev = ev[~later].reset_index(drop=True)
    support_rows, after_rows = [], []
    if gcsf:
        support_rows.append(
            # Through the boost day (its count is supported), then gcsf_after more days.
            _row(gcsf_start, "gcsf", 5.0, "ug/kg/day", day - gcsf_start + 1.0 + gcsf_after)
        )
    if tpo:
        support_rows.append(
            _row(day - SUPPORT_DAYS, "tpo_agonist", None, "dose/day",
                 SUPPORT_DAYS + horizon_days + 1.0)
        )  # fmt: skip
    if plt_transfused:
        after_rows.append(_row(day, "platelet_transfusion", 1.0, "units"))
    ev_cond = _add(ev, support_rows)
    ev_pred = _add(ev_cond, after_rows)
    own_kinds = ("gcsf", "tpo_agonist", "platelet_transfusion")
    ev_own = ev_cond[~ev_cond["kind"].isin(own_kinds)].reset_index(drop=True)
    # --gcsf-dependent: the same course with G-CSF stopped after the boost day.
    stopped = [{**r, "duration": SUPPORT_DAYS + 1.0} if r["kind"] == "gcsf" else r
               for r in support_rows]  # fmt: skip
    ev_off_gcsf = _add(ev, stopped)

    # ---- what is conditioned on
    first = build_events(model, ev_cond, base).first_time
    start = np.floor(min(first if first is not None else 0.0, 0.0))
    days = np.arange(start, day + 0.5, 1.0)
    terms: list[_Term] = []
    conditioned = []

    def count_term(d, analyte, value, lloq=np.nan, blq=False, label=""):
        res = RESIDUALS[analyte]
        i = int(np.searchsorted(days, np.round(d)))
        if i >= days.size or days[i] != np.round(d):
            return
        j = model.index("obs", analyte)
        if blq:
            terms.append(_Term("below", label, i, j, np.log(lloq), res.typical_sd, res.floor))
            conditioned.append({"day": float(d), "analyte": analyte, "below": float(lloq)})
        else:
            terms.append(_Term("obs", label, i, j, np.log(value), res.typical_sd, res.floor))
            conditioned.append({"day": float(d), "analyte": analyte, "value": float(value)})

    unused: list[str] = []
    if observations is not None and len(observations):
        obs = observations
        unused = sorted(set(obs["analyte"]) - {"anc", "platelets"})
        # Earlier values, and boost-day values the flags do not give.
        given = {a for a, v in (("anc", anc), ("platelets", platelets)) if v is not None}
        if plt_transfused:
            given.add("platelets")
        same_day = np.round(obs["day"]) == np.round(day)
        obs = obs[
            obs["analyte"].isin(["anc", "platelets"])
            & (obs["day"] <= day)
            & ~(same_day & obs["analyte"].isin(sorted(given)))
        ]
        for r in obs.itertuples(index=False):
            blq = getattr(r, "blq", False)
            blq = False if blq is None or pd.isna(blq) else bool(blq)
            lloq = getattr(r, "lloq", None)
            lloq = np.nan if lloq is None or pd.isna(lloq) else float(lloq)
            if blq and not (np.isfinite(lloq) and lloq > 0):
                lloq = RESIDUALS[r.analyte].zero_limit
            if not blq and not (np.isfinite(r.value) and r.value > 0):
                blq, lloq = True, RESIDUALS[r.analyte].zero_limit
            count_term(r.day, r.analyte, r.value, lloq, blq, f"{r.analyte} on day {r.day:g}")
    if anc is not None:
        blq = anc < anc_lloq
        what = f"below {anc_lloq:g}" if blq else f"{anc:g}"
        count_term(day, "anc", anc, anc_lloq, blq, f"ANC {what} G/L on the boost day")
    if platelets is not None:
        if plt_transfused:
            count_term(day, "platelets", None, PLT_ENGRAFT, True,
                       "own platelets below 20 G/L (transfusion dependent)")  # fmt: skip
        else:
            what = f"platelets {platelets:g} G/L on the boost day"
            count_term(day, "platelets", platelets, label=what)
    elif plt_transfused:
        count_term(day, "platelets", None, PLT_ENGRAFT, True,
                   "own platelets below 20 G/L (transfusion dependent)")  # fmt: skip
    if gcsf_dependent:
        # "The ANC falls below 0.5 G/L whenever G-CSF stops": in the same particle's
        # course with G-CSF stopped after the boost day (and no boost), the lowest ANC of
        # the next GCSF_FALL_DAYS days is below 0.5 G/L (a censored term).
        res_anc = RESIDUALS["anc"]
        label = (f"ANC below 0.5 G/L within {GCSF_FALL_DAYS:g} days of stopping G-CSF "
                 "(G-CSF dependent)")  # fmt: skip
        terms.append(_Term("off_gcsf", label, days.size - 1, model.index("obs", "anc"),
                           np.log(ANC_ENGRAFT), res_anc.typical_sd, res_anc.floor))  # fmt: skip
        conditioned.append({"day": float(day), "analyte": "anc", "below": ANC_ENGRAFT,
                            "course": f"G-CSF stopped, lowest of the next {GCSF_FALL_DAYS:g} "
                            "days"})  # fmt: skip
    if neutropenia_days is not None:
        # The SD is the particle's own (neutropenia_sd of its simulated count).
        terms.append(_Term("days", f"{neutropenia_days:g} days with ANC < 0.5 G/L",
                           days.size - 1, -1, float(neutropenia_days)))  # fmt: skip
    if labs is not None:
        for name, key in (("anc0", "anc"), ("plt0", "platelets"), ("hemoglobin", "hemoglobin"),
                          ("crp", "crp"), ("ferritin", "ferritin")):  # fmt: skip
            if name in prior.names and labs[key] > 0:
                terms.append(_Term("lab", f"baseline {key} {labs[key]:g}", -1,
                                   prior.names.index(name), np.log(labs[key]), LAB_SD))  # fmt: skip

    # ---- conditioning
    cond = _Conditioner(model, prior, base, ev_cond, day, terms, days, own_events=ev_off_gcsf)
    if terms:
        res = smc(cond, prior, int(n_draws), rng)
        X = res["X"]
    else:
        X = prior.sample(int(n_draws), rng)
        res = {"effective_sample_size": float(n_draws), "final_stage_ess": float(n_draws),
               "distinct_particles": int(n_draws), "stages": [], "log_evidence": 0.0}  # fmt: skip
    ess = float(res["effective_sample_size"])
    if terms:
        _check_fit(cond, X, terms)
    if ess < MIN_ESS:
        raise InputError(
            f"only {ess:.0f} effective draws after conditioning (fewer than {MIN_ESS:.0f}): "
            "the prediction would rest on too few virtual patients",
            fix=f"use more particles (--draws, now {n_draws}), or check the counts",
        )
    t_cond = time.perf_counter() - t0

    # ---- own counts (no support) of the conditioned draws on the boost day
    st_own, obs_own = cond.simulate(X, build_events(model, ev_own, base))
    ok = st_own == 0
    own = {
        "anc": _quantiles(obs_own[ok, -1, model.index("obs", "anc")]),
        "platelets": _quantiles(obs_own[ok, -1, model.index("obs", "platelets")]),
    }

    # ---- prediction: the conditioned draws with graft parameters of their own
    draws = draw_graft(model, cond.params(X), rng, population=pop, dose=float(dose))
    plan = Plan(day=float(day), dose=float(dose), source=source, selected=bool(selected),
                cd3_per_kg=cd3)  # fmt: skip
    horizon = float(day) + horizon_days
    boosted = simulate_course(model, draws, ev_pred, plan, horizon=horizon)
    sim_days, status, obs_pred, ev_df = astuple_course(boosted)
    pred = _plan_summary(
        model, plan, sim_days, status, obs_pred, ev_df, reference=float(day), horizon=horizon
    )
    # The counterfactual: the same draws (same support) without the boost, solved once.
    none = simulate_course(model, draws, ev_pred, Plan(), horizon=horizon)
    cf = counterfactual(model, boosted, none, reference=float(day))
    wall = time.perf_counter() - t0

    out: dict = {
        "boost": {
            "day": float(day),
            "dose_cd34_per_kg": float(dose),
            "source": source,
            "cd34_selected": bool(selected),
            "cd3_per_kg": cd3,
            "cd3_note": cd3_note,
            "p_graft_failure": p_graft_failure(float(dose)),
            "graft_failure_source": GRAFT_FAILURE_SOURCE,
        },
        "inputs": {
            "product": product,
            "product_course": course if events is None else "from --events",
            "disease": disease,
            "hematotox": ht_info,
            "support": {
                "gcsf": bool(gcsf),
                "gcsf_days_before_boost": day - gcsf_start if gcsf else 0.0,
                "gcsf_since_day": gcsf_start if gcsf else None,
                "gcsf_since_assumed": bool(gcsf and gcsf_since is None),
                "gcsf_on_boost_day": bool(gcsf),
                "gcsf_days_after_boost": float(gcsf_after or 0.0) if gcsf else 0.0,
                "gcsf_dependent": bool(gcsf_dependent),
                "gcsf_note": gcsf_note,
                "plt_transfused": bool(plt_transfused),
                "tpo": bool(tpo),
            },
            "anc": anc,
            "anc_lloq": anc_lloq,
            "anc_below_limit": anc is not None and anc < anc_lloq,
            "platelets": platelets,
            "platelets_used": _platelets_used(platelets, plt_transfused),
            "neutropenia_days": neutropenia_days,
            "donor_chim0": None if chim is None else float(chim),
            "conditioning_prior": prior.description,
            "graft_parameters": graft_sources(model, pop),
            "likelihood_terms": [t.label for t in terms],
        },
        "conditioned_on": conditioned,
        "unused_analytes": unused,
        "replaced_events": replaced,
        "n_draws": int(n_draws),
        "effective_sample_size": ess,
        "sampler": {
            "method": "SMC, adaptive tempering, systematic resampling, random-walk Metropolis",
            "stages": len(res["stages"]),
            "final_stage_ess": res["final_stage_ess"],
            "distinct_particles": res["distinct_particles"],
            "stage_log": res["stages"],
            "log_evidence": res["log_evidence"],
            "simulations": cond.n_sims,
        },
        "own_counts_at_boost": own,
        "horizon_days_after_boost": horizon_days,
        "wall_time_s": {"conditioning": t_cond, "total": wall},
    }
    keys = ("median_days", "q05", "q95", *(f"p_within_{w}d" for w in WITHIN), "p_never",
            "p_already", "n_draws")  # fmt: skip
    lineages = ("neutrophil", "platelet", "anc_gt_1")
    for key in lineages:
        out[key] = {k: pred[key][k] for k in keys}
    out["p_never"] = {key: out[key]["p_never"] for key in lineages}
    # Same shape as "neutrophil"/"platelet": recovery of the patient's own counts from the
    # boost day without the boost (the same draws); and the days the boost saves.
    out["no_boost"] = {key: {k: cf["no_boost"][key][k] for k in keys} for key in lineages}
    for key in ("neutropenia_days_saved", "thrombocytopenia_days_saved"):
        out[key] = cf[key]
    for key in ("chimerism_day30", "p_graft_lost_day60"):
        if key in pred:
            out[key] = pred[key]
    out["cart_at_boost"] = pred.get("cart_at_reference")
    out["warnings"] = []
    if return_draws:
        ok = status == 0
        gcsf_periods, transfusions = support_from_events(ev_df)
        out["draw_engraftment"] = lineage_engraftment(
            sim_days,
            reference=float(day),
            anc=obs_pred[ok, :, model.index("obs", "anc")],
            platelets=obs_pred[ok, :, model.index("obs", "platelets")],
            gcsf=gcsf_periods,
            transfusions=transfusions,
        )
    if pred.get("n_failed"):
        out["warnings"].append(f"{pred['n_failed']} draws failed to solve after the boost")
    return out


def _platelets_used(platelets, transfused: bool) -> str | None:
    if platelets is None:
        return None
    return "no: transfused count; own count conditioned below 20 G/L" if transfused else "yes"


def _check_fit(cond: _Conditioner, X: np.ndarray, terms: list[_Term]) -> None:
    """Refuse when the conditioned particles still cannot reproduce a conditioned value:
    the counts are impossible under the population."""
    status, zs, _ = cond.term_values(X)
    ok = status == 0
    for t, z in zip(terms, zs, strict=True):
        z = z[ok]
        fits = z >= -FIT_Z if t.kind in ("below", "off_gcsf") else np.abs(z) <= FIT_Z
        if z.size == 0 or fits.mean() < MIN_FIT:
            raise InputError(
                f"the given state is impossible under the calibrated population: {t.label} "
                f"is reproduced by {fits.mean() if z.size else 0.0:.0%} of the conditioned "
                "virtual patients",
                fix="check the value and its unit (G/L, days), or whether the counts "
                "contradict each other (e.g. ANC > 0.5 with many neutropenic days)",
            )
