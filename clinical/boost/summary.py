"""The result of predict-boost: one JSON-ready mapping (:class:`BoostPrediction`) with the
engraftment summaries after the boost, the same draws without it, what the inputs were
understood as and the sampler's diagnostics."""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from carthema.clinical.boost.inputs import BoostInputs, Conditioned, Courses
from carthema.clinical.boost.outcome import Outcome
from carthema.clinical.endpoints import (
    ANC_ENGRAFT,
    WITHIN,
    Engraftment,
    days_below,
    lineage_engraftment,
    support_from_events,
)
from carthema.clinical.plans import DAYS_SAVED, Course, astuple_course, counterfactual
from carthema.clinical.population.graft import (
    GRAFT_FAILURE_SOURCE,
    graft_sources,
    p_graft_failure,
)
from carthema.clinical.summaries import plan_summary
from carthema.models.model import Model

#: The engraftment criteria of a prediction: after the boost, and without it.
LINEAGES = ("neutrophil", "platelet", "anc_gt_1")
#: The keys of one criterion's summary (:func:`carthema.clinical.endpoints.engraftment_summary`).
SUMMARY_KEYS = ("median_days", "q05", "q95", *(f"p_within_{w}d" for w in WITHIN), "p_never",
                "p_already", "n_draws")  # fmt: skip
#: Chimerism observables reported 30 days after a new donor's boost: donor share of the
#: myeloid (CD15+) cells, and of all leukocytes (whole blood).
CHIMERISM_KEYS = ("chimerism_day30", "chimerism_whole_blood_day30", "p_graft_lost_day60")
#: Fewest effective draws not yet engrafted on the boost day over which the time summaries
#: of a criterion (median, 90 % interval, P(within d days), P(never)) are given: below it
#: they are withheld (None, with ``withheld`` saying why). The effective number is the
#: sampler's effective sample size times the share of draws not already engrafted (the
#: draws are equally weighted after the last resampling). At 100, each 5 % tail of the
#: interval rests on at least 5 effective draws, the usual least expected count for a
#: binomial share; with fewer, the interval is one or two draws (VP00608 of
#: benchmarks/boost_calibration.py, seed 1002: one draw of 2,400 not engrafted gave
#: "[17, 17] days").
MIN_EFFECTIVE_NOT_ENGRAFTED = 100
#: The summary keys computed over the draws not already engrafted (withheld together).
CONDITIONAL_KEYS = ("median_days", "q05", "q95", *(f"p_within_{w}d" for w in WITHIN), "p_never")


class LineageSummary(TypedDict):
    """Time to one criterion from the boost day (days), the 90 % interval, the
    probabilities of reaching it within 14/30/60 days and never by the horizon, the
    share already there, and the number of draws."""

    median_days: float | None
    q05: float | None
    q95: float | None
    p_within_14d: float
    p_within_30d: float
    p_within_60d: float
    p_never: float
    p_already: float | None
    n_draws: int
    n_effective_not_engrafted: float
    withheld: str | None


class BoostPrediction(TypedDict, total=False):
    """What :func:`carthema.clinical.boost.predict.predict_boost` returns (the JSON of
    ``carthema predict-boost --json``)."""

    boost: dict[str, Any]
    inputs: dict[str, Any]
    conditioned_on: list[dict]
    unused_analytes: list[str]
    replaced_events: list[str]
    n_draws: int
    effective_sample_size: float
    sampler: dict[str, Any]
    own_counts_at_boost: dict[str, dict]
    horizon_days_after_boost: float
    wall_time_s: dict[str, float]
    neutrophil: LineageSummary
    platelet: LineageSummary
    anc_gt_1: LineageSummary
    p_never: dict[str, float]
    no_boost: dict[str, LineageSummary]
    no_boost_sustained: dict[str, LineageSummary]
    gcsf_tail: dict[str, Any] | None
    neutropenia_days_saved: dict[str, Any]
    thrombocytopenia_days_saved: dict[str, Any]
    chimerism_day30: dict[str, float]
    chimerism_whole_blood_day30: dict[str, float]
    p_graft_lost_day60: float
    cart_at_boost: dict[str, float] | None
    warnings: list[str]
    draw_engraftment: dict  # with return_draws only (not JSON)
    draw_days_saved: dict  # with return_draws only (not JSON)


def _platelets_used(platelets, transfused: bool) -> str | None:
    if platelets is None:
        return None
    return "no: transfused count; own count conditioned below 20 G/L" if transfused else "yes"


