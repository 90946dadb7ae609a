"""Natural-history statistics of daily blood counts after CD19 CAR-T: those Rejeski et
al. 2021 (Blood 138:2499, Tables 2-3) report, and those of the second calibration file
(counts on fixed days, from the products' labels and Logue et al. 2021; ICAHT grades).

Every statistic is a fraction of patients (the mean of a per-patient indicator), a
median of a per-patient number of days, or a grade distribution (fractions of patients
per grade 0-4). All are computed from per-patient values so that a weighted virtual
population (the calibration) and a plain one use the same code: :func:`per_patient`
gives the values, :func:`summarise` the statistics.

Windows: "at any time" means days 0-60 (the window of the paper's primary end point, as
the calibration README says); "after day 21" means days 21-60; thresholds are as printed
(``<=`` where the table writes it). "On day D" statistics read the count of that day;
ICAHT grades follow :mod:`carthema.clinical.population.icaht`.

:func:`load_calibration_rows` reads every row of both calibration files with its
product, disease, CAR-HEMATOTOX stratum, statistic and tolerance;
:func:`applicable_rows` lists those a simulation answers to.
"""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pandas as pd

from carthema.models.presets import CR_BLAST_PCT, RESPONSE_DAY

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
    "median_day_anc_recovery": "median first day of 3 consecutive days with ANC >= 0.5 G/L "
    "after the nadir of days 0-60, among patients below 0.5 who recover by day 60",
    **{
        f"p_anc_lt_{t:g}_d{d}": f"ANC < {t:g} G/L on day {d}"
        for t in (0.5, 1.0)
        for d in (28, 30, 42, 56, 90, 180)
    },
    **{
        f"p_plt_lt_{t:g}_d{d}": f"platelets < {t:g} G/L on day {d}"
        for t in (20.0, 50.0)
        for d in (28, 30, 56, 90)
    },
    "p_early_icaht_ge3": "early (days 0-30) neutrophil ICAHT grade >= 3 "
    "(carthema.clinical.population.icaht)",
    "p_late_icaht_ge3": "late (days 31-100) neutrophil ICAHT grade >= 3",
    "p_early_ticaht_ge3": "early (days 0-30) platelet T-ICAHT grade >= 3",
    "p_late_ticaht_ge3": "late (days 31-100) platelet T-ICAHT grade >= 3",
    "icaht_early_grade_dist": "fractions of patients with early neutrophil ICAHT grade 0-4",
    "icaht_late_grade_dist": "fractions of patients with late neutrophil ICAHT grade 0-4",
    "ticaht_early_grade_dist": "fractions of patients with early platelet T-ICAHT grade 0-4",
    "ticaht_late_grade_dist": "fractions of patients with late platelet T-ICAHT grade 0-4",
}
#: Response statistics: they need the marrow blast course (``marrow_blasts``, %), which
#: the counts-only statistics above do not; :func:`response_per_patient` gives them.
#: Remission (CR/CRi) is read as marrow blasts below 5 % (the trials' definition) on the
#: response assessment day 28 (carthema.models.presets.RESPONSE_DAY).
RESPONSE_DEFINITIONS: dict[str, str] = {
    "p_marrow_cleared_d28": "marrow blasts < 5 % on day 28 (remission, CR/CRi, at the "
    "response assessment)",
}


def definition(key: str) -> str:
    """The definition of any natural-history statistic (counts or response)."""
    return DEFINITIONS.get(key) or RESPONSE_DEFINITIONS[key]


MEDIANS = ("median_days_anc_lt_0.5_d0_60", "median_day_anc_nadir", "median_day_anc_recovery")
#: Grade distributions: per patient a grade 0-4, summarised as five fractions.
DISTRIBUTIONS = (
    "icaht_early_grade_dist",
    "icaht_late_grade_dist",
    "ticaht_early_grade_dist",
    "ticaht_late_grade_dist",
)
#: Last day a statistic needs (days since CAR-T); 60 where not listed. Statistics past
#: the simulated days are left out of :func:`per_patient`'s result.
LAST_DAY: dict[str, int] = {
    **{
        k: int(k.rsplit("_d", 1)[1])
        for k in DEFINITIONS
        if re.fullmatch(r"p_(anc|plt)_lt_[\d.]+_d\d+", k)
    },
    "p_late_icaht_ge3": 100,
    "p_late_ticaht_ge3": 100,
    "icaht_late_grade_dist": 100,
    "ticaht_late_grade_dist": 100,
}
#: Columns of natural_history.csv that name the pooled cohort and the CAR-HEMATOTOX strata.
POOLED_PRODUCTS = "axi-cel+tisa-cel"
#: Product columns of both calibration files that pool products: their rows apply to a
#: pooled simulation (``product=None``).
POOLED = ("axi-cel+tisa-cel", "axi-cel+tisa-cel+liso-cel")
STRATA = {"HT-high": "high", "HT-low": "low"}
#: The calibration files (bundled copies in ``carthema/data/calibration``).
CALIBRATION_FILES = ("natural_history.csv", "natural_history_more.csv")


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


