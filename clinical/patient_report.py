"""The patient's HTML report of an engraftment window: the decision line, one figure
(the course with and without the boost, today, the window), a compact table, then the
details (whether to trust the fit, the window plot, the fit, the parameters with their
descriptions and units) and the run record. It renders a
:class:`~carthema.models.posterior.Posterior` (the fit's own record, plots and
parameter table where a fit produced it) and the window result of
:func:`carthema.clinical.window.window_from_fit`; the page itself is
:func:`carthema.clinical.report.write_report`."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.clinical.report import Section, cell, number, write_report
from carthema.models.model import Model
from carthema.models.posterior import Posterior

#: Rows the compact window table shows at most (the window's days always; window.csv
#: has every day).
TABLE_ROWS = 16


def _pct(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if not np.isfinite(v) else f"{100 * v:.0f} %"


def window_table_html(table: pd.DataFrame, window: Mapping) -> str:
    """The compact window table: a row every few days (at most :data:`TABLE_ROWS`, and
    every day of the window), percentages, rounded CAR-T copies, Yes/No, only the
    window's days highlighted, and a legend for blanks."""
    w = window.get("window") or {}
    within = w.get("within_days", 30)
    days = table["boost_day"].to_numpy(float)
    inside = table.get("in_window", pd.Series(False, index=table.index)).fillna(False)
    every = max(1, int(np.ceil(len(table) / TABLE_ROWS)))
    keep = (np.arange(len(table)) % every == 0) | inside.to_numpy(bool)
    keep[-1] = True
    cols = [
        ("boost day", lambda r: f"{r['boost_day']:g}"),
        (f"P(ANC > 0.5 within {within} d), boost",
         lambda r: _pct(r.get(f"neutrophil_p_within_{within}d"))),
        ("same, no boost", lambda r: _pct(r.get(f"no_boost_neutrophil_p_within_{within}d"))),
        (f"P(PLT > 20 within {within} d), boost",
         lambda r: _pct(r.get(f"platelet_p_within_{within}d"))),
        ("days ANC < 0.5 saved (median)",
         lambda r: number(r.get("neutropenia_days_saved_median"), 2)),
        ("CAR-T on boost day (copies/ug)",
         lambda r: number(r.get("cart_at_reference_median"), 2)),
        ("already recovered", lambda r: cell(bool(r.get("already_recovered", False)))),
        ("in window", lambda r: cell(bool(r.get("in_window", False)))),
    ]  # fmt: skip
    head = "".join(f"<th>{html.escape(c)}</th>" for c, _ in cols)
    body = []
    for i in np.flatnonzero(keep):
        r = table.iloc[i]
        cls = ' class="win"' if bool(inside.iloc[i]) else ""
        cells = "".join(f"<td>{html.escape(fn(r))}</td>" for _, fn in cols)
        body.append(f"<tr{cls}>{cells}</tr>")
    shown = int(keep.sum())
    caveat = (
        "Model predictions, shown although the model does not describe this patient (see "
        "the first line): no day here is a recommendation. "
        if window.get("misfit_reasons")
        else ""
    )
    which = (
        f"All {shown} scanned days"
        if shown == len(days)
        else f"{shown} of {len(days)} scanned days (every {every}th, and all of the window's)"
    )
    legend = caveat + (
        f"{which}; the window's days highlighted; every day in window.csv. Percentages are "
        "shares of posterior draws. '-': not computed (no draw solved, or the quantity is "
        "undefined for that day). Already recovered: most draws have ANC > 0.5 G/L without "
        "a boost on that day."
    )
    return (
        f'<table id="window-table"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(body)
        + f'</tbody></table><p class="legend">{html.escape(legend)}</p>'
    )


