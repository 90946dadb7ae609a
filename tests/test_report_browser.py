"""The patient report opens in a real browser (headless Chromium, Debian package
`chromium`; `.ci/run` installs it): the decision line is the first thing on the page,
the figure is an embedded PNG that paints, and the page writes nothing to the browser
console. A page with a script error shows that the console check can fail."""

from __future__ import annotations

import base64
import re

import numpy as np
import pandas as pd
import pytest

from carthema.clinical.decision import decision_line
from carthema.clinical.patient_report import window_table_html
from carthema.clinical.report import chromium_path, render_dom, screenshot, write_report
from carthema.data.runrecord import run_record

pytestmark = pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (`.ci/run` installs it)"
)


def _figure(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(np.arange(60), np.exp(-np.arange(60) / 20), color="tab:blue", lw=3)
    ax.axvline(40, color="k", label="today (day 40)")
    fig.savefig(path)
    plt.close(fig)
    return path


def _window() -> tuple[dict, pd.DataFrame]:
    """A hand-built window result with h-boost's keys (no-boost counterfactual)."""
    days = np.arange(40.0, 61.0)
    inside = (days >= 44) & (days <= 50)
    table = pd.DataFrame(
        {
            "boost_day": days,
            "neutrophil_p_within_30d": np.where(inside, 0.9, 0.6),
            "no_boost_neutrophil_p_within_30d": 0.1,
            "platelet_p_within_30d": np.nan,
            "neutropenia_days_saved_median": np.where(inside, 12.0, 0.0),
            "cart_at_reference_median": 9512.4 / (days - 39),
            "already_recovered": False,
            "in_window": inside,
        }
    )
    window = {
        "today": 40.0,
        "plan": {"boost_days": list(days)},
        "window": {"recommended_day": 44.0, "recommended_p_engraftment": 0.9,
                   "within_days": 30, "window_first_day": 44.0, "window_last_day": 50.0},
        "neutropenia_days_saved": {"median": 12.0, "q05": 4.0, "q95": 19.0},
    }  # fmt: skip
    return window, table


def test_report_opens_with_the_decision_and_paints_the_figure(tmp_path):
    window, table = _window()
    line = decision_line(window)
    assert line == (
        "Recommendation: boost on day 44 (P(neutrophil engraftment within 30 d) 90%, "
        "saves 12 days of ANC < 0.5 G/L vs no boost, 90 % interval 4-19)."
    )
    fig = _figure(tmp_path / "decision.png")
    page = write_report(
        tmp_path / "report.html",
        "carthema: patient X",
        ["What follows is what the fitted model predicts, if it describes this patient."],
        [],
        decision=line,
        figure=fig,
        table_html=window_table_html(table, window),
        record=run_record([fig], seed=7, argv=["carthema", "window", "fits/X"]),
    )
    dom, console = render_dom(page)
    assert console == []  # no script errors, no failed loads reported by the page
    body = dom[dom.index("<body") :]
    # The first text after the title is the decision line.
    first = re.search(r'<p class="decision" id="decision">(.*?)</p>', body)
    assert first is not None and first.group(1) == line.replace("<", "&lt;").replace(">", "&gt;")
    assert body.index('id="decision"') < body.index('id="figure"') < body.index("window-table")
    # The figure is the embedded PNG itself.
    src = re.search(r'id="figure" alt="[^"]*" src="data:image/png;base64,([^"]+)"', body)
    assert src is not None and base64.b64decode(src.group(1)) == fig.read_bytes()
    # Only the window's 7 days are highlighted; Yes/No, percentages, rounded copies.
    assert body.count('<tr class="win">') == 7
    assert "90 %" in body and "9,500" in body and "Yes" in body and "e+0" not in body
    assert "SHA-256 " in body and "seed" in body
    # It paints: the screenshot has the figure's blue line and dark text.
    import matplotlib.image as mpimg

    img = mpimg.imread(screenshot(page, tmp_path / "shot.png", width=1000, height=1200))
    rgb = img[..., :3]
    blue = (rgb[..., 2] > 0.6) & (rgb[..., 0] < 0.3) & (rgb[..., 1] < 0.6)
    assert blue.sum() > 200 and rgb.min() < 0.2


def test_the_console_check_sees_a_script_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>noSuchFunction();</script>"
                   "</body></html>")  # fmt: skip
    _, console = render_dom(bad)
    assert any("noSuchFunction" in line for line in console)
