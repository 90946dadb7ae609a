"""Plot of a fit: each observed analyte with posterior predictive median and bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .predict import predictive_bands

#: y-axis on a log scale when an analyte's values span more than this many decades.
LOG_DECADES = 1.5
_LABEL = {
    "cart_copies": "CAR-T transgene (copies/ug DNA)",
    "b_cells": "B cells (cells/uL)",
    "marrow_blasts": "marrow blasts (%)",
    "anc": "ANC (G/L)",
    "platelets": "platelets (G/L)",
    "chimerism_cd15": "myeloid donor chimerism (%)",
}
_EVENT_STYLE = {
    "cart_infusion": ("tab:red", "CAR-T"),
    "stem_cell_boost": ("tab:green", "stem-cell boost"),
}


def plot_fit(result, path: str | Path | None = None, *, n_draws: int = 200, seed: int = 0):
    """Figure with one panel per observed analyte.

    Posterior predictive median (line), 50 % and 90 % bands (shaded), observations
    (filled dots) and below-limit observations as open markers at their limit. A panel
    uses a log y-axis when the analyte spans more than :data:`LOG_DECADES` decades.
    Writes a PNG when ``path`` is given; returns the figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fm = result.fit_model
    data = fm.data
    rows = data.rows
    t_end = float(max(data.times.max(), 0.0))
    t = np.linspace(data.t0, t_end + 0.05 * (t_end - data.t0), 300)
    t = np.unique(np.concatenate([t, data.times]))
    bands = predictive_bands(fm, result.idata, t, n_draws=n_draws, seed=seed)
    analytes = [a for a in data.observables if a in bands]
    n = len(analytes)
    ncol = 2 if n > 1 else 1
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, a in zip(axes.ravel(), analytes, strict=False):
        b = bands[a]
        ax.fill_between(b["t"], b["q05"], b["q95"], color="tab:blue", alpha=0.18, lw=0)
        ax.fill_between(b["t"], b["q25"], b["q75"], color="tab:blue", alpha=0.35, lw=0)
        ax.plot(b["t"], b["median"], color="tab:blue", lw=1.5, label="posterior predictive")
        r = rows[rows["observable"] == a]
        q = r[~r["censored"]]
        c = r[r["censored"]]
        ax.plot(q["day"], q["value"], "o", color="black", ms=4, label="observed")
        if len(c):
            ax.plot(
                c["day"],
                c["limit"],
                "o",
                mfc="none",
                mec="black",
                ms=5,
                label="below limit (at LLOQ)",
            )
        values = np.concatenate(
            [q["value"].to_numpy(float), c["limit"].to_numpy(float), b["q95"], b["median"]]
        )
        pos = values[np.isfinite(values) & (values > 0)]
        if pos.size and np.log10(pos.max() / pos.min()) > LOG_DECADES and a != "chimerism_cd15":
            ax.set_yscale("log")
            pts = np.concatenate([q["value"].to_numpy(float), c["limit"].to_numpy(float)])
            pts = pts[np.isfinite(pts) & (pts > 0)]
            lo = pts.min() / 20.0 if pts.size else pos.max() * 1e-6
            ax.set_ylim(bottom=max(lo, pos.max() * 1e-8))
        ev = result.events_table
        if ev is not None and len(ev):
            for kind, (color, label) in _EVENT_STYLE.items():
                days = sorted(set(ev.loc[ev["kind"] == kind, "day"].astype(float)))
                for i, d in enumerate(days):
                    ax.axvline(d, color=color, lw=0.8, ls="--", label=label if i == 0 else None)
        ax.set_title(_LABEL.get(a, a), fontsize=10)
        ax.set_xlabel("day since CAR-T")
        ax.grid(alpha=0.3)
    if n:
        axes.ravel()[0].legend(fontsize=7, loc="best")
    fig.suptitle(
        f"patient {data.patient}: {result.sampler} fit of the '{fm.model.name}' model "
        "(median, 50 % and 90 % posterior predictive bands)",
        fontsize=10,
    )
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig
