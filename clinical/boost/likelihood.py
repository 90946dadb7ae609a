"""The likelihood of predict-boost: the patient's boost-day state as terms on simulated
particles, and the checks of whether particles reproduce each conditioned value.

The terms (residual model, censoring, the neutropenic-day count, the laboratory values,
the fall once G-CSF stops) are described in :mod:`carthema.clinical.boost.predict`'s
docstring, the one description of the method. A failed solve is a rejected particle
(-inf), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import norm

from carthema.clinical.endpoints import ANC_ENGRAFT
from carthema.data.errors import InputError
from carthema.models.events import build_events
from carthema.models.model import Model
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import CONDITION

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
#: Solver options of the conditioning simulations: the CONDITION preset (rtol 1e-4, looser
#: than the prediction's 1e-7; its accuracy is stated where it is defined) with Tsit5
#: throughout instead of "auto": the courses to the boost day are not stiff (measured on
#: the four cases of benchmarks/prediction.py: at most 226 Tsit5 steps a course), but the
#: stiffness test switches some draws to ROS34PW2 at about 4x the cost per step, above
#: all under G-CSF (0.63 ms a course against 0.20 ms with Tsit5, CPU; both 2.7e-3 off a
#: rtol 1e-10 solve in the log of the boost-day counts). A module attribute so that
#: benchmarks/boost_calibration.py and benchmarks/prediction.py can time the earlier
#: settings.
OPTIONS = CONDITION.replace(method="tsit5")
#: A conditioned count is "reproduced" by a particle when it lies within this many
#: residual SDs; fewer than MIN_FIT of the conditioned particles reproducing it means the
#: counts are impossible under the population.
FIT_Z, MIN_FIT = 3.0, 0.05
#: Fewest initial particles (drawn from the population prior) that must reproduce each
#: conditioned value on its own for the conditioning to start; fewer: refused at once,
#: naming the value. Values that each are common but together rare are left to the
#: sampler, whose final check (:func:`check_fit`) refuses them, naming the value: a
#: start check of the values together (at least 1 of the initial particles reproducing all
#: of them) refused 5 of 200 patients drawn from the population itself, and no threshold
#: on how far the closest initial particle misses separates them from impossible states
#: (measured over 9,600 prior particles, largest residual in SDs of the closest one: 5.2
#: for VP00870 of the boost calibration, which conditions to 2,239 effective draws; 4.1
#: and 6.7 for ANC 0 after 30 neutropenic days on days 100 and 200, which the final
#: check refuses after 9 s). The sampler draws more prior particles (up to
#: :data:`~carthema.clinical.boost.smc.POOL_BATCHES` x the particles) while none
#: reproduces the values together.
MIN_START = 1


def neutropenia_sd(n_true):
    """SD (days) of a reported count of neutropenic days whose true value is ``n_true``
    (assumption: recall and record gaps, 2 days + 10 %)."""
    return NEUTROPENIA_SD[0] + NEUTROPENIA_SD[1] * np.asarray(n_true, dtype=float)


@dataclass
class Term:
    """One conditioned value."""

    kind: str  # "obs", "below", "off_gcsf" (the fall once G-CSF stops), "days", "lab"
    label: str
    day_index: int = -1
    obs: int = -1  # observable column, or particle dimension for "lab"
    value: float = np.nan  # log value / log limit / days
    sd: float = 1.0
    floor: float = 0.0

    @property
    def censored(self) -> bool:
        return self.kind in ("below", "off_gcsf")


class Evaluation(NamedTuple):
    """What one simulation of particles says: log-likelihood (n,), the standardised value
    of every term (terms, n), the solve status (n,) and the observables on the boost day
    (n, n_obs; None when nothing was simulated). Kept per particle by the sampler so that
    the final checks and the own counts need no second solve."""

    loglik: np.ndarray
    z: np.ndarray
    status: np.ndarray
    last: np.ndarray | None

    def take(self, idx: np.ndarray) -> Evaluation:
        return Evaluation(
            self.loglik[idx],
            self.z[:, idx],
            self.status[idx],
            None if self.last is None else self.last[idx],
        )

    def concat(self, other: Evaluation) -> Evaluation:
        """This evaluation's particles followed by ``other``'s."""
        last = None
        if self.last is not None and other.last is not None:
            last = np.concatenate([self.last, other.last])
        return Evaluation(
            np.concatenate([self.loglik, other.loglik]),
            np.concatenate([self.z, other.z], axis=1),
            np.concatenate([self.status, other.status]),
            last,
        )

    def put(self, mask: np.ndarray, other: Evaluation) -> None:
        """Rows ``mask`` replaced by ``other``'s (in place; ``other`` has those rows)."""
        self.loglik[mask] = other.loglik
        self.z[:, mask] = other.z
        self.status[mask] = other.status
        if self.last is not None and other.last is not None:
            self.last[mask] = other.last


