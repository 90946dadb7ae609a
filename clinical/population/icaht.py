"""ICAHT grading: immune effector cell-associated haematotoxicity after CAR-T.

Grades, for simulated daily courses and for measured counts:

- **early neutrophil ICAHT** (days 0-30; EHA/EBMT consensus, Rejeski et al. 2023, Blood
  142:865, as the calibration README states it): the longest run of consecutive days
  with ANC <= 0.5 G/L: 0 days grade 0, 1-6 grade 1, 7-13 grade 2, 14-30 grade 3, >= 31
  (the whole window) grade 4; a run of ANC <= 0.1 G/L of >= 7 days raises the grade to
  at least 3, of >= 14 days to 4. The README gives both as runs ("longest run"); the
  0.1 rule is read the same way.
- **late neutrophil ICAHT** (days 31-100). Not in the calibration README: the consensus
  grades the ANC after day 30 by depth, ANC <= 1.5 G/L grade 1, <= 1.0 grade 2, <= 0.5
  grade 3, <= 0.1 grade 4, for a non-transient neutropenia (here: at least
  :data:`LATE_NEUTROPHIL_MIN_TESTS` tests at or below the threshold). These cut-offs are
  as recalled from the consensus, not read in the primary text here; the window ends on
  day 100 as T-ICAHT's does, so simulated and measured late grades share one window.
- **early platelet T-ICAHT** (days 0-30; Rejeski et al. 2025, Blood, Table 1, as in the
  README): cumulative days with platelets < 50 G/L: 1-6 grade 1, >= 7 grade 2;
  cumulative days < 20 G/L: 1-13 grade 3, >= 14 grade 4.
- **late platelet T-ICAHT** (days 31-100, same source): < 100 G/L on at least one test
  grade 1, < 50 on at least one test grade 2, < 20 G/L for 1-13 (cumulative) days
  grade 3, >= 14 days grade 4. (The paper's footnote to the late rows asks for two or
  more tests or a non-transient thrombocytopenia; the README's "at least one test" is
  followed here, see :data:`LATE_PLATELET_MIN_TESTS`.)

Neutrophil thresholds are inclusive (``<=``) and platelet thresholds strict (``<``), as
printed. Counts are graded as measured: G-CSF and transfusions do not change a grade
(the consensus grades the counts; they are reported beside it by ``carthema icaht``).

Measured counts (irregular days) are put on a daily grid by one stated rule
(:data:`INTERPOLATION_RULE`): each calendar day (the day rounded down) takes the lowest
count measured on it (a result below a limit of quantification is below a threshold at
or above that limit, and unknown for a lower threshold);
an unmeasured day between two measured days lies below a threshold when both bounding
days do, above it when both do, in either case only if the two are at most ``max_gap``
days apart; every other unmeasured day (mixed bounds, a longer gap, before the first or
after the last count) is unknown. A grade is given only when it is the same with every
unknown day below and with every unknown day above (all rules are monotone in the days
below, so these two bound every possible course); otherwise the patient is refused
with the unknown days named. In the late window, whose rules rest on tests, rules that
count tests use measured days only; for the days < 20 G/L of late T-ICAHT a day between
two tests that are both not below is not below whatever the gap, and days after the
last test are not counted (follow-up is usually weekly or sparser by then).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carthema.data.errors import InputError

#: Early window, days since CAR-T (both ends included).
EARLY = (0, 30)
#: Late window (both ends included): T-ICAHT's days 31-100, used for neutrophils too.
LATE = (31, 100)
#: Tests at or below a late neutrophil threshold that make a late grade (non-transient).
LATE_NEUTROPHIL_MIN_TESTS = 2
#: Tests below a late platelet threshold (< 100, < 50) that make grade 1 / 2 (README).
LATE_PLATELET_MIN_TESTS = 1
#: Late neutrophil thresholds (G/L, inclusive) for grades 1-4.
LATE_ANC_THRESHOLDS = (1.5, 1.0, 0.5, 0.1)
#: Default longest gap (days between two measured days) bridged by interpolation.
MAX_GAP = 7
INTERPOLATION_RULE = (
    "each day takes its lowest count; an unmeasured day between two measured days at most "
    "{max_gap} days apart counts as below a threshold when both are below it and as not "
    "below when both are not; any other unmeasured day is unknown, and a grade is given "
    "only when it is the same with every unknown day below and with every unknown day not "
    "below; in days 31-100, graded on tests, a day between two tests that are both not below "
    "is not below whatever the gap and days after the last test are not counted"
)

GRADES = ("icaht_early", "icaht_late", "ticaht_early", "ticaht_late")


# --- the rules on boolean day masks (vectorised over the leading axes) ----------------


def longest_run(mask: np.ndarray) -> np.ndarray:
    """Length of the longest run of consecutive True along the last axis."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape[-1] == 0:
        return np.zeros(mask.shape[:-1], dtype=int)
    c = np.cumsum(mask, axis=-1)
    # The count at the last False before each day; the run is the count since then.
    base = np.maximum.accumulate(np.where(mask, 0, c), axis=-1)
    return (c - base).max(axis=-1)


