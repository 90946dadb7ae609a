"""Diseases by mechanism (issue 17, item 2): presets that set the CD19+ load and the
marrow infiltration directly, inside their parameters' bounds; leukaemic marrow crowding
of normal haematopoiesis and its clearance by CAR-T; CAR-T kinetics in B-ALL against
Stein et al. 2019; the MCL population against its published row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carthema import simulate
from carthema.clinical.population.natural_history import natural_history
from carthema.clinical.population.virtual import (
    crowded_baseline,
    disease_base,
    draw_plausible,
    load_population,
    product_events,
    product_params,
)
from carthema.models.components.targets import ESCAPE_OFF
from carthema.models.events import build_events
from carthema.models.model import get_model
from carthema.models.presets import (
    B_ALL_LOAD,
    B_ALL_MARROW,
    DISEASES,
    MCL_LOAD,
    MCL_MARROW,
    PRODUCTS,
    apply_presets,
)
from carthema.models.scenarios import EVENT_COLUMNS
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import SCREEN


def _share(overrides: dict) -> float:
    """Marrow blast share at the preset load (targets.py: L / (L + leuk_marrow_ref))."""
    return overrides["leuk_L0"] / (overrides["leuk_L0"] + overrides["leuk_marrow_ref"])


def test_every_disease_preset_is_inside_its_parameters_bounds():
    """Issue 17: B-ALL loads exceeded the parameter's own upper bound when diseases were
    ratios on the default load. Every value of every disease preset, alone and with
    every product, lies inside the plausible range of its parameter."""
    model = get_model("full")
    for disease in DISEASES:
        for product in (None, *PRODUCTS):
            for name, value in apply_presets(product, disease, full=True).items():
                if name == "cart_dose":
                    continue
                q = model.params[model.index("param", name)]
                assert q.low <= value <= q.high, (disease, product, name, value)


def test_presets_set_load_and_marrow_infiltration_directly():
    """The load and the marrow blast share are the disease's own numbers (B-ALL 2000
    cells/uL-equivalents at 70 % marrow blasts, MCL 1000 at 20 %), not a ratio on the
    component default; the trial dose replaces the product's LBCL dose (ZUMA-3 1e6/kg)."""
    ball, mcl = DISEASES["b-all"].overrides, DISEASES["mcl"].overrides
    assert ball["leuk_L0"] == B_ALL_LOAD == 2000.0 and mcl["leuk_L0"] == MCL_LOAD == 1000.0
    assert _share(ball) == pytest.approx(B_ALL_MARROW) and B_ALL_MARROW == 0.70
    assert _share(mcl) == pytest.approx(MCL_MARROW) and MCL_MARROW == 0.20
    assert ball["leuk_crowding"] == mcl["leuk_crowding"] == 1.0
    assert "leuk_crowding" not in DISEASES["lbcl"].overrides  # LBCL: the default, off
    assert apply_presets("brexu-cel", "b-all")["cart_dose"] == 1.0e6
    assert apply_presets("brexu-cel", "mcl")["cart_dose"] == 2.0e6


def _infusion_only(dose: float) -> pd.DataFrame:
    row = dict.fromkeys(EVENT_COLUMNS)
    row.update(patient="p", day=0.0, kind="cart_infusion", amount=dose, unit="cells/kg")
    return pd.DataFrame([row], columns=EVENT_COLUMNS)


def test_a_crowded_marrow_is_at_steady_state_before_treatment():
    """DESIGN.md: the untreated patient sits at a steady state; with the B-ALL marrow
    (70 % blasts) the pre-treatment counts are held, not drifting."""
    t = np.arange(-7.0, 120.0)
    params = {**apply_presets(None, "b-all"), "anc0": 1.2, "plt0": 60.0}
    tr = simulate(pd.DataFrame(columns=EVENT_COLUMNS), params=params, t_out=t)
    assert np.allclose(tr["anc"], 1.2, rtol=1e-6) and np.allclose(tr["platelets"], 60.0, rtol=1e-6)


