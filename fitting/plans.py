"""Forward prediction of treatment plans over parameter draws, and the engraftment window.

A plan is "no boost" or a stem-cell boost on a day with a CD34+ dose (autologous or
allogeneic, CD34-selected or not). For each plan every parameter draw (posterior draws
of a fitted patient, or population-prior draws for a patient with little data) is
simulated with the numba population solver, and the engraftment metrics of
:mod:`carthema.fitting.engraftment` summarise the predictive distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..models.compiled import numba_model
from ..models.events import build_events
from ..models.model import Model
from ..models.numba_backend import METHODS
from ..models.scenarios import with_boost
from .engraftment import (
    PLT_ENGRAFT,
    PLT_SEVERE,
    anc_recovery_without_gcsf,
    days_below,
    neutrophil_engraftment,
    platelet_engraftment,
)

#: Predicted CAR-T level below which persistence is considered lost (copies/ug DNA),
#: the consolidative-transplant signal of Jiang et al. 2020.
CART_LOSS = 30.0
#: B-cell count taken as B-cell recovery (cells/uL; about 10% of normal).
B_RECOVERY = 25.0
#: Reviews recommend a consolidative transplant within about 90 days of CAR-T.
TRANSPLANT_DAY_LIMIT = 90.0


@dataclass(frozen=True)
class Plan:
    """A candidate plan. ``day`` None means no boost."""

    day: float | None = None
    dose: float = 3e6
    source: str = "allogeneic"
    selected: bool = True
    cd3_per_kg: float | None = None

    @property
    def label(self) -> str:
        if self.day is None:
            return "no boost"
        sel = "selected" if self.selected else "unselected"
        return f"{self.source} {sel} {self.dose:.3g}/kg on day {self.day:g}"


def _periods(events: pd.DataFrame, kind: str) -> list[tuple[float, float]]:
    rows = events[events["kind"] == kind]
    return [
        (float(d), float(d) + float(n)) for d, n in zip(rows["day"], rows["duration"], strict=True)
    ]


def simulate_plan(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    plan: Plan,
    *,
    horizon: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Daily observables of every draw under ``plan``.

    Returns (days, status (n,), obs (n, days, n_obs), the plan's events table).
    """
    ev_df = events
    if plan.day is not None:
        ev_df = with_boost(
            events,
            plan.day,
            plan.dose,
            source=plan.source,
            cd34_selected=plan.selected,
            cd3_per_kg=plan.cd3_per_kg,
        )
    ev = build_events(model, ev_df, model.default_params())
    start = min(ev.first_time if ev.first_time is not None else 0.0, 0.0)
    days = np.arange(np.floor(start), horizon + 0.5, 1.0)
    mod = numba_model(model)
    status, obs = mod.solve_population(
        np.ascontiguousarray(draws),
        np.zeros(model.n_u),
        days[0],
        days,
        ev.t,
        ev.kind,
        ev.target,
        ev.value,
        ev.scale,
        1e-7,
        1e-9,
        200_000,
        METHODS["auto"],
    )
    return days, status, obs, ev_df


def _quantiles(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"median": np.nan, "q05": np.nan, "q95": np.nan}
    q05, med, q95 = np.quantile(x, [0.05, 0.5, 0.95])
    return {"median": float(med), "q05": float(q05), "q95": float(q95)}


def engraftment_summary(res, within: Sequence[int] = (14, 30)) -> dict[str, float]:
    """Median and 5-95% of the time to a criterion (uncensored draws) and the probability
    of meeting it within each of ``within`` days; ``p_never`` is the censored fraction."""
    q = _quantiles(res.time)
    out = {"median_days": q["median"], "q05": q["q05"], "q95": q["q95"]}
    # Draws that already meet the criterion on the reference day (time 0).
    out["p_already"] = float(np.mean(res.time == 0.0))
    for w in within:
        out[f"p_within_{w}d"] = float(np.mean(res.time <= w))
    out["p_never"] = float(np.mean(res.censored))
    return out


