"""A self-contained HTML report: figures embedded as base64 PNG, tables as HTML, no
external files or scripts, so it can be mailed or archived as one file
(:func:`write_report`), and the headless-Chromium checks that it displays
(:func:`screenshot`, :func:`render_dom`). The patient's window report built on it is
:mod:`carthema.clinical.patient_report`; its footer is the run record
(:mod:`carthema.data.runrecord`)."""

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


def cell(v) -> str:
    """A table cell for people: Yes/No, a number (:func:`number`), ``-`` for missing."""
    if isinstance(v, bool | np.bool_):
        return "Yes" if v else "No"
    if isinstance(v, int | float | np.integer | np.floating):
        return number(v)
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return str(v)


def _table(df: pd.DataFrame) -> str:
    df = df.rename(columns={c: header(c) for c in df.columns})
    shown = df.apply(lambda col: col.map(cell)) if len(df) else df
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