def summarise(
    model: Model,
    inp: BoostInputs,
    courses: Courses,
    conditioned: Conditioned,
    prior_description: dict,
    population,
    sampler: dict,
    n_sims: int,
    own: dict,
    outcome: Outcome,
    *,
    n_draws: int,
    wall: dict[str, float],
    return_draws: bool = False,
) -> BoostPrediction:
    """The result mapping from the pieces of one prediction."""
    day = inp.day
    sim_days, status, obs_pred, ev_df = astuple_course(outcome.boosted)
    pred = plan_summary(model, inp.graft, sim_days, status, obs_pred, ev_df, reference=day,
                         horizon=outcome.horizon)  # fmt: skip
    cf = counterfactual(model, outcome.boosted, outcome.no_boost, reference=day)
    out: BoostPrediction = {
        "boost": {
            "day": day,
            "dose_cd34_per_kg": inp.dose,
            "source": inp.source.value,
            "cd34_selected": inp.graft.cd34_selected,
            "cd3_per_kg": inp.cd3,
            "cd3_note": inp.cd3_note,
            "p_graft_failure": p_graft_failure(inp.dose),
            "graft_failure_source": GRAFT_FAILURE_SOURCE,
        },
        "inputs": {
            "product": inp.product,
            "product_course": courses.course,
            "disease": inp.disease,
            "hematotox": inp.hematotox_info,
            "support": {
                "gcsf": inp.gcsf,
                "gcsf_days_before_boost": day - inp.gcsf_start if inp.gcsf else 0.0,
                "gcsf_since_day": inp.gcsf_start if inp.gcsf else None,
                "gcsf_since_assumed": bool(inp.gcsf and inp.gcsf_since is None),
                "gcsf_on_boost_day": inp.gcsf,
                "gcsf_days_after_boost": inp.gcsf_after if inp.gcsf else 0.0,
                "gcsf_dependent": inp.gcsf_dependent,
                "gcsf_note": inp.gcsf_note,
                "plt_transfused": inp.plt_transfused,
                "tpo": inp.tpo,
            },
            "anc": inp.anc,
            "anc_lloq": inp.anc_lloq,
            "anc_below_limit": inp.anc is not None and inp.anc < inp.anc_lloq,
            "platelets": inp.platelets,
            "platelets_used": _platelets_used(inp.platelets, inp.plt_transfused),
            "neutropenia_days": inp.neutropenia_days,
            "donor_chim0": None if inp.donor_chimerism is None else float(inp.donor_chimerism),
            "conditioning_prior": prior_description,
            "graft_parameters": graft_sources(model, population),
            "likelihood_terms": [t.label for t in conditioned.terms],
        },
        "conditioned_on": conditioned.conditioned,
        "unused_analytes": conditioned.unused,
        "replaced_events": courses.replaced,
        "n_draws": int(n_draws),
        "effective_sample_size": float(sampler["effective_sample_size"]),
        "sampler": {
            "method": "SMC, adaptive tempering, systematic resampling, random-walk Metropolis "
            "with delayed acceptance",
            "stages": len(sampler["stages"]),
            "final_stage_ess": sampler["final_stage_ess"],
            "distinct_particles": sampler["distinct_particles"],
            "initial_particles": sampler.get("initial_particles", n_draws),
            "stage_log": sampler["stages"],
            "log_evidence": sampler["log_evidence"],
            "simulations": n_sims,
        },
        "own_counts_at_boost": own,
        "horizon_days_after_boost": inp.horizon_days,
        "wall_time_s": wall,
    }
    ess = float(sampler["effective_sample_size"])
    for key in LINEAGES:
        out[key] = withhold_sparse({k: pred[key][k] for k in SUMMARY_KEYS}, ess)
    out["p_never"] = {key: out[key]["p_never"] for key in LINEAGES}
    # Same shape as "neutrophil"/"platelet": recovery of the patient's own counts from the
    # boost day without the boost (the same draws); and the days the boost saves.
    out["no_boost"] = {
        key: withhold_sparse({k: cf["no_boost"][key][k] for k in SUMMARY_KEYS}, ess)
        for key in LINEAGES
    }
    # Sustained recovery without the boost: above the threshold from then to the horizon
    # (a later dip undoes a first recovery); p_never: not sustained by the horizon.
    out["no_boost_sustained"] = cf["no_boost_sustained"]
    for key in ("neutropenia_days_saved", "thrombocytopenia_days_saved"):
        out[key] = cf[key]
    for key in CHIMERISM_KEYS:
        if key in pred:
            out[key] = pred[key]
    out["cart_at_boost"] = pred.get("cart_at_reference")
    out["gcsf_tail"] = gcsf_tail(model, outcome, day) if inp.gcsf else None
    out["warnings"] = []
    if return_draws:
        out["draw_engraftment"] = _engraftment(model, outcome.boosted, day)
        out["draw_days_saved"] = draw_days_saved(model, outcome, day)
    if pred.get("n_failed"):
        out["warnings"].append(f"{pred['n_failed']} draws failed to solve after the boost")
    return out