def predict_plan(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    plan: Plan,
    *,
    reference: float | None = None,
    horizon: float | None = None,
) -> dict:
    """Predictive summary of one plan over parameter draws (natural scale, (n, n_p)).

    Times are counted from the boost day (or ``reference``, default day 0, for no
    boost). ``horizon`` (days since CAR-T) defaults to 120 days after the reference.
    """
    ref = plan.day if plan.day is not None else (0.0 if reference is None else reference)
    horizon = ref + 120.0 if horizon is None else horizon
    days, status, obs, ev_df = simulate_plan(model, draws, events, plan, horizon=horizon)
    ok = status == 0
    o = {name: obs[ok, :, model.index("obs", name)] for name in model.obs_names}
    gcsf = _periods(ev_df, "gcsf")
    transfusions = ev_df.loc[ev_df["kind"] == "platelet_transfusion", "day"].astype(float)
    out: dict = {
        **asdict(plan),
        "label": plan.label,
        "reference_day": ref,
        "horizon_day": horizon,
        "n_draws": int(draws.shape[0]),
        "n_failed": int((~ok).sum()),
    }
    if "anc" in o:
        out["neutrophil"] = engraftment_summary(
            neutrophil_engraftment(days, o["anc"], reference=ref)
        )
        out["anc_gt_1"] = engraftment_summary(
            anc_recovery_without_gcsf(days, o["anc"], reference=ref, gcsf=gcsf)
        )
        out["days_anc_lt_0.5"] = _quantiles(
            days_below(days, o["anc"], 0.5, start=ref).astype(float)
        )
    if "platelets" in o:
        out["platelet"] = engraftment_summary(
            platelet_engraftment(
                days, o["platelets"], reference=ref, transfusions=list(transfusions)
            )
        )
        for thr in (PLT_SEVERE, PLT_ENGRAFT):
            out[f"days_plt_lt_{thr:g}"] = _quantiles(
                days_below(days, o["platelets"], thr, start=ref).astype(float)
            )
    if "chimerism_cd15" in o and plan.day is not None and plan.source == "allogeneic":
        at = days == ref + 30.0
        if at.any():
            out["chimerism_day30"] = _quantiles(o["chimerism_cd15"][:, at][:, 0])
    if "cart_copies" in o:
        at = days == ref
        out["cart_at_reference"] = _quantiles(o["cart_copies"][:, at][:, 0])
    return out


def transplant_signals(
    model: Model, draws: np.ndarray, events: pd.DataFrame, horizon: float = 180.0
) -> dict:
    """Consolidative-transplant signals without a boost: predicted day of CAR-T loss
    (below :data:`CART_LOSS` copies/ug after the peak) and of B-cell recovery (above
    :data:`B_RECOVERY` cells/uL after aplasia), with the probability that each happens
    before the day-90 limit."""
    days, status, obs, _ = simulate_plan(model, draws, events, Plan(), horizon=horizon)
    ok = status == 0
    out: dict = {"day_limit": TRANSPLANT_DAY_LIMIT}
    if "cart_copies" in model.obs_names:
        c = obs[ok, :, model.index("obs", "cart_copies")]
        after_peak = np.arange(days.size)[None, :] > c.argmax(axis=1)[:, None]
        loss = _first_day(days, (c < CART_LOSS) & after_peak)
        out["cart_loss"] = {**_quantiles(loss), **_p_before(loss)}
    if "b_cells" in model.obs_names:
        b = obs[ok, :, model.index("obs", "b_cells")]
        after_nadir = np.arange(days.size)[None, :] > b.argmin(axis=1)[:, None]
        rec = _first_day(days, (b > B_RECOVERY) & after_nadir)
        out["b_cell_recovery"] = {**_quantiles(rec), **_p_before(rec)}
    return out


def _first_day(days: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask.any(axis=1), days[mask.argmax(axis=1)], np.nan)


def _p_before(day: np.ndarray) -> dict[str, float]:
    return {
        f"p_before_day{TRANSPLANT_DAY_LIMIT:g}": float(np.mean(day < TRANSPLANT_DAY_LIMIT)),
        "p_never": float(np.mean(np.isnan(day))),
    }


