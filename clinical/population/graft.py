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
2. its plausible spread (:attr:`carthema.models.parameters.Param.plausible`: log-normal
   around its median, or the default);
3. otherwise ASSUMPTION: log-normal around the model default with log-SD
   :data:`ASSUMED_LOG_SD` (0.3, i.e. a 90 % range of about 0.6x to 1.6x the default).
   No published between-graft spread of these (model-specific) quantities was found; 0.3
   is the usual between-patient log-SD of a kinetic parameter and is stated here as an
   assumption, not a finding.

Draws are clipped to each parameter's plausible range.

Primary graft failure
---------------------
Given the CD34+ dose, each draw's graft fails outright (it seeds nothing: ``graft_hsc``
and ``graft_prog`` 0 for that draw) with probability ``exp(-dose / FAIL_DOSE)``
(:func:`p_graft_failure`). ASSUMPTION for the shape: a graft takes when at least one of
its rare repopulating units homes and functions, the units independently (a Poisson
number, mean proportional to the dose), so failure falls exponentially with the dose.
CALIBRATED scale: ``FAIL_DOSE`` = 2e6 / ln(100) = 4.3e5 CD34+/kg puts the failure rate
at 2e6/kg at 1 %, the bound of ../shared/calibration/graft_kinetics.csv row 12 (Br J
Haematol 2016, 804 autografts: with >= 2e6 CD34+/kg neutrophils recovered within 14 days
in > 99 %). It gives 10 % at 1e6/kg, 0.1 % at 3e6/kg and < 0.01 % at 5e6/kg: transplant
practice's < 2e6/kg risk threshold (Ketterer et al. 1998, Blood 91:3148: <= 2.5e6/kg
significantly delayed; row 4's note). A draw that fails keeps the rest of its course
(the patient's own marrow, any rejection or GvH). Rejection of a new donor's graft by
recovering host T cells is not drawn here: the model simulates it (``rej_rate`` x host
immunity ``imm_R``), so it depends on the boost day. For comparison only (not used):
68 of 1,726 allogeneic transplants (3.9 %) had graft failure in one centre's 1990-2000
series (PMC4548938), after conditioning.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from carthema.models.model import Model

#: The graft and rejection parameters whose uncertainty every boost prediction carries.
GRAFT_PARAMS: tuple[str, ...] = ("graft_prog", "graft_hsc", "graft_regen", "rej_rate", "imm_regen")
#: ASSUMPTION (see the module docstring): log-SD of a graft parameter that is neither a
#: population column nor has a plausible spread on its Param.
ASSUMED_LOG_SD = 0.3
#: CD34+ cells/kg at which the graft fails with probability 1/e (see the module docstring:
#: 1 % failures at 2e6/kg, graft_kinetics.csv row 12).
FAIL_DOSE = 2e6 / np.log(100.0)
#: Parameters a failed graft has at zero: it seeds no stem cells and no progenitors.
FAILED_GRAFT = ("graft_hsc", "graft_prog")


#: One line for reports: where the failure probability comes from.
GRAFT_FAILURE_SOURCE = (
    "primary graft failure exp(-dose / 4.3e5 CD34+/kg): a Poisson number of repopulating "
    "units (assumption), scaled to 1 % at 2e6/kg (graft_kinetics.csv row 12, Br J Haematol "
    "2016: > 99 % neutrophil recovery within 14 days at >= 2e6/kg)"
)


def p_graft_failure(dose: float) -> float:
    """Probability that a graft of ``dose`` CD34+ cells/kg fails outright (module
    docstring): ``exp(-dose / FAIL_DOSE)``."""
    return float(np.exp(-float(dose) / FAIL_DOSE))


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
        elif (q := model.params[model.index("param", name)]).plausible is not None:
            t = q.plausible
            median = q.default if t.median is None else t.median
            out[name] = (
                f"plausible spread: log-normal, median {median:g}, log-SD {t.sd:g}: {t.source}"
            )
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
    dose: float | None = None,
) -> np.ndarray:
    """``P`` (natural scale, (n, n_params)) with the graft parameters redrawn per row
    (a copy). Parameters in ``keep`` (e.g. ones a fit estimated) are left as they are.
    With ``dose`` (CD34+ cells/kg) a share :func:`p_graft_failure` of the rows, drawn at
    random, get a failed graft (``graft_hsc`` and ``graft_prog`` 0)."""
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
        elif q.plausible is not None:
            t = q.plausible
            median = q.default if t.median is None else t.median
            x = np.log(median) + t.sd * rng.standard_normal(n)
        else:
            x = np.log(model.default_params()[j]) + ASSUMED_LOG_SD * rng.standard_normal(n)
        P[:, j] = np.clip(np.exp(x), q.low, q.high)
    if dose is not None:
        fail_grafts(model, P, dose, rng, keep=keep)
    return P


def fail_grafts(
    model: Model,
    P: np.ndarray,
    dose: float,
    rng: np.random.Generator,
    *,
    keep: tuple[str, ...] = (),
) -> np.ndarray:
    """Primary graft failure at ``dose`` CD34+ cells/kg, in place: a share
    :func:`p_graft_failure` of the rows of ``P``, drawn at random, get a failed graft
    (``graft_hsc`` and ``graft_prog`` 0; not those in ``keep``). Returns the rows'
    failure flags."""
    failed = rng.random(P.shape[0]) < p_graft_failure(dose)
    for name in FAILED_GRAFT:
        if name in model.param_names and name not in keep:
            P[failed, model.index("param", name)] = 0.0
    return failed