class Conditioner:
    """Log-likelihood of particles (log-scale dimensions of a
    :class:`~carthema.clinical.boost.prior.PopulationPrior`)."""

    #: What the particles are drawn from, as the refusals name it.
    source = "the calibrated population"

    def __init__(self, model: Model, prior, base, events, day, terms, days, own_events=None):
        self.model, self.prior, self.base = model, prior, base
        self.idx = [model.index("param", n) if n in model.param_names else -1 for n in prior.names]
        self.ev = build_events(model, events, base)
        # The course with G-CSF stopped on the boost day, followed GCSF_FALL_DAYS more days
        # without a boost, for the "off_gcsf" term (--gcsf-dependent).
        self.ev_off = None if own_events is None else build_events(model, own_events, base)
        self.days_off = np.arange(days[0], days[-1] + GCSF_FALL_DAYS + 0.5, 1.0)
        self.days = days
        self.terms: list[Term] = terms
        self.n_sims = 0
        self.anc_col = model.index("obs", "anc")
        self.day = day

    def params(self, X: np.ndarray) -> np.ndarray:
        """Natural-scale parameter rows of the particles ``X``."""
        P = np.tile(self.base, (X.shape[0], 1))
        for k, j in enumerate(self.idx):
            if j >= 0:
                P[:, j] = np.exp(X[:, k])
        return P

    def simulate(self, X: np.ndarray, events=None, days=None):
        """(status, observables) of the particles ``X`` over ``days`` (default: from the
        first event to the boost day) under ``events`` (default: the conditioned course)."""
        ev = self.ev if events is None else events
        days = self.days if days is None else days
        P = np.ascontiguousarray(self.params(X))
        self.n_sims += X.shape[0]
        sched = Schedule.from_events(self.model, ev, days, t0=float(days[0]))
        status, obs = solve_batch(self.model, P, sched, OPTIONS).astuple()
        return status, obs

    def evaluate(self, X: np.ndarray) -> Evaluation:
        """Every term of the particles ``X`` from one simulation: z for "obs"/"days"/"lab",
        the censoring z ((log limit - mu) / sd) for "below"/"off_gcsf". The SD of a
        "days" term is the particle's own (:func:`neutropenia_sd` of its simulated count)."""
        n = X.shape[0]
        need_sim = any(t.kind in ("obs", "below", "days") for t in self.terms)
        obs = last = None
        if need_sim:
            status, obs = self.simulate(X)
            last = obs[:, -1, :]
        else:
            status = np.zeros(n, dtype=int)
        if any(t.kind == "off_gcsf" for t in self.terms):
            st_off, obs_off = self.simulate(X, self.ev_off, self.days_off)
            status = np.where(status == 0, st_off, status)
        z = np.empty((len(self.terms), n))
        ll = np.zeros(n)
        for k, t in enumerate(self.terms):
            sd = t.sd
            if t.kind in ("obs", "below"):
                mu = np.log(np.maximum(obs[:, t.day_index, t.obs], 0.0) + t.floor)
                z[k] = (t.value - mu) / t.sd
            elif t.kind == "off_gcsf":  # the lowest count in the days after G-CSF stops
                low = obs_off[:, t.day_index + 1 :, t.obs].min(axis=1)
                mu = np.log(np.maximum(low, 0.0) + t.floor)
                z[k] = (t.value - mu) / t.sd
            elif t.kind == "days":
                anc = obs[:, : t.day_index, self.anc_col]
                count = (anc < ANC_ENGRAFT).sum(axis=1)
                sd = neutropenia_sd(count)
                z[k] = (t.value - count) / sd
            else:  # lab: a particle dimension
                z[k] = (X[:, t.obs] - t.value) / t.sd
            ll += norm.logcdf(z[k]) if t.censored else -0.5 * z[k] ** 2 - np.log(sd)
        ok = (status == 0) & np.isfinite(ll)
        return Evaluation(np.where(ok, ll, -np.inf), z, np.asarray(status), last)

    def loglik(self, X: np.ndarray) -> np.ndarray:
        """Log-likelihood of the particles ``X`` (-inf where the solve failed)."""
        if X.shape[0] == 0:
            return np.zeros(0)
        return self.evaluate(X).loglik