#: Share of draws with neutrophils already engrafted on the boost day above which the day
#: is reported as "already recovered" and left out of the window.
ALREADY_RECOVERED = 0.5


def scan_window(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    boost_days: Sequence[float],
    *,
    dose: float = 3e6,
    source: str = "allogeneic",
    selected: bool = True,
    threshold: float = 0.8,
    cart_limit: float = 1000.0,
    within: int = 30,
) -> tuple[pd.DataFrame, dict]:
    """Predict a boost on each candidate day; the window is the range of days on which
    P(neutrophil engraftment within ``within`` days) >= ``threshold`` while the median
    predicted CAR-T level on the boost day is below ``cart_limit`` copies/ug and
    neutrophils have not already recovered (in at least :data:`ALREADY_RECOVERED` of
    the draws) without it.

    Returns one row per day and a summary with the window (first/last day, or None).
    """
    rows = []
    for d in boost_days:
        res = predict_plan(
            model, draws, events, Plan(day=float(d), dose=dose, source=source, selected=selected)
        )
        row = {"boost_day": float(d), "dose": dose, "source": source, "selected": selected}
        for key in ("neutrophil", "platelet", "anc_gt_1"):
            if key in res:
                row.update({f"{key}_{k}": v for k, v in res[key].items()})
        for key in ("days_anc_lt_0.5", "days_plt_lt_20", "chimerism_day30", "cart_at_reference"):
            if key in res:
                row[f"{key}_median"] = res[key]["median"]
        rows.append(row)
    table = pd.DataFrame(rows)
    p = table.get(f"neutrophil_p_within_{within}d", pd.Series(np.nan, index=table.index))
    cart = table.get("cart_at_reference_median", pd.Series(0.0, index=table.index))
    # A day on which neutrophils have already recovered in most draws is no window: the
    # boost would not be what brings the counts back.
    already = table.get("neutrophil_p_already", pd.Series(0.0, index=table.index))
    table["already_recovered"] = already.fillna(0.0) >= ALREADY_RECOVERED
    table["in_window"] = (
        (p >= threshold) & (cart.fillna(0.0) < cart_limit) & ~table["already_recovered"]
    )
    inside = table.loc[table["in_window"], "boost_day"]
    summary = {
        "threshold": threshold,
        "within_days": within,
        "cart_limit": cart_limit,
        "window_first_day": float(inside.min()) if len(inside) else None,
        "window_last_day": float(inside.max()) if len(inside) else None,
        "n_days_in_window": int(len(inside)),
        "first_day_already_recovered": (
            float(table.loc[table["already_recovered"], "boost_day"].min())
            if table["already_recovered"].any()
            else None
        ),
        # The earliest qualifying day shortens the time spent cytopenic.
        "recommended_day": float(inside.min()) if len(inside) else None,
    }
    if len(inside):
        rec = table.loc[table["boost_day"] == inside.min()].iloc[0]
        summary["recommended_p_engraftment"] = float(rec[f"neutrophil_p_within_{within}d"])
    return table, summary


def plain_summary(summary: dict, signals: dict | None = None) -> list[str]:
    """Sentences a physician can read."""
    lines = []
    if summary.get("first_day_already_recovered") is not None:
        lines.append(
            f"From about day {summary['first_day_already_recovered']:g} neutrophils have "
            "already recovered without a boost in most posterior draws: those days are not "
            "part of the window."
        )
    if summary["window_first_day"] is None:
        lines.append(
            f"No boost day in the scanned range reaches a {summary['threshold']:.0%} chance of "
            f"neutrophil engraftment within {summary['within_days']} days with CAR-T below "
            f"{summary['cart_limit']:g} copies/ug."
        )
    else:
        lines.append(
            f"A boost between day {summary['window_first_day']:g} and day "
            f"{summary['window_last_day']:g} after CAR-T gives at least a "
            f"{summary['threshold']:.0%} predicted chance of neutrophil engraftment within "
            f"{summary['within_days']} days, with CAR-T below {summary['cart_limit']:g} "
            f"copies/ug on the boost day. The earliest such day, {summary['recommended_day']:g}, "
            f"gives {summary['recommended_p_engraftment']:.0%}."
        )
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


