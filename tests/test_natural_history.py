"""The calibrated virtual population against the published natural history (Rejeski et
al. 2021, Blood 138:2499, Tables 2-3; ../shared/calibration/natural_history.csv), and
the natural-history command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carthema import InputError, hematotox
from carthema.cli import main as cli_main
from carthema.clinical.population.natural_history import natural_history, population_statistics
from carthema.clinical.population.statistics import DEFINITIONS
from carthema.clinical.population.virtual import load_population

ISSUE_KEYS = {
    "p_anc_le_0.5", "p_anc_le_0.1", "p_anc_le_0.5_ge_7d", "p_anc_le_0.1_ge_7d",
    "p_anc_le_1_after_d21", "median_days_anc_lt_0.5_d0_60", "p_severe_neutropenia_ge_14d",
    "p_plt_lt_50", "p_plt_lt_20", "p_biphasic", "median_day_anc_nadir", "p_anc_lt_1_d30",
    "p_anc_lt_0.5_d42", "p_plt_lt_50_d30",
}  # fmt: skip


@pytest.mark.slow
def test_population_matches_at_least_90_percent_of_the_published_rows():
    """Issues 9 and 17: every LBCL row of both calibration files (Rejeski 2021 pooled, by
    product, CAR-HEMATOTOX high and low; Rejeski 2024 early ICAHT; Logue 2021 days 90
    and 180) within 0.10 for fractions and 3 days for medians, in >= 90 % of the rows of
    each product and of the pooled cohort; the late tail's rows each within 0.10."""
    from carthema.clinical.population.calibrate import target_report

    pop, meta = load_population()
    report = target_report(pop)
    assert {r["file"] for r in report} == {"natural_history.csv", "natural_history_more.csv"}
    for group in ("pooled", "axi-cel", "tisa-cel"):
        rows = [r for r in report if r["product"] == group]
        hits = sum(r["within_tolerance"] for r in rows)
        assert hits >= 0.9 * len(rows), (group, f"{hits}/{len(rows)}")
    late = [r for r in report if r["key"] in ("p_anc_lt_1_d90", "p_anc_lt_1_d180")]
    assert len(late) == 2 and all(r["within_tolerance"] for r in late), late
    assert "natural_history_more.csv" in meta["targets_files"]


def test_high_score_means_longer_neutropenia_through_the_mechanism():
    """Rejeski et al. 2021: CAR-HEMATOTOX high patients have longer severe neutropenia;
    the score is computed from each virtual patient's own baseline values."""
    pop, _ = load_population()
    high = population_statistics(pop, "axi-cel", "high")
    low = population_statistics(pop, "axi-cel", "low")
    assert high["median_days_anc_lt_0.5_d0_60"] > low["median_days_anc_lt_0.5_d0_60"]
    assert high["p_severe_neutropenia_ge_14d"] > 2 * low["p_severe_neutropenia_ge_14d"]
    # Scores in the file are what the helper gives for the rows' own labs.
    row = pop.iloc[0]
    score = hematotox(
        row["plt0"], row["anc0"], row["hemoglobin"], row["crp"], row["ferritin"],
        check_units=False,
    ).total  # fmt: skip
    assert score == row["hematotox"]


def test_natural_history_keys_published_rows_and_cli(tmp_path, capsys):
    nh = natural_history("tisa-cel", n=200, seed=1)
    assert ISSUE_KEYS <= set(nh.statistics) and set(nh.statistics) == set(DEFINITIONS)
    assert {r["statistic"] for r in nh.published} == {
        "p_plt_lt_50", "p_anc_le_0.5", "p_anc_le_0.1", "p_anc_le_0.5_ge_7d",
        "p_anc_le_0.1_ge_7d", "p_anc_le_1_after_d21", "median_days_anc_lt_0.5_d0_60",
        "p_severe_neutropenia_ge_14d",
    }  # fmt: skip
    assert all("Table 2" in r["source"] and "tisa-cel" in r["source"] for r in nh.published)
    lo, mid, hi = nh.bands["anc"]
    assert np.all(lo <= mid) and np.all(mid <= hi)
    out, png = tmp_path / "nh.json", tmp_path / "nh.png"
    with pytest.raises(SystemExit) as e:
        cli_main(["natural-history", "--hematotox", "high", "--n", "100",
                  "--json", str(out), "--plot", str(png)])  # fmt: skip
    assert e.value.code == 0
    data = json.loads(out.read_text())
    assert ISSUE_KEYS <= set(data["statistics"]) and data["settings"]["hematotox"] == "high"
    assert png.stat().st_size > 10_000
    assert "published" in capsys.readouterr().out


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="hematotox"):
        natural_history(hematotox="9")
    with pytest.raises(InputError, match="product"):
        natural_history("kymriah")
    with pytest.raises(InputError, match="n must be"):
        natural_history(n=3)


def test_every_applicable_row_of_both_files_and_every_key_reach_the_output(
    tmp_path, capsys, monkeypatch
):
    """Issue 17 item 7: days -7..180, every statistic in the JSON, every applicable row of
    natural_history.csv and natural_history_more.csv printed beside the model."""
    monkeypatch.setenv("COLUMNS", "250")
    out = tmp_path / "nh.json"
    with pytest.raises(SystemExit) as e:
        cli_main(["natural-history", "--product", "axi-cel", "--n", "100", "--json", str(out)])
    assert e.value.code == 0
    text = capsys.readouterr().out
    # Table 2 axi-cel rows 18-25 and the Logue rows 8-9 (days 90 and 180)
    for where in [f"natural_history.csv:{r} " for r in range(18, 26)] + [
        "natural_history_more.csv:8 ",
        "natural_history_more.csv:9 ",
    ]:
        assert where in text, where
    data = json.loads(out.read_text())
    assert data["settings"]["days"] == [-7.0, 180.0]
    assert set(data["statistics"]) == set(DEFINITIONS)
    for key in ("icaht_early_grade_dist", "ticaht_late_grade_dist"):
        dist = data["statistics"][key]
        assert len(dist) == 5 and sum(dist) == pytest.approx(1.0)
    assert {(r["file"], r["row"]) for r in data["published"]} == {
        ("natural_history.csv", r) for r in range(18, 26)
    } | {("natural_history_more.csv", 8), ("natural_history_more.csv", 9)}
    # a group without a published row says so
    with pytest.raises(SystemExit) as e:
        cli_main(["natural-history", "--product", "liso-cel", "--n", "20"])
    assert e.value.code == 0
    assert "no published row for liso-cel, lbcl, CAR-HEMATOTOX all" in capsys.readouterr().out


# ---- the first weeks on time (issue 17 item 4) ------------------------------------------

FIRST_WEEKS = np.arange(-7.0, 61.0)


@pytest.fixture(scope="module")
def first_weeks():
    """Daily ANC of 1000 patients of the shipped LBCL population under each product's
    own course, without G-CSF, and each patient's pre-lymphodepletion ANC."""
    from carthema.clinical.population.virtual import (
        population_params,
        product_events,
        simulate_counts,
    )
    from carthema.models.model import get_model

    pop, _ = load_population()
    pop = pop.sample(1000, random_state=7).reset_index(drop=True)
    m = get_model("full")
    out = {}
    for product in ("axi-cel", "tisa-cel"):
        P = population_params(m, pop.assign(product=product))
        status, anc, _ = simulate_counts(m, P, product_events(product), FIRST_WEEKS)
        ok = status == 0
        assert ok.mean() > 0.99, ok.mean()
        out[product] = (anc[ok], P[ok, m.index("param", "anc0")])
    return out


@pytest.mark.parametrize("product", ["axi-cel", "tisa-cel"])
def test_no_rebound_above_the_pre_lymphodepletion_anc_without_gcsf(first_weeks, product):
    """Issue 17 item 4 (a physiological bound): without G-CSF, at most 5 % of patients
    rise above their own pre-lymphodepletion ANC during days 5-20 after flu/cy and CAR-T.
    Before the marrow neutrophil reserve and the CD34+ pool's brake, 26-31 % of axi-cel
    patients did, with a 95th percentile of 9-10 G/L."""
    from carthema.clinical.population.calibrate import rebound

    anc, anc0 = first_weeks[product]
    share = rebound(FIRST_WEEKS, anc, anc0).mean()
    assert share <= 0.05, share
    window = (FIRST_WEEKS >= 5) & (FIRST_WEEKS <= 20)
    assert np.percentile(anc[:, window].max(axis=1), 95) < 8.0


