"""The graft's own uncertainty: draws of the graft and rejection parameters.

How many stem cells and progenitors a CD34+ cell/kg seeds, how fast healthy graft stem
cells regrow and how fast residual host immunity rejects a new donor's cells are not
known for any one graft. Every boost prediction (``predict-boost``, ``window``, the boost
calibration benchmark) therefore draws them per parameter draw instead of holding them at
their defaults.

Where each parameter's distribution comes from, in this order:

1. a column of the calibrated virtual population (:func:`carthema.clinical.population.virtual.
   load_population`): its values, resampled, with a small log-scale kernel so that the
   draws are not a handful of repeated values;
2. its spread in :data:`carthema.clinical.population.virtual.TRAITS` (log-normal around its median);
3. otherwise ASSUMPTION: log-normal around the model default with log-SD
   :data:`ASSUMED_LOG_SD` (0.3, i.e. a 90 % range of about 0.6x to 1.6x the default).
   No published between-graft spread of these (model-specific) quantities was found; 0.3
   is the usual between-patient log-SD of a kinetic parameter and is stated here as an
   assumption, not a finding.

Draws are clipped to each parameter's plausible range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from carthema.clinical.population.virtual import TRAITS
from carthema.models.model import Model

#: The graft and rejection parameters whose uncertainty every boost prediction carries.
GRAFT_PARAMS: tuple[str, ...] = ("graft_prog", "graft_hsc", "graft_regen", "rej_rate")
#: ASSUMPTION (see the module docstring): log-SD of a graft parameter that is neither a
#: population column nor listed in TRAITS.
ASSUMED_LOG_SD = 0.3
#: Log-scale kernel width (fraction of the column's own log-SD) added to resampled
#: population values.
KERNEL = 0.2


def graft_sources(model: Model, population: pd.DataFrame | None = None) -> dict[str, str]:
    """Where each graft parameter's distribution comes from (for reports)."""
    out = {}
    for name in GRAFT_PARAMS:
        if name not in model.param_names:
            continue
        if population is not None and name in population.columns:
            out[name] = "calibrated population column"
        elif name in TRAITS:
            t = TRAITS[name]
            median = (
                model.params[model.index("param", name)].default if t.median is None else t.median
            )
            out[name] = f"TRAITS: log-normal, median {median:g}, log-SD {t.sd:g}"
        else:
            default = model.default_params()[model.index("param", name)]
            out[name] = (
                f"assumption: log-normal around the default {default:g}, log-SD {ASSUMED_LOG_SD:g}"
            )
    return out


def draw_graft(
    model: Model,
    P: np.ndarray,
    rng: np.random.Generator,
    *,
    population: pd.DataFrame | None = None,
    keep: tuple[str, ...] = (),
) -> np.ndarray:
    """``P`` (natural scale, (n, n_params)) with the graft parameters redrawn per row
    (a copy). Parameters in ``keep`` (e.g. ones a fit estimated) are left as they are."""
    P = np.array(P, dtype=float, copy=True)
    n = P.shape[0]
    for name in GRAFT_PARAMS:
        if name not in model.param_names or name in keep:
            continue
        j = model.index("param", name)
        q = model.params[j]
        if population is not None and name in population.columns:
            col = np.log(population[name].to_numpy(float))
            col = col[np.isfinite(col)]
            sd = float(np.std(col)) if col.size > 1 else 0.0
            x = rng.choice(col, n) + KERNEL * sd * rng.standard_normal(n)
        elif name in TRAITS:
            t = TRAITS[name]
            median = q.default if t.median is None else t.median
            x = np.log(median) + t.sd * rng.standard_normal(n)
        else:
            x = np.log(model.default_params()[j]) + ASSUMED_LOG_SD * rng.standard_normal(n)
        P[:, j] = np.clip(np.exp(x), q.low, q.high)
    return P