# --------------------------------------------------------------------------------------
# which particles reproduce which value, and the refusals built on it


def fits(cond: Conditioner, ev: Evaluation) -> np.ndarray:
    """(terms, particles): whether each particle reproduces each likelihood term (within
    :data:`FIT_Z` residual SDs; a censored term: not above the limit by more)."""
    ok = ev.status == 0
    rows = [
        ((z >= -FIT_Z) if t.censored else (np.abs(z) <= FIT_Z)) & ok
        for t, z in zip(cond.terms, ev.z, strict=True)
    ]
    return np.array(rows, dtype=bool).reshape(len(cond.terms), ev.status.size)


def joint_fits(cond: Conditioner, ev: Evaluation) -> int:
    """How many particles reproduce every likelihood term together (:func:`fits`)."""
    F = fits(cond, ev)
    return int(F.all(axis=0).sum()) if F.size else int(ev.status.size)


def start_check(cond: Conditioner, ev: Evaluation) -> None:
    """Refuse at once when fewer than :data:`MIN_START` initial particles reproduce a
    conditioned value on its own, naming the value."""
    F = fits(cond, ev)
    if not F.size:
        return
    alone = F.sum(axis=1)
    if alone.min() >= MIN_START:
        return
    k = int(alone.argmin())
    raise InputError(
        f"the given state is impossible under {cond.source}: "
        f"{cond.terms[k].label} is reproduced by {alone[k]} of {F.shape[1]} virtual patients "
        "drawn from it",
        fix="check the value and its unit (G/L, days); if it is right, the population has no "
        "patients like this one (e.g. a late boost in a population without late aplasia) and "
        "no prediction can rest on it",
    )


def refuse_early(cond: Conditioner, ev: Evaluation, why: str, min_ess: float) -> None:
    """Refuse naming the input that the fewest particles reproduce."""
    F = fits(cond, ev)
    counts = [(t.label, int(f.sum())) for t, f in zip(cond.terms, F, strict=True)]
    label, k = min(counts, key=lambda c: c[1]) if counts else ("the given state", 0)
    raise InputError(
        f"the given state is incompatible with {cond.source}: {why}; the "
        f"input fewest virtual patients reproduce is '{label}' ({k} of {F.shape[1]})",
        fix="check that value (and its unit); if it is right, the population has no patients "
        "like this one (e.g. a late boost in a population without late aplasia) and no "
        f"prediction resting on {min_ess:.0f} effective draws can be made",
    )


def check_fit(cond: Conditioner, ev: Evaluation) -> None:
    """Refuse when the conditioned particles still cannot reproduce a conditioned value:
    the counts are impossible under the population."""
    ok = ev.status == 0
    for t, z in zip(cond.terms, ev.z, strict=True):
        z = z[ok]
        hit = z >= -FIT_Z if t.censored else np.abs(z) <= FIT_Z
        if z.size == 0 or hit.mean() < MIN_FIT:
            raise InputError(
                f"the given state is impossible under {cond.source}: {t.label} "
                f"is reproduced by {hit.mean() if z.size else 0.0:.0%} of the conditioned "
                "virtual patients",
                fix="check the value and its unit (G/L, days), or whether the counts "
                "contradict each other (e.g. ANC > 0.5 with many neutropenic days)",
            )
