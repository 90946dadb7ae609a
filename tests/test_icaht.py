"""ICAHT and T-ICAHT grading (carthema.clinical.population.icaht) against hand-worked
courses at every grade boundary, an independent brute-force grader on random courses,
and the interpolation rule for measured counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carthema.clinical.population.icaht import (
    MAX_GAP,
    GapError,
    grade_courses,
    grade_observations,
    icaht,
)
from carthema.data.errors import InputError

DAYS = np.arange(-7.0, 121.0)


def _course(base: float, spans: dict[tuple[int, int], float]) -> np.ndarray:
    x = np.full(DAYS.size, base)
    for (a, b), v in spans.items():
        x[(DAYS >= a) & (DAYS <= b)] = v
    return x


def _grades(anc=None, plt_=None) -> dict[str, int]:
    anc = _course(3.0, {}) if anc is None else anc
    plt_ = _course(200.0, {}) if plt_ is None else plt_
    return {k: int(v[0]) for k, v in grade_courses(DAYS, anc[None], plt_[None]).items()}


# --- early neutrophil ICAHT: longest run of ANC <= 0.5 in days 0-30 -------------------


@pytest.mark.parametrize(
    ("run", "grade"),
    [(0, 0), (1, 1), (6, 1), (7, 2), (13, 2), (14, 3), (30, 3), (31, 4)],
)
def test_early_icaht_run_length_boundaries(run, grade):
    spans = {(0, run - 1): 0.3} if run else {}
    assert _grades(_course(3.0, spans))["icaht_early"] == grade


def test_early_icaht_threshold_is_inclusive_and_window_is_days_0_30():
    assert _grades(_course(3.0, {(5, 11): 0.5}))["icaht_early"] == 2  # 7 days at 0.5
    assert _grades(_course(3.0, {(5, 11): 0.51}))["icaht_early"] == 0
    # a 14-day run of which 7 days fall before day 0: 7 days count -> grade 2
    assert _grades(_course(3.0, {(-7, 6): 0.3}))["icaht_early"] == 2
    # a run from day 24 to 40 counts days 24-30 only
    assert _grades(_course(3.0, {(24, 40): 0.3}))["icaht_early"] == 2


def test_early_icaht_counts_the_longest_run_not_the_total():
    # 7 + 7 days below 0.5 split by one day at 0.6: longest run 7 -> grade 2, not 3
    anc = _course(3.0, {(2, 8): 0.3, (9, 9): 0.6, (10, 16): 0.3})
    assert _grades(anc)["icaht_early"] == 2


@pytest.mark.parametrize(("run01", "grade"), [(6, 1), (7, 3), (13, 3), (14, 4)])
def test_early_icaht_anc_le_0_1_upgrades(run01, grade):
    # ANC <= 0.1 (inclusive) for run01 days, and no longer run of <= 0.5
    anc = _course(3.0, {(3, 3 + run01 - 1): 0.1})
    if run01 == 6:
        assert _grades(anc)["icaht_early"] == 1
    else:
        assert _grades(anc)["icaht_early"] == grade


def test_early_icaht_upgrade_never_lowers_a_grade():
    # 20 days <= 0.5 (grade 3) with 7 of them <= 0.1: stays 3; 31 days (grade 4) stays 4
    assert _grades(_course(3.0, {(0, 19): 0.3, (5, 11): 0.05}))["icaht_early"] == 3
    assert _grades(_course(3.0, {(0, 30): 0.3, (5, 11): 0.05}))["icaht_early"] == 4


# --- late neutrophil ICAHT: depth on >= 2 tests in days 31-100 ------------------------


@pytest.mark.parametrize(
    ("value", "grade"), [(1.6, 0), (1.5, 1), (1.2, 1), (1.0, 2), (0.5, 3), (0.1, 4), (0.0, 4)]
)
def test_late_icaht_depth_thresholds_on_two_tests(value, grade):
    anc = _course(3.0, {(60, 61): value})
    assert _grades(anc)["icaht_late"] == grade


def test_late_icaht_needs_two_tests_and_days_31_100():
    assert _grades(_course(3.0, {(60, 60): 0.05}))["icaht_late"] == 0  # one test only
    # two tests <= 0.1 on separate days count (not necessarily consecutive)
    anc = _course(3.0, {(40, 40): 0.05, (80, 80): 0.05})
    assert _grades(anc)["icaht_late"] == 4
    assert _grades(_course(3.0, {(29, 30): 0.05}))["icaht_late"] == 0  # early window
    assert _grades(_course(3.0, {(101, 110): 0.05}))["icaht_late"] == 0  # after day 100
    # deepest level reached on two tests: one 0.05 and one 0.4 -> both <= 0.5 -> grade 3
    assert _grades(_course(3.0, {(50, 50): 0.05, (52, 52): 0.4}))["icaht_late"] == 3


# --- T-ICAHT ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spans", "grade"),
    [
        ({}, 0),
        ({(3, 3): 49.0}, 1),
        ({(3, 8): 40.0}, 1),  # 6 days < 50
        ({(3, 6): 40.0, (20, 22): 40.0}, 2),  # 4 + 3 = 7 cumulative days
        ({(3, 12): 50.0}, 0),  # < 50 is strict
        ({(3, 3): 19.0}, 3),
        ({(3, 3): 20.0}, 1),  # 20 is not < 20, but < 50
        ({(3, 15): 10.0}, 3),  # 13 days < 20
        ({(3, 9): 10.0, (15, 21): 10.0}, 4),  # 7 + 7 = 14 cumulative days
        ({(25, 40): 10.0}, 3),  # 6 days in 0-30 (25-30)
    ],
)
def test_early_ticaht_cumulative_days(spans, grade):
    assert _grades(plt_=_course(200.0, spans))["ticaht_early"] == grade


@pytest.mark.parametrize(
    ("spans", "grade"),
    [
        ({}, 0),
        ({(31, 31): 99.0}, 1),  # one test < 100
        ({(60, 60): 100.0}, 0),
        ({(100, 100): 49.0}, 2),  # one test < 50, the window's last day
        ({(101, 120): 10.0}, 0),  # after day 100
        ({(30, 30): 10.0}, 0),  # early window
        ({(70, 70): 19.9}, 3),
        ({(40, 52): 10.0}, 3),  # 13 days < 20
        ({(40, 46): 10.0, (60, 66): 10.0}, 4),  # 14 cumulative days
    ],
)
def test_late_ticaht(spans, grade):
    assert _grades(plt_=_course(200.0, spans))["ticaht_late"] == grade


def test_windows_not_covered_are_refused_or_left_out():
    short = np.arange(0.0, 61.0)
    g = grade_courses(short, np.ones((1, 61)), np.full((1, 61), 200.0))
    assert set(g) == {"icaht_early", "ticaht_early"}  # late windows need day 100
    with pytest.raises(ValueError, match="every day 0-30"):
        grade_courses(np.arange(5.0, 120.0), np.ones((1, 115)))


# --- brute force: an independent grader, one patient and one day at a time ------------


def _brute(days, anc, plt_):
    def run(values, test):
        best = cur = 0
        for v in values:
            cur = cur + 1 if test(v) else 0
            best = max(best, cur)
        return best

    early = [(d, a, p) for d, a, p in zip(days, anc, plt_, strict=True) if 0 <= d <= 30]
    late = [(d, a, p) for d, a, p in zip(days, anc, plt_, strict=True) if 31 <= d <= 100]
    r5 = run([a for _, a, _ in early], lambda v: v <= 0.5)
    r1 = run([a for _, a, _ in early], lambda v: v <= 0.1)
    ie = 0 if r5 == 0 else 1 if r5 <= 6 else 2 if r5 <= 13 else 3 if r5 <= 30 else 4
    if r1 >= 14:
        ie = 4
    elif r1 >= 7:
        ie = max(ie, 3)
    il = 0
    for grade, t in ((1, 1.5), (2, 1.0), (3, 0.5), (4, 0.1)):
        if sum(1 for _, a, _ in late if a <= t) >= 2:
            il = grade
    n50 = sum(1 for _, _, p in early if p < 50)
    n20 = sum(1 for _, _, p in early if p < 20)
    te = 4 if n20 >= 14 else 3 if n20 >= 1 else 2 if n50 >= 7 else 1 if n50 >= 1 else 0
    m20 = sum(1 for _, _, p in late if p < 20)
    tl = 0
    if any(p < 100 for _, _, p in late):
        tl = 1
    if any(p < 50 for _, _, p in late):
        tl = 2
    if m20 >= 1:
        tl = 3
    if m20 >= 14:
        tl = 4
    return {"icaht_early": ie, "icaht_late": il, "ticaht_early": te, "ticaht_late": tl}


def _random_courses(rng, n):
    """Courses that dwell near every threshold: a random walk over levels, so runs of
    every length occur."""
    anc_levels = np.array([0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.3, 1.5, 2.5])
    plt_levels = np.array([5.0, 19.9, 20.0, 35.0, 49.9, 50.0, 80.0, 99.9, 150.0])
    out = []
    for levels in (anc_levels, plt_levels):
        idx = np.empty((n, DAYS.size), dtype=int)
        idx[:, 0] = rng.integers(0, levels.size, n)
        stay = rng.uniform(0.6, 0.97, n)
        # one patient in ten stays at the top level: grade 0 on every scale
        idx[::10, 0], stay[::10] = levels.size - 1, 1.0
        for j in range(1, DAYS.size):
            move = rng.random(n) > stay
            step = rng.integers(-2, 3, n)
            idx[:, j] = np.clip(idx[:, j - 1] + move * step, 0, levels.size - 1)
        out.append(levels[idx])
    return out


def test_vectorised_grades_match_brute_force_on_random_courses():
    rng = np.random.default_rng(17)
    anc, plt_ = _random_courses(rng, 400)
    got = grade_courses(DAYS, anc, plt_)
    seen = {k: set() for k in got}
    for i in range(anc.shape[0]):
        ref = _brute(DAYS, anc[i], plt_[i])
        for k, v in ref.items():
            assert got[k][i] == v, (k, i)
            seen[k].add(v)
    # the random courses reach every grade of every scale
    assert all(s == {0, 1, 2, 3, 4} for s in seen.values()), seen


# --- measured counts ---------------------------------------------------------------------


def _obs(patient, days, anc=None, plt_=None) -> pd.DataFrame:
    rows = []
    for name, values in (("anc", anc), ("platelets", plt_)):
        if values is None:
            continue
        for d, v in zip(days, values, strict=True):
            rows.append((patient, float(d), name, float(v), "G/L", "blood", np.nan, False))
    cols = ["patient", "day", "analyte", "value", "unit", "compartment", "lloq", "blq"]
    return pd.DataFrame(rows, columns=cols)


def test_daily_observations_grade_as_the_simulated_courses():
    rng = np.random.default_rng(3)
    anc, plt_ = _random_courses(rng, 40)
    frames = [_obs(f"P{i}", DAYS, anc[i], plt_[i]) for i in range(40)]
    got = icaht(pd.concat(frames, ignore_index=True))
    ref = grade_courses(DAYS, anc, plt_)
    for k in ref:
        np.testing.assert_array_equal(got[k].to_numpy(dtype=int), ref[k])


def test_interpolation_bridges_gaps_with_equal_bounds():
    # ANC <= 0.5 measured on days 2, 5, 8, 11, 14, 17 (gaps of 3 days): a run of days
    # 2-17 = 16 days -> grade 3; measured daily elsewhere above 0.5
    days = [-1, 0, 1, 2, 5, 8, 11, 14, 17, 18, 19, 20, 22, 24, 26, 28, 30, 35, 60]
    anc = [3, 3, 2, 0.3, 0.2, 0.2, 0.3, 0.2, 0.3, 0.9, 1.2, 1.6, 2, 2, 2, 2, 2, 2, 2]
    plt_ = [200.0] * len(days)
    (g,) = grade_observations(_obs("A", days, anc, plt_))
    assert g.icaht_early.grade == 3
    assert "days 2-17 (16 d)" in g.icaht_early.basis
    # the same course with a gap of 8 days (> MAX_GAP) in the run cannot be graded
    cut = [i for i, d in enumerate(days) if d not in (5, 8)]
    obs = _obs("A", [days[i] for i in cut], [anc[i] for i in cut], [plt_[i] for i in cut])
    assert MAX_GAP < 9
    with pytest.raises(GapError, match=r"patient A: early ICAHT is grade 2 or 3.*on days 3-10,"):
        grade_observations(obs)
    # ... unless the user allows a longer gap
    (g,) = grade_observations(obs, max_gap=9)
    assert g.icaht_early.grade == 3


def test_mixed_bounds_refuse_only_when_the_grade_depends_on_them():
    # ANC 0.3 on days 0-9 (10 days), then a 4-day gap to 3.0 on day 13: days 10-12 unknown
    # -> run 10-13 days -> grade 2 either way: graded
    days = list(range(0, 10)) + [13, 18, 23, 28, 30, 40, 50]
    anc = [0.3] * 10 + [3.0] * 7
    plt_ = [200.0] * len(days)
    (g,) = grade_observations(_obs("B", days, anc, plt_))
    assert g.icaht_early.grade == 2
    # run of 12 measured days, unknown days 12-14 -> 12..15 days -> grade 2 or 3: refused
    days = list(range(0, 12)) + [15, 20, 25, 30, 40, 50]
    anc = [0.3] * 12 + [3.0] * 6
    with pytest.raises(GapError, match=r"patient B: early ICAHT is grade 2 or 3.*days 12-14"):
        grade_observations(_obs("B", days, anc, [200.0] * len(days)))


def test_below_limit_counts_and_late_not_evaluable():
    # ANC reported below a limit of 0.1 on days 0-13 (<= 0.1 for 14 days) -> grade 4
    days = list(range(0, 31))
    obs = _obs("C", days, [0.05] * 31, [200.0] * 31)
    obs.loc[(obs["analyte"] == "anc") & (obs["day"] <= 13), ["value", "blq", "lloq"]] = [
        np.nan,
        True,
        0.1,
    ]
    (g,) = grade_observations(obs)
    assert g.icaht_early.grade == 4
    assert g.icaht_late.grade is None and "not evaluable" in g.icaht_late.basis
    # a limit above the threshold (0.2 > 0.1) leaves those days unknown for <= 0.1, but
    # they are below 0.5: 31 days <= 0.5 -> grade 4 by the run alone
    obs["lloq"] = obs["lloq"].where(obs["lloq"].isna(), 0.2)
    (g,) = grade_observations(obs)
    assert g.icaht_early.grade == 4


def test_missing_analyte_and_empty_early_window_are_refused():
    days = list(range(0, 31))
    with pytest.raises(InputError, match="patient D has no platelets counts"):
        grade_observations(_obs("D", days, anc=[1.0] * 31))
    with pytest.raises(InputError, match="patient E: no anc count in days 0-30"):
        grade_observations(_obs("E", [40, 50], [1.0, 1.0], [200.0, 200.0]))
    with pytest.raises(InputError, match="--max-gap"):
        grade_observations(_obs("F", days, [1.0] * 31, [200.0] * 31), max_gap=0)


def test_public_name():
    import carthema

    assert carthema.icaht is icaht
    t = carthema.icaht(DAYS, _course(3.0, {(0, 13): 0.3})[None], _course(200.0, {})[None])
    assert t.loc[0, "icaht_early"] == 3 and t.loc[0, "ticaht_late"] == 0


def test_sparse_late_platelet_tests():
    early = list(range(0, 31))
    # monthly tests, all above 100: late T-ICAHT 0 despite gaps of 25-30 days
    days = early + [35, 60, 90]
    (g,) = grade_observations(_obs("G", days, [2.0] * len(days), [200.0] * len(days)))
    assert g.ticaht_late.grade == 0 and g.icaht_late.grade == 0
    # one test of 15 on day 60 between tests on days 58 and 62: 1-3 days < 20 -> grade 3
    days = early + [35, 58, 60, 62, 90]
    plt_ = [200.0] * 31 + [200.0, 200.0, 15.0, 200.0, 200.0]
    (g,) = grade_observations(_obs("G", days, [2.0] * len(days), plt_))
    assert g.ticaht_late.grade == 3
    # the same count with the next test on day 90: 1 to 30 days < 20 -> refused
    days = early + [35, 60, 90]
    plt_ = [200.0] * 31 + [200.0, 15.0, 200.0]
    with pytest.raises(GapError, match="late T-ICAHT is grade 3 or 4.*days 36-59, 61-89"):
        grade_observations(_obs("G", days, [2.0] * len(days), plt_))


# --- carthema icaht ----------------------------------------------------------------------


def _write_obs(path, patients: dict[str, tuple[list, list, list]]) -> None:
    lines = ["patient,day,analyte,value,unit"]
    for pid, (days, anc, plt_) in patients.items():
        for d, a in zip(days, anc, strict=True):
            lines.append(f"{pid},{d},anc,{a * 1000:g},cells/uL")  # converted on load
        for d, p in zip(days, plt_, strict=True):
            lines.append(f"{pid},{d},platelets,{p},G/L")
    path.write_text("\n".join(lines) + "\n")


def _cli(argv, capsys):
    from carthema.cli import main

    with pytest.raises(SystemExit) as ex:
        main(argv)
    out, err = capsys.readouterr()
    return int(ex.value.code or 0), out, err


@pytest.fixture
def cohort(tmp_path):
    days = list(range(-3, 31)) + [35, 42, 49, 56, 63, 70, 77, 84, 91, 98]
    n = len(days)
    # P1: ANC <= 0.5 on days 2-15 (14 d) -> early 3; late ANC 0.8 twice -> late 2;
    # platelets < 20 on days 5-8 -> early T-ICAHT 3, late 60 -> 1
    anc1 = [0.3 if 2 <= d <= 15 else (0.8 if d in (42, 49) else 2.5) for d in days]
    plt1 = [15.0 if 5 <= d <= 8 else (60.0 if d == 63 else 150.0) for d in days]
    # P2: never cytopenic -> 0 everywhere
    obs = tmp_path / "obs.csv"
    _write_obs(obs, {"P1": (days, anc1, plt1), "P2": (days, [3.0] * n, [200.0] * n)})
    ev = tmp_path / "events.csv"
    ev.write_text(
        "patient,day,kind,amount,unit,duration\n"
        "P1,0,cart_infusion,2e6,cells/kg,\n"
        "P1,10,gcsf,5,ug/kg/day,5\n"
        "P1,20,platelet_transfusion,1,units,\n"
        "P2,0,cart_infusion,2e6,cells/kg,\n"
    )
    return tmp_path, obs, ev


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def test_cli_grades_every_patient(cohort, capsys, wide):
    import json

    d, obs, ev = cohort
    code, out, err = _cli(
        ["icaht", str(obs), "--events", str(ev), "--json", str(d / "g.json")], capsys
    )
    assert code == 0, err
    assert "interpolation rule: each day takes its lowest count" in out
    assert "not used in grading" in out and "10-14" in out  # G-CSF days 10-14 reported
    data = json.loads((d / "g.json").read_text())
    grades = {
        p["patient"]: [p[k] for k in ("icaht_early", "icaht_late", "ticaht_early", "ticaht_late")]
        for p in data["patients"]
    }
    assert grades == {"P1": [3, 2, 3, 1], "P2": [0, 0, 0, 0]}
    p1 = data["patients"][0]
    assert "days 2-15 (14 d)" in p1["icaht_early_basis"]
    assert p1["supportive_care"]["G-CSF"] == "10-14"
    assert p1["supportive_care"]["platelet transfusions"] == "20"


def test_cli_refusals_are_one_line(cohort, capsys, wide):
    d, obs, ev = cohort
    # no CAR-T infusion on day 0
    bad_ev = d / "ev_day1.csv"
    bad_ev.write_text(ev.read_text().replace("P2,0,cart_infusion", "P2,1,cart_infusion"))
    code, out, err = _cli(["icaht", str(obs), "--events", str(bad_ev)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "patient P2 has no CAR-T infusion on day 0" in err and "first on day 1" in err
    # a patient the events do not have at all
    no_p2 = d / "ev_no_p2.csv"
    no_p2.write_text(
        "".join(ln for ln in ev.read_text().splitlines(True) if not ln.startswith("P2"))
    )
    code, out, err = _cli(["icaht", str(obs), "--events", str(no_p2)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "patient P2 has no CAR-T infusion on day 0 (cart_infusion: none)" in err
    # a gap that decides the grade: P1's counts of days 13-16 removed (run 2-12 or 2-17)
    text = obs.read_text().splitlines()
    keep = [ln for ln in text if not any(ln.startswith(f"P1,{k},anc") for k in (13, 14, 15, 16))]
    gap = d / "gap.csv"
    gap.write_text("\n".join(keep) + "\n")
    code, out, err = _cli(["icaht", str(gap)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "gap.csv" in err and "patient P1: early ICAHT is grade 2 or 3" in err
    assert "days 13-16" in err
    # a missing analyte
    no_plt = d / "no_plt.csv"
    no_plt.write_text("\n".join(ln for ln in text if ",platelets," not in ln) + "\n")
    code, out, err = _cli(["icaht", str(no_plt)], capsys)
    assert code == 2 and "patient P1 has no platelets counts" in err
