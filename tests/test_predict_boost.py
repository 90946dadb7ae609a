"""predict-boost: population-prior draws conditioned on the counts on the boost day."""

from __future__ import annotations

import json

import pytest

from carthema.cli import main
from carthema.fitting.predict_boost import predict_boost

KEYS = {"median_days", "q05", "q95", "p_within_14d", "p_within_30d"}


def test_conditioning_on_low_counts_delays_predicted_engraftment():
    low = predict_boost(60, 3e6, "allogeneic", anc=0.1, platelets=10, n_draws=600, seed=1)
    high = predict_boost(60, 3e6, "allogeneic", anc=2.0, platelets=150, n_draws=600, seed=1)
    for key in ("neutrophil", "platelet", "anc_gt_1"):
        assert KEYS <= set(low[key])
    # Counts already high on the boost day mean engraftment at once.
    assert high["neutrophil"]["p_already"] > 0.9
    assert low["neutrophil"]["p_already"] < 0.1

    # Engrafted 14 days after the boost, already or since: an already-engrafted draw has
    # no time (p_within_14d is over the others, None when none is left).
    def by_day_14(r):
        return r["p_already"] + (1.0 - r["p_already"]) * (r["p_within_14d"] or 0.0)

    assert by_day_14(low["anc_gt_1"]) < by_day_14(high["anc_gt_1"])
    assert 0.0 <= low["p_never"]["neutrophil"] <= 1.0


def test_predict_boost_command_writes_the_json(tmp_path, capsys):
    out = tmp_path / "pred.json"
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "predict-boost",
                "--day",
                "45",
                "--dose",
                "3.1e6",
                "--source",
                "autologous",
                "--anc",
                "0.2",
                "--plt",
                "15",
                "--draws",
                "300",
                "--json",
                str(out),
            ]
        )
    assert exc.value.code == 0, capsys.readouterr()
    res = json.loads(out.read_text())
    for key in ("neutrophil", "platelet", "anc_gt_1"):
        assert KEYS <= set(res[key])
    assert set(res["p_never"]) == {"neutrophil", "platelet", "anc_gt_1"}
    assert "chimerism_day30" not in res  # autologous graft


def test_predict_boost_refuses_bad_source(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict-boost", "--day", "45", "--dose", "3e6", "--source", "cord"])
    text = capsys.readouterr()
    assert exc.value.code == 2 and "cord" in text.err and "Traceback" not in text.err
