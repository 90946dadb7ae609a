"""A self-contained HTML report: figures embedded as base64 PNG, tables as HTML, no
external files or scripts, so it can be mailed or archived as one file.

A patient's report (:func:`write_patient_report`) reads in 30 seconds: one line with the
decision (:mod:`carthema.clinical.decision`), one figure (the course with and without the
boost, today, the window), a compact table, then the details (whether to trust the fit,
the window plot, the fit, the parameters with their descriptions and units) and, as its
footer, the run record (:mod:`carthema.data.runrecord`)."""

from __future__ import annotations

import base64
import html
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; color: #234; }
p.decision { font-size: 1.2em; font-weight: 600; padding: .7em 1em; background: #eef7ee;
             border-left: 6px solid #4a4; }
p.decision.none { background: #fdecea; border-left-color: #c33; }
tr.win td { background: #e3f4e3; font-weight: 600; }
p.legend { font-size: .8em; color: #555; }
footer dl { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; }
footer dt { font-weight: 600; } footer dd { margin: 0; overflow-wrap: anywhere; }
p.lead { font-size: 1.05em; background: #f3f6fa; padding: .7em 1em; border-left: 4px solid #468; }
p.warn { background: #fff4e0; padding: .5em 1em; border-left: 4px solid #d80; }
img { max-width: 100%; border: 1px solid #ddd; }
div.trust { background: #fff4e0; padding: .3em 1em; border-left: 4px solid #d80; }
div.trust.ok { background: #eef7ee; border-left-color: #4a4; }
table { border-collapse: collapse; font-size: .8em; margin: .5em 0; width: 100%;
        table-layout: auto; }
th, td { border: 1px solid #ccc; padding: .2em .35em; text-align: right; }
th { background: #eef2f6; white-space: normal; overflow-wrap: normal; word-break: keep-all;
     hyphens: none; vertical-align: bottom; }
td { overflow-wrap: anywhere; }
td:first-child, th:first-child { text-align: left; }
footer { margin-top: 3em; font-size: .8em; color: #777; }
"""


@dataclass
class Section:
    """One part of the report: a heading with paragraphs, warnings, figures and tables."""

    title: str
    paragraphs: Sequence[str] = ()
    warnings: Sequence[str] = ()
    figures: Sequence[str | Path] = ()
    tables: Sequence[pd.DataFrame] = field(default_factory=list)


def _img(path: str | Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}"></p>'


#: Human-readable headers of the columns that reports show (window and fit tables).
HEADERS = {
    "boost_day": "boost day",
    "neutrophil_median_days": "ANC > 0.5: median days",
    "neutrophil_q05": "ANC > 0.5: 5 %",
    "neutrophil_q95": "ANC > 0.5: 95 %",
    "neutrophil_p_within_14d": "P(ANC > 0.5 within 14 d)",
    "neutrophil_p_within_30d": "P(ANC > 0.5 within 30 d)",
    "platelet_median_days": "PLT > 20: median days",
    "platelet_p_within_30d": "P(PLT > 20 within 30 d)",
    "days_anc_lt_0.5_median": "days ANC < 0.5 (median)",
    "chimerism_day30_median": "donor myeloid chimerism +30 d (%)",
    "chimerism_whole_blood_day30_median": "donor whole-blood chimerism +30 d (%)",
    "cart_at_reference_median": "CAR-T on boost day (copies/ug)",
    "already_recovered": "already recovered",
    "in_window": "in window",
    "name": "parameter",
    "unit": "unit",
    "prior_median": "prior median",
    "median": "posterior median",
    "q05": "5 %",
    "q95": "95 %",
    "information": "data information",
    "shrinkage": "shrinkage",
    "ess_bulk": "bulk ESS",
    "r_hat": "R-hat",
    "rse_pct": "RSE %",
    "description": "description",
    "true": "true value",
}


def header(col: str) -> str:
    """A column's readable header: :data:`HEADERS`, else the name with spaces."""
    return HEADERS.get(col, str(col).replace("_", " "))


def number(v: float, digits: int = 3) -> str:
    """A number for people, to ``digits`` significant digits and never with an exponent:
    9,500 and 590 (not 9.5e+03, 5.9e+02), 0.42; ``-`` for a missing value."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "-"
    if not np.isfinite(v):
        return "-"
    if abs(v) >= 10 ** (digits - 1):  # an integer, rounded to ``digits`` significant
        return f"{float(f'{v:.{digits}g}'):,.0f}"
    return f"{v:.{digits}g}"


def _cell(v) -> str:
    if isinstance(v, bool | np.bool_):
        return "Yes" if v else "No"
    if isinstance(v, int | float | np.integer | np.floating):
        return number(v)
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return str(v)


def _table(df: pd.DataFrame) -> str:
    df = df.rename(columns={c: header(c) for c in df.columns})
    shown = df.apply(lambda col: col.map(_cell)) if len(df) else df
    return shown.to_html(index=False, border=0, na_rep="-")


def _footer(record: Mapping | None) -> str:
    """The run record as the footer: version and commit, command, inputs with SHA-256,
    seed, package versions, time."""
    note = "Model predictions support, and do not replace, clinical judgement."
    if not record:
        return f"<footer>carthema report, {date.today().isoformat()}. {note}</footer>"
    esc = html.escape
    inputs = []
    for item in record.get("inputs", []):
        for f in item.get("files", [item]):
            digest = f.get("sha256") or "not found"
            inputs.append(f"{esc(str(f.get('path')))} (SHA-256 {esc(digest)})")
    pkgs = ", ".join(f"{k} {v}" for k, v in (record.get("packages") or {}).items() if v)
    commit = record.get("git_commit") or "unknown"
    rows = [
        ("carthema", f"{record.get('carthema_version')} (commit {commit})"),
        ("command", " ".join(record.get("command") or [])),
        ("inputs", "<br>".join(inputs) or "none"),
        ("seed", str(record.get("seed"))),
        ("packages", f"Python {record.get('python')}; {pkgs}"),
        ("time (UTC)", str(record.get("time_utc"))),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{v if k == 'inputs' else esc(v)}</dd>" for k, v in rows)
    return f"<footer><p>Run record (run.json). {note}</p><dl>{dl}</dl></footer>"


def write_report(
    path: str | Path,
    title: str,
    lead: Sequence[str],
    sections: Sequence[Section],
    *,
    decision: str | None = None,
    figure: str | Path | None = None,
    table_html: str | None = None,
    record: Mapping | None = None,
) -> Path:
    """Write the report to ``path`` and return it.

    With ``decision`` the page opens with that one line, then ``figure`` and
    ``table_html``, then "Details": the trust box (every section's warnings), the
    ``lead`` lines and the sections. ``record``: the run record for the footer."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if decision is not None:
        cls = "decision" if decision.startswith("Recommendation:") else "decision none"
        parts.append(f'<p class="{cls}" id="decision">{html.escape(decision)}</p>')
        if figure is not None:
            parts.append(_img(figure).replace("<img ", '<img id="figure" ', 1))
        if table_html:
            parts.append(table_html)
        parts.append("<h2>Details</h2>")
    warnings = [w for sec in sections for w in sec.warnings]
    if warnings:
        parts.append('<div class="trust"><h2>Can this result be trusted?</h2>')
        parts.append(f"<p>{len(warnings)} problem(s) found.</p>")
        parts += [f'<p class="warn">{html.escape(w)}</p>' for w in warnings]
        parts.append("</div>")
    else:
        parts.append(
            '<div class="trust ok"><p>No warnings: the sampler converged, the residual '
            "SDs stay within their priors and the data inform the window parameters.</p>"
            "</div>"
        )
    parts += [f'<p class="lead">{html.escape(line)}</p>' for line in lead]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.warnings:
            parts.append("<p>See the problems listed above.</p>")
        parts += [f"<p>{html.escape(p)}</p>" for p in sec.paragraphs]
        parts += [_img(f) for f in sec.figures]
        parts += [_table(t) for t in sec.tables]
    parts.append(_footer(record))
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def chromium_path() -> str | None:
    """Debian's chromium (``apt-get install chromium``), if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium not found; install it with `apt-get install chromium`")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def screenshot(
    html_path: str | Path,
    png_path: str | Path,
    *,
    width: int = 1200,
    height: int = 1600,
    timeout: float = 120.0,
) -> Path:
    """Render ``html_path`` in headless chromium and save a PNG: the check that the report
    displays in a real browser. Raises RuntimeError when chromium is missing or fails."""
    png_path = Path(png_path)
    proc = _chromium(
        [f"--window-size={width},{height}", f"--screenshot={png_path}",
         Path(html_path).resolve().as_uri()],
        timeout,
    )  # fmt: skip
    if proc.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-500:]}")
    return png_path


def render_dom(html_path: str | Path, *, timeout: float = 120.0) -> tuple[str, list[str]]:
    """Load ``html_path`` in headless chromium: the DOM after loading (``--dump-dom``) and
    the messages the page wrote to the browser console (``--enable-logging=stderr``;
    script errors among them). Raises RuntimeError when chromium is missing or fails."""
    proc = _chromium(
        ["--enable-logging=stderr", "--v=0", "--dump-dom", Path(html_path).resolve().as_uri()],
        timeout,
    )
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-500:]}")
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


# ---------------------------------------------------------------------------------------
# The patient's report: decision, one figure, a compact table, details, run record
# ---------------------------------------------------------------------------------------
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
        ("already recovered", lambda r: _cell(bool(r.get("already_recovered", False)))),
        ("in window", lambda r: _cell(bool(r.get("in_window", False)))),
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


def parameter_table(ff) -> pd.DataFrame:
    """Parameters of a fit folder's summary with their descriptions and units, prior and
    posterior medians, 90 % interval, data information, RSE % and R-hat (3 decimals)."""
    s = ff.summary
    desc = {q.name: (q.description, q.unit) for q in ff.model.params}
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
    ff,
    window: dict,
    path: str | Path,
    *,
    draws: np.ndarray | None = None,
    events: pd.DataFrame | None = None,
) -> Path:
    """Self-contained HTML page of a window result: the decision line, one figure (the
    course with and without the boost on the recommended day, today, the window; needs
    the posterior ``draws`` and the no-boost ``events`` the scan used), the compact
    table, then details and the run record."""
    import json

    from carthema.clinical.decision import counterfactual_summary_lines
    from carthema.clinical.plans import Plan, plan_bands

    files = window["files"]
    today = float(window.get("today") or 0.0)
    w = window["window"]
    plan = window["plan"]
    observed = ff.observations
    if observed is not None:
        observed = observed[observed["patient"].astype(str) == ff.patient]
    figure = None
    if draws is not None and events is not None:
        day = w.get("recommended_day")
        end = max(today, day or today) + 60.0
        bands = {}
        if day is not None:
            graft = Plan(day, plan["dose_cd34_per_kg"], plan["source"], plan["cd34_selected"],
                         plan.get("cd3_per_kg"), plan.get("mnc_per_kg"))  # fmt: skip
            bands = plan_bands(ff.model, draws, events, graft, horizon=end)
        none = plan_bands(ff.model, draws, events, Plan(), horizon=end)
        bands.setdefault("days", none["days"])
        bands["no_boost"] = {k: v for k, v in none.items() if k != "days"}
        figure = Path(path).with_name("decision.png")
        plot_decision(bands, figure, today=today, window=window, observed=observed,
                      events=ff.events)  # fmt: skip
    table = pd.read_csv(files["table"])
    diag = ff.meta.get("diagnostics", {})
    from carthema.clinical.window import _diagnostics_line, _figure_lines

    sections = [
        Section(
            "Whether to trust the fit",
            warnings=list(diag.get("warnings", [])),
            paragraphs=[
                *((ff.meta.get("trust") or [])[1:] or [_diagnostics_line(diag)]),
                *[f"Note: {n}" for n in ff.notes],
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
    ipred = next((ff.path / n for n in ("ipred.png", "fit.png") if (ff.path / n).exists()), None)
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
    if ff.summary is not None:
        sections.append(
            Section(
                "Parameters: prior and posterior",
                paragraphs=[
                    "Data information = 1 - posterior SD / prior SD (log scale): near 0 the "
                    "data say little about the parameter (posterior = prior); near 1 they "
                    "pin it down. RSE % = posterior SD / posterior median."
                ],
                tables=[parameter_table(ff)],
            )
        )
    record = None
    run = files.get("run")
    if run and Path(run).exists():
        record = json.loads(Path(run).read_text(encoding="utf-8"))
    return write_report(
        path,
        f"carthema: patient {ff.patient}",
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
