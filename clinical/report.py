"""A self-contained HTML report: figures embedded as base64 PNG, tables as HTML, no
external files or scripts, so it can be mailed or archived as one file.

Trust first: every warning of every section (convergence, misfit, parameters the data
barely inform) is shown at the top, under "Can this result be trusted?", before the lead
lines that carry the recommendation. Tables get human-readable headers that wrap, so they
fit the page instead of scrolling sideways."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #345; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; color: #234; }
p.lead { font-size: 1.05em; background: #f3f6fa; padding: .7em 1em; border-left: 4px solid #468; }
p.warn { background: #fff4e0; padding: .5em 1em; border-left: 4px solid #d80; }
img { max-width: 100%; border: 1px solid #ddd; }
div.trust { background: #fff4e0; padding: .3em 1em; border-left: 4px solid #d80; }
div.trust.ok { background: #eef7ee; border-left-color: #4a4; }
table { border-collapse: collapse; font-size: .8em; margin: .5em 0; width: 100%;
        table-layout: auto; }
th, td { border: 1px solid #ccc; padding: .2em .35em; text-align: right; }
th { background: #eef2f6; white-space: normal; overflow-wrap: anywhere; vertical-align: bottom; }
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
    "chimerism_day30_median": "donor chimerism +30 d (%)",
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
    "true": "true value",
}


def header(col: str) -> str:
    """A column's readable header: :data:`HEADERS`, else the name with spaces."""
    return HEADERS.get(col, str(col).replace("_", " "))


def _table(df: pd.DataFrame) -> str:
    df = df.rename(columns={c: header(c) for c in df.columns})
    return df.to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}", na_rep="")


def write_report(
    path: str | Path, title: str, lead: Sequence[str], sections: Sequence[Section]
) -> Path:
    """Write the report to ``path`` and return it."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    warnings = [w for sec in sections for w in sec.warnings]
    if warnings:
        parts.append('<div class="trust"><h2>Can this result be trusted?</h2>')
        parts.append(
            f"<p>{len(warnings)} problem(s) found. Read them before the recommendation below.</p>"
        )
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
            parts.append("<p>See the problems listed at the top of the report.</p>")
        parts += [f"<p>{html.escape(p)}</p>" for p in sec.paragraphs]
        parts += [_img(f) for f in sec.figures]
        parts += [_table(t) for t in sec.tables]
    parts.append(
        f"<footer>carthema report, {date.today().isoformat()}. Model predictions "
        "support, and do not replace, clinical judgement.</footer></body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def chromium_path() -> str | None:
    """Debian's chromium (``apt-get install chromium``), if installed."""
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


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
    import subprocess
    import tempfile

    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium not found; install it with `apt-get install chromium`")
    png_path = Path(png_path)
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
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={png_path}",
            Path(html_path).resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not png_path.exists():
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-500:]}")
    return png_path