def recovery_without_boost(
    model: Model, draws: np.ndarray, events: pd.DataFrame, *, horizon: float
) -> dict:
    """Engraftment without any boost, in days since CAR-T: the first sustained recovery
    (clinical definitions) after the count has first fallen below its threshold.

    Per count ("neutrophil", "platelet"): median and 5-95 % day, ``p_never`` (no
    recovery by ``horizon``: censored) and ``p_not_cytopenic`` (never fell below).
    """
    days, status, obs, ev_df = simulate_plan(model, draws, events, Plan(), horizon=horizon)
    ok = status == 0
    transfusions = list(ev_df.loc[ev_df["kind"] == "platelet_transfusion", "day"].astype(float))
    out: dict = {"horizon_day": horizon}
    for key, name, thr in (("neutrophil", "anc", 0.5), ("platelet", "platelets", PLT_ENGRAFT)):
        if name not in model.obs_names:
            continue
        x = obs[ok, :, model.index("obs", name)]
        fell = np.cumsum(x < thr, axis=1) > 0
        # Before the first dip the count cannot "engraft": mask it as zero.
        masked = np.where(fell, x, 0.0)
        if key == "neutrophil":
            e = neutrophil_engraftment(days, masked, reference=float(days[0]))
        else:
            e = platelet_engraftment(
                days, masked, reference=float(days[0]), transfusions=transfusions
            )
        cyto = fell.any(axis=1)
        out[key] = {
            **_quantiles(np.where(cyto, e.day, np.nan)),
            "p_never": float(np.mean(e.censored & cyto)),
            "p_not_cytopenic": float(np.mean(~cyto)),
        }
    return out


def no_boost_lines(baseline: dict, horizon: float) -> list[str]:
    """What the counts do without any boost (days since CAR-T)."""
    lines = []
    for key, what in (("neutrophil", "Neutrophils"), ("platelet", "Platelets")):
        r = baseline.get(key)
        if r is None:
            continue
        if r["p_not_cytopenic"] >= 0.5:
            lines.append(
                f"Without a boost: {what.lower()} are predicted not to fall below the "
                f"engraftment threshold at all in {r['p_not_cytopenic']:.0%} of draws."
            )
        elif r["p_never"] >= 0.5:
            lines.append(
                f"Without a boost: {what.lower()} are predicted not to engraft by day "
                f"{horizon:g} in {r['p_never']:.0%} of posterior draws."
            )
        else:
            lines.append(
                f"Without a boost: {what.lower()} are predicted to recover on day "
                f"{r['median']:.0f} after CAR-T (90% interval {r['q05']:.0f}-"
                f"{r['q95']:.0f}; not by day {horizon:g} in {r['p_never']:.0%} of draws). "
                "A boost after that day adds little."
            )
    return lines


