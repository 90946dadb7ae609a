"""Residual-error likelihood: normal on each analyte's scale, M3 censoring below the limit.

For an observation ``y`` of analyte ``a`` with model prediction ``f`` and residual SD
``s_a`` on the analyte's scale ``g`` (log, logit or identity, see
:data:`carthema.fitting.model.priors.RESIDUALS`):

- quantified:   ``log L = log N(g(y) | g(f), s_a)``  (log-normal for ``g = log``);
- below limit:  ``log L = log Phi((g(lloq) - g(f)) / s_a)``  (Beal's M3: the probability
  of a value below the limit; never dropped, never replaced by LLOQ/2).

The density is that of the transformed value ``g(y)``; for the log scale it differs from
the log-normal density of ``y`` by the constant ``-log y``, which does not depend on the
parameters. ``g`` adds a small per-analyte ``floor`` to the prediction before the log so
that a prediction of exactly 0 (CAR-T copies before the infusion) stays finite.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from scipy import stats

from carthema.fitting.model.data import PatientData, transform_np

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def transform_pt(pred, data: PatientData):
    """Predictions (PyTensor vector, rows of ``data``) on each row's likelihood scale."""
    floor = data.rows["floor"].to_numpy(float)
    parts = []
    for scale, sl in data.scale_slices().items():
        x = pred[sl]
        fl = floor[sl]
        if scale == "log":
            parts.append(pt.log(pt.maximum(x, 0.0) + fl))
        elif scale == "logit":
            f = pt.clip(x / 100.0, 0.0, 1.0)
            parts.append(pt.log(f + fl / 100.0) - pt.log(1.0 - f + fl / 100.0))
        else:
            parts.append(x)
    return parts[0] if len(parts) == 1 else pt.concatenate(parts)


#: Below this z, log Phi(z) uses its asymptotic series (relative error < 1e-7 there).
_TAIL = -10.0


def normal_lcdf_pt(z):
    """log Phi(z), stable in both tails, in PyTensor ops that both the numba and the JAX
    backends implement (no ``erfcx``, which PyTensor's JAX backend lacks).

    - ``z < -10``: ``log phi(z) - log(-z) + log(1 - z^-2 + 3 z^-4 - 15 z^-6 + 105 z^-8)``;
    - ``-10 <= z < 0``: ``log(erfc(-z / sqrt 2) / 2)``;
    - ``z >= 0``: ``log1p(-erfc(z / sqrt 2) / 2)``.

    Each branch gets an input clamped into its own range, so that the branches not taken
    stay finite and their (masked) gradients cannot turn into NaN.
    """
    tail = pt.lt(z, _TAIL)
    zt = pt.switch(tail, z, _TAIL - 1.0)
    r = 1.0 / (zt * zt)
    series = 1.0 + r * (-1.0 + r * (3.0 + r * (-15.0 + r * 105.0)))
    asym = -0.5 * zt * zt - _LOG_SQRT_2PI - pt.log(-zt) + pt.log(series)
    zm = pt.clip(z, _TAIL, 0.0)
    mid = pt.log(0.5 * pt.erfc(-zm / np.sqrt(2.0)))
    zp = pt.maximum(z, 0.0)
    upper = pt.log1p(-0.5 * pt.erfc(zp / np.sqrt(2.0)))
    return pt.switch(tail, asym, pt.switch(pt.lt(z, 0.0), mid, upper))


def row_loglik_pt(mu, sigma, y, censored: np.ndarray):
    """Per-row log-likelihood (PyTensor): normal density or M3 censored probability.

    ``mu``, ``sigma``: PyTensor vectors over rows; ``y``: transformed value or limit
    (numpy); ``censored``: boolean numpy mask.
    """
    censored = np.asarray(censored, dtype=bool)
    out = []
    unc = np.flatnonzero(~censored)
    cen = np.flatnonzero(censored)
    if unc.size:
        z = (y[unc] - mu[unc]) / sigma[unc]
        out.append(-0.5 * z * z - pt.log(sigma[unc]) - _LOG_SQRT_2PI)
    if cen.size:
        z = (y[cen] - mu[cen]) / sigma[cen]
        out.append(normal_lcdf_pt(z))
    return out


def loglik_numpy(pred: np.ndarray, sigma_rows: np.ndarray, data: PatientData) -> np.ndarray:
    """Per-row log-likelihood in numpy/scipy (reference for tests and reports)."""
    scale = data.rows["scale"].to_numpy()
    floor = data.rows["floor"].to_numpy(float)
    mu = transform_np(pred, scale, floor)
    y = data.transformed()
    cen = data.censored
    out = np.empty(len(y))
    out[~cen] = stats.norm.logpdf(y[~cen], mu[~cen], sigma_rows[~cen])
    out[cen] = stats.norm.logcdf(y[cen], mu[cen], sigma_rows[cen])
    return out
