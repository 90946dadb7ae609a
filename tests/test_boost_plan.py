"""One boost vocabulary: GraftSource, BoostPlan and its CD3+ rule, from every entry point."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from carthema import BoostPlan, GraftSource, InputError, get_model, read_events, simulate
from carthema.cli import main
from carthema.clinical.trial import read_policies
from carthema.models.events import build_events
from carthema.models.scenarios import typical_course

#: The refusal of an unselected new-donor graft without its CD3+ dose (one text).
NEEDS_CD3 = "an unselected graft from a new allogeneic donor needs its CD3+ dose"


def _events_file(tmp_path, source: str):
    """The typical course plus a boost of 3 x 10^6 CD34+/kg on day 30, as a user's CSV."""
    ev = typical_course()
    boost = {**dict.fromkeys(ev.columns), "patient": ev["patient"].iloc[0], "day": 30.0,
             "kind": "stem_cell_boost", "amount": 3.0, "unit": "10^6 cells/kg",
             "source": source, "cd34_selected": "yes"}  # fmt: skip
    f = tmp_path / f"events_{source}.csv"
    pd.concat([ev, pd.DataFrame([boost])], ignore_index=True).to_csv(f, index=False)
    return f


def test_a_prior_donor_boost_is_read_from_an_events_file_and_simulated(tmp_path):
    """An events file can hold a prior-donor boost (the validator used to refuse it): it
    seeds the tolerant donor's stem-cell and CD34+ compartments (hsc_P, mpp_t), brings no
    T cells, and a fully donor-chimeric patient stays fully donor (no rejection, no host
    cells returning)."""
    ev = read_events(_events_file(tmp_path, "prior-donor"))
    boost = ev[ev["kind"] == "stem_cell_boost"].iloc[0]
    assert boost["source"] == "prior-donor" and boost["amount"] == pytest.approx(3e6)
    m = get_model("full")
    p = m.default_params()
    se = build_events(m, ev, p)
    assert {m.state_names[i] for i in se.target[se.t == 30.0]} == {"hsc_P", "mpp_t"}
    traj = simulate(ev, params={"donor_chim0": 1.0, "hsc_mass": 0.2}, days=90)
    assert np.all(traj["chimerism_cd15"][traj.t >= 0] > 99.0)
    with pytest.raises(InputError, match="unknown source 'cord'") as exc:
        read_events(_events_file(tmp_path, "cord"))
    assert exc.value.column == "source"


def test_graft_source_parses_what_users_write_and_refuses_the_rest():
    assert GraftSource.parse("Prior_Donor") is GraftSource.PRIOR_DONOR
    assert GraftSource.parse(" prior donor ") is GraftSource.PRIOR_DONOR
    assert GraftSource.parse("auto") is GraftSource.AUTOLOGOUS
    assert BoostPlan(30, 3e6, "ALLOGENEIC").source is GraftSource.ALLOGENEIC
    with pytest.raises(InputError) as exc:
        GraftSource.parse("cord")
    assert exc.value.column == "source"
    assert "unknown graft source 'cord'" in exc.value.message
    assert "autologous, prior-donor" in exc.value.message


def test_the_cd3_rule():
    """Only a new donor's graft brings T cells: its stated CD3+ dose, else 0.25 x its MNC
    dose (2e8 MNC/kg -> 5e7 CD3+/kg, noted), else none when CD34-selected; an unselected
    one with neither is refused with one text that names the file column and the option."""
    allo = BoostPlan(30, 3e6, "allogeneic", cd34_selected=False)
    cd3, note = BoostPlan(30, 3e6, "allogeneic", False, mnc_per_kg=2e8).t_cells()
    assert cd3 == pytest.approx(5e7) and "estimated 0.25 of 2e+08 MNC/kg" in note
    assert BoostPlan(30, 3e6, "allogeneic", False, 1e7, 2e8).t_cells() == (1e7, None)
    assert BoostPlan(30, 3e6, "allogeneic", cd34_selected=True).t_cells() == (0.0, None)
    for source in ("autologous", "prior-donor"):
        assert BoostPlan(30, 3e6, source, False, 1e7).t_cells() == (0.0, None)
    with pytest.raises(InputError) as exc:
        allo.t_cells()
    assert NEEDS_CD3 in exc.value.message and exc.value.column == "cd3_per_kg"
    for name in ("cd3_per_kg", "--cd3", "mnc_per_kg", "--mnc", "--selected"):
        assert name in exc.value.message
    with pytest.raises(InputError, match="cd3_per_kg must be a number of cells/kg >= 0"):
        BoostPlan(30, 3e6, "allogeneic", False, -1.0)


def test_the_same_cd3_refusal_from_an_events_table_and_a_policy_file(tmp_path):
    ev = typical_course()
    m = get_model("full")
    from carthema.models.scenarios import with_plan

    with pytest.raises(InputError, match=re.escape(NEEDS_CD3)):
        build_events(m, with_plan(ev, BoostPlan(30, 3e6, "allogeneic")), m.default_params())
    f = tmp_path / "p.csv"
    f.write_text(
        "name,trigger_day,boost_day,dose,source,cd34_selected\nA,28,45,3e6,allogeneic,no\n"
    )
    with pytest.raises(InputError, match=re.escape(NEEDS_CD3)) as exc:
        read_policies(f)
    assert exc.value.row == 1 and exc.value.file == str(f)


def _cli_code(capsys, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


GRAFT = ["--dose", "3e6", "--source", "prior-donor", "--selected", "--cd3", "2e7"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (GRAFT, BoostPlan(45.0, 3e6, "prior-donor", True, 2e7)),
        (["--dose", "3e6"], BoostPlan(45.0, 3e6, "autologous", False)),
        (["--dose", "4e6", "--source", "allogeneic", "--mnc", "2e8"],
         BoostPlan(45.0, 4e6, "allogeneic", False, mnc_per_kg=2e8)),
    ],
)  # fmt: skip
def test_the_graft_options_make_one_boost_plan_for_every_command(
    options, expected, monkeypatch, capsys, tmp_path
):
    """window, predict-boost and a virtual-trial policy file read the same graft into the
    same BoostPlan (the default: unselected autologous cells)."""
    from carthema.clinical import window as win
    from carthema.clinical.boost import predict as pb
    from carthema.fitting import fitdir

    seen = {}

    def stop(*args, **kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise InputError("stop here")

    monkeypatch.setattr(pb, "predict_boost", stop)
    code, err = _cli_code(capsys, ["predict-boost", "--day", "45", *options])
    assert code == 2 and "stop here" in err
    assert seen.pop("args") == (expected,)

    monkeypatch.setattr(fitdir, "load_fit", lambda path: None)
    monkeypatch.setattr(win, "window_from_fit", stop)
    fit = tmp_path / "fit"
    fit.mkdir()
    code, err = _cli_code(capsys, ["window", str(fit), "--out", str(tmp_path / "w"), *options])
    assert code == 2 and "stop here" in err
    assert seen["kwargs"]["graft"].on(45.0) == expected and seen["kwargs"]["graft"].day is None

    columns = {"--source": "source", "--cd3": "cd3_per_kg", "--mnc": "mnc_per_kg"}
    row = {"name": "A", "trigger_day": "28", "boost_day": "45"}
    it = iter(options)
    for opt in it:
        if opt == "--selected":
            row["cd34_selected"] = "yes"
        elif opt == "--dose":
            row["dose"] = next(it)
        else:
            row[columns[opt]] = next(it)
    f = tmp_path / "policies.csv"
    f.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    assert read_policies(f)[0].graft == expected