def plot_window(
    table: pd.DataFrame, summary: dict, path, *, bands: dict | None = None, within: int = 30
):
    """Probability of neutrophil engraftment within ``within`` days against boost day,
    with the window shaded; optionally a second row with predicted ANC and platelet bands
    for the recommended day (``bands``: {"days", "anc": (q05, q50, q95), "platelets": ...}).
    """
    import matplotlib.pyplot as plt

    from ..models.plotting import log_axis

    fig = plt.figure(figsize=(11, 8.4 if bands else 4.2))
    ax = fig.add_subplot(2 if bands else 1, 1, 1)
    d = table["boost_day"]
    ax.plot(
        d,
        table[f"neutrophil_p_within_{within}d"],
        "o-",
        color="C0",
        label=f"neutrophils > 0.5 G/L within {within} d",
    )
    if f"platelet_p_within_{within}d" in table:
        ax.plot(
            d,
            table[f"platelet_p_within_{within}d"],
            "s--",
            color="C1",
            label=f"platelets > 20 G/L within {within} d",
        )
    ax.axhline(summary["threshold"], color="0.4", ls=":", lw=1, label="threshold")
    if "already_recovered" in table and table["already_recovered"].any():
        done = table.loc[table["already_recovered"], "boost_day"]
        ax.axvspan(
            done.min() - 0.5,
            done.max() + 0.5,
            color="0.5",
            alpha=0.15,
            label="neutrophils already recovered",
        )
    if summary["window_first_day"] is not None:
        ax.axvspan(
            summary["window_first_day"] - 0.5,
            summary["window_last_day"] + 0.5,
            color="C2",
            alpha=0.15,
            label="window",
        )
        ax.axvline(summary["recommended_day"], color="C2", lw=1.5)
    ax.set_xlabel("boost day (days since CAR-T)")
    ax.set_ylabel("predicted probability")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    for k, name in enumerate(("anc", "platelets") if bands else ()):
        a = fig.add_subplot(2, 2, 3 + k)
        lo, mid, hi = bands[name]
        a.fill_between(bands["days"], lo, hi, color="C0", alpha=0.25, label="90% band")
        a.plot(bands["days"], mid, color="C0", label="median")
        a.axhline(0.5 if name == "anc" else 20.0, color="0.4", ls="--", lw=0.8)
        a.axvline(summary["recommended_day"], color="C2", lw=1)
        log_axis(a)
        a.set_title(f"{name} (G/L), boost on day {summary['recommended_day']:g}")
        a.set_xlabel("days since CAR-T")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plan_bands(
    model: Model, draws: np.ndarray, events: pd.DataFrame, plan: Plan, *, horizon: float
) -> dict:
    """Daily 5/50/95% predictive bands of ANC and platelets under ``plan``."""
    days, status, obs, _ = simulate_plan(model, draws, events, plan, horizon=horizon)
    out: dict = {"days": days}
    for name in ("anc", "platelets"):
        if name in model.obs_names:
            x = obs[status == 0, :, model.index("obs", name)]
            out[name] = tuple(np.quantile(x, [0.05, 0.5, 0.95], axis=0))
    return out


def window_job(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    boost_days: Sequence[float],
    out_dir,
    *,
    dose: float = 3e6,
    source: str = "allogeneic",
    selected: bool = True,
    threshold: float = 0.8,
    cart_limit: float = 1000.0,
) -> dict:
    """Scan boost days and write window.csv, window.json and window.png to ``out_dir``.

    Returns the JSON summary (window, transplant signals, plain-language lines, paths).
    """
    import json
    from pathlib import Path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, summary = scan_window(
        model,
        draws,
        events,
        boost_days,
        dose=dose,
        source=source,
        selected=selected,
        threshold=threshold,
        cart_limit=cart_limit,
    )
    signals = transplant_signals(model, draws, events)
    last = float(max(boost_days))
    baseline = recovery_without_boost(model, draws, events, horizon=last + 120.0)
    bands = None
    if summary["recommended_day"] is not None:
        day = summary["recommended_day"]
        bands = plan_bands(
            model,
            draws,
            events,
            Plan(day=day, dose=dose, source=source, selected=selected),
            horizon=day + 90.0,
        )
    table.to_csv(out_dir / "window.csv", index=False)
    plot_window(table, summary, out_dir / "window.png", bands=bands)
    result = {
        "plan": {
            "dose_cd34_per_kg": dose,
            "source": source,
            "cd34_selected": selected,
            "boost_days": [float(d) for d in boost_days],
        },
        "window": summary,
        "transplant_signals": signals,
        "no_boost": baseline,
        "summary_lines": [
            *no_boost_lines(baseline, last + 120.0),
            *plain_summary(summary, signals),
        ],
        "n_draws": int(draws.shape[0]),
        "files": {"table": str(out_dir / "window.csv"), "plot": str(out_dir / "window.png")},
    }
    (out_dir / "window.json").write_text(json.dumps(result, indent=2, default=float))
    return result
