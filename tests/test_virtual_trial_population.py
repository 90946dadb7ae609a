"""The virtual trial draws its patients from the calibrated population by default, each
after its own product's lymphodepletion; the fitting priors and a fit's JSON remain
options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carthema import InputError
from carthema.cli import main
from carthema.clinical import trial as vt
from carthema.clinical.population.virtual import PRODUCT_LD, load_population
from carthema.clinical.trial import Policy, run_trial, trial_cohort, trial_source
from carthema.models.model import get_model

#: Rejeski et al. 2021 (Blood 138:2499), Table 2: ANC <= 0.5 G/L at any time in days
#: 0-60 (rows 11 and 19 of the bundled natural_history.csv), and the calibration's
#: tolerance for a fraction (nh_stats.tolerance).
PUBLISHED_ANC_LE_05 = {"tisa-cel": 0.81, "axi-cel": 0.95}
TOL = 0.10


def test_default_source_is_the_calibrated_population_with_each_products_course():
    model = get_model("full")
    cohort = trial_cohort(model, 400, np.random.default_rng(0))
    assert cohort.source == "calibrated population"
    pop = load_population()[0]
    # One trait distribution shared by products; each patient is given a product of the
    # LBCL cohort's mix (axi-cel, tisa-cel).
    assert set(cohort.group) == {"axi-cel", "tisa-cel"}
    for product, events in cohort.courses.items():
        ld = events[events["kind"] == "lymphodepletion"]
        flu = ld.loc[ld["drug"] == "fludarabine", "amount"].unique()
        cy = ld.loc[ld["drug"] == "cyclophosphamide", "amount"].unique()
        assert (float(flu[0]), float(cy[0])) == PRODUCT_LD[product]
        assert sorted(ld["day"].unique()) == [-5.0, -4.0, -3.0]
    # Every patient's parameters are a row of the population (graft parameters aside).
    rows = pop[[c for c in pop.columns if c in ("hsc_regen", "ld_kill_prol", "anc0")]]
    for k in range(10):
        p = {c: cohort.P[k, model.index("param", c)] for c in rows.columns}
        assert ((rows - pd.Series(p)).abs().max(axis=1) < 1e-12 * rows.abs().max(axis=1)).any()
    # The old sources remain: the fitting priors after one typical course.
    prior = trial_cohort(model, 50, np.random.default_rng(0), population="prior")
    assert prior.source == "fitting priors" and list(prior.courses) == ["course"]


@pytest.mark.parametrize("product", ["tisa-cel", "axi-cel"])
def test_no_boost_arm_reproduces_the_published_neutropenia(product):
    """Without a boost, the share of patients whose ANC falls to <= 0.5 G/L in days 0-60
    (those not "already engrafted" counted from CAR-T day 0) is Rejeski 2021's."""
    trial = run_trial([Policy("none")], 500, seed=1, horizon=60.0, product=product)
    ok = trial[trial["status"] == 0]
    assert len(ok) >= 490 and set(ok["course"]) == {product}
    fell = 1.0 - ok["neutrophil_already"].mean()
    assert fell == pytest.approx(PUBLISHED_ANC_LE_05[product], abs=TOL)


def test_prior_source_differs_and_product_needs_a_population(tmp_path, capsys):
    assert trial_source(None) == {"population": vt.CALIBRATED}
    assert trial_source("prior") == {"population": "prior"}
    with pytest.raises(InputError, match="not found"):
        trial_source(str(tmp_path / "missing.csv"))
    pol = tmp_path / "pol.csv"
    pol.write_text("name,trigger_day,anc_below,boost_day,dose\nnone,28,0.5,42,\n")
    with pytest.raises(SystemExit) as exc:
        main(["virtual-trial", "prior", "--policies", str(pol), "--out", str(tmp_path / "o"),
              "--product", "axi-cel", "--n", "10"])  # fmt: skip
    assert exc.value.code == 2
    # No population argument: the calibrated population, the product's rows only.
    with pytest.raises(SystemExit) as exc:
        main(["virtual-trial", "--policies", str(pol), "--out", str(tmp_path / "o"),
              "--product", "tisa-cel", "--n", "60", "--days", "60"])  # fmt: skip
    assert exc.value.code == 0, capsys.readouterr()
    patients = pd.read_parquet(tmp_path / "o" / "patients.parquet")
    assert set(patients["course"]) == {"tisa-cel"} and len(patients) == 60
