"""The sampler of predict-boost: sequential Monte Carlo with adaptive tempering from the
population prior to prior x likelihood (described in
:mod:`carthema.clinical.boost.predict`'s docstring, the one description of the method)."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from carthema.clinical.boost.likelihood import (
    MIN_START,
    Conditioner,
    Evaluation,
    check_fit,
    joint_fits,
    refuse_early,
    start_check,
)
from carthema.data.errors import InputError

#: Fewest effective draws a prediction may rest on; below it the prediction is refused.
MIN_ESS = 1000.0
#: SMC settings. At most 3 random-walk moves per tempering stage (was 5): the moves are
#: most of the cost (2,400 solves each), and with 3 the particles stay diverse (measured:
#: 5 moves left about 2,200 distinct of 2,400, 2 moves about 1,470, both giving the same
#: intervals within a day); the 1,000-draw floor is checked on every prediction.
ESS_FRACTION = 0.5
MIN_MOVES, MAX_MOVES, MOVED = 2, 3, 0.75
#: Most batches of ``n`` prior particles drawn before the first tempering stage while
#: fewer than :data:`~carthema.clinical.boost.likelihood.MIN_START` of them reproduce
#: every conditioned value together (see :func:`smc`).
POOL_BATCHES = 4


def _systematic_resample(
    w: np.ndarray, rng: np.random.Generator, n: int | None = None
) -> np.ndarray:
    """``n`` (default ``w.size``) indices drawn with the normalised weights ``w``."""
    n = w.size if n is None else n
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(w), positions), w.size - 1)


def _ess(logw: np.ndarray) -> float:
    if not np.isfinite(logw).any():
        return 0.0
    w = np.exp(logw - logw.max())
    return float(w.sum() ** 2 / np.sum(w**2))


def _next_temperature(beta: float, ll: np.ndarray, n: int) -> float:
    """The next temperature: 1 when the incremental weights keep an ESS of
    :data:`ESS_FRACTION` x ``n``, else the largest that does (bisection)."""
    safe = np.where(np.isfinite(ll), ll, -np.inf)

    def ess_at(b):
        return _ess(np.where(np.isfinite(safe), (b - beta) * safe, -np.inf))

    if ess_at(1.0) >= ESS_FRACTION * n:
        return 1.0
    lo, hi = beta, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if ess_at(mid) >= ESS_FRACTION * n:
            lo = mid
        else:
            hi = mid
    return max(lo, beta + 1e-12)


def _evaluate(cond, X: np.ndarray) -> Evaluation:
    """An :class:`Evaluation` of ``X``: the conditioner's own, or (any object with a
    ``loglik``, e.g. an analytic test likelihood) one without terms."""
    n = X.shape[0]
    if isinstance(cond, Conditioner):
        if n == 0:
            return Evaluation(np.zeros(0), np.zeros((len(cond.terms), 0)), np.zeros(0, int), None)
        return cond.evaluate(X)
    ll = cond.loglik(X) if n else np.zeros(0)
    return Evaluation(np.asarray(ll, dtype=float), np.zeros((0, n)), np.zeros(n, int), None)


def smc(cond: Conditioner, prior, n: int, rng: np.random.Generator) -> dict:
    """Tempered SMC from the KDE prior (a :class:`~carthema.clinical.boost.prior.
    PopulationPrior`) to prior x likelihood. Returns the particles ``X``, their final
    :class:`~carthema.clinical.boost.likelihood.Evaluation` (``evaluation``) and
    diagnostics.

    Moves are random-walk Metropolis with delayed acceptance (Christen & Fox 2005, J
    Comput Graph Stat 14:795): a proposal first passes on the prior ratio alone, and only
    those that pass are simulated and then accepted on the tempered likelihood ratio.
    Each stage is a Metropolis ratio of its own factor, so the product keeps prior x
    likelihood^beta invariant; the simulations of the proposals the prior rejects (about
    half here) are saved.

    Refuses early (:class:`InputError` naming the input the fewest particles reproduce)
    when the conditioning cannot end with :data:`MIN_ESS` effective draws: when fewer than
    :data:`~carthema.clinical.boost.likelihood.MIN_START` of the initial particles
    reproduce a conditioned value on its own (the population has no patients with it),
    and when a stage's moves leave fewer than :data:`MIN_ESS` distinct particles (the
    final ESS is at most the distinct count). The initial particles are ``n`` prior
    draws, or more (batches of ``n``, up to :data:`POOL_BATCHES` x ``n``) while none of
    them reproduces every conditioned value together; the first stage resamples ``n``
    from them all."""
    X = prior.sample(n, rng)
    checked = isinstance(cond, Conditioner)
    ev = _evaluate(cond, X)
    if checked:
        # A state reproduced by few virtual patients may have none among the first n
        # prior particles by chance (5 of 200 patients drawn from the population itself
        # were refused so): more prior particles, up to POOL_BATCHES x n, before the
        # start check. The first stage resamples n particles from the whole pool (an
        # importance sample of the prior like any other, so the target is unchanged).
        for _ in range(POOL_BATCHES - 1):
            if joint_fits(cond, ev) >= MIN_START:
                break
            Xb = prior.sample(n, rng)
            X, ev = np.vstack([X, Xb]), ev.concat(_evaluate(cond, Xb))
    if not np.isfinite(ev.loglik).any():
        raise InputError(
            "no virtual patient of the population reproduces the given state (every "
            "simulation failed or every count has zero likelihood)",
            fix="check the counts and their units (G/L) and the boost day",
        )
    if checked:
        start_check(cond, ev)
    n_initial = X.shape[0]
    lp = prior.logpdf(X)
    beta, stages, log_evidence = 0.0, [], 0.0
    scale = 2.38 / np.sqrt(prior.d)
    last_ess = float(n)
    while beta < 1.0:
        nb = _next_temperature(beta, ev.loglik, n)
        inc = np.where(np.isfinite(ev.loglik), (nb - beta) * ev.loglik, -np.inf)
        log_evidence += float(logsumexp(inc) - np.log(inc.size))
        w = np.exp(inc - inc.max())
        w /= w.sum()
        last_ess = float(1.0 / np.sum(w**2))
        beta = nb
        idx = _systematic_resample(w, rng, n)
        X, lp, ev = X[idx], lp[idx], ev.take(idx)
        cov = np.cov(X.T) + 1e-10 * np.eye(prior.d)
        L = np.linalg.cholesky(cov)
        moved = np.zeros(n, dtype=bool)
        acc_rates = []
        for k in range(MAX_MOVES):
            Xp = X + scale * rng.standard_normal(X.shape) @ L.T
            lpp = prior.logpdf(Xp)
            with np.errstate(invalid="ignore"):
                first = np.log(rng.random(n)) < np.nan_to_num(lpp - lp, nan=-np.inf)
            evp = _evaluate(cond, Xp[first])
            with np.errstate(invalid="ignore"):
                log_a = beta * (evp.loglik - ev.loglik[first])
            second = np.log(rng.random(evp.loglik.size)) < np.nan_to_num(log_a, nan=-np.inf)
            acc = np.zeros(n, dtype=bool)
            acc[np.flatnonzero(first)[second]] = True
            X[acc], lp[acc] = Xp[acc], lpp[acc]
            ev.put(acc, evp.take(second))
            moved |= acc
            rate = float(acc.mean())
            acc_rates.append(rate)
            scale *= float(np.exp(rate - 0.234))
            if k + 1 >= MIN_MOVES and moved.mean() >= MOVED:
                break
        distinct_now = int(np.unique(X, axis=0).shape[0])
        if checked and distinct_now < MIN_ESS:
            refuse_early(
                cond, ev, f"after tempering stage {len(stages) + 1} (temperature {beta:.3g}) "
                f"only {distinct_now} distinct particles remain (fewer than {MIN_ESS:.0f})",
                MIN_ESS,
            )  # fmt: skip
        stages.append(
            {
                "temperature": beta,
                "ess": last_ess,
                "moves": len(acc_rates),
                "acceptance": float(np.mean(acc_rates)),
                "moved": float(moved.mean()),
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
        "loglik": ev.loglik,
        "evaluation": ev,
        "effective_sample_size": float(min(last_ess, distinct)),
        "final_stage_ess": last_ess,
        "distinct_particles": distinct,
        "initial_particles": n_initial,
        "stages": stages,
        "log_evidence": log_evidence,
    }


def condition(cond: Conditioner, prior, n: int, rng: np.random.Generator) -> dict:
    """The particles of prior x likelihood (:func:`smc`; the prior itself when nothing is
    conditioned on), checked: refused when a conditioned value is still not reproduced
    (:func:`~carthema.clinical.boost.likelihood.check_fit`) or fewer than :data:`MIN_ESS`
    effective draws remain."""
    if cond.terms:
        res = smc(cond, prior, n, rng)
        ev = res.get("evaluation")
        check_fit(cond, cond.evaluate(res["X"]) if ev is None else ev)
    else:
        res = {"X": prior.sample(n, rng), "effective_sample_size": float(n),
               "final_stage_ess": float(n), "distinct_particles": int(n),
               "initial_particles": int(n), "stages": [],
               "log_evidence": 0.0}  # fmt: skip
    ess = float(res["effective_sample_size"])
    if ess < MIN_ESS:
        raise InputError(
            f"only {ess:.0f} effective draws after conditioning (fewer than {MIN_ESS:.0f}): "
            "the prediction would rest on too few virtual patients",
            fix=f"use more particles (--draws, now {n}), or check the counts",
        )
    return res
