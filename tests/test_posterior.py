"""Posterior: a fit in memory and its saved folder give the same draws."""

from __future__ import annotations

import numpy as np

import carthema
from carthema.data import load_example
from carthema.fitting.fitdir import load_fit
from carthema.models.posterior import Posterior


def test_a_fit_folders_posterior_equals_the_in_memory_one(tmp_path):
    ex = load_example("synthetic")
    r = carthema.fit(ex.observations, ex.events, "VP004", sampler="map", draws=300, seed=3)
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
