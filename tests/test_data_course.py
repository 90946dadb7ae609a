"""Day zero and the CAR-T infusion across the two tables (data/course.py), and the
commands that check them: check-data (all patients) and fit (the patient fitted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from carthema.cli import main
from carthema.data import read_events, read_observations
from carthema.data.course import check_course, course_problems
from carthema.data.errors import InputError

OBS = """patient,day,analyte,value,unit,compartment
P1,7,cart_copies,15000,copies/ug DNA,blood
P1,7,anc,0.4,G/L,
P2,7,anc,0.6,G/L,
"""
EVENTS_OK = """patient,day,kind,amount,unit,drug
P1,-5,lymphodepletion,30,mg/m2,fludarabine
P1,0,cart_infusion,2e6,cells/kg,
P2,0,cart_infusion,1e6,cells/kg,
"""


def _tables(tmp_path: Path, events: str, obs: str = OBS):
    (tmp_path / "obs.csv").write_text(obs)
    (tmp_path / "ev.csv").write_text(events)
    return read_observations(tmp_path / "obs.csv"), read_events(tmp_path / "ev.csv")


def test_a_consistent_course_passes(tmp_path):
    obs, ev = _tables(tmp_path, EVENTS_OK)
    assert course_problems(obs, ev) == []
    check_course(obs, ev)


def test_cart_not_on_day_zero_is_refused_with_the_shift(tmp_path):
    obs, ev = _tables(tmp_path, EVENTS_OK.replace("P2,0,cart", "P2,5,cart"))
    with pytest.raises(InputError) as e:
        check_course(obs, ev, events_name="ev.csv")
    msg = e.value.message
    assert "ev.csv" in msg and "P2" in msg and "day 5, not day 0" in msg and "-5" in msg


def test_cart_copies_without_an_infusion_is_refused_even_for_untreated(tmp_path):
    obs, ev = _tables(
        tmp_path,
        EVENTS_OK.replace("P1,0,cart_infusion,2e6,cells/kg,", "P1,0,platelet_transfusion,1,units,"),
    )
    with pytest.raises(InputError) as e:
        check_course(obs, ev, untreated=True)
    assert "P1 has CAR-T copies" in e.value.message and "cart_infusion" in e.value.fix


def test_no_cart_at_all_needs_the_untreated_flag(tmp_path):
    ev_text = EVENTS_OK.replace(
        "P2,0,cart_infusion,1e6,cells/kg,", "P2,3,platelet_transfusion,1,units,"
    )
    obs, ev = _tables(tmp_path, ev_text)
    problems = course_problems(obs, ev)
    assert [p.patient for p in problems] == ["P2"] and "--untreated" in problems[0].fix
    assert course_problems(obs, ev, untreated=True) == []


def test_lymphodepletion_after_cart_is_refused_unless_a_later_infusion_follows(tmp_path):
    late = EVENTS_OK + "P2,4,lymphodepletion,30,mg/m2,fludarabine\n"
    obs, ev = _tables(tmp_path, late)
    (p,) = course_problems(obs, ev)
    assert p.patient == "P2" and p.day == 4 and "after the CAR-T" in p.problem
    reinfused = late + "P2,9,cart_infusion,1e6,cells/kg,\n"
    obs, ev = _tables(tmp_path, reinfused)
    assert course_problems(obs, ev) == []


def _cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return int(e.value.code or 0), capsys.readouterr().err


def test_check_data_refuses_a_course_without_day_zero(tmp_path, capsys):
    (tmp_path / "obs.csv").write_text(OBS)
    (tmp_path / "ev.csv").write_text(EVENTS_OK.replace("P2,0,cart", "P2,5,cart"))
    argv = ["check-data", str(tmp_path / "obs.csv"), "--events", str(tmp_path / "ev.csv")]
    code, err = _cli(argv, capsys)
    assert code == 2 and "not day 0" in err and len(err.strip().splitlines()) == 1


def test_fit_refuses_cart_copies_without_an_infusion_before_any_work(tmp_path, capsys):
    (tmp_path / "obs.csv").write_text(OBS)
    (tmp_path / "ev.csv").write_text(
        EVENTS_OK.replace("P1,0,cart_infusion,2e6,cells/kg,", "P1,0,platelet_transfusion,1,units,")
    )
    argv = ["fit", str(tmp_path / "obs.csv"), "--events", str(tmp_path / "ev.csv"),
            "--patient", "P1", "--sampler", "map", "--out", str(tmp_path / "fit")]  # fmt: skip
    code, err = _cli(argv, capsys)
    assert code == 2 and "P1 has CAR-T copies" in err
    assert not (tmp_path / "fit").exists()


def test_the_library_fit_refuses_a_course_without_day_zero(tmp_path, monkeypatch):
    """carthema.fit itself (not only the CLI) checks day 0 of the patient it fits, before
    any work: no model is built."""
    import carthema

    obs, ev = _tables(tmp_path, EVENTS_OK.replace("P2,0,cart", "P2,5,cart"))

    def built(*_a, **_k):
        raise AssertionError("the model was built before the course was checked")

    monkeypatch.setattr("carthema.fitting.sampling.samplers.build_model", built)
    with pytest.raises(InputError, match="P2's first CAR-T infusion is on day 5, not day 0"):
        carthema.fit(obs, ev, "P2", components="haematopoiesis", sampler="map")
    obs1, ev1 = _tables(tmp_path, EVENTS_OK.replace("P1,0,cart_infusion,2e6,cells/kg,", ""))
    with pytest.raises(InputError, match="P1 has CAR-T copies"):
        carthema.fit(obs1, ev1, "P1", components="cart", sampler="map")
