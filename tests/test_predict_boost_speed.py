"""predict-boost's cheaper solves are the same answer: the solver options of the
conditioning and of the courses after the boost against a tight reference solve, and the
course without the boost solved once per distinct particle."""

from __future__ import annotations

import numpy as np
import pytest

from carthema.clinical.boost import likelihood, outcome
from carthema.clinical.boost.inputs import boost_courses, read_inputs
from carthema.clinical.boost.predict import N_PARTICLES, prior_draws
from carthema.clinical.boost.smc import MIN_ESS
from carthema.clinical.endpoints import days_below
from carthema.clinical.plans import Plan, simulate_plan
from carthema.data.boost import BoostPlan
from carthema.models.events import build_events
from carthema.models.model import get_model
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import REFERENCE

N = 60  # population draws per check


@pytest.fixture(scope="module")
def case():
    """A G-CSF-supported, transfusion-dependent patient of the population boosted on day
    50 (the course where the "auto" method switched to the stiff solver most often)."""
    model = get_model("full")
    inp = read_inputs(
        BoostPlan(50, 3e6, "autologous"), anc=0.6, anc_lloq=0.05, platelets=15, gcsf=True,
        gcsf_after=0.0, gcsf_dependent=False, gcsf_since=None, plt_transfused=True, tpo=False,
        neutropenia_days=None, product="axi-cel", disease="lbcl", hematotox=3,
        hematotox_labs=None, donor_chimerism=None, n_draws=N_PARTICLES, min_ess=MIN_ESS,
        default_draws=N_PARTICLES, horizon_days=120.0,
    )  # fmt: skip
    draws = prior_draws(model, N, np.random.default_rng(4), product="axi-cel")
    return model, inp, boost_courses(inp, None), draws


@pytest.mark.parametrize("boost", [True, False], ids=["boost", "no boost"])
def test_course_options_keep_every_day_count_of_a_tight_solve(case, boost):
    """Days with ANC < 0.5 G/L and platelets < 20 G/L after the boost day (what the
    courses are read for) are those of a rtol 1e-11 solve, draw by draw; the daily counts
    agree to 1e-3 relative where they are above 1 % of the threshold."""
    model, inp, courses, draws = case
    plan = inp.graft if boost else Plan()
    horizon = inp.day + 120.0
    days, st, obs, _ = simulate_plan(model, draws, courses.predicted, plan, horizon=horizon,
                                     options=outcome.COURSE_OPTIONS)  # fmt: skip
    _, st_ref, ref, _ = simulate_plan(model, draws, courses.predicted, plan, horizon=horizon,
                                      options=REFERENCE)  # fmt: skip
    assert (st == 0).all() and (st_ref == 0).all()
    for name, thr in (("anc", 0.5), ("platelets", 20.0)):
        j = model.index("obs", name)
        got = days_below(days, obs[:, :, j], thr, start=inp.day)
        want = days_below(days, ref[:, :, j], thr, start=inp.day)
        np.testing.assert_array_equal(got, want)
        big = ref[:, :, j] > 0.01 * thr
        np.testing.assert_allclose(obs[:, :, j][big], ref[:, :, j][big], rtol=1e-3)


def test_conditioning_options_keep_the_boost_day_counts(case):
    """The conditioning's solver options give the boost-day ANC and platelets of a rtol
    1e-11 solve to 1 % (the residual SDs are 12-20 %) on the supported course."""
    model, inp, courses, draws = case
    ev = build_events(model, courses.conditioned, draws[0])
    days = np.arange(np.floor(min(ev.first_time, 0.0)), inp.day + 0.5, 1.0)
    sched = Schedule.from_events(model, ev, days, t0=float(days[0]))
    got = solve_batch(model, draws, sched, likelihood.OPTIONS)
    ref = solve_batch(model, draws, sched, REFERENCE)
    assert (got.status == 0).all() and (ref.status == 0).all()
    for name in ("anc", "platelets"):
        j = model.index("obs", name)
        np.testing.assert_allclose(got.obs[:, -1, j], ref.obs[:, -1, j], rtol=1e-2)


@pytest.mark.parametrize("chim", [None, 0.5], ids=["autologous", "mixed chimera"])
def test_no_boost_course_does_not_depend_on_the_graft_draws(case, chim):
    """Without a boost the graft and rejection parameters (redrawn per particle) leave
    the counts as they are, also in a mixed chimera after an earlier transplant: what
    lets predict-boost solve the no-boost course once per distinct particle."""
    from carthema.clinical.population.graft import GRAFT_PARAMS, draw_graft

    model, inp, courses, draws = case
    base = draws.copy()
    if chim is not None:
        base[:, model.index("param", "donor_chim0")] = chim
    for name in GRAFT_PARAMS:
        base[:, model.index("param", name)] = model.default_params()[model.index("param", name)]
    redrawn = draw_graft(model, base, np.random.default_rng(9), dose=5e5)  # failures too
    assert not np.allclose(redrawn, base)
    opts = REFERENCE
    h = inp.day + 120.0
    days, st0, a, _ = simulate_plan(model, base, courses.predicted, Plan(), horizon=h, options=opts)
    _, st1, b, _ = simulate_plan(model, redrawn, courses.predicted, Plan(), horizon=h, options=opts)
    assert (st0 == 0).all() and (st1 == 0).all()
    for name in ("anc", "platelets"):
        j = model.index("obs", name)
        np.testing.assert_allclose(a[:, :, j], b[:, :, j], rtol=1e-7, atol=1e-9)
