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
from carthema.clinical.summaries import quantiles
from carthema.models.events import build_events
from carthema.models.model import Model
from carthema.models.solver_contract import SCREEN

#: Solver options of the courses after the boost day (with and without the boost): the
#: SCREEN tolerances (rtol 1e-6; only day-scale features are read from these courses:
#: days below a threshold, engraftment days) with Tsit5 throughout. The courses are not
#: stiff (measured on the four cases of benchmarks/prediction.py, 2,400 conditioned draws
#: each: at most 708 Tsit5 steps a course, none failed), but the "auto" method's
#: stiffness test fires on some draws and switches them to ROS34PW2 at about 4x the
#: cost per step. Against PREDICT (auto, rtol 1e-7) on those draws the days with ANC <
#: 0.5 G/L and platelets < 20 G/L from the boost day changed for none of the 9,600 boosted
#: courses; 0.56 ms a course against 1.0 ms (CPU, the base case).
#: tests/test_predict_boost_speed.py checks them against a tight reference. A module
#: attribute so that benchmarks/prediction.py can time the earlier settings.
COURSE_OPTIONS = SCREEN.replace(method="tsit5")
#: Solve the no-boost course once per distinct conditioned particle (the resampled
#: particles repeat; the graft parameters drawn per particle act only through a boost).
#: A module attribute so that benchmarks/prediction.py can time the earlier setting.
DISTINCT_NO_BOOST = True


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
    return {
        name: quantiles(last[ok, model.index("obs", name)], empty=None)
        for name in ("anc", "platelets")
    }


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
    boost and one without it, to ``horizon_days`` after the boost.

    The course without the boost does not depend on the graft and rejection parameters
    (they act through the boost's cells; tests/test_predict_boost_speed.py checks it), so
    it is solved once per distinct particle, with the parameters the conditioning saw,
    and repeated in the particles' order."""
    params = cond.params(X)
    draws = draw_graft(model, params, rng, population=population, dose=inp.dose)
    horizon = inp.day + inp.horizon_days
    opts = COURSE_OPTIONS
    boosted = simulate_course(model, draws, courses.predicted, inp.graft, horizon=horizon,
                              options=opts)  # fmt: skip
    if DISTINCT_NO_BOOST:
        uniq, inverse = np.unique(params, axis=0, return_inverse=True)
        none = simulate_course(model, uniq, courses.predicted, Plan(), horizon=horizon,
                               options=opts)  # fmt: skip
        inverse = inverse.reshape(-1)
        none = Course(none.days, none.status[inverse], none.obs[inverse], none.events)
    else:
        none = simulate_course(model, draws, courses.predicted, Plan(), horizon=horizon,
                               options=opts)  # fmt: skip
    return Outcome(draws, boosted, none, horizon)
