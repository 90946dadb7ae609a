"""``simulate --plot``: readable panel titles with units, and no offset axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from carthema.models import plotting
from carthema.models.model import get_model


def test_trajectory_panels_are_titled_in_words_with_units_and_no_offsets(tmp_path, monkeypatch):
    model = get_model("full")
    t = np.linspace(1000.0, 1000.5, 50)  # a span that makes matplotlib offset the x axis
    # Linear-axis values that would get an offset ("+1e3") or a multiplier ("1e-5").
    values = {o.name: 1000.0 + 1e-3 * np.sin(t) if o.name not in plotting.LOG_SCALE
              else np.full_like(t, 5.0) for o in model.observables}  # fmt: skip
    values["marrow_blasts"] = 1e-5 * (1.0 + np.cos(t))
    traj = type("T", (), {"model": model, "t": t, "__getitem__": lambda s, k: values[k]})()
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)  # keep the figure to look at it
    plotting.plot_trajectory(traj, tmp_path / "sim.png")
    assert (tmp_path / "sim.png").stat().st_size > 0
    fig = figs[0]
    fig.canvas.draw()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == len(model.observables)
    for obs, title in zip(model.observables, titles, strict=True):
        assert "_" not in title and title.endswith(f", {obs.unit}"), title
    assert "Neutrophils (ANC), G/L" in titles
    for ax in fig.axes:
        if ax.get_title():
            assert ax.xaxis.get_offset_text().get_text() == ""
            assert ax.yaxis.get_offset_text().get_text() == "", ax.get_title()
    plt.close(fig)
