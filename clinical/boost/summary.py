"""The result of predict-boost: one JSON-ready mapping (:class:`BoostPrediction`) with the
engraftment summaries after the boost, the same draws without it, what the inputs were
understood as and the sampler's diagnostics."""

from __future__ import annotations

from typing import Any, TypedDict

from carthema.clinical.boost.inputs import BoostInputs, Conditioned, Courses
from carthema.clinical.boost.outcome import Outcome
from carthema.clinical.endpoints import WITHIN, lineage_engraftment, support_from_events
from carthema.clinical.plans import astuple_course, counterfactual
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
    neutropenia_days_saved: dict[str, Any]
    thrombocytopenia_days_saved: dict[str, Any]
    chimerism_day30: dict[str, float]
    chimerism_whole_blood_day30: dict[str, float]
    p_graft_lost_day60: float
    cart_at_boost: dict[str, float] | None
    warnings: list[str]
    draw_engraftment: dict  # with return_draws only (not JSON)


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
    for key in LINEAGES:
        out[key] = {k: pred[key][k] for k in SUMMARY_KEYS}
    out["p_never"] = {key: out[key]["p_never"] for key in LINEAGES}
    # Same shape as "neutrophil"/"platelet": recovery of the patient's own counts from the
    # boost day without the boost (the same draws); and the days the boost saves.
    out["no_boost"] = {key: {k: cf["no_boost"][key][k] for k in SUMMARY_KEYS} for key in LINEAGES}
    # Sustained recovery without the boost: above the threshold from then to the horizon
    # (a later dip undoes a first recovery); p_never: not sustained by the horizon.
    out["no_boost_sustained"] = cf["no_boost_sustained"]
    for key in ("neutropenia_days_saved", "thrombocytopenia_days_saved"):
        out[key] = cf[key]
    for key in CHIMERISM_KEYS:
        if key in pred:
            out[key] = pred[key]
    out["cart_at_boost"] = pred.get("cart_at_reference")
    out["warnings"] = []
    if return_draws:
        ok = status == 0
        gcsf_periods, transfusions = support_from_events(ev_df)
        out["draw_engraftment"] = lineage_engraftment(
            sim_days,
            reference=day,
            anc=obs_pred[ok, :, model.index("obs", "anc")],
            platelets=obs_pred[ok, :, model.index("obs", "platelets")],
            gcsf=gcsf_periods,
            transfusions=transfusions,
        )
    if pred.get("n_failed"):
        out["warnings"].append(f"{pred['n_failed']} draws failed to solve after the boost")
    return out
