"""Summaries of simulated draws, with the one definition of engraftment of
:mod:`carthema.clinical.endpoints`: engraftment and sustained recovery of each lineage
(:func:`plan_engraftment`, :func:`sustained_summary`), a plan's predictive summary
(:func:`plan_summary`), donor chimerism (:func:`chimerism_summary`) and the window
decision from a per-day table (:func:`window_decision`). Pure functions of arrays: the
simulations that feed them are :mod:`carthema.clinical.plans`."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from carthema.clinical.endpoints import (
    ALREADY_RECOVERED,
    ANC_ENGRAFT,
    FOLLOW_UP,
    GRAFT_LOST,
    PLT_ENGRAFT,
    PLT_SEVERE,
    STABLE,
    days_below,
    engraftment_summary,
    lineage_engraftment,
    lineage_sustained,
    support_from_events,
)
from carthema.data.boost import GraftSource
from carthema.models.model import Model


def quantiles(x: np.ndarray, empty: float | None = np.nan) -> dict[str, float | None]:
    """Median and 90 % interval (``median``, ``q05``, ``q95``) of the finite values of
    ``x``, in its unit; each is ``empty`` when there are none (NaN for the plan
    summaries, None for predict-boost's JSON-ready result)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"median": empty, "q05": empty, "q95": empty}
    q05, med, q95 = np.quantile(x, [0.05, 0.5, 0.95])
    return {"median": float(med), "q05": float(q05), "q95": float(q95)}


def _counts(model: Model, obs: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
    """ANC and platelet series of the draws that solved (those the model has)."""
    return {
        name: obs[ok, :, model.index("obs", name)]
        for name in ("anc", "platelets")
        if name in model.obs_names
    }


def plan_engraftment(
    model: Model,
    days: np.ndarray,
    status: np.ndarray,
    obs: np.ndarray,
    events: pd.DataFrame,
    *,
    reference: float,
    weights: np.ndarray | None = None,
    stable: int | None = STABLE,
) -> dict[str, dict]:
    """Engraftment summaries ("neutrophil", "anc_gt_1", "platelet") of simulated draws
    with the one definition of :mod:`carthema.clinical.endpoints`: times from
    ``reference``, G-CSF days and platelet-transfusion windows of ``events`` excluded,
    already-recovered draws apart (``p_already``), Kaplan-Meier over the others censored
    at the end of ``days``. Draws whose solve failed are left out. ``stable``: see
    :func:`carthema.clinical.endpoints.engraftment` (:data:`FROM_CART` from day 0)."""
    return _summaries(lineage_engraftment, model, days, status, obs, events, weights=weights,
                      reference=reference, stable=stable)  # fmt: skip


def sustained_summary(
    model: Model,
    days: np.ndarray,
    status: np.ndarray,
    obs: np.ndarray,
    events: pd.DataFrame,
    *,
    reference: float,
) -> dict[str, dict]:
    """Sustained recovery ("neutrophil", "platelet": the first day from which the count
    stays above the threshold, off support, to the end of ``days``;
    :func:`carthema.clinical.endpoints.sustained_recovery`) of simulated draws, summarised
    like :func:`plan_engraftment` (``p_never``: not sustained by the end; ``p_already``:
    never below from ``reference`` on). Draws whose solve failed are left out."""
    return _summaries(lineage_sustained, model, days, status, obs, events, reference=reference)


def _summaries(criteria, model, days, status, obs, events, *, weights=None, **kw) -> dict:
    """``criteria`` (:func:`lineage_engraftment` or :func:`lineage_sustained`) applied to
    the counts of the draws that solved, with the support of ``events``, each lineage
    summarised (optionally weighted)."""
    ok = status == 0
    c = _counts(model, obs, ok)
    gcsf, transfusions = support_from_events(events)
    res = criteria(days, anc=c.get("anc"), platelets=c.get("platelets"), gcsf=gcsf,
                   transfusions=transfusions, **kw)  # fmt: skip
    w = None if weights is None else np.asarray(weights, dtype=float)[ok]
    return {key: engraftment_summary(e, weights=w) for key, e in res.items()}


def plan_summary(model, plan, days, status, obs, ev_df, *, reference, horizon) -> dict:
    """The predictive summary of one plan's simulated draws
    (:func:`carthema.clinical.plans.predict_plan`): the plan, :func:`plan_engraftment`,
    days below the ANC and platelet thresholds, donor chimerism of a new donor's graft
    and the CAR-T level on the reference day."""
    ref = reference
    ok = status == 0
    o = {name: obs[ok, :, model.index("obs", name)] for name in model.obs_names}
    out: dict = {
        **asdict(plan),
        "label": plan.label,
        "reference_day": ref,
        "horizon_day": horizon,
        "n_draws": int(obs.shape[0]),
        "n_failed": int((~ok).sum()),
    }
    out.update(plan_engraftment(model, days, status, obs, ev_df, reference=ref))
    if "anc" in o:
        out["days_anc_lt_0.5"] = quantiles(
            days_below(days, o["anc"], ANC_ENGRAFT, start=ref).astype(float)
        )
    if "platelets" in o:
        for thr in (PLT_SEVERE, PLT_ENGRAFT):
            out[f"days_plt_lt_{thr:g}"] = quantiles(
                days_below(days, o["platelets"], thr, start=ref).astype(float)
            )
    if plan.day is not None and plan.source is GraftSource.ALLOGENEIC:
        out.update(chimerism_summary(model, days, status, obs, reference=ref))
    if "cart_copies" in o:
        at = days == ref
        out["cart_at_reference"] = quantiles(o["cart_copies"][:, at][:, 0])
    return out


def chimerism_summary(
    model: Model, days: np.ndarray, status: np.ndarray, obs: np.ndarray, *, reference: float
) -> dict:
    """Donor chimerism after a new donor's boost on ``reference``: myeloid (CD15+,
    ``chimerism_day30``) and whole blood (all leukocytes, ``chimerism_whole_blood_day30``)
    30 days after it (median, 90 % interval), and the share of draws whose graft is lost
    60 days after it (``p_graft_lost_day60``: donor myeloid chimerism below
    :data:`GRAFT_LOST` %, rejected by the recovering host T cells or failed). Keys the
    model or the follow-up cannot give are left out; failed solves too."""
    ok = status == 0
    out: dict = {}
    if "chimerism_cd15" not in model.obs_names:
        return out
    cd15 = obs[ok, :, model.index("obs", "chimerism_cd15")]
    at = days == reference + 30.0
    if at.any():
        out["chimerism_day30"] = quantiles(cd15[:, at][:, 0])
        if "chimerism_wb" in model.obs_names:  # donor share of all leukocytes (whole blood)
            wb = obs[ok, :, model.index("obs", "chimerism_wb")]
            out["chimerism_whole_blood_day30"] = quantiles(wb[:, at][:, 0])
    at = days == reference + 60.0
    if at.any() and cd15.shape[0]:
        out["p_graft_lost_day60"] = float(np.mean(cd15[:, at][:, 0] < GRAFT_LOST))
    return out


def window_decision(
    table: pd.DataFrame, *, threshold: float = 0.8, cart_limit: float = 1000.0, within: int = 30
) -> tuple[pd.DataFrame, dict]:
    """The window from a per-day table (the columns :func:`scan_window` writes): adds
    ``already_recovered``, ``boost_helps``, ``meets_probability``, ``meets_cart_limit``
    and ``in_window`` (all four criteria of :func:`scan_window`; a missing or undefined
    probability or days-saved value fails its criterion) and returns the summary."""
    table = table.copy()

    def col(name: str, default: float) -> pd.Series:
        if name not in table:
            return pd.Series(default, index=table.index, dtype=float)
        return pd.to_numeric(table[name], errors="coerce").astype(float)

    p = col(f"neutrophil_p_within_{within}d", np.nan)
    cart = col("cart_at_reference_median", 0.0).fillna(0.0)
    already = col("neutrophil_p_already", 0.0).fillna(0.0)
    saved_n = col("neutropenia_days_saved_median", np.nan)
    saved_p = col("thrombocytopenia_days_saved_median", np.nan)
    table["already_recovered"] = already >= ALREADY_RECOVERED
    table["boost_helps"] = (saved_n > 0) | (saved_p > 0)
    table["meets_probability"] = p >= threshold
    table["meets_cart_limit"] = cart < cart_limit
    table["in_window"] = (
        table["boost_helps"]
        & ~table["already_recovered"]
        & table["meets_probability"]
        & table["meets_cart_limit"]
    )
    inside = table.loc[table["in_window"], "boost_day"]

    def first(mask: pd.Series) -> float | None:
        return float(table.loc[mask, "boost_day"].min()) if mask.any() else None

    summary = {
        "threshold": threshold,
        "within_days": within,
        "cart_limit": cart_limit,
        "follow_up_days": FOLLOW_UP,
        "window_first_day": float(inside.min()) if len(inside) else None,
        "window_last_day": float(inside.max()) if len(inside) else None,
        "n_days_in_window": int(len(inside)),
        "first_day_already_recovered": first(table["already_recovered"]),
        "days_no_benefit": [float(d) for d in table.loc[~table["boost_helps"], "boost_day"]],
        "days_over_cart_limit": [
            float(d) for d in table.loc[~table["meets_cart_limit"], "boost_day"]
        ],
        # The earliest qualifying day shortens the time spent cytopenic.
        "recommended_day": float(inside.min()) if len(inside) else None,
    }
    if len(inside):
        rec = table.loc[table["boost_day"] == inside.min()].iloc[0]
        summary["recommended_p_engraftment"] = float(rec[f"neutrophil_p_within_{within}d"])
        for key in ("neutropenia_days_saved_median", "thrombocytopenia_days_saved_median"):
            if key in rec:
                summary[f"recommended_{key}"] = float(rec[key])
        nb = rec.get(f"no_boost_neutrophil_p_within_{within}d")
        summary["recommended_no_boost_p_engraftment"] = (
            None if nb is None or not np.isfinite(nb) else float(nb)
        )
    return table, summary
