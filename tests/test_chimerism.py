"""Whole-blood chimerism (``chimerism_wb``) beside the myeloid one (``chimerism_cd15``)."""

from __future__ import annotations

import numpy as np
import pytest

from carthema.data.boost import BoostPlan
from carthema.models.scenarios import POOR_RESERVE, typical_course, with_plan
from carthema.models.simulate import simulate


@pytest.mark.parametrize("c", [0.3, 0.9])
def test_an_untreated_chimeric_patient_has_the_same_share_in_every_lineage(c):
    """Analytic: with no event, a patient carrying donor chimerism c (after an earlier
    allogeneic transplant) is at steady state with the share c in neutrophils, T cells
    and B cells alike, so both chimerisms are 100 c."""
    tr = simulate(None, params={"donor_chim0": c}, days=30.0)
    assert tr.ok
    np.testing.assert_allclose(tr["chimerism_cd15"], 100 * c, rtol=1e-6)
    np.testing.assert_allclose(tr["chimerism_wb"], 100 * c, rtol=1e-6)


def test_a_t_cell_depleted_new_donor_graft_gives_split_chimerism():
    """A CD34-selected new-donor graft 30 days after CAR-T into the package's poor-reserve
    marrow (models.scenarios.POOR_RESERVE: still aplastic on day 90 without a graft, ANC
    0.26 G/L) of a host whose weak rejection lets it take (rej_rate 0.1/d): donor myeloid
    cells replace the host's while the host's T cells recover (split chimerism, as after
    T-depleted grafts), so on day 90 whole-blood chimerism lies below the myeloid one.
    (With hsc_mass 0.02 alone the resident marrow now regrows by its own self-renewal and
    the graft stays a minority.)"""
    ev = with_plan(typical_course(patient="p"),
                   BoostPlan(30.0, 5e6, "allogeneic", cd34_selected=True))  # fmt: skip
    tr = simulate(ev, days=90.0, params={**POOR_RESERVE, "rej_rate": 0.1})
    assert tr.ok
    cd15, wb = tr["chimerism_cd15"][-1], tr["chimerism_wb"][-1]
    assert cd15 > 20.0
    assert wb < cd15 - 1.0
