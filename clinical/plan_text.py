"""The window scan and a boost plan in words: sentences a physician can read
(:func:`plain_summary`), recovery without a boost (:func:`no_boost_lines`) and the boost
against no boost from the same draws (:func:`counterfactual_lines`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from carthema.clinical.endpoints import (
    B_RECOVERY,
    CART_LOSS,
    DAYS_SAVED,
    FOLLOW_UP,
    WITHIN,
)


def _fmt_days(x: float) -> str:
    n = f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
    return f"{n} day" if n == "1" else f"{n} days"


def _on_days(days: Sequence[float]) -> str:
    """ "on day 7" / "on days 7, 14 and 20"."""
    days = sorted(float(d) for d in days)
    runs: list[list[float]] = []
    for d in days:  # consecutive days (one apart) as one range "54-130"
        if runs and d - runs[-1][-1] == 1.0:
            runs[-1].append(d)
        else:
            runs.append([d])
    txt = [f"{r[0]:g}" if len(r) == 1 else f"{r[0]:g}-{r[-1]:g}" for r in runs]
    if len(txt) == 1 and len(runs[0]) > 1:
        return f"on days {txt[0]}"
    if len(txt) == 1:
        return f"on day {txt[0]}"
    return f"on days {', '.join(txt[:-1])} and {txt[-1]}"


def plain_summary(summary: dict, signals: dict | None = None) -> list[str]:
    """Sentences a physician can read, with the no-boost comparison in words."""
    lines = []
    follow = summary.get("follow_up_days", FOLLOW_UP)
    if summary.get("first_day_already_recovered") is not None:
        lines.append(
            f"From about day {summary['first_day_already_recovered']:g} neutrophils have "
            "already recovered without a boost in most posterior draws: those days are not "
            "part of the window."
        )
    if summary.get("days_no_benefit"):
        lines.append(
            f"A boost {_on_days(summary['days_no_benefit'])} saves no days of severe "
            "neutropenia or thrombocytopenia "
            "compared with no boost (median over the same posterior draws): those days are "
            "not part of the window."
        )
    if summary.get("days_over_cart_limit"):
        on = _on_days(summary["days_over_cart_limit"])
        lines.append(
            f"{on[0].upper()}{on[1:]} the predicted CAR-T level is above {summary['cart_limit']:g} "
            "copies/ug (risk of CRS from CD19+ cells in the graft): excluded."
        )
    if summary["window_first_day"] is None:
        lines.append(
            f"No boost day in the scanned range both helps compared with no boost and reaches "
            f"a {summary['threshold']:.0%} chance of neutrophil engraftment within "
            f"{summary['within_days']} days with CAR-T below {summary['cart_limit']:g} "
            "copies/ug and most draws not already recovered."
        )
    else:
        first, last = summary["window_first_day"], summary["window_last_day"]
        when = f"on day {first:g}" if first == last else f"between day {first:g} and day {last:g}"
        line = (
            f"A boost {when} after CAR-T helps compared with no boost and "
            f"gives at least a {summary['threshold']:.0%} predicted chance of neutrophil "
            f"engraftment within {summary['within_days']} days, with CAR-T below "
            f"{summary['cart_limit']:g} copies/ug on the boost day. The earliest such day, "
            f"{summary['recommended_day']:g}, gives {summary['recommended_p_engraftment']:.0%}"
        )
        nb = summary.get("recommended_no_boost_p_engraftment")
        if nb is not None:
            line += f" (without a boost, the same draws: {nb:.0%})"
        saved_n = summary.get("recommended_neutropenia_days_saved_median")
        saved_p = summary.get("recommended_thrombocytopenia_days_saved_median")
        if saved_n is not None and np.isfinite(saved_n):
            line += (
                f"; compared with no boost it saves a median of {_fmt_days(saved_n)} "
                "with ANC < 0.5 G/L"
            )
            if saved_p is not None and np.isfinite(saved_p):
                line += f" and {_fmt_days(saved_p)} with platelets < 20 G/L"
            line += f" in the {follow:g} days after the boost"
        lines.append(line + ".")
    if signals:
        what = {
            "cart_loss": f"CAR-T falls below {CART_LOSS:g} copies/ug",
            "b_cell_recovery": f"B cells recover above {B_RECOVERY:g} cells/uL",
        }
        for key, text in what.items():
            if key not in signals:
                continue
            s = signals[key]
            line = f"Probability that {text} before day 90: {s['p_before_day90']:.0%}"
            if np.isfinite(s["median"]):
                line += (
                    f" (when it happens: around day {s['median']:.0f}, 90% interval "
                    f"{s['q05']:.0f}-{s['q95']:.0f}; never within follow-up in "
                    f"{s['p_never']:.0%} of draws)"
                )
            lines.append(line + ".")
        lines.append(
            "Early CAR-T loss or B-cell recovery signals relapse risk; reviews recommend a "
            "consolidative transplant within about 90 days of CAR-T (Jiang et al. 2020)."
        )
    return lines


def no_boost_lines(baseline: dict, horizon: float) -> list[str]:
    """What the counts do without any boost (days since CAR-T)."""
    lines = []
    for key, what in (("neutrophil", "neutrophils"), ("platelet", "platelets")):
        r = baseline.get(key)
        if r is None:
            continue
        if r["p_already"] is not None and r["p_already"] >= 0.5:
            lines.append(
                f"Without a boost: {what} are predicted never to fall below the recovery "
                f"threshold by day {horizon:g} in {r['p_already']:.0%} of draws."
            )
            continue
        if r["median_days"] is None:
            lines.append(
                f"Without a boost: {what} are predicted not to recover by day {horizon:g} "
                f"in {r['p_never']:.0%} of posterior draws."
            )
            continue
        q95 = f"{r['q95']:.0f}" if r["q95"] is not None else f"beyond day {horizon:g}"
        lines.append(
            f"Without a boost: {what} are predicted to recover on day "
            f"{r['median_days']:.0f} after CAR-T (90% interval {r['q05']:.0f} to {q95}; "
            f"not by day {horizon:g} in {r['p_never']:.0%} of draws). A later dip (the "
            "second phase of a biphasic course) is not counted here; the window's days "
            "saved compare each boost with no boost over the whole follow-up."
        )
    return lines


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def _interval(q: dict) -> str:
    """ "4 days (90 % interval 1 to 9)" from a quantile dict."""
    if q.get("median") is None or not np.isfinite(q["median"]):
        return "undefined (no draw solved with and without the boost)"
    return f"{q['median']:.0f} days (90 % interval {q['q05']:.0f} to {q['q95']:.0f})"


def counterfactual_lines(res: dict | None, follow_up: float) -> list[str]:
    """The boost against no boost from the same draws, in words: recovery of the
    patient's own counts without the boost by 14/30/60 days, P(never) with and without
    it, and the days of severe cytopenia it saves. ``res``: a predict-boost result or
    the window's ``recommended`` block (None: nothing to say)."""
    if not res or "no_boost" not in res:
        return []
    lines = []
    words = {"neutrophil": ("neutrophils", "ANC > 0.5 G/L"),
             "platelet": ("platelets", "platelets > 20 G/L")}  # fmt: skip
    for key, (what, crit) in words.items():
        nb, b = res["no_boost"].get(key), res.get(key)
        if nb is None or b is None:
            continue
        by = ", ".join(f"{_pct(nb.get(f'p_within_{w}d'))} by day {w}" for w in WITHIN)
        lines.append(
            f"Without the boost ({what}, the same draws, from the boost day): recovery of the "
            f"patient's own counts ({crit} for 3 days) {by}; never within {follow_up:g} days "
            f"in {_pct(nb['p_never'])} (with the boost: engraftment never in "
            f"{_pct(b['p_never'])})."
        )
    for _, _, _, key in DAYS_SAVED:
        if key in res:
            what = "ANC < 0.5 G/L" if key.startswith("neutro") else "platelets < 20 G/L"
            lines.append(
                f"Days with {what} the boost saves against no boost (boost day to +"
                f"{follow_up:g} d): {_interval(res[key])}."
            )
    return lines
