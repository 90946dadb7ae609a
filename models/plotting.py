"""Plots of trajectories (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

#: Observables shown on a log axis because they span decades.
LOG_SCALE = {"cart_copies", "b_cells", "marrow_blasts", "anc", "platelets"}
#: Clinical thresholds drawn as dashed lines (G/L or copies/ug).
THRESHOLDS = {"anc": (0.5, 1.0), "platelets": (20.0, 50.0), "cart_copies": (30.0,)}
#: Panel titles in plain words (the unit is added from the observable); an observable
#: not listed here is titled by its description.
TITLES = {
    "cart_copies": "CAR-T in blood",
    "b_cells": "B cells in blood",
    "marrow_blasts": "Blasts in marrow",
    "anc": "Neutrophils (ANC)",
    "platelets": "Platelets",
    "chimerism_cd15": "Donor neutrophils (CD15 chimerism)",
}


def panel_title(name: str, description: str, unit: str) -> str:
    """ "Neutrophils (ANC), G/L": plain words and the unit, never the snake_case name."""
    words = TITLES.get(name) or (description[:1].upper() + description[1:])
    return f"{words}, {unit}"


def log_axis(ax) -> None:
    """Log y axis with ticks at 1, 2, 5 x 10^k written as plain numbers."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def plot_trajectory(
    traj,
    path: str | Path,
    *,
    observations: pd.DataFrame | None = None,
    title: str | None = None,
) -> Path:
    """One panel per observable, log axes where values span decades; observed points
    (long-form table with day, analyte, value) are overlaid where given. Panels are titled
    in plain words with their unit (:data:`TITLES`), and no axis uses an offset."""
    names = traj.model.obs_names
    ncol = 3 if len(names) > 4 else len(names)
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for ax, name, obs in zip(axes.flat, names, traj.model.observables, strict=False):
        y = traj[name]
        if name in LOG_SCALE:
            floor = max(np.nanmax(y) * 1e-6, 1e-3) if np.isfinite(y).any() else 1e-3
            log_axis(ax)
            y = np.where(y > floor, y, np.nan)
        ax.plot(traj.t, y, color="C0", lw=1.6, label="model")
        for thr in THRESHOLDS.get(name, ()):
            ax.axhline(thr, color="0.5", ls="--", lw=0.8)
        if observations is not None and len(observations):
            # Only the simulated span: earlier history (e.g. prior therapy lines) is not
            # something the simulation speaks to.
            sel = observations[
                (observations["analyte"] == name)
                & (observations["day"] >= traj.t[0])
                & (observations["day"] <= traj.t[-1])
            ]
            if len(sel):
                ax.plot(sel["day"], sel["value"], "o", color="C3", ms=4, label="observed")
        ax.set_title(panel_title(name, obs.description, obs.unit), fontsize=10)
        if name not in LOG_SCALE:
            # Plain values on linear axes: no "+1e3" offset or "1e-5" multiplier above them.
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.set_xlabel("Days since CAR-T infusion")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
