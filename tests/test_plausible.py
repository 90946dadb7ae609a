"""One home per parameter fact: the plausible population's median and spread live on the
parameter's ``Param``; ``TRAITS`` holds only correlations and laboratory values."""

from __future__ import annotations

import numpy as np
import pytest

from carthema.clinical.population.virtual import TRAITS, Lab, Trait, draw_plausible
from carthema.models.model import get_model
from carthema.models.parameters import Plausible


@pytest.fixture(scope="module")
def full():
    return get_model("full")


def test_every_plausible_spread_has_a_unit_and_a_source(full):
    spread = [q for q in full.params if q.plausible is not None]
    assert len(spread) >= 20
    for q in spread:
        assert isinstance(q.plausible, Plausible)
        assert q.unit.strip(), q.name
        assert q.plausible.source.strip(), q.name
        assert q.plausible.sd > 0, q.name
        median = q.default if q.plausible.median is None else q.plausible.median
        assert q.low <= median <= q.high, q.name


def test_traits_hold_only_correlations_and_laboratory_values(full):
    for name, t in TRAITS.items():
        if name.startswith("lab_"):
            assert isinstance(t, Lab), name
            assert name not in full.param_names
            assert t.median > 0 and t.sd > 0 and t.why
        else:
            # A parameter's entry carries no median or spread: only its correlations.
            assert type(t) is Trait, name
            assert set(vars(t)) == {"rho_r", "rho_q"}
            assert full.params[full.index("param", name)].plausible is not None, name
        assert t.rho_r**2 + t.rho_q**2 <= 1.0, name


def test_plausible_draws_follow_each_params_median_and_spread(full):
    # Independent expectation: the log-normal of the Param (median, log-SD), checked on
    # the sample's median and MAD-based SD of the log values (clipping at the plausible
    # bounds touches only the tails).
    n = 20000
    P, info = draw_plausible(n, np.random.default_rng(7), full)
    for name in ("anc0", "plt0", "hsc_regen", "neu_gamma", "mpp_rate"):
        q = full.params[full.index("param", name)]
        median = q.default if q.plausible.median is None else q.plausible.median
        lx = np.log(P[:, full.index("param", name)])
        assert np.median(lx) == pytest.approx(np.log(median), abs=0.03), name
        mad_sd = 1.4826 * np.median(np.abs(lx - np.median(lx)))
        assert mad_sd == pytest.approx(q.plausible.sd, rel=0.05), name
    crp = np.log(info["crp"].to_numpy())
    assert np.median(crp) == pytest.approx(np.log(TRAITS["lab_crp"].median), abs=0.05)