def early_neutrophil_grade(le05: np.ndarray, le01: np.ndarray) -> np.ndarray:
    """Early ICAHT grade from day masks of days 0-30: ANC <= 0.5 and ANC <= 0.1 G/L."""
    r05, r01 = longest_run(le05), longest_run(le01)
    g = np.select([r05 >= 31, r05 >= 14, r05 >= 7, r05 >= 1], [4, 3, 2, 1], 0)
    g = np.where(r01 >= 7, np.maximum(g, 3), g)
    return np.where(r01 >= 14, 4, g)


def late_neutrophil_grade(tests_le: np.ndarray) -> np.ndarray:
    """Late ICAHT grade from the numbers of tests at or below 1.5, 1.0, 0.5 and 0.1 G/L
    (last axis, in that order) in days 31-100."""
    ok = np.asarray(tests_le) >= LATE_NEUTROPHIL_MIN_TESTS
    return np.select([ok[..., 3], ok[..., 2], ok[..., 1], ok[..., 0]], [4, 3, 2, 1], 0)


def early_platelet_grade(lt50: np.ndarray, lt20: np.ndarray) -> np.ndarray:
    """Early T-ICAHT grade from day masks of days 0-30: platelets < 50 and < 20 G/L."""
    n50, n20 = np.sum(lt50, axis=-1), np.sum(lt20, axis=-1)
    return np.select([n20 >= 14, n20 >= 1, n50 >= 7, n50 >= 1], [4, 3, 2, 1], 0)


def late_platelet_grade(tests_lt100: np.ndarray, tests_lt50: np.ndarray, lt20: np.ndarray):
    """Late T-ICAHT grade from the numbers of tests < 100 and < 50 G/L in days 31-100 and
    the day mask of days 31-100 with platelets < 20 G/L (cumulative days)."""
    n20 = np.sum(lt20, axis=-1)
    return np.select(
        [
            n20 >= 14,
            n20 >= 1,
            np.asarray(tests_lt50) >= LATE_PLATELET_MIN_TESTS,
            np.asarray(tests_lt100) >= LATE_PLATELET_MIN_TESTS,
        ],
        [4, 3, 2, 1],
        0,
    )


# --- simulated daily courses ----------------------------------------------------------


