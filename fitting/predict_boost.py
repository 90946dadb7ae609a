"""Predicting a stem-cell boost for a patient with little data.

Draws parameters from the population priors, conditions them on whatever is known (at
least the counts on the day of the boost; optionally the patient's events and earlier
observations) by importance weighting with the same residual error model as the fits,
and summarises the predicted engraftment after the boost.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..data.errors import InputError
from ..models.model import Model, get_model
from ..models.scenarios import typical_course
from .plans import Plan, predict_plan, simulate_plan
from .priors import DEFAULT_FREE, RESIDUALS, prior_table

#: Parameters drawn for a boost prediction: the default free set plus the graft and
#: rejection parameters, whose spread carries the uncertainty of the graft itself.
BOOST_FREE: tuple[str, ...] = DEFAULT_FREE["full"] + (
    "graft_hsc",
    "graft_prog",
    "graft_prog_plt",
    "rej_rate",
    "graft_regen",
)
#: Below this effective sample size the conditioning is reported as unreliable.
MIN_ESS = 50.0


def prior_draws(
    model: Model, n: int, rng: np.random.Generator, free: Iterable[str] = BOOST_FREE
) -> np.ndarray:
    """``n`` parameter vectors (natural scale) from the log-normal population priors of
    ``free``; the other parameters stay at their defaults."""
    P = np.tile(model.default_params(), (n, 1))
    for pr in prior_table(model, tuple(free)):
        j = model.index("param", pr.name)
        P[:, j] = np.exp(pr.mu + pr.sd * rng.standard_normal(n))
    return P


def _loglik(pred: np.ndarray, obs: pd.DataFrame) -> np.ndarray:
    """Log-likelihood of each draw (rows of ``pred``: draws x observations)."""
    ll = np.zeros(pred.shape[0])
    for k, row in enumerate(obs.itertuples(index=False)):
        res = RESIDUALS[row.analyte]
        if res.scale != "log":
            raise InputError(
                f"conditioning on {row.analyte} is not supported",
                column="analyte",
                fix="condition on counts or CAR-T copies",
            )
        mu = np.log(np.maximum(pred[:, k], 1e-300))
        if bool(row.blq):
            ll += norm.logcdf((np.log(row.lloq) - mu) / res.typical_sd)
        else:
            ll += norm.logpdf((np.log(row.value) - mu) / res.typical_sd) - np.log(res.typical_sd)
    return ll


def _systematic_resample(w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = w.size
    positions = (rng.random() + np.arange(n)) / n
    return np.minimum(np.searchsorted(np.cumsum(w), positions), n - 1)


def predict_boost(
    day: float,
    dose: float,
    source: str = "allogeneic",
    *,
    selected: bool = True,
    anc: float | None = None,
    platelets: float | None = None,
    events: pd.DataFrame | None = None,
    observations: pd.DataFrame | None = None,
    n_draws: int = 4000,
    seed: int = 0,
    horizon_days: float = 120.0,
) -> dict:
    """Predicted engraftment after a boost on ``day`` (days since CAR-T) of ``dose``
    CD34+ cells/kg, conditioned on the ANC and platelet counts (G/L) on that day and on
    any earlier observations.

    Returns a JSON-ready dict with, under "neutrophil", "platelet" and "anc_gt_1" (the
    one definition of :mod:`carthema.fitting.engraftment`): ``p_already`` (already
    engrafted on the boost day) and, from the Kaplan-Meier estimate over the other draws
    censored at the horizon, ``median_days``, ``q05``, ``q95`` (days from the boost; None
    when beyond the horizon), ``p_within_14d``, ``p_within_30d`` and ``p_never`` (no
    engraftment within the horizon), and ``n_draws``; plus the conditioning diagnostics.
    """
    if source not in ("autologous", "allogeneic"):
        raise InputError(
            f"unknown graft source '{source}'", column="source", fix="use autologous or allogeneic"
        )
    if not (np.isfinite(dose) and dose > 0):
        raise InputError(
            f"CD34+ dose must be a positive number of cells/kg, got {dose}",
            column="dose",
            fix="e.g. --dose 3.1e6",
        )
    model = get_model("full")
    rng = np.random.default_rng(seed)
    ev = events if events is not None else typical_course(patient="patient")
    # The boost being predicted replaces any boost the table already has from that day on.
    later = (ev["kind"] == "stem_cell_boost") & (ev["day"] >= day)
    replaced = [f"stem_cell_boost on day {d:g}" for d in ev.loc[later, "day"]]
    ev = ev[~later]
    cond = (
        observations.copy()
        if observations is not None
        else pd.DataFrame(columns=["day", "analyte", "value", "lloq", "blq"])
    )
    extra = [("anc", anc), ("platelets", platelets)]
    rows = [
        {"day": float(day), "analyte": a, "value": float(v), "lloq": np.nan, "blq": False}
        for a, v in extra
        if v is not None
    ]
    if any(not (np.isfinite(r["value"]) and r["value"] > 0) for r in rows):
        raise InputError(
            "counts on the boost day must be positive numbers (G/L)",
            column="anc/plt",
            fix="e.g. --anc 0.3 --plt 15",
        )
    if rows:
        # From records: concat with all-NA columns changes pandas' dtype rules.
        records = cond.to_dict("records") + [{c: r.get(c) for c in cond.columns} for r in rows]
        cond = pd.DataFrame.from_records(records, columns=cond.columns)
    cond = cond[cond["analyte"].isin(model.obs_names) & (cond["day"] <= day)]
    unused = (
        sorted(set(observations["analyte"]) - set(model.obs_names))
        if (observations is not None)
        else []
    )

    draws = prior_draws(model, n_draws, rng)
    ess = float(n_draws)
    if len(cond):
        days, status, obs, _ = simulate_plan(model, draws, ev, Plan(), horizon=float(day))
        idx = np.searchsorted(days, np.round(cond["day"].to_numpy(float)))
        cols = [model.index("obs", a) for a in cond["analyte"]]
        pred = obs[:, idx, cols]
        ll = np.where(status == 0, _loglik(pred, cond), -np.inf)
        w = np.exp(ll - ll.max())
        w /= w.sum()
        ess = float(1.0 / np.sum(w**2))
        draws = draws[_systematic_resample(w, rng)]
    res = predict_plan(
        model,
        draws,
        ev,
        Plan(day=float(day), dose=float(dose), source=source, selected=selected),
        horizon=float(day) + horizon_days,
    )
    out = {
        "boost": {
            "day": float(day),
            "dose_cd34_per_kg": float(dose),
            "source": source,
            "cd34_selected": bool(selected),
        },
        "conditioned_on": cond[["day", "analyte", "value"]].to_dict("records"),
        "unused_analytes": unused,
        "replaced_events": replaced,
        "n_draws": n_draws,
        "effective_sample_size": ess,
        "horizon_days_after_boost": horizon_days,
    }
    for key in ("neutrophil", "platelet", "anc_gt_1"):
        out[key] = {
            k: res[key][k]
            for k in (
                "median_days",
                "q05",
                "q95",
                "p_within_14d",
                "p_within_30d",
                "p_never",
                "p_already",
                "n_draws",
            )
        }
    out["p_never"] = {key: out[key]["p_never"] for key in ("neutrophil", "platelet", "anc_gt_1")}
    if "chimerism_day30" in res:
        out["chimerism_day30"] = res["chimerism_day30"]
    out["cart_at_boost"] = res.get("cart_at_reference")
    out["warnings"] = []
    if ess < MIN_ESS:
        out["warnings"].append(
            f"only {ess:.0f} effective draws match the given counts: the counts are unusual "
            "under the population prior and the prediction is uncertain; fit the patient's "
            "time series instead (carthema fit)"
        )
    return out
