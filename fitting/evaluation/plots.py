"""Plots of a fit: the individual posterior predictive of each observed analyte
(``ipred.png``) and the goodness-of-fit panels (``diagnostics.png``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from carthema.fitting.evaluation.predict import predictive_bands

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
    "lymphodepletion": ("tab:purple", "lymphodepletion"),
    "cart_infusion": ("tab:red", "CAR-T"),
    "stem_cell_boost": ("tab:green", "stem-cell boost"),
}
#: Thresholds drawn on count panels (G/L): severe neutropenia and thrombocytopenia.
_THRESHOLD = {"anc": 0.5, "platelets": 20.0}


def plot_fit(result, path: str | Path | None = None, *, n_draws: int = 200, seed: int = 0):
    """The individual posterior predictive of a fit, one panel per observed analyte.

    This patient's posterior predictive median (line), 50 % and 90 % bands (shaded),
    observations (filled dots) and below-limit observations as open markers at their
    limit; 0.5 G/L (ANC) and 20 G/L (platelets) lines; lymphodepletion, CAR-T and boost
    days (dashed lines), G-CSF periods (shaded) and platelet transfusions (ticks). A
    panel uses a log y-axis when the analyte spans more than :data:`LOG_DECADES` decades.
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
            g = ev[ev["kind"] == "gcsf"]
            for i, (d, dur) in enumerate(zip(g["day"], g["duration"], strict=True)):
                dur = float(dur) if dur == dur else 1.0
                ax.axvspan(float(d), float(d) + dur, color="tab:orange", alpha=0.1, lw=0,
                           label="G-CSF" if i == 0 else None)  # fmt: skip
            if a == "platelets":
                tr = ev.loc[ev["kind"] == "platelet_transfusion", "day"].astype(float)
                if len(tr):
                    ax.plot(tr, np.full(len(tr), 0.02), "|", ms=12, mew=1.5,
                            color="tab:orange", transform=ax.get_xaxis_transform(),
                            label="platelet transfusion")  # fmt: skip
        if a in _THRESHOLD:
            ax.axhline(_THRESHOLD[a], color="tab:red", ls=":", lw=1,
                       label=f"{_THRESHOLD[a]:g} G/L")  # fmt: skip
        ax.set_title(_LABEL.get(a, a), fontsize=10)
        ax.set_xlabel("day since CAR-T")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(
        f"Patient {data.patient}: individual posterior predictive ({result.sampler} fit, "
        f"{fm.model.name} model): median, 50 % and 90 % bands",
        fontsize=10,
    )
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def plot_diagnostics(checks, path: str | Path | None = None, *, title: str = ""):
    """Goodness-of-fit panels from :func:`.goodness.predictive_checks`:
    observed vs population prediction (PRED) and vs individual prediction (IPRED), both
    on log axes; residuals on the likelihood scale (log for counts and copies) over time
    and against IPRED; a histogram of the PIT values (flat when the model describes the
    data). Censored observations are open markers at their limit. Writes a PNG when
    ``path`` is given; returns the figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    analytes = list(dict.fromkeys(checks["analyte"]))
    colors = {a: f"C{i % 10}" for i, a in enumerate(analytes)}
    every = checks["limit"].where(checks["censored"], checks["observed"]).to_numpy(float)
    every = every[np.isfinite(every) & (every > 0)]
    # Predictions far below every observation (a PRED of 1e-43 before the CAR-T
    # expansion) are drawn at this floor, so the axes span the data, not 50 decades.
    floor = every.min() / 100.0 if every.size else 1e-6
    for ax, col, label in ((axes[0, 0], "pred", "PRED"), (axes[0, 1], "ipred", "IPRED")):
        lo, hi = np.inf, 0.0
        for a in analytes:
            g = checks[checks["analyte"] == a]
            obs = g["limit"].where(g["censored"], g["observed"]).to_numpy(float)
            x = np.maximum(g[col].to_numpy(float), floor)
            ok = np.isfinite(x) & (x > 0) & np.isfinite(obs) & (obs > 0)
            cen = g["censored"].to_numpy(bool)
            ax.plot(x[ok & ~cen], obs[ok & ~cen], "o", ms=4, color=colors[a], label=a)
            ax.plot(x[ok & cen], obs[ok & cen], "o", ms=5, mfc="none", mec=colors[a])
            if ok.any():
                lo = min(lo, x[ok].min(), obs[ok].min())
                hi = max(hi, x[ok].max(), obs[ok].max())
        if hi > 0 and np.isfinite(lo):
            ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(
            (f"{label} (population)" if col == "pred" else f"{label} (individual)")
            + f"; below {floor:.2g} drawn at {floor:.2g}"
        )
        ax.set_ylabel("observed")
        ax.set_title(f"observed vs {label}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    for ax, xcol, xlabel in (
        (axes[1, 0], "day", "day since CAR-T"),
        (axes[1, 1], "ipred", "IPRED"),
    ):
        for a in analytes:
            g = checks[checks["analyte"] == a]
            ax.plot(g[xcol], g["iwres"], "o", ms=4, color=colors[a], label=a)
        for y, ls in ((0, "-"), (-1.96, "--"), (1.96, "--")):
            ax.axhline(y, color="grey", lw=0.8, ls=ls)
        if xcol == "ipred":
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("IWRES (residual / residual SD, likelihood scale)")
        ax.set_title(f"weighted residuals vs {xlabel} (log scale for counts)", fontsize=10)
        ax.grid(alpha=0.3)
    ax = axes[0, 2]
    pit = checks["pit"].to_numpy(float)
    pit = pit[np.isfinite(pit)]
    ax.hist(pit, bins=10, range=(0, 1), color="tab:blue", alpha=0.7, edgecolor="white")
    if pit.size:
        ax.axhline(pit.size / 10, color="black", lw=1, ls="--", label="uniform")
        ax.legend(fontsize=7)
    ax.set_xlabel("PIT (posterior predictive probability below the observation)")
    ax.set_title("PIT residuals: flat when the model fits", fontsize=10)
    ax = axes[1, 2]
    if pit.size:
        q = np.sort(pit)
        u = (np.arange(1, q.size + 1) - 0.5) / q.size
        ax.plot(u, q, "o", ms=3)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    ax.set_xlabel("uniform quantile")
    ax.set_ylabel("PIT quantile")
    ax.set_title("PIT against uniform", fontsize=10)
    ax.grid(alpha=0.3)
    fig.suptitle(title or "Goodness of fit", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