def test_clearing_the_blasts_frees_the_marrow():
    """Leukaemic crowding (Colmone et al. 2008): counts scale with the marrow's normal
    share, so once CAR-T (alone, no lymphodepletion, CRS switched off) has cleared a
    70 %-blast marrow the counts settle near 1 / (1 - 0.70) = 3.3 times the crowded
    pre-treatment counts (the feedback's new set point, an analytic reference); the same
    patient without crowding stays near its pre-treatment counts. No CD19-negative
    blasts here (``leuk_cd19neg`` off), so every blast can be cleared."""
    t = np.arange(-7.0, 151.0)
    base = {
        **apply_presets(None, "b-all"),
        "anc0": 1.2,
        "plt0": 60.0,
        "infl_eref": 1e5,
        "leuk_cd19neg": ESCAPE_OFF,
    }
    on = simulate(_infusion_only(3.1e6), params=base, t_out=t)
    off = simulate(_infusion_only(3.1e6), params={**base, "leuk_crowding": 1e-3}, t_out=t)
    assert on["marrow_blasts"][t == 28][0] < 1e-3  # blasts cleared
    expected = 1.0 / (1.0 - B_ALL_MARROW)
    for key in ("anc", "platelets"):
        ratio = on[key][-1] / off[key][-1]
        assert ratio == pytest.approx(expected, rel=0.10), (key, ratio)
        assert off[key][-1] == pytest.approx(off[key][0], rel=0.10)


@pytest.fixture(scope="module")
def b_all_kinetics():
    """CAR-T copies of 300 plausible B-ALL patients (the B-ALL preset, the patients' own
    load and kinetics) under tisa-cel's ELIANA course."""
    model = get_model("full")
    P, _ = draw_plausible(300, np.random.default_rng(1), model, base=disease_base("b-all"))
    P = product_params(model, crowded_baseline(model, P), "tisa-cel")
    days = np.arange(-7.0, 61.0, 0.5)
    ev = build_events(model, product_events("tisa-cel", disease="b-all"), model.default_params())
    sol = solve_batch(model, P, Schedule.from_events(model, ev, days, t0=-7.0), SCREEN)
    ok = sol.status == 0
    assert ok.mean() > 0.98
    return days, sol.obs[ok, :, model.index("obs", "cart_copies")]


def test_tisa_cel_b_all_kinetics_answer_to_stein_2019(b_all_kinetics):
    """Issue 17 measured CAR-T Cmax medians of 9.8e6 copies/ug in B-ALL. Stein et al.
    2019 (tisagenlecleucel, 90 B-ALL patients, Table 1 typical values): Cmax 24,000
    copies/ug, Tmax 9.3 d. The simulated population median Cmax within a factor 1.5 and
    median Tmax within 3 days (the tolerances of test_presets)."""
    days, c = b_all_kinetics
    anchor = PRODUCTS["tisa-cel"].anchors
    cmax = np.median(c.max(axis=1))
    tmax = np.median(days[np.argmax(c, axis=1)])
    assert 1 / 1.5 <= cmax / anchor["cmax"].value <= 1.5, cmax
    assert abs(tmax - anchor["tmax"].value) <= 3.0, tmax


def test_the_mcl_population_matches_its_published_row():
    """natural_history_more.csv row 6 (Rejeski et al. 2024, brexu-cel in MCL): early
    neutrophil ICAHT grade >= 3 in 28 %, within 0.10; one trait distribution whose
    weights keep an effective sample size >= 500 and whose file carries the MCL preset."""
    pop, meta = load_population(disease="mcl")
    assert meta["disease"] == "mcl" and meta["effective_sample_size"] >= 500
    assert (pop["leuk_marrow_ref"] == DISEASES["mcl"].overrides["leuk_marrow_ref"]).all()
    assert np.exp(np.median(np.log(pop["leuk_L0"]))) == pytest.approx(MCL_LOAD, rel=0.5)
    nh = natural_history(None, "mcl", n=600, seed=2)  # one product in MCL: brexu-cel
    assert nh.settings["product"] == "brexu-cel"
    rows = nh.table().dropna(subset=["published"])
    assert list(rows["statistic"]) == ["p_early_icaht_ge3"]
    assert abs(rows["model"].iloc[0] - 0.28) <= 0.10 and rows["within_tolerance"].all()


def test_calibration_takes_the_disease_and_writes_its_preset(tmp_path):
    """``calibrate --disease mcl``: the MCL rows only (natural_history_more.csv row 6),
    brexu-cel under its ZUMA-2 course, no CAR-HEMATOTOX share term (MCL has no strata),
    and the MCL preset's load and marrow in the file; a population file per disease."""
    from carthema.clinical.population.calibrate import calibrate, write_population

    pop, info = calibrate(n=800, seed=3, n_out=200, disease="mcl", verbose=False)
    assert info["disease"] == "mcl" and info["products_simulated"] == ["brexu-cel"]
    assert info["ht_high_share_target"] is None
    assert [(r["file"], r["row"], r["key"]) for r in info["rows"]] == [
        ("natural_history_more.csv", 6, "p_early_icaht_ge3")
    ]
    assert "ZUMA-2" in info["product_courses"]["brexu-cel"]
    assert (pop["leuk_crowding"] == 1.0).all() and (pop["leuk_marrow_ref"] == 4000.0).all()
    write_population(pop, info, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mcl_population.csv",
        "mcl_population.json",
    ]
