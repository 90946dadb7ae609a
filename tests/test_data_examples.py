"""Bundled data sets: they load through the user-file validation and hold the papers' numbers."""

from __future__ import annotations

import csv

import pandas as pd
import pytest

from carthema.data import InputError, list_examples, load_example, read_events, read_observations


def _one(df: pd.DataFrame, **where: object) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        mask &= df[col] == val
    hits = df[mask]
    assert len(hits) == 1, (where, hits)
    return hits.iloc[0]


def test_list_examples() -> None:
    names = list_examples()
    for name in ("han2022", "mullanfiroze2022", "jiang2020", "synthetic"):
        assert name in names


def test_unknown_example_lists_names() -> None:
    with pytest.raises(InputError) as err:
        load_example("han2023")
    assert "han2022" in err.value.message and "jiang2020" in err.value.message


@pytest.mark.parametrize("name", ["han2022", "mullanfiroze2022", "jiang2020", "synthetic"])
def test_every_example_has_readme(name: str) -> None:
    ex = load_example(name)
    assert ex.readme.startswith("# ") and ex.path.is_dir()


def _plain_rows(path) -> list[dict[str, str]]:
    """A bundled file read as plain text (csv module): no validation, no unit conversion."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_han2022_files_pass_user_validation() -> None:
    """The bundled files pass the readers a user calls, and what comes back is the file
    row for row with the unit conversions written out here: 10^9/L is G/L (factor 1),
    10^6 cells/kg is 1e6 cells/kg, every other unit is kept."""
    ex = load_example("han2022")
    obs_unit = {"10^9/L": "G/L", "%": "%", "% donor": "% donor", "U/L": "U/L"}
    raw = _plain_rows(ex.path / "observations.csv")
    assert len(raw) == 26
    want = sorted(
        (float(r["day"]), r["analyte"], float(r["value"]), obs_unit[r["unit"]], r["compartment"])
        for r in raw
    )
    cols = ["day", "analyte", "value", "unit", "compartment"]
    for obs in (ex.observations, read_observations(ex.path / "observations.csv")):
        assert sorted(obs[cols].itertuples(index=False, name=None)) == want
        # the file states no limits: nothing is below a limit
        assert not obs["blq"].any() and obs["lloq"].isna().all()
    ev_unit = {
        "10^6 cells/kg": ("cells/kg", 1e6),
        "mg/m2": ("mg/m2", 1.0),
        "mg/kg": ("mg/kg", 1.0),
        "mg": ("mg", 1.0),
        "mL": ("mL", 1.0),
    }
    raw = _plain_rows(ex.path / "events.csv")
    assert len(raw) == 23
    want = sorted(
        (
            float(r["day"]),
            r["kind"],
            float(r["amount"]) * ev_unit[r["unit"]][1],
            ev_unit[r["unit"]][0],
        )
        for r in raw
    )
    cols = ["day", "kind", "amount", "unit"]
    for ev in (ex.events, read_events(ex.path / "events.csv")):
        got = sorted(ev[cols].itertuples(index=False, name=None))
        assert [g[:2] + g[3:] for g in got] == [w[:2] + w[3:] for w in want]
        assert [g[2] for g in got] == pytest.approx([w[2] for w in want], rel=1e-12)


def test_han2022_events() -> None:
    ev = load_example("han2022").events
    assert set(ev["patient"]) == {"han2022"}
    boost = _one(ev, kind="stem_cell_boost")
    assert boost["day"] == 34
    assert boost["amount"] == pytest.approx(0.95e6) and boost["unit"] == "cells/kg"
    assert boost["mnc_per_kg"] == pytest.approx(1.8e8)
    assert boost["source"] == "allogeneic" and bool(boost["cd34_selected"]) is False
    assert pd.isna(boost["cd3_per_kg"])  # not stated in the paper
    cart = _one(ev, kind="cart_infusion")
    assert cart["day"] == 0 and cart["amount"] == pytest.approx(4e6) and cart["duration"] == 3
    ld = ev[ev["kind"] == "lymphodepletion"]
    assert sorted(ld["day"].unique()) == [-5, -4, -3]
    flu = ld[ld["drug"] == "fludarabine"]
    cy = ld[ld["drug"] == "cyclophosphamide"]
    assert set(flu["amount"]) == {30} and set(cy["amount"]) == {600} and len(flu) == len(cy) == 3
    toci = ev[ev["kind"] == "tocilizumab"]
    assert list(toci["day"]) == [3, 5] and set(toci["amount"]) == {8}
    dex = ev[ev["kind"] == "corticosteroid"]
    assert list(dex["day"]) == [6, 7, 8, 12, 13, 14, 15, 19, 20, 21]
    assert set(dex["amount"]) == {20} and set(dex["drug"]) == {"dexamethasone"}
    pex = ev[ev["kind"] == "plasma_exchange"]
    assert list(pex["day"]) == [10, 11, 17] and set(pex["amount"]) == {2000}


def test_han2022_observations() -> None:
    obs = load_example("han2022").observations
    day33 = obs[obs["day"] == 33].set_index("analyte")["value"]
    assert day33.to_dict() == pytest.approx(
        {"wbc": 0.61, "anc": 0.53, "lymphocytes": 0.06, "platelets": 20.0}
    )
    chim = _one(obs, analyte="chimerism")
    assert chim["value"] == 100 and chim["day"] == 90 and chim["unit"] == "% donor"
    assert _one(obs, analyte="marrow_blasts", day=-17.0)["value"] == 68
    assert _one(obs, analyte="mrd", day=-94.0)["value"] == pytest.approx(10.5)
    assert _one(obs, analyte="wbc", day=-17.0)["value"] == pytest.approx(1.92)
    post = obs[(obs["analyte"] == "marrow_blasts") & (obs["day"] > 0)]
    assert list(post["day"]) == [30, 40, 94, 113] and set(post["value"]) == {0.0}
    # the figures are not digitised: no CAR-T copy, B-cell or cytokine values
    assert not set(obs["analyte"]) & {"cart_copies", "b_cells", "il6", "ferritin"}


def test_han2022_outcomes() -> None:
    out = load_example("han2022").outcomes
    days = out.dropna(subset=["day"]).set_index("outcome")["day"]
    assert days["neutrophil_engraftment"] == 36
    assert days["platelet_engraftment"] == 42
    assert days["full_donor_chimerism"] == 40
    assert days["marrow_mrd_negative_fcm"] == 40
    assert out["source_quote"].str.len().min() > 10


def test_han2022_tables() -> None:
    ex = load_example("han2022")
    patient = ex.tables["patient"].set_index("field")["value"]
    assert patient["age"] == "36" and patient["cart_transduction_efficiency"] == "41"
    t1 = ex.tables["table1_history"]
    assert len(t1) == 17 and t1["bm_blasts_pct"].max() == 68


def test_mullanfiroze2022() -> None:
    ex = load_example("mullanfiroze2022")
    assert ex.observations is None and ex.events is None
    resp = ex.tables["response"].set_index("outcome")
    anc = resp.loc["ANC > 1 G/L without G-CSF"]
    assert (anc["value"], anc["low"], anc["high"], anc["n"]) == (42, 11, 192, 4)
    assert tuple(resp.loc["platelet transfusion independent", ["value", "low", "high"]]) == (
        33,
        7,
        73,
    )
    cohort = ex.tables["scb_cohort"].set_index("characteristic")
    cd34 = cohort.loc["CD34+ cell dose"]
    assert (cd34["value"], cd34["low"], cd34["high"]) == (6.75e6, 2.5e6, 11.2e6)
    assert cohort.loc["CD3+ T-cell dose", "value"] == pytest.approx(1900)
    assert cohort.loc["time from CAR-T to CD34+ SCB", "value"] == 2.6
    flow = ex.tables["cohort"]
    assert flow["n"].iloc[0] == 101
    assert _one(flow, quantity="treated with CD34+-selected SCB from the SCT donor")["n"] == 7


def test_jiang2020() -> None:
    ex = load_example("jiang2020")
    t1 = ex.tables["table1_trials"]
    assert len(t1) == 10
    # the review's pooled numbers follow from the table
    assert t1["hsct_n"].sum() == 203
    assert t1["relapse_after_hsct_n"].sum() == 27
    assert t1["relapse_without_hsct_n"].sum() == 116
    assert t1["relapse_without_hsct_denominator"].sum() == 226
    tisa = _one(t1, register_number="NCT02435849")
    assert (tisa["dose_min_per_kg"], tisa["dose_max_per_kg"]) == (0.2e6, 5.4e6)
    assert _one(t1, register_number="NCT03173417")["hsct_day_median"] == 63
    pooled = ex.tables["pooled"]
    assert _one(pooled, unit="patients", n=203.0)["denominator"] == 429
    th = ex.tables["thresholds"].set_index("signal")
    assert th.loc["CAR-T level at CD19+ relapse", "value"] == 30
    assert th.loc["consolidative allo-HSCT timing", "value"] == 90
    assert len(ex.tables["table2_regimens"]) == 4