def _window(days: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    w = (days >= lo) & (days <= hi)
    if not np.array_equal(days[w], np.arange(lo, hi + 1, dtype=float)):
        raise ValueError(f"{what} needs daily values on every day {lo}-{hi}")
    return w


def grade_courses(
    days: np.ndarray, anc: np.ndarray | None = None, platelets: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """ICAHT grades (integers 0-4) of daily simulated courses.

    ``days``: days since CAR-T, one value per day; ``anc`` and ``platelets``: G/L with
    shape (patients, days). Early grades need days 0-30, late grades days 31-100; a
    grade whose window the days do not cover is left out of the result (so a
    calibration run to day 60 gets the early grades only). Every day is a test.
    """
    days = np.asarray(days, dtype=float)
    out: dict[str, np.ndarray] = {}
    have_late = days.size > 0 and days.min() <= LATE[0] and days.max() >= LATE[1]
    if anc is not None:
        anc = np.atleast_2d(np.asarray(anc, dtype=float))
        w = _window(days, *EARLY, "early ICAHT")
        a = anc[:, w]
        out["icaht_early"] = early_neutrophil_grade(a <= 0.5, a <= 0.1)
        if have_late:
            a = anc[:, _window(days, *LATE, "late ICAHT")]
            counts = np.stack([(a <= t).sum(axis=1) for t in LATE_ANC_THRESHOLDS], axis=-1)
            out["icaht_late"] = late_neutrophil_grade(counts)
    if platelets is not None:
        p = np.atleast_2d(np.asarray(platelets, dtype=float))
        w = _window(days, *EARLY, "early T-ICAHT")
        q = p[:, w]
        out["ticaht_early"] = early_platelet_grade(q < 50.0, q < 20.0)
        if have_late:
            q = p[:, _window(days, *LATE, "late T-ICAHT")]
            out["ticaht_late"] = late_platelet_grade(
                (q < 100.0).sum(axis=1), (q < 50.0).sum(axis=1), q < 20.0
            )
    return out


# --- measured counts ------------------------------------------------------------------


@dataclass(frozen=True)
class Grade:
    """One grade of one patient: the grade (None: not evaluable) and what decided it."""

    grade: int | None
    basis: str


@dataclass(frozen=True)
class PatientGrades:
    """The four grades of one patient and the days the interpolation rule filled in."""

    patient: str
    icaht_early: Grade
    icaht_late: Grade
    ticaht_early: Grade
    ticaht_late: Grade
    interpolated: dict[str, list[int]] = field(default_factory=dict)

    def row(self) -> dict:
        out: dict = {"patient": self.patient}
        for key in GRADES:
            g = getattr(self, key)
            out[key] = g.grade
            out[f"{key}_basis"] = g.basis
        return out


def _day_states(obs: pd.DataFrame, threshold: float, inclusive: bool) -> dict[int, bool | None]:
    """Per measured calendar day: below the threshold (True), not (False), unknown (None,
    a below-limit result whose limit lies above the threshold)."""
    out: dict[int, bool | None] = {}
    days = np.floor(obs["day"].to_numpy(dtype=float)).astype(int)
    values = obs["value"].to_numpy(dtype=float)
    blq = obs["blq"].to_numpy(dtype=bool) if "blq" in obs else np.zeros(len(obs), bool)
    lloq = obs["lloq"].to_numpy(dtype=float) if "lloq" in obs else np.full(len(obs), np.nan)
    for d in np.unique(days):
        sel = days == d
        below = []
        for v, b, q in zip(values[sel], blq[sel], lloq[sel], strict=True):
            if b:  # value < lloq: below a threshold at or above the limit
                below.append(True if q <= threshold else None)
            else:
                below.append(bool(v <= threshold) if inclusive else bool(v < threshold))
        # the day's lowest count decides: any below -> below; all known and not -> not
        out[int(d)] = True if True in below else (None if None in below else False)
    return out


def _daily(states: dict[int, bool | None], lo: int, hi: int, max_gap: int, tests: bool = False):
    """Tri-state daily series over days lo..hi by the interpolation rule: (lower mask,
    upper mask, interpolated days, unknown days). ``tests``: the late window, graded on
    tests: a day between two tests that are both not below is not below whatever the
    gap, and a day before the first or after the last test is not counted."""
    measured = sorted(states)
    lower = np.zeros(hi - lo + 1, dtype=bool)
    upper = np.zeros_like(lower)
    filled, unknown = [], []
    for i, d in enumerate(range(lo, hi + 1)):
        if d in states:
            s = states[d]
        else:
            k = np.searchsorted(measured, d)
            s = None
            if 0 < k < len(measured):
                p, q = measured[k - 1], measured[k]
                sp, sq = states[p], states[q]
                if tests and sp is False and sq is False:
                    s = False
                elif q - p <= max_gap and sp is not None and sp == sq:
                    s = sp
                    filled.append(d)
            elif tests:
                s = False
        if s is None:
            unknown.append(d)
            lower[i], upper[i] = False, True
        else:
            lower[i] = upper[i] = s
    return lower, upper, filled, unknown


def _runs(days: list[int]) -> str:
    """Days as ranges: 3-9, 12, 15-16."""
    if not days:
        return "none"
    parts, start, prev = [], days[0], days[0]
    for d in [*days[1:], None]:
        if d is not None and d == prev + 1:
            prev = d
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if d is not None:
            start = prev = d
    return ", ".join(parts)


def _longest_span(mask: np.ndarray, lo: int) -> str:
    best, best_start, run = 0, None, 0
    for i, m in enumerate(mask):
        run = run + 1 if m else 0
        if run > best:
            best, best_start = run, i - run + 1
    if best == 0:
        return "none"
    return f"days {lo + best_start}-{lo + best_start + best - 1} ({best} d)"


class GapError(InputError):
    """A gap in a patient's counts that leaves a grade undetermined."""


def _decide(patient, what, analyte, g_lo, g_hi, unknown, max_gap) -> int:
    if g_lo != g_hi:
        where = (
            f"on days {_runs(unknown)}, which neither a count nor the interpolation rule "
            f"decides (the bounding counts differ, lie more than {max_gap} days apart, are "
            "missing, or are below a limit above the threshold)"
            if unknown
            else "in tests reported below a limit that lies above the threshold"
        )
        raise GapError(
            f"patient {patient}: {what} is grade {int(g_lo)} or {int(g_hi)} depending on "
            f"the {analyte} {where}",
            column=analyte,
            fix=f"add {analyte} counts on those days (a longer --max-gap bridges a gap "
            "only where both bounding counts lie on the same side of the threshold)",
        )
    return int(g_lo)


def _tests(states: dict[int, bool | None], lo: int, hi: int) -> tuple[int, int]:
    """(known tests below, tests possibly below) among measured days lo..hi."""
    inside = [s for d, s in states.items() if lo <= d <= hi]
    return sum(s is True for s in inside), sum(s is not False for s in inside)


def _early(patient: str, what: str, analyte: str, rule, states: list, max_gap: int):
    """An early grade from the day states of its two thresholds: (grade, the two lower
    masks, interpolated days)."""
    if not any(EARLY[0] <= d <= EARLY[1] for d in states[0]):
        raise GapError(
            f"patient {patient}: no {analyte} count in days {EARLY[0]}-{EARLY[1]}",
            column=analyte,
            fix=f"{what} needs the counts of the first 30 days after CAR-T",
        )
    (lo_a, hi_a, fill_a, unk_a), (lo_b, hi_b, fill_b, unk_b) = (
        _daily(st, *EARLY, max_gap) for st in states
    )
    unknown = sorted(set(unk_a) | set(unk_b))
    grade = _decide(patient, what, analyte, rule(lo_a, lo_b), rule(hi_a, hi_b), unknown, max_gap)
    return grade, lo_a, lo_b, sorted(set(fill_a) | set(fill_b))


def _grade_neutrophils(patient: str, anc: pd.DataFrame, max_gap: int):
    s05, s01 = _day_states(anc, 0.5, True), _day_states(anc, 0.1, True)
    early, lo05, lo01, fill = _early(
        patient, "early ICAHT", "anc", early_neutrophil_grade, [s05, s01], max_gap
    )
    basis = f"longest run of ANC <= 0.5 G/L: {_longest_span(lo05, EARLY[0])}"
    if early_neutrophil_grade(lo05, np.zeros_like(lo01)) != early:
        basis += f"; of ANC <= 0.1 G/L: {_longest_span(lo01, EARLY[0])}"
    states = [_day_states(anc, t, True) for t in LATE_ANC_THRESHOLDS]
    n_late = sum(LATE[0] <= d <= LATE[1] for d in states[0])
    if n_late == 0:
        late = Grade(None, f"not evaluable: no ANC test in days {LATE[0]}-{LATE[1]}")
    else:
        known = np.array([_tests(s, *LATE)[0] for s in states])
        maybe = np.array([_tests(s, *LATE)[1] for s in states])
        g = _decide(
            patient,
            "late ICAHT",
            "anc",
            late_neutrophil_grade(known),
            late_neutrophil_grade(maybe),
            [],
            max_gap,
        )
        levels = " / ".join(f"{t:g}" for t in LATE_ANC_THRESHOLDS)
        late = Grade(
            g,
            f"{n_late} ANC tests in days {LATE[0]}-{LATE[1]}, at or below {levels} G/L: "
            + " / ".join(str(int(k)) for k in known),
        )
    return Grade(early, basis), late, {"anc": fill}


def _grade_platelets(patient: str, plt_: pd.DataFrame, max_gap: int):
    s50, s20 = _day_states(plt_, 50.0, False), _day_states(plt_, 20.0, False)
    early, lo50, lo20, filled = _early(
        patient, "early T-ICAHT", "platelets", early_platelet_grade, [s50, s20], max_gap
    )
    e_basis = f"days below 50 / 20 G/L: {int(lo50.sum())} / {int(lo20.sum())}"
    s100 = _day_states(plt_, 100.0, False)
    n_late = sum(LATE[0] <= d <= LATE[1] for d in s50)
    if n_late == 0:
        late = Grade(None, f"not evaluable: no platelet test in days {LATE[0]}-{LATE[1]}")
    else:
        l20_lo, l20_hi, l20_fill, l20_unk = _daily(s20, *LATE, max_gap, tests=True)
        k100, m100 = _tests(s100, *LATE)
        k50, m50 = _tests(s50, *LATE)
        g = _decide(
            patient,
            "late T-ICAHT",
            "platelets",
            late_platelet_grade(k100, k50, l20_lo),
            late_platelet_grade(m100, m50, l20_hi),
            l20_unk,
            max_gap,
        )
        late = Grade(
            g,
            f"{n_late} platelet tests in days {LATE[0]}-{LATE[1]}, below 100 / 50 G/L: "
            f"{k100} / {k50}; days below 20 G/L: {int(l20_lo.sum())}",
        )
        filled = sorted(set(filled) | set(l20_fill))
    return Grade(early, e_basis), late, {"platelets": filled}


def grade_observations(
    observations: pd.DataFrame,
    *,
    max_gap: int = MAX_GAP,
    source: str = "<observations>",
) -> list[PatientGrades]:
    """Grade every patient of a validated observation table (as
    :func:`carthema.read_observations` returns it: ``day`` since the first CAR-T
    infusion, counts in G/L). Raises :class:`~carthema.data.errors.InputError` naming
    the patient for a missing analyte, a patient without counts in days 0-30, and a gap
    that leaves a grade undetermined (:data:`INTERPOLATION_RULE`)."""
    if not (isinstance(max_gap, int | np.integer) and max_gap >= 1):
        raise InputError(
            f"--max-gap must be an integer >= 1 (days), got {max_gap}",
            column="max_gap",
            fix=f"e.g. --max-gap {MAX_GAP}",
        )
    blood = observations
    if "compartment" in blood:
        blood = blood[blood["compartment"].fillna("blood") == "blood"]
    out = []
    for patient, rows in blood.groupby("patient", sort=False):
        per = {}
        for analyte in ("anc", "platelets"):
            sel = rows[rows["analyte"] == analyte]
            if sel.empty:
                raise InputError(
                    f"patient {patient} has no {analyte} counts; ICAHT grading needs ANC "
                    "and platelets",
                    file=source,
                    column="analyte",
                    fix=f"add the patient's {analyte} counts or leave the patient out",
                )
            per[analyte] = sel
        try:
            ie, il, fa = _grade_neutrophils(str(patient), per["anc"], int(max_gap))
            te, tl, fp = _grade_platelets(str(patient), per["platelets"], int(max_gap))
        except GapError as exc:
            exc.file = source
            raise
        out.append(PatientGrades(str(patient), ie, il, te, tl, {**fa, **fp}))
    if not out:
        raise InputError(
            "no blood counts to grade", file=source, fix="give a file with anc and platelets"
        )
    return out


def icaht(
    data: pd.DataFrame | np.ndarray,
    anc: np.ndarray | None = None,
    platelets: np.ndarray | None = None,
    *,
    max_gap: int = MAX_GAP,
) -> pd.DataFrame:
    """ICAHT grades, one row per patient: early and late neutrophil ICAHT
    (``icaht_early``, ``icaht_late``) and early and late platelet T-ICAHT
    (``ticaht_early``, ``ticaht_late``), integers 0-4.

    Either ``icaht(observations)`` with a validated observation table (irregular days;
    see :data:`INTERPOLATION_RULE` and ``max_gap``; adds a ``*_basis`` column per grade)
    or ``icaht(days, anc, platelets)`` with daily simulated courses (G/L, shape
    (patients, days); rows numbered from 0). Rules: this module's docstring.
    """
    if isinstance(data, pd.DataFrame):
        return pd.DataFrame([g.row() for g in grade_observations(data, max_gap=max_gap)])
    grades = grade_courses(np.asarray(data, dtype=float), anc, platelets)
    n = len(next(iter(grades.values()))) if grades else 0
    return pd.DataFrame({"patient": np.arange(n), **grades})
