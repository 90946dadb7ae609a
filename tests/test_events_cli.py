"""Events mapping, parameter overrides and the simulate/params/demo commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from carthema import InputError, get_model, simulate, typical_course, with_boost
from carthema.cli import main
from carthema.models.events import BOLUS, SET_INPUT, build_events
from carthema.models.simulate import resolve_params


def _run(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


def test_split_infusion_gives_equal_daily_boluses():
    m = get_model("full")
    ev = typical_course(cart_dose=3e6)
    ev.loc[ev["kind"] == "cart_infusion", "duration"] = 3.0
    se = build_events(m, ev, m.default_params())
    cart = (se.kind == BOLUS) & (se.target == m.index("state", "cart_E"))
    np.testing.assert_array_equal(se.t[cart], [0.0, 1.0, 2.0])
    np.testing.assert_allclose(se.value[cart], 1e6)
    assert np.all(se.scale[cart] == m.index("param", "cart_f_dose"))


def test_lymphodepletion_intensity_sums_drugs_and_switches_off():
    m = get_model("full")
    se = build_events(m, typical_course(), m.default_params())
    ld = (se.kind == SET_INPUT) & (se.target == m.index("input", "ld"))
    # flu 30 + cy 500 mg/m2 is intensity 1 on each of days -5..-3, off from day -2.
    assert dict(zip(se.t[ld], se.value[ld], strict=True)) == {
        -5.0: 1.0,
        -4.0: 1.0,
        -3.0: 1.0,
        -2.0: 0.0,
    }


def test_boost_seeds_the_compartments_of_its_origin():
    """Each graft origin seeds its own stem-cell and CD34+ compartments; only a new
    donor's graft brings T cells, from its stated CD3+ dose (an estimate from the MNC dose
    is noted; neither is refused)."""
    m = get_model("full")
    p = m.default_params()
    at30 = {}
    for source, extra in (
        ("autologous", {}),
        ("prior-donor", {}),
        ("allogeneic", {"cd34_selected": False, "cd3_per_kg": 2e7}),
    ):
        se = build_events(m, with_boost(typical_course(), 30, 3e6, source=source, **extra), p)
        at30[source] = {m.state_names[i] for i in se.target[se.t == 30.0]}
    assert at30["autologous"] == {"hsc_A", "mpp_a"}
    assert at30["prior-donor"] == {"hsc_P", "mpp_t"}
    assert at30["allogeneic"] == {"hsc_N", "mpp_n", "gvh_T"}
    ev = with_boost(typical_course(), 30, 3e6, cd34_selected=False)
    ev["mnc_per_kg"] = 2e8
    noted = build_events(m, ev, p)
    assert any("estimated 0.25 of 2e+08 MNC/kg" in n for n in noted.notes)
    ev = ev.drop(columns="mnc_per_kg")
    with pytest.raises(InputError, match="needs its CD3"):
        build_events(m, ev, p)


def test_events_without_model_effect_are_reported_not_dropped():
    ev = typical_course()
    extra = ev.iloc[[0]].copy()
    extra[["kind", "day", "amount", "unit", "drug"]] = ["rbc_transfusion", 10.0, 2.0, "units", None]
    traj = simulate(pd.concat([ev, extra]), days=20)
    assert any("rbc_transfusion on day 10" in n for n in traj.notes)
    cart_only = simulate(ev, components="cart", days=20)
    assert any("lymphodepletion" in n for n in cart_only.notes)


def test_unknown_lymphodepletion_drug_and_period_without_duration_are_refused():
    m = get_model("full")
    ev = typical_course()
    ev.loc[0, "drug"] = "melphalan"
    with pytest.raises(InputError, match="melphalan"):
        build_events(m, ev, m.default_params())
    ev = typical_course()
    gcsf = ev.iloc[[0]].copy()
    gcsf[["kind", "drug", "duration"]] = ["gcsf", None, np.nan]
    with pytest.raises(InputError) as exc:
        build_events(m, pd.concat([ev, gcsf]), m.default_params())
    assert exc.value.column == "duration"


def test_parameter_overrides_and_their_errors(tmp_path):
    m = get_model("full")
    p = resolve_params(m, {"hsc_regen": 0.01})
    assert p[m.index("param", "hsc_regen")] == 0.01
    with pytest.raises(InputError, match="did you mean hsc_regen"):
        resolve_params(m, {"hsc_regn": 0.01})
    bad = tmp_path / "p.csv"
    bad.write_text("name,value\nhsc_regen,0.01\ncart_rho,-1\n")
    with pytest.raises(InputError) as exc:
        resolve_params(m, bad)
    assert exc.value.row == 2 and exc.value.column == "value" and exc.value.file == str(bad)


def test_simulate_command_writes_long_form_csv_and_plot(tmp_path, capsys):
    events = tmp_path / "events.csv"
    typical_course(patient="P1").to_csv(events, index=False)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"hsc_regen": 0.02}))
    code, text = _run(
        capsys,
        "simulate",
        "--events",
        str(events),
        "--days",
        "60",
        "--params",
        str(params),
        "--out",
        str(tmp_path / "traj.csv"),
        "--plot",
        str(tmp_path / "traj.png"),
    )
    assert code == 0, text
    traj = pd.read_csv(tmp_path / "traj.csv")
    assert list(traj.columns) == ["day", "analyte", "value", "unit"]
    assert set(traj["analyte"]) == set(get_model("full").obs_names)
    assert traj["day"].max() == 60
    assert (tmp_path / "traj.png").stat().st_size > 10_000
    direct = simulate(typical_course(patient="P1"), params={"hsc_regen": 0.02}, days=60)
    anc = traj[traj["analyte"] == "anc"]["value"].to_numpy()
    np.testing.assert_allclose(anc, direct["anc"], rtol=1e-12)


def test_simulate_command_refuses_bad_input_with_exit_2(tmp_path, capsys):
    code, text = _run(capsys, "simulate", "--events", str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv" in text and "Traceback" not in text
    params = tmp_path / "p.json"
    params.write_text('{"not_a_param": 1}')
    code, text = _run(capsys, "simulate", "--untreated", "--params", str(params))
    assert code == 2 and "not_a_param" in text and len(text.strip().splitlines()) == 1


def test_params_command_lists_units_and_sources(capsys):
    code, text = _run(capsys, "params", "--components", "cart")
    assert code == 0
    assert "cart_alpha" in text and "Stein" in text and "1/d" in text
