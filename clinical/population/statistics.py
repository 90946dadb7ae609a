"""Natural-history statistics of daily blood counts after CD19 CAR-T, as Rejeski et al.
2021 (Blood 138:2499, Tables 2-3) report them.

Every statistic is either a fraction of patients (the mean of a per-patient indicator)
or a median of a per-patient number of days. Both are computed from per-patient values
so that a weighted virtual population (the calibration) and a plain one use the same
code: :func:`per_patient` gives the values, :func:`summarise` the statistics.

Windows: "at any time" means days 0-60 (the window of the paper's primary end point, as
the calibration README says); "after day 21" means days 21-60; thresholds are as printed
(``<=`` where the table writes it).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

#: Statistics and their definitions (fractions of patients unless ``median`` / ``day``).
DEFINITIONS: dict[str, str] = {
    "p_anc_le_0.5": "ANC <= 0.5 G/L at any time in days 0-60",
    "p_anc_le_0.1": "ANC <= 0.1 G/L at any time in days 0-60",
    "p_anc_le_0.5_ge_7d": ">= 7 days with ANC <= 0.5 G/L in days 0-60",
    "p_anc_le_0.1_ge_7d": ">= 7 days with ANC <= 0.1 G/L in days 0-60",
    "p_anc_le_1_after_d21": "ANC <= 1.0 G/L on any day 21-60",
    "median_days_anc_lt_0.5_d0_60": "median number of days with ANC < 0.5 G/L in days 0-60",
    "p_severe_neutropenia_ge_14d": ">= 14 days with ANC < 0.5 G/L in days 0-60",
    "p_plt_lt_50": "platelets < 50 G/L at any time in days 0-60",
    "p_plt_lt_20": "platelets < 20 G/L at any time in days 0-60",
    "p_biphasic": "ANC > 0.5 G/L for >= 3 consecutive days after the first nadir below 0.5, "
    "then below 0.5 again before day 60",
    "median_day_anc_nadir": "median day of the lowest ANC in days 0-60",
    "p_anc_lt_1_d30": "ANC < 1.0 G/L on day 30",
    "p_anc_lt_0.5_d42": "ANC < 0.5 G/L on day 42",
    "p_plt_lt_50_d30": "platelets < 50 G/L on day 30",
}
MEDIANS = ("median_days_anc_lt_0.5_d0_60", "median_day_anc_nadir")
#: Columns of natural_history.csv that name the pooled cohort and the CAR-HEMATOTOX strata.
POOLED_PRODUCTS = "axi-cel+tisa-cel"
STRATA = {"HT-high": "high", "HT-low": "low"}


def tolerance(key: str) -> float:
    """Agreement asked of a statistic (issue 9): 3 days for a median, 0.10 for a fraction."""
    return 3.0 if key in MEDIANS else 0.10


def load_targets() -> pd.DataFrame:
    """Rows of the bundled copy of ``../shared/calibration/natural_history.csv``, with
    ``csv_row`` (the row number in the file, header = 1)."""
    path = resources.files("carthema.data") / "calibration" / "natural_history.csv"
    t = pd.read_csv(str(path))
    t["csv_row"] = np.arange(len(t)) + 2
    return t


def target_group(product: str, stratum: str) -> tuple[str | None, str | None]:
    """(product or None for the pooled cohort, ``high``/``low`` or None) of a target row."""
    return (None if product == POOLED_PRODUCTS else product), STRATA.get(stratum)


def _window(days: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (days >= lo) & (days <= hi)


def _on(days: np.ndarray, x: np.ndarray, day: float) -> np.ndarray:
    idx = np.flatnonzero(days == day)
    if idx.size == 0:
        raise ValueError(f"the trajectories have no value on day {day:g}")
    return x[:, idx[0]]


def _biphasic(anc: np.ndarray) -> np.ndarray:
    """Per row: below 0.5, then >= 3 consecutive days above 0.5, then below 0.5 again."""
    low = anc < 0.5
    out = np.zeros(anc.shape[0], dtype=bool)
    for i in range(anc.shape[0]):
        below = np.flatnonzero(low[i])
        if below.size == 0:
            continue
        run = 0
        recovered = False
        for j in range(below[0] + 1, anc.shape[1]):
            if not recovered:
                run = run + 1 if not low[i, j] else 0
                recovered = run >= 3
            elif low[i, j]:
                out[i] = True
                break
    return out


def per_patient(days: np.ndarray, anc: np.ndarray, platelets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patient values behind every statistic of :data:`DEFINITIONS`.

    ``days`` are daily (days since CAR-T) and must cover 0-60; ``anc`` and ``platelets``
    have shape (patients, days) in G/L. Fractions come back as booleans, medians as the
    per-patient numbers of days.
    """
    days = np.asarray(days, dtype=float)
    anc = np.atleast_2d(np.asarray(anc, dtype=float))
    platelets = np.atleast_2d(np.asarray(platelets, dtype=float))
    if days[0] > 0 or days[-1] < 60 or np.any(np.diff(days) != 1.0):
        raise ValueError("natural-history statistics need daily values over days 0-60")
    w = _window(days, 0, 60)
    a, p = anc[:, w], platelets[:, w]
    late = anc[:, _window(days, 21, 60)]
    days_lt05 = (a < 0.5).sum(axis=1)
    return {
        "p_anc_le_0.5": (a <= 0.5).any(axis=1),
        "p_anc_le_0.1": (a <= 0.1).any(axis=1),
        "p_anc_le_0.5_ge_7d": (a <= 0.5).sum(axis=1) >= 7,
        "p_anc_le_0.1_ge_7d": (a <= 0.1).sum(axis=1) >= 7,
        "p_anc_le_1_after_d21": (late <= 1.0).any(axis=1),
        "median_days_anc_lt_0.5_d0_60": days_lt05.astype(float),
        "p_severe_neutropenia_ge_14d": days_lt05 >= 14,
        "p_plt_lt_50": (p < 50.0).any(axis=1),
        "p_plt_lt_20": (p < 20.0).any(axis=1),
        "p_biphasic": _biphasic(a),
        "median_day_anc_nadir": days[w][np.argmin(a, axis=1)],
        "p_anc_lt_1_d30": _on(days, anc, 30.0) < 1.0,
        "p_anc_lt_0.5_d42": _on(days, anc, 42.0) < 0.5,
        "p_plt_lt_50_d30": _on(days, platelets, 30.0) < 50.0,
    }


def weighted_median(x: np.ndarray, w: np.ndarray | None = None) -> float:
    """Median of ``x`` under weights ``w`` (the mid-point where the cumulative weight
    crosses one half, as ``numpy.median`` for equal weights)."""
    x = np.asarray(x, dtype=float)
    if w is None:
        return float(np.median(x))
    order = np.argsort(x, kind="stable")
    xs, ws = x[order], np.asarray(w, dtype=float)[order]
    c = np.cumsum(ws) / ws.sum()
    lo = xs[np.searchsorted(c, 0.5 - 1e-12)]
    hi = xs[np.searchsorted(c, 0.5 + 1e-12)]
    return float(0.5 * (lo + hi))


def summarise(values: dict[str, np.ndarray], weights: np.ndarray | None = None) -> dict:
    """Statistics from :func:`per_patient` values (optionally weighted)."""
    out = {}
    for key, v in values.items():
        if key in MEDIANS:
            out[key] = weighted_median(v, weights)
        else:
            out[key] = float(np.average(np.asarray(v, dtype=float), weights=weights))
    return out