def plot_decision(
    bands: Mapping,
    path: str | Path,
    *,
    today: float,
    window: Mapping,
    observed: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
) -> Path:
    """The report's one figure: ANC and platelets over time without a boost (grey median
    and 90 % band) and with the boost on the recommended day (blue), the patient's
    counts (dots; open circles at the limit for values below it), G-CSF and platelet
    transfusions, the recovery thresholds, today and the window (green)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from carthema.clinical.plans import _plot_observed
    from carthema.models.plotting import log_axis

    w = window.get("window") or {}
    day = w.get("recommended_day")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, name, thr, label in (
        (axes[0], "anc", 0.5, "ANC (G/L)"),
        (axes[1], "platelets", 20.0, "platelets (G/L)"),
    ):
        nb = (bands.get("no_boost") or {}).get(name)
        x = bands["days"]
        if nb is not None:
            ax.fill_between(x, nb[0], nb[2], color="0.5", alpha=0.2, lw=0,
                            label="no boost: 90 % band")  # fmt: skip
            ax.plot(x, nb[1], color="0.3", ls="--", label="no boost: median")
        if name in bands and day is not None:
            lo, mid, hi = bands[name]
            ax.fill_between(x, lo, hi, color="C0", alpha=0.25, lw=0,
                            label=f"boost on day {day:g}: 90 % band")  # fmt: skip
            ax.plot(x, mid, color="C0", label=f"boost on day {day:g}: median")
        ax.axhline(thr, color="C3", ls=":", lw=1, label=f"{thr:g} G/L")
        _plot_observed(ax, observed, name)
        if events is not None and len(events):
            kind = "gcsf" if name == "anc" else "platelet_transfusion"
            ev = events[events["kind"] == kind]
            for k, (_, e) in enumerate(ev.iterrows()):
                if kind == "gcsf":
                    dur = float(e["duration"]) if e["duration"] == e["duration"] else 1.0
                    ax.axvspan(e["day"], e["day"] + dur, color="C1", alpha=0.08, lw=0,
                               label="G-CSF" if k == 0 else None)  # fmt: skip
                else:
                    ax.axvline(e["day"], color="C1", lw=0.6, alpha=0.7,
                               label="platelet transfusion" if k == 0 else None)  # fmt: skip
        if w.get("window_first_day") is not None:
            ax.axvspan(w["window_first_day"] - 0.5, w["window_last_day"] + 0.5, color="C2",
                       alpha=0.15, lw=0, label="window")  # fmt: skip
        ax.axvline(today, color="k", ls="-.", lw=1.2, label=f"today (day {today:g})")
        log_axis(ax)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("days since CAR-T")
        ax.grid(alpha=0.3)
    seen: dict = {}
    for ax in axes:  # one legend for both panels (each threshold once)
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    axes[1].legend(seen.values(), seen.keys(), fontsize=7, loc="center left",
                   bbox_to_anchor=(1.01, 0.5))  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def parameter_table(summary: pd.DataFrame, model: Model) -> pd.DataFrame:
    """Parameters of a fit's summary (``summary.csv``) with their descriptions and units
    from ``model``, prior and posterior medians, 90 % interval, data information, RSE %
    and R-hat (3 decimals)."""
    s = summary
    desc = {q.name: (q.description, q.unit) for q in model.params}
    rows = []
    for _, r in s.iterrows():
        name = str(r["name"])
        text, unit = desc.get(name, ("", str(r.get("unit", ""))))
        if name.startswith("sigma_"):
            text = f"residual SD of {name.removeprefix('sigma_')} ({r.get('kind', '')})"
            unit = str(r.get("unit", ""))
        rhat = r.get("r_hat")
        rows.append(
            {
                "parameter": name,
                "description": text,
                "unit": unit,
                "prior median": number(r.get("prior_median")),
                "posterior median": number(r.get("median")),
                "90 % interval": f"{number(r.get('q05'))} - {number(r.get('q95'))}",
                "data information": number(r.get("information"), 2),
                "RSE %": number(r.get("rse_pct"), 2),
                "R-hat": "-" if rhat is None or rhat != rhat else f"{float(rhat):.3f}",
            }
        )
    return pd.DataFrame(rows)


def write_patient_report(
    post: Posterior,
    window: dict,
    path: str | Path,
    *,
    draws: np.ndarray | None = None,
    events: pd.DataFrame | None = None,
) -> Path:
    """Self-contained HTML page of a window result: the decision line, one figure (the
    course with and without the boost on the recommended day, today, the window; needs
    the posterior ``draws`` and the no-boost ``events`` the scan used), the compact
    table, then details and the run record. What the fit says about itself (trust
    lines, notes, parameter table, its plots) comes from ``post.fit``; draws without a
    fit (the virtual population) have none of these."""
    import json

    from carthema.clinical.decision import counterfactual_summary_lines
    from carthema.clinical.plans import Plan, plan_bands

    files = window["files"]
    today = float(window.get("today") or 0.0)
    w = window["window"]
    plan = window["plan"]
    fit = post.fit
    meta = {} if fit is None else fit.meta
    observed = post.observations
    if observed is not None:
        observed = observed[observed["patient"].astype(str) == post.patient]
    figure = None
    if draws is not None and events is not None:
        day = w.get("recommended_day")
        end = max(today, day or today) + 60.0
        bands = {}
        if day is not None:
            graft = Plan(day, plan["dose_cd34_per_kg"], plan["source"], plan["cd34_selected"],
                         plan.get("cd3_per_kg"), plan.get("mnc_per_kg"))  # fmt: skip
            bands = plan_bands(post.model, draws, events, graft, horizon=end)
        none = plan_bands(post.model, draws, events, Plan(), horizon=end)
        bands.setdefault("days", none["days"])
        bands["no_boost"] = {k: v for k, v in none.items() if k != "days"}
        figure = Path(path).with_name("decision.png")
        plot_decision(bands, figure, today=today, window=window, observed=observed,
                      events=post.events)  # fmt: skip
    table = pd.read_csv(files["table"])
    diag = meta.get("diagnostics", {})

    sections = [
        Section(
            "Whether to trust the fit",
            warnings=list(diag.get("warnings", [])),
            paragraphs=[
                *((meta.get("trust") or [])[1:] or [_diagnostics_line(diag)]),
                *[f"Note: {n}" for n in ([] if fit is None else fit.notes)],
            ],
        ),
        Section(
            "Engraftment window: every scanned day",
            paragraphs=[
                f"Boost of {plan['dose_cd34_per_kg']:.3g} CD34+ cells/kg, {plan['source']}, "
                f"{'CD34-selected' if plan['cd34_selected'] else 'unselected'}; "
                f"{window['n_draws']} posterior draws per candidate day; today is day "
                f"{today:g}. Days are counted from CAR-T day 0; engraftment days from the "
                "boost.",
                *_figure_lines(window),
            ],
            figures=[files["plot"]],
        ),
    ]
    folder = None if fit is None else fit.folder
    ipred = None
    if folder is not None:
        ipred = next((folder / n for n in ("ipred.png", "fit.png") if (folder / n).exists()), None)
    if ipred is not None:
        sections.append(
            Section(
                "Fit to the patient's data (individual posterior predictive)",
                paragraphs=[
                    "Observed values (dots; open circles below the assay limit, at the "
                    "limit) with the individual posterior predictive median and 50 % / 90 % "
                    "bands of this patient's fit."
                ],
                figures=[ipred],
            )
        )
    if fit is not None and fit.summary is not None:
        sections.append(
            Section(
                "Parameters: prior and posterior",
                paragraphs=[
                    "Data information = 1 - posterior SD / prior SD (log scale): near 0 the "
                    "data say little about the parameter (posterior = prior); near 1 they "
                    "pin it down. RSE % = posterior SD / posterior median."
                ],
                tables=[parameter_table(fit.summary, post.model)],
            )
        )
    record = None
    run = files.get("run")
    if run and Path(run).exists():
        record = json.loads(Path(run).read_text(encoding="utf-8"))
    return write_report(
        path,
        f"carthema: patient {post.patient}",
        window["summary_lines"],
        sections,
        decision=window.get("decision"),
        figure=figure,
        table_html=window_table_html(table, window)
        + "".join(
            f'<p class="legend">{html.escape(x)}</p>' for x in counterfactual_summary_lines(window)
        ),
        record=record,
    )


def _diagnostics_line(diag: dict) -> str:
    nan = float("nan")
    if diag.get("method") == "map":
        return f"MAP + Laplace approximation, {diag.get('draws', '?')} draws (no MCMC diagnostics)."
    return (
        f"{diag.get('method', '?')}: {diag.get('chains', '?')} chains x "
        f"{diag.get('draws', '?')} draws; max R-hat {diag.get('max_rhat', nan):.3f}, "
        f"min bulk ESS {diag.get('min_ess_bulk', nan):.0f}, divergences "
        f"{diag.get('divergences', '?')}."
    )


def _figure_lines(window: dict) -> list[str]:
    """What the window figure shows, in words, with the excluded days named."""
    w = window["window"]
    days = ", ".join(f"{d:g}" for d in w.get("days_over_cart_limit", [])) or "none"
    lines = [
        "Top: probability of neutrophil and platelet engraftment within "
        f"{w['within_days']} days of a boost on each candidate day, and of the same draws "
        "without a boost (open markers, dotted). Shaded: the window (green); days excluded "
        f"because the predicted CAR-T level is above {w['cart_limit']:g} copies/ug (red, "
        f"hatched; here: {days}), because most draws have already recovered without a "
        "boost (grey), or "
        "because a boost saves no cytopenic days (purple). Middle: median days with ANC "
        "< 0.5 G/L and platelets < 20 G/L a boost saves against no boost. Bottom: ANC and "
        "platelets over time without a boost (grey median and 90 % band), with the boost "
        "on the recommended day when there is one (blue), and the patient's measured "
        "counts (black dots; open circles: below the limit, drawn at the limit)."
    ]
    removed = window.get("replaced_events") or []
    if removed:
        lines.append(
            "The patient received " + "; ".join(removed) + ": measured counts after it "
            "reflect that boost, which the predicted courses leave out."
        )
    return lines