def _bundled(name: str) -> pd.DataFrame:
    path = resources.files("carthema.data") / "calibration" / name
    t = pd.read_csv(str(path))
    t["csv_row"] = np.arange(len(t)) + 2
    t["file"] = name
    return t


def load_calibration_rows() -> pd.DataFrame:
    """Every row of both calibration files (bundled copies of
    ``../shared/calibration/natural_history.csv`` and ``natural_history_more.csv``), one
    frame with columns ``file``, ``csv_row`` (header = row 1), ``source``, ``table``,
    ``cohort``, ``product``, ``disease``, ``stratum``, ``n``, ``statistic``,
    ``definition``, ``value`` and ``tolerance`` (0.10 for a fraction, 3 days for a
    median). Rejeski 2021 (the first file) is LBCL throughout; the second file has no
    CAR-HEMATOTOX strata (``all``)."""
    first = _bundled(CALIBRATION_FILES[0]).assign(disease="lbcl")
    more = _bundled(CALIBRATION_FILES[1]).assign(stratum="all")
    cols = [
        "file",
        "csv_row",
        "source",
        "table",
        "cohort",
        "product",
        "disease",
        "stratum",
        "n",
        "statistic",
        "definition",
        "value",
    ]
    t = pd.concat([first[cols], more[cols]], ignore_index=True)
    t["value"] = t["value"].astype(float)
    t["tolerance"] = [tolerance(k) for k in t["statistic"]]
    return t


def applicable_rows(
    product: str | None, disease: str = "lbcl", hematotox: str | int | None = None
) -> pd.DataFrame:
    """The calibration rows that a simulation of ``product`` (``None``: a pooled
    simulation, to which the rows of pooled products apply), ``disease`` and
    CAR-HEMATOTOX group (``None``: everyone; ``high``/``low``; an exact score has no
    row) answers to."""
    t = load_calibration_rows()
    strata: dict = {None: "all", "high": "HT-high", "low": "HT-low"}
    stratum = strata.get(hematotox)
    products = t["product"].isin(POOLED) if product is None else t["product"] == product
    return t[products & (t["disease"] == disease) & (t["stratum"] == stratum)].reset_index(
        drop=True
    )


def row_source(r) -> str:
    """Where a calibration row comes from: source, table, cohort and file row."""
    return (
        f"{r.source}, {r.table}, {r.cohort} {r.product} {r.disease} {r.stratum} "
        f"({r.file} row {r.csv_row})"
    )