@pytest.mark.parametrize("product", ["axi-cel", "tisa-cel"])
def test_nadir_and_first_recovery_fall_where_the_reserve_and_published_recovery_put_them(
    first_weeks, product
):
    """The nadir and the first recovery on time.

    - Nadir: flu/cy (days -5..-3) kills dividing precursors only; the blood is then fed
      by the post-mitotic marrow pool, whose transit is 5.8 d in healthy people
      (Lahoz-Beneytez et al. 2016, Blood 127:3431), so the median ANC nadir falls after
      day 3 (= -3 + 5.8, rounded down), not on the infusion day as before the reserve
      (median day 2-3), and within the first two weeks (early, lymphodepletion-driven
      cytopenia: "How I treat cytopenias after CAR T-cell therapy", Blood 2023,
      141:2460).
    - First recovery (first of 3 consecutive days with ANC >= 0.5 G/L after the nadir):
      median by day 28 (and see the next test). No published median day of nadir or of
      first recovery for LBCL could be checked with the search tools, so these anchors
      stand in for it.
    """
    from carthema.clinical.population.statistics import per_patient, summarise

    anc, _ = first_weeks[product]
    stats = summarise(per_patient(FIRST_WEEKS, anc, np.full_like(anc, 200.0)))
    assert 3.0 <= stats["median_day_anc_nadir"] <= 14.0, stats["median_day_anc_nadir"]
    assert stats["median_day_anc_recovery"] <= 28.0


@pytest.mark.parametrize("product", ["axi-cel", "tisa-cel"])
def test_the_second_dip_starts_in_days_21_to_40(first_weeks, product):
    """Issue 17 item 4: the second dip of the biphasic course is timed from the CAR-T/CRS
    peak into days 20-40. Rejeski et al. 2021 (Blood 138:2499) call a recovery followed
    by a second dip below 0.5 G/L after day 21 "intermittent"; Fried et al. 2019 (Bone
    Marrow Transplant 54:1643, abstract): in 93 % of patients haematological toxicity
    occurs after day 21. Among the patients whose ANC falls below 0.5 G/L again after a
    first recovery (days 0-60), the median day it does so lies in days 21-40, and fewer
    than a third of them start before day 21. With a one-stage delayed injury the median
    was day 23.5 (axi-cel) and 27 (tisa-cel), 42 and 31 % before day 21."""
    from carthema.clinical.population.statistics import second_dip_day

    anc, _ = first_weeks[product]
    onset = second_dip_day(FIRST_WEEKS, anc)
    onset = onset[np.isfinite(onset)]
    assert onset.size >= 20, onset.size
    assert 21.0 <= np.median(onset) <= 40.0, np.median(onset)
    assert (onset < 21.0).mean() < 1.0 / 3.0, (onset < 21.0).mean()


def test_second_dip_day_by_hand():
    """Day 0 below 0.5, three days up (1-3), below again on day 5; never low; low, up
    for only two days, low again (one episode); recovered and never low again."""
    days = np.arange(-2.0, 10.0)
    rows = np.full((4, days.size), 2.0)
    rows[0, [2, 7]] = 0.3
    rows[0, 6] = 0.6
    rows[2, [2, 5, 6]] = 0.3
    rows[3, 2] = 0.3
    from carthema.clinical.population.statistics import second_dip_day

    np.testing.assert_array_equal(second_dip_day(days, rows), [5.0, np.nan, np.nan, np.nan])


def test_neutrophil_recovery_by_day_28_after_a_4_1bb_product(first_weeks):
    """Cumulative incidence of neutrophil recovery 81 % at day 28 after a
    defined-composition 4-1BB CD19 CAR-T (Juluri et al. 2022, Blood Adv, 173 patients),
    within 0.10, for the 4-1BB product (tisa-cel), counting patients never below 0.5 G/L
    as recovered; recovery is the first of 3 consecutive days with ANC >= 0.5 G/L after
    the nadir. The CD28 product, with its stronger lymphodepletion and CRS, is not held
    to that cohort (0.71 on the shipped population)."""
    from carthema.clinical.population.statistics import per_patient

    anc, _ = first_weeks["tisa-cel"]
    rec = per_patient(FIRST_WEEKS, anc, np.full_like(anc, 200.0))["median_day_anc_recovery"]
    never_low = ~(anc[:, (FIRST_WEEKS >= 0) & (FIRST_WEEKS <= 60)] < 0.5).any(axis=1)
    recovered_by_28 = np.mean(never_low | (np.nan_to_num(rec, nan=99.0) <= 28.0))
    assert abs(recovered_by_28 - 0.81) <= 0.10, recovered_by_28
