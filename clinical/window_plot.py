"""The window figure: probability of engraftment against boost day with and without a
boost, the window and the excluded days shaded, the days a boost saves, and the course
of ANC and platelets with the patient's measured counts (:func:`plot_window`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from carthema.clinical.endpoints import FOLLOW_UP


def _shade(ax, days: pd.Series, mask: pd.Series, label: str, **style) -> None:
    """Shade each boost day where ``mask`` holds (half a step either side), one legend
    entry for all."""
    d = np.sort(np.asarray(days, dtype=float))
    half = 0.5 * (float(np.min(np.diff(d))) if d.size > 1 else 1.0)
    for k, day in enumerate(np.asarray(days, dtype=float)[np.asarray(mask, dtype=bool)]):
        ax.axvspan(day - half, day + half, label=label if k == 0 else None, lw=0, **style)


def plot_observed(ax, observed: pd.DataFrame | None, name: str) -> None:
    """The patient's measured ``name`` in blood (data-layer columns, canonical units):
    dots, and open circles at the limit for values below it; one legend entry each."""
    if observed is None or not len(observed):
        return
    rows = observed[observed["analyte"] == name]
    if "compartment" in rows:
        rows = rows[rows["compartment"].fillna("blood") == "blood"]
    blq = (
        rows["blq"].fillna(False).astype(bool)
        if "blq" in rows
        else pd.Series(False, index=rows.index)
    )
    seen = rows[~blq]
    if len(seen):
        ax.plot(seen["day"], seen["value"], "o", color="black", ms=4, zorder=5,
                label=f"observed ({len(seen)})")  # fmt: skip
    low = rows[blq]
    if len(low):
        ax.plot(low["day"], low["lloq"], "o", mfc="none", mec="black", ms=5, zorder=5,
                label=f"observed below the limit, at the limit ({len(low)})")  # fmt: skip


def plot_window(
    table: pd.DataFrame,
    summary: dict,
    path,
    *,
    bands: dict | None = None,
    within: int = 30,
    observed: pd.DataFrame | None = None,
    today: float | None = None,
):
    """Probability of engraftment within ``within`` days against boost day, with and
    without a boost (the same draws), the window and the excluded days (most draws
    already recovered, CAR-T above the limit, no benefit) shaded; below it the median
    days of severe cytopenia a boost saves; with ``bands`` a last row of ANC and
    platelets over time: the no-boost course of the same draws (median and 90 % band),
    the boost on the recommended day when there is one, and the patient's ``observed``
    counts (data-layer table, canonical units). ``bands``: {"days", "anc": (q05, q50,
    q95), "platelets": ... (boost; absent without a recommended day), "no_boost":
    {"anc": ..., "platelets": ...}}. ``today`` (days since CAR-T) is marked on every
    panel. Every mark has a legend entry. Writes a PNG to
    ``path`` and returns it; with ``path`` None returns the open figure instead.
    """
    import matplotlib.pyplot as plt

    from carthema.models.plotting import log_axis

    n_rows = 3 if bands else 2
    fig = plt.figure(figsize=(11, 3.6 * n_rows + 0.6))
    grid = fig.add_gridspec(n_rows, 2, height_ratios=[1.4, 1.0, 1.4][:n_rows])
    ax = fig.add_subplot(grid[0, :])
    d = table["boost_day"]
    ax.plot(d, table[f"neutrophil_p_within_{within}d"], "o-", color="C0",
            label=f"neutrophils > 0.5 G/L within {within} d, boost")  # fmt: skip
    if f"no_boost_neutrophil_p_within_{within}d" in table:
        ax.plot(d, table[f"no_boost_neutrophil_p_within_{within}d"], "o:", color="C0",
                mfc="none", label=f"neutrophils > 0.5 G/L within {within} d, no boost")  # fmt: skip
    if f"platelet_p_within_{within}d" in table:
        ax.plot(d, table[f"platelet_p_within_{within}d"], "s--", color="C1",
                label=f"platelets > 20 G/L within {within} d, boost")  # fmt: skip
    if f"no_boost_platelet_p_within_{within}d" in table:
        ax.plot(d, table[f"no_boost_platelet_p_within_{within}d"], "s:", color="C1",
                mfc="none", label=f"platelets > 20 G/L within {within} d, no boost")  # fmt: skip
    if "neutrophil_p_already" in table:
        ax.plot(d, table["neutrophil_p_already"], "^-", color="0.45", ms=4, lw=0.8,
                label="neutrophils already recovered on the boost day")  # fmt: skip
    ax.axhline(summary["threshold"], color="0.4", ls=":", lw=1,
               label=f"threshold {summary['threshold']:.0%}")  # fmt: skip
    if "already_recovered" in table and table["already_recovered"].any():
        _shade(ax, d, table["already_recovered"], "excluded: most draws already recovered",
               color="0.5", alpha=0.15)  # fmt: skip
    if "meets_cart_limit" in table and (~table["meets_cart_limit"]).any():
        _shade(ax, d, ~table["meets_cart_limit"],
               f"excluded: CAR-T above {summary['cart_limit']:g} copies/ug",
               color="C3", alpha=0.12, hatch="//")  # fmt: skip
    if "boost_helps" in table and (~table["boost_helps"]).any():
        _shade(ax, d, ~table["boost_helps"] & ~table.get("already_recovered", False),
               "excluded: boost saves no cytopenic days", color="C4", alpha=0.10)  # fmt: skip
    if summary["window_first_day"] is not None:
        _shade(ax, d, table["in_window"], "window", color="C2", alpha=0.18)
        ax.axvline(summary["recommended_day"], color="C2", lw=1.5,
                   label=f"recommended day {summary['recommended_day']:g}")  # fmt: skip
    ax.set_xlabel("boost day (days since CAR-T)")
    ax.set_ylabel("predicted probability")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax2 = fig.add_subplot(grid[1, :], sharex=ax)
    for key, what, style, colour in (
        ("neutropenia", "ANC < 0.5 G/L", "o-", "C0"),
        ("thrombocytopenia", "platelets < 20 G/L", "s--", "C1"),
    ):
        if f"{key}_days_saved_median" not in table:
            continue
        ax2.plot(d, table[f"{key}_days_saved_median"], style, color=colour,
                 label=f"days with {what} saved (median)")  # fmt: skip
        if f"{key}_days_saved_q05" in table:
            ax2.fill_between(d, table[f"{key}_days_saved_q05"], table[f"{key}_days_saved_q95"],
                             color=colour, alpha=0.12, lw=0,
                             label=f"days with {what} saved (90% interval)")  # fmt: skip
    ax2.axhline(0.0, color="0.4", lw=0.8, label="no benefit")
    if summary["window_first_day"] is not None:
        _shade(ax2, d, table["in_window"], "window", color="C2", alpha=0.18)
    ax2.set_xlabel("boost day (days since CAR-T)")
    follow = summary.get("follow_up_days", FOLLOW_UP)
    ax2.set_ylabel(f"days saved vs no boost\n(boost day to +{follow:g} d)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    day = summary["recommended_day"]
    for k, name in enumerate(("anc", "platelets") if bands else ()):
        a = fig.add_subplot(grid[2, k])
        if name in bands:  # the boost on the recommended day
            lo, mid, hi = bands[name]
            a.fill_between(bands["days"], lo, hi, color="C0", alpha=0.25, label="boost: 90% band")
            a.plot(bands["days"], mid, color="C0", label="boost: median")
        nb = (bands.get("no_boost") or {}).get(name)
        if nb is not None:
            a.fill_between(bands["days"], nb[0], nb[2], color="0.5", alpha=0.15,
                           label="no boost: 90% band")  # fmt: skip
            a.plot(bands["days"], nb[1], color="0.3", ls="--", label="no boost: median")
        a.axhline(0.5 if name == "anc" else 20.0, color="0.4", ls=":", lw=0.8,
                  label="engraftment threshold")  # fmt: skip
        plot_observed(a, observed, name)
        if day is not None:
            a.axvline(day, color="C2", lw=1, label="boost day")
        log_axis(a)
        a.set_title(f"{name} (G/L), boost on day {day:g}" if day is not None
                    else f"{name} (G/L) without a boost (no day in the window)",
                    fontsize=9)  # fmt: skip
        a.set_xlabel("days since CAR-T")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    if today is not None:
        for a in fig.axes:
            a.axvline(today, color="k", ls="-.", lw=1.2, label=f"today (day {today:g})")
            if a.get_legend() is not None:
                a.legend(fontsize=7, **({"loc": "center left", "bbox_to_anchor": (1.01, 0.5)}
                                        if a in (ax, ax2) else {}))  # fmt: skip
    fig.tight_layout()
    if path is None:
        return fig
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
