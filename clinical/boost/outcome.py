"""The solves after the conditioning: the conditioned draws' own counts on the boost day,
and their courses with the boost and without it (the counterfactual: the same draws,
the same support, no boost)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from carthema.clinical.boost.inputs import BoostInputs, Courses
from carthema.clinical.boost.likelihood import Conditioner, Evaluation
from carthema.clinical.plans import Course, Plan, simulate_course
from carthema.clinical.population.graft import draw_graft
from carthema.models.events import build_events
from carthema.models.model import Model


def quantiles(x: np.ndarray) -> dict:
    """Median and 90 % interval of the finite values (None when there are none)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"median": None, "q05": None, "q95": None}
    q05, med, q95 = np.quantile(x, [0.05, 0.5, 0.95])
    return {"median": float(med), "q05": float(q05), "q95": float(q95)}


def own_counts(
    model: Model,
    cond: Conditioner,
    X: np.ndarray,
    courses: Courses,
    evaluation: Evaluation | None,
) -> dict:
    """ANC and platelets of the conditioned draws on the boost day without any support:
    the conditioning's own simulation when the course has no support rows, else one more
    solve of the course without them."""
    if courses.own_is_conditioned and evaluation is not None and evaluation.last is not None:
        status, last = evaluation.status, evaluation.last
    else:
        status, obs = cond.simulate(X, build_events(model, courses.own, cond.base))
        last = obs[:, -1, :]
    ok = status == 0
    return {name: quantiles(last[ok, model.index("obs", name)]) for name in ("anc", "platelets")}


@dataclass(frozen=True)
class Outcome:
    """The conditioned draws (with graft parameters of their own) after the boost day,
    with the boost and without it (same draws, same order, same support)."""

    draws: np.ndarray
    boosted: Course
    no_boost: Course
    horizon: float


def boost_outcome(
    model: Model,
    cond: Conditioner,
    X: np.ndarray,
    inp: BoostInputs,
    courses: Courses,
    population: pd.DataFrame,
    rng: np.random.Generator,
) -> Outcome:
    """Graft parameters drawn per conditioned particle (with primary graft failure at the
    dose, :func:`carthema.clinical.population.graft.draw_graft`), then one solve with the
    boost and one without it, to ``horizon_days`` after the boost."""
    draws = draw_graft(model, cond.params(X), rng, population=population, dose=inp.dose)
    horizon = inp.day + inp.horizon_days
    boosted = simulate_course(model, draws, courses.predicted, inp.graft, horizon=horizon)
    none = simulate_course(model, draws, courses.predicted, Plan(), horizon=horizon)
    return Outcome(draws, boosted, none, horizon)
