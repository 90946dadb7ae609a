"""Issue 20, item 2: "now". predict-boost's G-CSF starts on the day given with
--gcsf-since (not an assumed 14 days before the boost); the window's default scan starts
today and drops past days."""

from __future__ import annotations

import pytest

from carthema.clinical.boost import inputs as boost_inputs
from carthema.clinical.boost import predict as pb
from carthema.clinical.window import default_days, split_past
from carthema.data.boost import BoostPlan
from carthema.data.errors import InputError


class _Stop(Exception):
    pass


def _support_rows(monkeypatch, **kw) -> list[dict]:
    """The support rows predict_boost adds to the course (captured; then stopped)."""
    seen: list[list[dict]] = []

    def capture(events, rows):
        seen.append(rows)
        raise _Stop

    monkeypatch.setattr(boost_inputs, "_add", capture)
    with pytest.raises(_Stop):
        pb.predict_boost(BoostPlan(40.0, 3e6, "autologous"), anc=0.3, product="axi-cel", **kw)
    return seen[0]


def test_gcsf_since_sets_the_start_of_the_support(monkeypatch):
    (row,) = _support_rows(monkeypatch, gcsf_since=19.0, gcsf_after=2.0)
    # Days 19..40 (the boost day's count is supported), then 2 days after: 24 days.
    assert row["kind"] == "gcsf" and row["day"] == 19.0 and row["duration"] == 24.0
    (row,) = _support_rows(monkeypatch, gcsf=True)  # the API's stated assumption: 14 days
    assert row["day"] == 26.0 and row["duration"] == 15.0


def test_gcsf_since_after_the_boost_is_refused():
    with pytest.raises(InputError, match="gcsf-since"):
        pb.predict_boost(BoostPlan(40.0, 3e6, "autologous"), anc=0.3, gcsf_since=41.0)


def test_the_default_scan_starts_today_and_past_days_are_dropped():
    assert default_days(40.0)[:2] == [40.0, 41.0] and default_days(40.0)[-1] == 130.0
    assert default_days(0.0)[0] == 1.0  # a boost is after the CAR-T infusion
    assert split_past([30.0, 39.5, 40.0, 55.0], 40.0) == ([40.0, 55.0], [30.0, 39.5])
    with pytest.raises(InputError, match="before today"):
        split_past([21.0, 30.0], 40.0)