def _window(days: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (days >= lo) & (days <= hi)


def _on(days: np.ndarray, x: np.ndarray, day: float) -> np.ndarray:
    idx = np.flatnonzero(days == day)
    if idx.size == 0:
        raise ValueError(f"the trajectories have no value on day {day:g}")
    return x[:, idx[0]]


def _second_dip(anc: np.ndarray) -> np.ndarray:
    """Per row: the column index where the ANC falls below 0.5 again after a first
    recovery (>= 3 consecutive days not below 0.5 after the first day below it); -1 if
    it never does."""
    low = anc < 0.5
    out = np.full(anc.shape[0], -1, dtype=int)
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
                out[i] = j
                break
    return out


def _biphasic(anc: np.ndarray) -> np.ndarray:
    """Per row: below 0.5, then >= 3 consecutive days above 0.5, then below 0.5 again."""
    return _second_dip(anc) >= 0


def second_dip_day(days: np.ndarray, anc: np.ndarray) -> np.ndarray:
    """Per row of ``anc`` (G/L, daily on ``days``, counted from day 0): the day the ANC
    falls below 0.5 G/L again after a first recovery (the start of the second dip of a
    biphasic course, as :data:`DEFINITIONS` ``p_biphasic`` counts it); NaN if none."""
    days = np.asarray(days, dtype=float)
    w = days >= 0
    idx = _second_dip(np.atleast_2d(np.asarray(anc, dtype=float))[:, w])
    return np.where(idx >= 0, days[w][np.maximum(idx, 0)], np.nan)


def _recovery_day(days: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Per row of ``a`` (ANC, days 0-60): the first of 3 consecutive days >= 0.5 G/L after
    the day of the lowest ANC; NaN for a patient never below 0.5 or not recovered."""
    ok = a >= 0.5
    three = ok[:, :-2] & ok[:, 1:-1] & ok[:, 2:]
    nadir = np.argmin(a, axis=1)
    after = np.arange(three.shape[1])[None, :] > nadir[:, None]
    cand = three & after
    first = np.argmax(cand, axis=1)
    found = cand.any(axis=1) & (a < 0.5).any(axis=1)
    return np.where(found, days[first], np.nan)


def per_patient(days: np.ndarray, anc: np.ndarray, platelets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patient values behind every statistic of :data:`DEFINITIONS`.

    ``days`` are daily (days since CAR-T) and must cover 0-60; ``anc`` and ``platelets``
    have shape (patients, days) in G/L. Fractions come back as booleans, medians as the
    per-patient numbers of days (NaN where a patient has none: not recovered), grade
    distributions as the grades 0-4. A statistic whose last day (:data:`LAST_DAY`) lies
    past the last simulated day is left out.
    """
    from carthema.clinical.population.icaht import grade_courses

    days = np.asarray(days, dtype=float)
    anc = np.atleast_2d(np.asarray(anc, dtype=float))
    platelets = np.atleast_2d(np.asarray(platelets, dtype=float))
    if days[0] > 0 or days[-1] < 60 or np.any(np.diff(days) != 1.0):
        raise ValueError("natural-history statistics need daily values over days 0-60")
    w = _window(days, 0, 60)
    a, p = anc[:, w], platelets[:, w]
    late = anc[:, _window(days, 21, 60)]
    days_lt05 = (a < 0.5).sum(axis=1)
    out = {
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
        "median_day_anc_recovery": _recovery_day(days[w], a),
    }
    last = days[-1]
    for key in DEFINITIONS:
        m = re.fullmatch(r"p_(anc|plt)_lt_([\d.]+)_d(\d+)", key)
        if m and LAST_DAY[key] <= last:
            x = anc if m.group(1) == "anc" else platelets
            out[key] = _on(days, x, float(m.group(3))) < float(m.group(2))
    grades = grade_courses(days, anc, platelets)
    for name, g in grades.items():
        kind, when = name.split("_")
        out[f"p_{when}_{kind}_ge3"] = g >= 3
        out[f"{name}_grade_dist"] = g
    return {k: out[k] for k in DEFINITIONS if k in out}


def response_per_patient(days: np.ndarray, blasts: np.ndarray) -> dict[str, np.ndarray]:
    """Per patient: marrow cleared of blasts (< :data:`CR_BLAST_PCT` %) on day
    :data:`RESPONSE_DAY` (``blasts``: marrow blasts in %, shape (patients, days), daily
    ``days`` since CAR-T); the values behind :data:`RESPONSE_DEFINITIONS`."""
    days = np.asarray(days, dtype=float)
    blasts = np.atleast_2d(np.asarray(blasts, dtype=float))
    return {"p_marrow_cleared_d28": _on(days, blasts, float(RESPONSE_DAY)) < CR_BLAST_PCT}


def responders_only(cohort: str) -> bool:
    """Whether a calibration row counts responders only (its ``cohort`` says so: the
    Kymriah label's ELIANA rows are "paediatric and young-adult responders")."""
    return "responder" in str(cohort).lower()


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
    """Statistics from :func:`per_patient` values (optionally weighted): a float per
    fraction and median (a median over the patients who have a value; NaN if none), a
    list of five fractions (grades 0-4) per grade distribution."""
    out: dict = {}
    for key, v in values.items():
        if key in MEDIANS:
            v = np.asarray(v, dtype=float)
            has = np.isfinite(v)
            if not has.any():
                out[key] = float("nan")
            else:
                out[key] = weighted_median(v[has], None if weights is None else weights[has])
        elif key in DISTRIBUTIONS:
            g = np.asarray(v)
            out[key] = [float(np.average(g == k, weights=weights)) for k in range(5)]
        else:
            out[key] = float(np.average(np.asarray(v, dtype=float), weights=weights))
    return out
