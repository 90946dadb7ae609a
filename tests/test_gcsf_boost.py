"""A patient on G-CSF at the boost: the boost-day count is supported, so it is never
"already engrafted"; engraftment is timed off G-CSF (issue 10, "G-CSF days do not count
toward engraftment; supported counts are conditioned on with the support in the model")."""

from __future__ import annotations

import numpy as np

from carthema.clinical.boost.predict import SUPPORT_DAYS, predict_boost
from carthema.clinical.endpoints import neutrophil_engraftment

DAYS = np.arange(20.0, 80.0)
BOOST = 40.0


def _series(pairs, default):
    v = np.full(DAYS.size, default, dtype=float)
    for day, value in pairs:
        v[DAYS == day] = value
    return v


def test_supported_boost_day_is_not_already_engrafted_by_hand():
    """G-CSF through the boost day (as predict-boost now represents --gcsf): a failing
    marrow whose supported ANC 0.8 drains to 0.2 on days 43-51 and engrafts from day 52
    is timed from the fall (12 days), and a count that never falls engrafts on the first
    day off G-CSF (day 41: 1 day), never "already"."""
    gcsf = [(BOOST - SUPPORT_DAYS, BOOST + 1.0)]
    failing = _series([(d, 0.2) for d in range(43, 52)], 0.8)
    e = neutrophil_engraftment(DAYS, failing, reference=BOOST, gcsf=gcsf)
    assert not e.already and e.day == 52.0 and e.time == 12.0
    steady = np.full(DAYS.size, 0.8)
    e = neutrophil_engraftment(DAYS, steady, reference=BOOST, gcsf=gcsf)
    assert not e.already and e.day == 41.0 and e.time == 1.0
    # The earlier representation (G-CSF stopping the day before the boost) called the
    # steady series already engrafted on the strength of its supported boost-day count.
    e = neutrophil_engraftment(DAYS, steady, reference=BOOST, gcsf=[(BOOST - SUPPORT_DAYS, BOOST)])
    assert e.already


def test_predict_boost_on_gcsf_has_no_already_engrafted_draws():
    res = predict_boost(BOOST, 3e6, "autologous", anc=0.8, gcsf=True, neutropenia_days=20,
                        product="axi-cel", n_draws=2000, seed=4, return_draws=True)  # fmt: skip
    e = res["draw_engraftment"]["neutrophil"]
    assert not e.already.any() and res["neutrophil"]["p_already"] == 0.0
    assert res["neutrophil"]["q05"] >= 1.0
    assert res["inputs"]["support"]["gcsf_on_boost_day"] is True
    # Conditioned with the support in the model: the patient's own ANC is below the
    # supported 0.8 it was measured at (0.64 measured: G-CSF adds less where the
    # progenitor pool is depleted, gcsf_m50; it was 0.6 or less with a fixed factor).
    assert res["own_counts_at_boost"]["anc"]["median"] < 0.75
