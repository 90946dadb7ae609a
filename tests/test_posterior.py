"""Posterior: a fit in memory and its saved folder give the same draws and the same fit
record, so the engraftment window runs from either without re-reading files; the
calibrated virtual population gives a posterior the window runs from too."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import carthema
from carthema.clinical.population.posterior import VirtualPopulation
from carthema.clinical.population.virtual import population_params
from carthema.clinical.window import window_draws, window_from_fit
from carthema.data import load_example
from carthema.data.errors import InputError
from carthema.fitting.fitdir import load_fit
from carthema.models.posterior import Posterior


@pytest.fixture(scope="module")
def map_fit():
    """A MAP fit of VP004 (full model), not saved."""
    ex = load_example("synthetic")
    return carthema.fit(ex.observations, ex.events, "VP004", sampler="map", draws=300, seed=3)


def test_a_fit_folders_posterior_equals_the_in_memory_one(tmp_path, map_fit):
    r = map_fit
    r.save(tmp_path / "fit", plot=False)
    mem = r.posterior()
    disk = Posterior.from_fit_folder(tmp_path / "fit")
    ff = load_fit(tmp_path / "fit")
    m = mem.model
    assert disk.model.name == m.name and disk.free == mem.free == tuple(ff.free)
    n_kept = ff.n_draws
    assert mem.draws.shape == disk.draws.shape == (n_kept, len(m.param_names))
    np.testing.assert_allclose(disk.draws, mem.draws, rtol=1e-12)
    np.testing.assert_allclose(disk.fixed, mem.fixed, rtol=1e-12)
    # Every fixed parameter holds its fit.json value; the free ones vary between draws.
    free = [m.index("param", n) for n in mem.free]
    fixed = [i for i in range(len(m.param_names)) if i not in free]
    for i in fixed:
        want = ff.meta["fixed_params"][m.param_names[i]]
        np.testing.assert_allclose(mem.draws[:, i], want, rtol=1e-12)
    assert np.all(mem.draws[:, free].std(axis=0) > 0)
    # A pick of 40 draws: 40 distinct rows of the posterior, in their stored order.
    pick = disk.sample(40, seed=5)
    rows = [int(np.flatnonzero((disk.draws == row).all(axis=1))[0]) for row in pick]
    assert len(set(rows)) == 40 and rows == sorted(rows)
    np.testing.assert_array_equal(ff.draws(40, seed=5), pick)
    assert mem.patient == disk.patient == "VP004"
    assert disk.provenance["fit_folder"] == str(tmp_path / "fit")
    assert mem.provenance["in_memory"] is True and mem.provenance["sampler"] == "map"
    assert len(mem.events) == len(disk.events)


def test_in_memory_fit_and_its_folder_give_the_same_window(tmp_path, map_fit):
    """The fit record travels with the in-memory posterior (nothing is read back): the
    window of the unsaved fit equals the window of its saved folder, table and misfit
    check alike; only the saved one names a fit folder."""
    # As the fit was before any save (another test may have saved the shared fit).
    mem = dataclasses.replace(map_fit, folder=None).posterior()
    assert mem.fit is not None and mem.fit.folder is None
    map_fit.save(tmp_path / "fit", plot=False)
    disk = Posterior.from_fit_folder(tmp_path / "fit")
    assert disk.fit.folder == tmp_path / "fit"
    assert map_fit.posterior().fit.folder == tmp_path / "fit"
    saved = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert mem.fit.meta["pit"] == pytest.approx(saved["pit"])
    assert mem.fit.meta["trust"] == saved["trust"] and mem.fit.notes == disk.fit.notes
    # summary.csv and residuals.csv hold the same numbers to their 6 significant digits.
    columns = {"summary": ("median", "q05", "q95"), "residuals": ("ipred", "pi05", "pi95", "pit")}
    for name, table in (("summary", mem.fit.summary), ("residuals", mem.fit.residuals)):
        read = pd.read_csv(tmp_path / "fit" / f"{name}.csv")
        assert len(read) == len(table) > 0
        for col in columns[name]:
            np.testing.assert_allclose(read[col], table[col], rtol=1e-5, err_msg=col)
    runs = {}
    for label, post in (("memory", mem), ("folder", disk)):
        out = tmp_path / label
        runs[label] = window_from_fit(post, [30.0, 60.0], out, n_draws=6, seed=2, today=30.0)
        runs[label]["table"] = pd.read_csv(out / "window.csv")
    pd.testing.assert_frame_equal(runs["memory"]["table"], runs["folder"]["table"])
    assert runs["memory"]["misfit_reasons"] == runs["folder"]["misfit_reasons"]
    assert runs["memory"]["fit"] is None
    assert runs["folder"]["fit"] == str(tmp_path / "fit")
    assert runs["memory"]["draws_from"] == "posterior draws of a fit in memory"


def test_window_runs_from_a_population_posterior(tmp_path):
    """Draws of the calibrated population (axi-cel, CAR-HEMATOTOX high) are rows of the
    population under axi-cel's kinetics with axi-cel's course as events; the window scans
    them, and its CAR-T level on each boost day equals the median of one public
    `carthema.simulate` run per draw of the product's course."""
    pop = VirtualPopulation.load()
    n = 10
    post = pop.sample(n, seed=4, product="axi-cel", hematotox="high")
    model = post.model
    assert post.fit is None and post.draws.shape == (n, len(model.param_names))
    high = pop.frame[pop.frame["hematotox"] >= 2].assign(product="axi-cel")
    rows = population_params(model, high)
    for p in post.draws:
        assert np.isclose(rows, p, rtol=1e-12, atol=0).all(axis=1).any()
    ev = post.events
    assert ev.loc[ev["kind"] == "cart_infusion", "amount"].tolist() == [2e6]
    assert (ev.loc[ev["kind"] == "lymphodepletion", "day"] < 0).all()

    days = [14.0, 28.0]
    res = window_from_fit(post, days, tmp_path, n_draws=n, seed=4, today=0.0)
    on = json.loads((tmp_path / "window.json").read_text())
    assert on["fit"] is None and on["misfit_reasons"] == []
    assert on["draws_from"].startswith("draws of the calibrated virtual population")
    assert on["n_draws"] == n and res["today"] == 0.0
    table = pd.read_csv(tmp_path / "window.csv")
    P, _ = window_draws(post, n, seed=4, dose=3e6)
    for day in days:
        cart = []
        for p in P:
            traj = carthema.simulate(ev, params=p, days=day + 1, rtol=1e-8, atol=1e-10)
            cart.append(traj["cart_copies"][int(np.flatnonzero(traj.t == day)[0])])
        row = table[table["boost_day"] == day].iloc[0]
        assert row["cart_at_reference_median"] == pytest.approx(np.median(cart), rel=1e-3)


