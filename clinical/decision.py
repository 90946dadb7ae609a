"""The one line a report and the console open with: the recommendation, or why there is
none.

Three outcomes (issue 20):

- ``Recommendation: boost on day X (P(neutrophil engraftment within 30 d) .., saves N
  days of ANC < 0.5 G/L vs no boost ..)`` when the scanned window holds a day;
- ``Recommendation: no boost needed (...)`` when no scanned day saves any day of severe
  cytopenia against no boost, because the counts are predicted to recover on their own;
- ``No recommendation: ...`` when the model does not describe this patient (a misfit:
  :func:`misfit_reasons`) or no day meets the window's criteria.

A misfit withholds the recommendation whatever the window says: a prediction from a
model that misses the patient's own counts is not a basis for a decision. Everything
else a report says is then phrased as conditional on the model (:func:`conditional`).
"Recovery" is used for the patient's own counts, "engraftment" only for a graft.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

#: Below this KS p-value the PIT values are not uniform: the posterior predictive
#: distribution misses the data (the same cut as
#: :func:`carthema.fitting.evaluation.goodness.pit_line`).
PIT_KS_MIN = 0.01
#: Above this share of observations outside their 90 % predictive interval (want about
#: 10 %) the predictive bands are too narrow for the data.
PIT_OUTSIDE_MAX = 0.3
#: Counts checked against the predictive band at the last observation.
COUNTS = {"anc": "ANC", "platelets": "platelets"}
#: A last count in either tail of this size of its posterior predictive distribution
#: (PIT below it or above 1 - it) is a misfit. Two counts are checked, so a well-fitted
#: patient (uniform PIT) is flagged with probability 1 - (1 - 2 x 0.0125)^2 = 4.9 %; the
#: 90 % band used before flagged 1 - 0.9^2 = 19 % of well-fitted patients.
LAST_TAIL = 0.0125


def _n(v: float) -> str:
    """A count for a sentence: 2 significant digits, no exponent (0.42, 18, 200)."""
    return f"{float(f'{v:.2g}'):g}" if abs(v) < 1e6 else f"{v:.2g}"


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def misfit_reasons(
    meta: Mapping | None,
    summary: pd.DataFrame | None = None,
    residuals: pd.DataFrame | None = None,
) -> list[str]:
    """Why the fitted model does not describe this patient, one short phrase each; empty
    when none applies.

    - a residual SD whose posterior median is above its prior's 90 % upper bound
      (``summary``: the fit's summary.csv);
    - PIT values not uniform (KS p < :data:`PIT_KS_MIN`) or more than
      :data:`PIT_OUTSIDE_MAX` of the observations outside their 90 % predictive interval
      (``meta["pit"]``: fit.json);
    - the last observed ANC or platelet count in a :data:`LAST_TAIL` tail of its
      posterior predictive distribution (``residuals``: the fit's residuals.csv, its
      ``pit`` column; a value below the assay limit is outside when the 90 % interval's
      lower end is above the limit, i.e. the fit gave it less than 5 %; a residuals
      table without ``pit`` is checked against the 90 % interval).
    """
    reasons: list[str] = []
    if summary is not None and len(summary) and "kind" in summary:
        for _, r in summary[summary["kind"] == "residual SD"].iterrows():
            med, hi = r.get("median"), r.get("prior_q95")
            if _finite(med) and _finite(hi) and float(med) > float(hi):
                a = str(r["name"]).removeprefix("sigma_")
                reasons.append(
                    f"the residual SD of {a} ({float(med):.2g}) is above its prior's 90 % "
                    f"bound ({float(hi):.2g})"
                )
    elif meta:
        warn = (meta.get("diagnostics") or {}).get("warnings", [])
        reasons += [w.split(":", 2)[1].strip() for w in warn if str(w).startswith("misfit:")]
    pit = (meta or {}).get("pit") or {}
    if pit.get("n"):
        ks, out = pit.get("ks_p"), pit.get("outside_90")
        if _finite(ks) and float(ks) < PIT_KS_MIN:
            reasons.append(f"the PIT values are not uniform (KS p = {float(ks):.2g})")
        elif _finite(out) and float(out) > PIT_OUTSIDE_MAX:
            reasons.append(
                f"{float(out):.0%} of the observations fall outside their 90 % predictive "
                "interval (want about 10 %)"
            )
    if residuals is not None and len(residuals):
        for analyte, label in COUNTS.items():
            rows = residuals[residuals["analyte"] == analyte]
            if not len(rows):
                continue
            r = rows.sort_values("day").iloc[-1]
            lo, hi = r.get("pi05"), r.get("pi95")
            if not (_finite(lo) and _finite(hi)):
                continue
            cen = bool(r.get("censored", False))
            val = float(r["limit"] if cen else r["observed"])
            pit = r.get("pit")
            band = f"{_n(float(lo))}-{_n(float(hi))} G/L"
            last = f"the last {label} (day {float(r['day']):g}: {'< ' if cen else ''}{val:.3g} G/L)"
            if not cen and _finite(pit):
                if not LAST_TAIL <= float(pit) <= 1.0 - LAST_TAIL:
                    reasons.append(
                        f"{last} is in the outer {LAST_TAIL:.2%} of the fit's predictive "
                        f"distribution (PIT {float(pit):.3f}; 90 % band {band})"
                    )
            elif (cen and val < float(lo)) or (not cen and not float(lo) <= val <= float(hi)):
                reasons.append(f"{last} is outside the fit's 90 % predictive band ({band})")
    return reasons


def _pct(x) -> str:
    return f"{float(x):.0%}" if _finite(x) else "not computed"


def _saved(window: Mapping) -> str:
    """Days of ANC < 0.5 G/L the recommended boost saves against no boost: the median
    and 90 % interval when the result carries ``neutropenia_days_saved``, else the
    median of the window scan, else "not computed"."""
    # The window's block of the recommended day, the result itself (predict-boost), or
    # its window summary.
    for holder in (window.get("recommended") or {}, window, window.get("window") or {}):
        s = holder.get("neutropenia_days_saved") if isinstance(holder, Mapping) else None
        if isinstance(s, Mapping) and _finite(s.get("median")):
            text = f"saves {float(s['median']):.0f} days of ANC < 0.5 G/L vs no boost"
            if _finite(s.get("q05")) and _finite(s.get("q95")):
                text += f", 90 % interval {float(s['q05']):.0f}-{float(s['q95']):.0f}"
            return text
    med = (window.get("window") or {}).get("recommended_neutropenia_days_saved_median")
    if _finite(med):
        return f"saves a median {float(med):.0f} days of ANC < 0.5 G/L vs no boost"
    return "days of ANC < 0.5 G/L saved vs no boost: not computed"


def decision_line(window: Mapping, reasons: list[str] | tuple[str, ...] = ()) -> str:
    """The recommendation in one line from a window result (``window_from_fit``'s
    dict: ``window`` summary, ``today``, ``plan``) and the misfit ``reasons``
    (:func:`misfit_reasons`)."""
    if reasons:
        return (
            "No recommendation: the model does not describe this patient ("
            + "; ".join(reasons)
            + ")."
        )
    w = window.get("window") or {}
    days = (window.get("plan") or {}).get("boost_days") or []
    span = f"day {min(days):g} to day {max(days):g}" if days else "the scanned days"
    day = w.get("recommended_day")
    if day is not None:
        within = w.get("within_days", 30)
        return (
            f"Recommendation: boost on day {float(day):g} (P(neutrophil engraftment within "
            f"{within} d) {_pct(w.get('recommended_p_engraftment'))}, {_saved(window)})."
        )
    no_benefit = set(w.get("days_no_benefit") or [])
    first_rec = w.get("first_day_already_recovered")
    if days and all(d in no_benefit or (first_rec is not None and d >= first_rec) for d in days):
        return (
            f"Recommendation: no boost needed (from {span} no boost day saves a day of "
            "ANC < 0.5 G/L or platelets < 20 G/L against no boost: the counts are "
            "predicted to recover on their own)."
        )
    why = []
    if w.get("days_over_cart_limit"):
        why.append(f"CAR-T above {w.get('cart_limit', 1000):g} copies/ug on "
                   f"{len(w['days_over_cart_limit'])} of {len(days)} days")  # fmt: skip
    why.append(
        f"P(neutrophil engraftment within {w.get('within_days', 30)} d) below "
        f"{_pct(w.get('threshold'))} on the other days"
    )
    return f"No recommendation: no boost day from {span} meets the criteria ({'; '.join(why)})."


def conditional(lines: list[str], reasons: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``lines`` under a first line that says they are model predictions, conditional on
    the model describing this patient (and that it does not, when ``reasons``)."""
    head = (
        "What follows is what the fitted model predicts. The model does not describe this "
        "patient (see above), so these are not predictions for this patient; they show "
        "what the model would need to be right."
        if reasons
        else "What follows is what the fitted model predicts, if it describes this patient."
    )
    return [head, *lines]


def predict_boost_line(res: Mapping) -> str:
    """The first line of ``predict-boost``: the boost's engraftment against the same
    patient without it, from a :func:`carthema.clinical.boost.predict.predict_boost`
    result. The no-boost keys (``no_boost``, ``neutropenia_days_saved``) are rendered
    when the result has them and said to be "not computed" otherwise. Where the
    neutrophil time is withheld (too few effective draws not yet engrafted:
    :func:`carthema.clinical.boost.summary.withhold_sparse`), the neutrophil clause says
    so, with the share already engrafted and ``n_effective_not_engrafted``, in place of
    the probabilities."""
    b = res.get("boost") or {}
    sel = "CD34-selected" if b.get("cd34_selected") else "unselected"
    head = (
        f"Prediction for a boost on day {float(b.get('day', float('nan'))):g} "
        f"({b.get('source', '?')}, {sel}, {float(b.get('dose_cd34_per_kg', float('nan'))):.3g} "
        "CD34+/kg)"
    )
    n = res.get("neutrophil") or {}
    saved = _saved(res).replace("saves a median", "saves a median of")
    if n.get("withheld"):
        return (
            f"{head}: ANC > 0.5 G/L already in {n['p_already']:.2%} of draws on the boost day "
            f"(time to engraftment withheld: {n['n_effective_not_engrafted']:.1f} effective "
            f"draws not yet engrafted); {saved}."
        )
    text = f"{head}: P(ANC > 0.5 G/L within 30 d) {_pct(n.get('p_within_30d'))}"
    nb = res.get("no_boost")
    nb_n = nb.get("neutrophil", nb) if isinstance(nb, Mapping) else None
    if isinstance(nb_n, Mapping) and _finite(nb_n.get("p_within_30d")):
        text += f" (no boost: {_pct(nb_n.get('p_within_30d'))})"
    else:
        text += " (no boost: not computed)"
    return f"{text}; {saved}."


def counterfactual_summary_lines(result: Mapping) -> list[str]:
    """The boost against no boost, in words, from the no-boost keys of a window or
    predict-boost result: days of ANC < 0.5 G/L and of platelets < 20 G/L saved (median,
    90 % interval) and, per lineage, the share of draws that never recover without a
    boost (``no_boost`` -> ``neutrophil`` / ``platelet`` -> ``p_never``). Each missing
    value is "not computed"."""
    rec = result.get("recommended") if isinstance(result.get("recommended"), Mapping) else {}
    holders = [rec, result, result.get("window") or {}]

    def find(key):
        for h in holders:
            if isinstance(h, Mapping) and isinstance(h.get(key), Mapping):
                return h[key]
        return None

    out = []
    for key, what in (
        ("neutropenia_days_saved", "days of ANC < 0.5 G/L"),
        ("thrombocytopenia_days_saved", "days of platelets < 20 G/L"),
    ):
        s = find(key)
        if s is not None and _finite(s.get("median")):
            text = f"{what} saved vs no boost: median {float(s['median']):.0f}"
            if _finite(s.get("q05")) and _finite(s.get("q95")):
                text += f" (90 % interval {float(s['q05']):.0f}-{float(s['q95']):.0f})"
        else:
            text = f"{what} saved vs no boost: not computed"
        out.append(text)
    nb = rec.get("no_boost") or result.get("no_boost")
    nb = nb if isinstance(nb, Mapping) else {}
    for key, what in (("neutrophil", "neutrophils"), ("platelet", "platelets")):
        p = (nb.get(key) or {}).get("p_never") if isinstance(nb.get(key), Mapping) else None
        by = f" by day {float(nb['horizon_day']):g}" if _finite(nb.get("horizon_day")) else ""
        out.append(
            f"without a boost, {what} never recover{by} in {_pct(p)} of draws"
            if _finite(p)
            else f"without a boost, the share of draws in which {what} never recover: not computed"
        )
        # Sustained: above the threshold from then to the horizon (a later dip of a
        # biphasic course undoes a first recovery): the predict-boost key, or the window's
        # baseline entry.
        sus = (rec.get("no_boost_sustained") or result.get("no_boost_sustained")
               or nb.get("sustained") or {})  # fmt: skip
        s = sus.get(key) if isinstance(sus, Mapping) else None
        if isinstance(s, Mapping) and _finite(s.get("p_never")):
            text = f"without a boost, {what} recover for good (sustained{by})"
            if _finite(s.get("median_days")):
                text += f" after a median of {float(s['median_days']):.0f} days"
            text += f"; never sustained{by} in {_pct(s['p_never'])} of draws"
            out.append(text)
    return [s[0].upper() + s[1:] + "." for s in out]