def withhold_sparse(summary: dict, ess: float) -> dict:
    """``summary`` with ``n_effective_not_engrafted`` (``ess`` times the share of draws not
    already engrafted) and, below :data:`MIN_EFFECTIVE_NOT_ENGRAFTED` of them, its
    :data:`CONDITIONAL_KEYS` set to None and ``withheld`` saying why."""
    out = dict(summary)
    share = 1.0 - (out.get("p_already") or 0.0)
    n_eff = float(ess * share)
    out["n_effective_not_engrafted"] = n_eff
    out["withheld"] = None
    timed = any(out.get(k) is not None for k in CONDITIONAL_KEYS)
    # A relative tolerance: ESS x share is a product of floats (1000 x (1 - 0.9) is
    # 99.99999999999997), and exactly the minimum is enough.
    if timed and n_eff < MIN_EFFECTIVE_NOT_ENGRAFTED * (1.0 - 1e-9):
        n_rest = int(round(share * out["n_draws"]))
        out["withheld"] = (
            f"median and 90 % interval withheld: {out['p_already']:.2%} of draws are already "
            f"engrafted on the boost day, and the {n_rest} of {out['n_draws']} not yet "
            f"engrafted ({n_eff:.1f} effective) are fewer than the "
            f"{MIN_EFFECTIVE_NOT_ENGRAFTED} effective draws they need"
        )
        for k in CONDITIONAL_KEYS:
            out[k] = None
    return out


def _engraftment(model: Model, course: Course, day: float, ok: np.ndarray | None = None) -> dict:
    """Per-draw engraftment records (one definition) of the draws of ``course`` that
    solved (or of ``ok``), timed from the boost day, with the course's own support."""
    ok = course.status == 0 if ok is None else ok
    gcsf_periods, transfusions = support_from_events(course.events)
    return lineage_engraftment(
        course.days,
        reference=day,
        anc=course.obs[ok, :, model.index("obs", "anc")],
        platelets=course.obs[ok, :, model.index("obs", "platelets")],
        gcsf=gcsf_periods,
        transfusions=transfusions,
    )


def _both(outcome: Outcome) -> tuple[np.ndarray, np.ndarray, Course]:
    """Draws solved with and without the boost, and the no-boost course on the boosted
    course's days."""
    boost, none = outcome.boosted, outcome.no_boost
    both = (boost.status == 0) & (none.status == 0)
    on = Course(boost.days, none.status, none.on(boost.days), none.events)
    return both, boost.days, on


def draw_days_saved(model: Model, outcome: Outcome, day: float) -> dict[str, np.ndarray]:
    """Per draw solved with and without the boost: the days in [boost day, horizon] with
    ANC < 0.5 G/L (platelets < 20 G/L) without the boost minus with it, the quantity
    :func:`carthema.clinical.plans.counterfactual` summarises (for the calibration's PIT)."""
    both, days, none = _both(outcome)
    out = {}
    for _, name, thr, key in DAYS_SAVED:
        j = model.index("obs", name)
        without = days_below(days, none.obs[both][:, :, j], thr, start=day)
        with_ = days_below(days, outcome.boosted.obs[both][:, :, j], thr, start=day)
        out[key] = (without - with_).astype(float)
    return out


def gcsf_tail(model: Model, outcome: Outcome, day: float) -> dict[str, Any]:
    """On G-CSF on the boost day: the share of draws whose ANC never falls to 0.5 G/L or
    below once G-CSF stops (their neutrophil engraftment is the first day off G-CSF, by
    the definition of :mod:`carthema.clinical.endpoints`), with the boost and without it
    (same draws). A draw that never falls without the boost either is above the threshold
    on its own: its "engraftment" on the first day off G-CSF is not the boost's doing.

    Keys: ``first_day_off`` (days after the boost), ``p_no_fall_boost``,
    ``p_no_fall_no_boost``, ``p_no_fall_both`` (over draws solved both ways), and
    ``p_bridged`` (falls without the boost, not with it) with
    ``bridged_first_fall_no_boost_median``, the median day (after the boost) of that
    fall without the boost. Either way the count is the patient's own on the first day
    off G-CSF: the boost's cells cannot make neutrophils within a day."""
    both, days, none = _both(outcome)
    gcsf_periods, _ = support_from_events(outcome.boosted.events)
    ends = [end for start, end in gcsf_periods if start <= day < end]
    first_off = float(np.ceil(max(ends)) - day) if ends else 1.0
    boost_e = _engraftment(model, outcome.boosted, day, both)["neutrophil"]
    none_e = _engraftment(model, none, day, both)["neutrophil"]

    def no_fall(e: Engraftment) -> np.ndarray:
        # The first run starts on the first day off G-CSF only when the count never fell
        # from that day on (a run cannot start on a day below the threshold).
        return ~np.asarray(e.censored) & np.isclose(np.asarray(e.time), first_off)

    b, n = no_fall(boost_e), no_fall(none_e)
    m = max(int(both.sum()), 1)
    # Without the boost, when does a bridged draw first fall (days after the boost)?
    anc0 = none.obs[both][b & ~n][:, :, model.index("obs", "anc")]
    after = (days - day >= first_off)[None, :] & (anc0 <= ANC_ENGRAFT)
    falls = (days - day)[after.argmax(axis=1)][after.any(axis=1)]
    return {
        "threshold": ANC_ENGRAFT,
        "first_day_off": first_off,
        "p_no_fall_boost": float(b.sum() / m),
        "p_no_fall_no_boost": float(n.sum() / m),
        "p_no_fall_both": float((b & n).sum() / m),
        "p_bridged": float((b & ~n).sum() / m),
        "bridged_first_fall_no_boost_median": float(np.median(falls)) if falls.size else None,
        "n_draws": int(both.sum()),
    }
