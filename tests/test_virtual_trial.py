"""Virtual trials: policies, cumulative incidence and the command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carthema import BoostPlan, InputError
from carthema.cli import main
from carthema.clinical.trial import (
    Policy,
    cumulative_incidence,
    read_policies,
    run_trial,
)


def test_cumulative_incidence_is_one_minus_kaplan_meier_by_hand():
    trial = pd.DataFrame(
        {
            "policy": "p",
            "status": 0,
            "neutrophil_day": [10.0, 20.0, np.nan, 20.0, np.nan],
            "neutrophil_censored": [False, False, True, False, True],
        }
    )
    ci = cumulative_incidence(trial, "neutrophil", horizon=30.0)
    # 5 at risk: 1 event at day 10 (S=4/5), 2 at day 20 (S=4/5*2/4=2/5); 2 censored at 30.
    assert ci.loc[ci["day"] == 9, "p"].item() == pytest.approx(0.0)
    assert ci.loc[ci["day"] == 10, "p"].item() == pytest.approx(0.2)
    assert ci.loc[ci["day"] == 25, "p"].item() == pytest.approx(0.6)


def test_policy_boosts_exactly_the_triggered_patients():
    graft = BoostPlan(35.0, 5e6, "allogeneic", cd34_selected=True)
    pols = [Policy("none"), Policy("boost", trigger_day=28, anc_below=0.5, graft=graft)]
    trial = run_trial(pols, 300, seed=2, horizon=120.0)
    none, boost = (trial[trial["policy"] == k].reset_index(drop=True) for k in ("none", "boost"))
    assert not none["boosted"].any()
    # Without a boost, every patient triggered had not recovered by day 28; those not
    # triggered have identical outcomes under both policies.
    same = ~boost["boosted"]
    pd.testing.assert_series_equal(
        none.loc[same, "neutrophil_day"], boost.loc[same, "neutrophil_day"]
    )
    assert 0.05 < boost["boosted"].mean() < 0.95
    ci_none = cumulative_incidence(none, "neutrophil", 120.0)["none"]
    ci_boost = cumulative_incidence(boost, "neutrophil", 120.0)["boost"]
    assert ci_boost.iloc[90] >= ci_none.iloc[90]


def test_policy_file_errors_name_row_and_column(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("name,trigger_day,boost_day,dose,source\na,28,42,5e6,cord\n")
    with pytest.raises(InputError) as exc:
        read_policies(f)
    assert exc.value.row == 1 and exc.value.column == "source"


def test_virtual_trial_command_writes_curves(tmp_path, capsys):
    pol = tmp_path / "pol.csv"
    pol.write_text(
        "name,trigger_day,anc_below,boost_day,dose\nnone,28,0.5,42,\nboost,28,0.5,42,5e6\n"
    )
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "virtual-trial",
                "prior",
                "--policies",
                str(pol),
                "--out",
                str(tmp_path / "o"),
                "--n",
                "200",
                "--days",
                "100",
            ]
        )
    assert exc.value.code == 0, capsys.readouterr()
    for name in ("summary.csv", "incidence_neutrophil.csv", "incidence.png", "patients.parquet"):
        assert (tmp_path / "o" / name).exists()
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert list(summary["policy"]) == ["none", "boost"]


def test_boosted_patients_grafts_fail_at_the_doses_published_rate():
    """A low-dose policy (1e6 CD34+/kg) draws primary graft failures at the sourced rate
    (p_graft_failure: exp(-dose / 4.3e5), 1 % at 2e6/kg per graft_kinetics.csv row 12,
    so 9.9 % at 1e6/kg): the share among the boosted patients lies in its binomial
    99.9 % range, and a patient whose autologous graft failed has the course of no boost."""
    from scipy.stats import binom

    from carthema.clinical.population.graft import p_graft_failure

    graft = BoostPlan(30.0, 1e6, "autologous")
    pols = [Policy("none"), Policy("low dose", trigger_day=28, anc_below=0.5, graft=graft)]
    trial = run_trial(pols, 400, seed=4, horizon=120.0)
    none, boost = (trial[trial["policy"] == k].reset_index(drop=True) for k in ("none", "low dose"))
    b = boost[boost["boosted"]]
    p = p_graft_failure(1e6)
    assert 0.09 < p < 0.11
    lo, hi = binom.ppf([0.0005, 0.9995], len(b), p)
    assert len(b) >= 50 and lo <= b["graft_failed"].sum() <= hi
    assert not boost.loc[~boost["boosted"], "graft_failed"].any()
    failed = boost["graft_failed"].to_numpy()
    pd.testing.assert_series_equal(
        none.loc[failed, "neutrophil_day"], boost.loc[failed, "neutrophil_day"]
    )


def test_no_boost_course_is_solved_once_whatever_the_number_of_policies(monkeypatch):
    """Three policies on one course: one solve of every patient without a boost, then
    one solve per policy of only the patients it boosted."""
    from carthema.clinical import trial as vt

    calls = []
    solve = vt.simulate_obs

    def counting(model, P, events, days, options):
        calls.append((P.shape[0], "stem_cell_boost" in set(events["kind"])))
        return solve(model, P, events, days, options)

    monkeypatch.setattr(vt, "simulate_obs", counting)
    pols = [
        Policy("none"),
        Policy("early", trigger_day=21, anc_below=0.5, graft=BoostPlan(28.0, 3e6)),
        Policy("late", trigger_day=28, anc_below=0.5, graft=BoostPlan(35.0, 3e6)),
    ]
    trial = run_trial(pols, 120, seed=3, horizon=90.0, population="prior")
    assert calls[0] == (120, False)
    assert [boost for _, boost in calls[1:]] == [True, True]
    boosted = trial.groupby("policy", sort=False)["boosted"].sum()
    assert [rows for rows, _ in calls[1:]] == [boosted["early"], boosted["late"]]


def test_trial_of_a_posterior_is_a_typed_result_saved_in_one_place(tmp_path):
    """The calibrated population's Posterior (tisa-cel) as the trial's patients: without a
    boost, the share whose ANC falls to <= 0.5 G/L in days 0-60 is Rejeski 2021's (Blood
    138:2499, Table 2: 0.81; row 11 of the bundled natural_history.csv; tolerance 0.10
    as the calibration's); the result saves its files, and its JSON is strict."""
    import json

    from carthema.clinical.population.posterior import VirtualPopulation
    from carthema.clinical.trial import TrialResult, virtual_trial

    post = VirtualPopulation.load().sample(300, seed=5, product="tisa-cel")
    res = virtual_trial([Policy("none")], 300, seed=1, horizon=60.0, patients=post)
    assert isinstance(res, TrialResult) and res.source == "virtual-tisa-cel draws"
    ok = res.patients[res.patients["status"] == 0]
    assert len(ok) >= 290
    assert 1.0 - ok["neutrophil_already"].mean() == pytest.approx(0.81, abs=0.10)
    paths = res.save(tmp_path)
    assert sorted(p.name for p in paths.values()) == sorted(
        ["patients.parquet", "summary.csv", "incidence_neutrophil.csv",
         "incidence_platelet.csv", "incidence.png"]
    )  # fmt: skip
    back = pd.read_parquet(paths["patients"])
    assert len(back) == 300 and list(back["policy"].unique()) == ["none"]
    data = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert data["summary"][0]["n"] == 300 and data["policies"] == ["none"]


