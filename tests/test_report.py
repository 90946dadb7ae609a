"""The HTML report is one self-contained file that renders in a real browser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carthema.clinical.report import Section, chromium_path, screenshot, write_report


def _figure(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(10), np.arange(10) ** 2)
    fig.savefig(path)
    plt.close(fig)
    return path


def test_report_embeds_figures_and_tables(tmp_path):
    fig = _figure(tmp_path / "f.png")
    table = pd.DataFrame({"boost_day": [30.0, 40.0], "p": [0.5, 0.9]})
    out = write_report(
        tmp_path / "r.html",
        "Patient X",
        ["A <b>lead</b> line."],
        [
            Section(
                "Window", paragraphs=["text"], warnings=["careful"], figures=[fig], tables=[table]
            )
        ],
    )
    text = out.read_text()
    assert "data:image/png;base64," in text and 'src="f.png"' not in text
    assert "&lt;b&gt;lead&lt;/b&gt;" in text  # user text is escaped
    assert "<table" in text and "0.9" in text and "careful" in text


@pytest.mark.slow
@pytest.mark.skipif(
    chromium_path() is None,
    reason="chromium not installed (apt-get install "
    "chromium); the report is still written and checked above",
)
def test_report_renders_in_headless_chromium(tmp_path):
    fig = _figure(tmp_path / "f.png")
    out = write_report(
        tmp_path / "r.html", "Render check", ["lead"], [Section("Figure", figures=[fig])]
    )
    png = screenshot(out, tmp_path / "shot.png", width=800, height=600)
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    assert img.shape[0] == 600 and img.shape[1] == 800
    # Not blank: the page has dark text and the plot's coloured line.
    assert img[..., :3].min() < 0.3 and img[..., :3].std() > 0.05