def test_population_sample_refuses_bad_requests():
    pop = VirtualPopulation.load()
    with pytest.raises(InputError, match="product"):
        pop.sample(5, product="no-such-cel")
    with pytest.raises(InputError, match="CAR-HEMATOTOX"):
        pop.sample(5, product="axi-cel", hematotox="9")


def test_a_b_all_population_sample_carries_the_b_all_course():
    """Draws of the B-ALL population are treated with the disease's own course (ELIANA:
    fludarabine 30 mg/m2 x 4, cyclophosphamide 500 mg/m2 x 2, Kymriah label), not the
    LBCL one (25 x 3, 250 x 3): the events a caller simulates them with say so."""
    post = VirtualPopulation.load("b-all").sample(4, seed=1, product="tisa-cel")
    ld = post.events[post.events["kind"] == "lymphodepletion"]
    cy = ld[ld["drug"] == "cyclophosphamide"]
    flu = ld[ld["drug"] == "fludarabine"]
    assert cy["amount"].tolist() == [500.0, 500.0]
    assert flu["amount"].tolist() == [30.0] * 4


def test_a_population_window_needs_today_and_never_recommends_a_past_day(tmp_path):
    """Draws of the virtual population have no observations, so no last observed day: a
    window from them is refused without ``today`` (before any solve, nothing written);
    with it, candidate days before today are dropped, never scanned or recommended."""
    post = VirtualPopulation.load().sample(8, seed=2, product="axi-cel")
    with pytest.raises(InputError, match="no last observation to take as today"):
        window_from_fit(post, [4.0, 20.0], tmp_path / "none", n_draws=8)
    assert not (tmp_path / "none").exists()
    res = window_from_fit(post, [4.0, 8.0, 12.0, 16.0], tmp_path / "w", n_draws=8, today=10.0)
    assert res["today"] == 10.0 and res["days_before_today_dropped"] == [4.0, 8.0]
    assert res["plan"]["boost_days"] == [12.0, 16.0]
    table = pd.read_csv(tmp_path / "w" / "window.csv")
    assert table["boost_day"].tolist() == [12.0, 16.0]
    day = res["window"]["recommended_day"]
    assert day is None or day >= 10.0
    # The default scan starts today too (here day 11, the first whole day after 10.5).
    res = window_from_fit(post, None, tmp_path / "d", n_draws=8, today=10.5)
    assert min(res["plan"]["boost_days"]) == 11.0
    assert res["window"]["recommended_day"] is None or res["window"]["recommended_day"] >= 11
