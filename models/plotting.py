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
    (long-form table with day, analyte, value) are overlaid where given."""
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
        ax.set_title(f"{name} ({obs.unit})", fontsize=10)
        ax.set_xlabel("days since CAR-T")
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