def test_trial_refuses_a_posterior_without_blood_counts():
    from carthema.models.model import get_model
    from carthema.models.posterior import Posterior
    from carthema.models.scenarios import typical_course

    model = get_model("cart")
    x = model.default_params()
    post = Posterior(model, x, x[None, :], (), typical_course(patient="p"))
    with pytest.raises(InputError, match="component set 'cart'"):
        run_trial([Policy("none")], 10, patients=post)


def test_the_command_saves_what_virtual_trial_returns(tmp_path, capsys):
    """``carthema virtual-trial`` writes and prints the :class:`TrialResult` of
    ``carthema.virtual_trial`` with the same settings: the same patients, summary and
    incidence curves, the same table on the console and the result's source."""
    import carthema

    pol = tmp_path / "pol.csv"
    pol.write_text(
        "name,trigger_day,anc_below,boost_day,dose\nnone,28,0.5,42,\nboost,28,0.5,42,5e6\n"
    )
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["virtual-trial", "--policies", str(pol), "--out", str(out), "--n", "40",
              "--days", "100", "--seed", "3"])  # fmt: skip
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    res = carthema.virtual_trial(read_policies(pol), 40, seed=3, horizon=100.0)
    assert isinstance(res, carthema.TrialResult) and res.source == "calibrated population"
    pd.testing.assert_frame_equal(pd.read_parquet(out / "patients.parquet"), res.patients)
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), res.summary)
    for o in ("neutrophil", "platelet"):
        pd.testing.assert_frame_equal(pd.read_csv(out / f"incidence_{o}.csv"), res.incidence[o])
    assert sorted(p.name for p in out.iterdir()) == [
        "incidence.png", "incidence_neutrophil.csv", "incidence_platelet.csv",
        "patients.parquet", "run.json", "summary.csv",
    ]  # fmt: skip
    assert res.table().split() == printed.split()[: len(res.table().split())]
    assert "40 patients (calibrated population) x 2 policies" in " ".join(printed.split())


def test_prior_draws_do_not_depend_on_the_hash_seed():
    # Each parameter takes the next n normals of the generator; iterating a set of names
    # made the draws follow PYTHONHASHSEED, so the same --seed gave another trial.
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from carthema.clinical.trial import population_draws\n"
        "from carthema.models.model import get_model\n"
        "P = population_draws(get_model('full'), 4, np.random.default_rng(0),"
        " mu={'hsc_mass': -1.0})\n"
        "print(repr(P.tobytes().hex()))\n"
    )
    out = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(h)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for h in (1, 2, 3)
    ]
    assert out[0] == out[1] == out[2]


def test_save_writes_a_new_folder_whole_or_leaves_the_old_one(tmp_path, monkeypatch):
    from carthema.clinical import trial as vt

    res = vt.virtual_trial([Policy("none")], 20, seed=2, horizon=40.0)
    out = tmp_path / "new" / "trial"  # neither folder exists yet
    paths = res.save(out)
    assert all(p.parent == out and p.exists() for p in paths.values())
    before = sorted(p.name for p in out.iterdir())

    def broken_plot(curves, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(vt, "plot_incidence", broken_plot)
    with pytest.raises(RuntimeError, match="disk full"):
        res.save(out)
    # The earlier folder is untouched and no temporary is left beside it.
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in out.parent.iterdir()] == ["trial"]
