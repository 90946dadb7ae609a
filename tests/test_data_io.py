"""Reading, canonical units, sorting, BLQ rows and CSV/Parquet round trips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from carthema.data import (
    InputError,
    read_events,
    read_observations,
    summarize,
    validate_events,
    validate_observations,
    write_table,
)
from carthema.data.schema import (
    EVENT_COLUMNS,
    OBSERVATION_COLUMNS,
    check_events,
    check_observations,
)

OBS = """patient,day,analyte,value,unit,compartment,lloq,blq,note
10,7,cart_copies,2000,copies/ug,blood,50,no,
2,3,haemoglobin,9,g/dL,,,,
2,1,anc,1500,cells/uL,,,,first count
2,5,anc,900,cells/uL,,,,
2,14,cart_copies,,copies/ug DNA,marrow,50,yes,below the limit
2,14,b_cells,0.001,G/L,,,,
"""

EVENTS = """patient,day,kind,amount,unit,duration,drug,source,cd34_selected,cd3_per_kg
2,-5,lymphodepletion,30,mg/m^2,,Fludarabine,,,
2,0,cart_infusion,2,10^6/kg,,,,,
2,34,stem_cell_boost,6.75,x10^6/kg,,,allogeneic,yes,1900
2,40,gcsf,1,dose,5,,,,
2,41,platelet_transfusion,1,unit,,,,,
2,60,tpo_agonist,,,28,eltrombopag,,,
"""


@pytest.fixture
def obs_csv(tmp_path: Path) -> Path:
    p = tmp_path / "obs.csv"
    p.write_text(OBS)
    return p


@pytest.fixture
def events_csv(tmp_path: Path) -> Path:
    p = tmp_path / "events.csv"
    p.write_text(EVENTS)
    return p


def test_observations_canonical(obs_csv: Path) -> None:
    obs = read_observations(obs_csv)
    assert list(obs.columns) == list(OBSERVATION_COLUMNS)
    # patients sorted naturally (2 before 10), then by day
    assert list(obs["patient"]) == ["2", "2", "2", "2", "2", "10"]
    assert list(obs["day"]) == [1.0, 3.0, 5.0, 14.0, 14.0, 7.0]
    anc = obs[obs["analyte"] == "anc"]
    assert list(anc["value"]) == [1.5, 0.9]  # 1500 cells/uL == 1.5 G/L
    assert set(anc["unit"]) == {"G/L"}
    hb = obs[obs["analyte"] == "haemoglobin"].iloc[0]
    assert hb["value"] == pytest.approx(90.0) and hb["unit"] == "g/L"  # 9 g/dL == 90 g/L
    b = obs[obs["analyte"] == "b_cells"].iloc[0]
    assert b["value"] == pytest.approx(1.0) and b["unit"] == "cells/uL"
    assert hb["compartment"] == "blood"  # default compartment for blood counts


def test_blq_row_kept_with_empty_value(obs_csv: Path) -> None:
    obs = read_observations(obs_csv)
    blq = obs[obs["blq"]]
    assert len(blq) == 1
    row = blq.iloc[0]
    assert math.isnan(row["value"]) and row["lloq"] == 50.0
    assert row["compartment"] == "marrow" and row["note"] == "below the limit"
    assert obs["blq"].dtype == bool


def test_events_canonical(events_csv: Path) -> None:
    ev = read_events(events_csv)
    assert list(ev.columns) == list(EVENT_COLUMNS)
    rows = {k: r for k, r in zip(ev["kind"], ev.to_dict("records"), strict=True)}
    assert rows["lymphodepletion"]["drug"] == "fludarabine"  # case normalised
    assert rows["lymphodepletion"]["unit"] == "mg/m2"
    assert rows["cart_infusion"]["amount"] == pytest.approx(2e6)
    assert rows["cart_infusion"]["unit"] == "cells/kg"
    boost = rows["stem_cell_boost"]
    assert boost["amount"] == pytest.approx(6.75e6)
    assert boost["source"] == "allogeneic" and bool(boost["cd34_selected"]) is True
    assert boost["cd3_per_kg"] == 1900
    assert rows["gcsf"]["unit"] == "dose/day" and rows["gcsf"]["duration"] == 5
    assert rows["platelet_transfusion"]["unit"] == "units"
    tpo = rows["tpo_agonist"]
    assert math.isnan(tpo["amount"]) and pd.isna(tpo["unit"]) and tpo["duration"] == 28
    assert list(ev["day"]) == sorted(ev["day"])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip(obs_csv: Path, events_csv: Path, tmp_path: Path, suffix: str) -> None:
    obs = read_observations(obs_csv)
    ev = read_events(events_csv)
    obs2 = read_observations(write_table(obs, tmp_path / f"obs_out{suffix}"))
    ev2 = read_events(write_table(ev, tmp_path / f"ev_out{suffix}"))
    pdt.assert_frame_equal(obs, obs2)
    pdt.assert_frame_equal(ev, ev2)


def test_parquet_input_with_native_types(tmp_path: Path) -> None:
    path = tmp_path / "obs.parquet"
    pd.DataFrame(
        {
            "patient": [1, 1],  # integer ids become text
            "day": [0, 7],
            "analyte": ["cart_copies", "cart_copies"],
            "value": [np.nan, 1234.5],
            "unit": ["copies/ug DNA"] * 2,
            "compartment": ["blood", "blood"],
            "lloq": [50.0, 50.0],
            "blq": [True, False],
        }
    ).to_parquet(path)
    obs = read_observations(path)
    assert list(obs["patient"]) == ["1", "1"]
    assert bool(obs["blq"].iloc[0]) and obs["value"].iloc[1] == 1234.5


def test_validate_in_memory_frames() -> None:
    obs = validate_observations(
        pd.DataFrame(
            {"patient": ["a"], "day": [0], "analyte": ["crp"], "value": [5.0], "unit": ["mg/dL"]}
        )
    )
    assert obs["value"].iloc[0] == pytest.approx(50.0) and obs["unit"].iloc[0] == "mg/L"
    with pytest.raises(InputError) as err:
        validate_events(pd.DataFrame({"patient": ["a"], "day": [0], "kind": ["cart"]}))
    assert err.value.message.startswith("<events>, row 1, column 'kind'")


def test_schema_guards_canonical_tables(obs_csv: Path, events_csv: Path) -> None:
    obs = read_observations(obs_csv)
    check_observations(obs)
    check_events(read_events(events_csv))
    bad = obs.copy()
    bad.loc[0, "unit"] = "cells/uL"  # not canonical
    with pytest.raises(InputError):
        check_observations(bad)


def test_summarize(obs_csv: Path, events_csv: Path) -> None:
    s = summarize(read_observations(obs_csv), read_events(events_csv))
    p2 = s.patients.set_index("patient").loc["2"]
    assert p2["n_observations"] == 5 and p2["n_events"] == 6
    assert p2["first_day"] == -5 and p2["last_day"] == 60
    cart = s.analytes[(s.analytes["patient"] == "2") & (s.analytes["analyte"] == "cart_copies")]
    assert cart.iloc[0]["n_blq"] == 1 and cart.iloc[0]["compartment"] == "marrow"
    boost = s.events[s.events["kind"] == "stem_cell_boost"].iloc[0]
    assert "allogeneic" in boost["detail"] and "CD34-selected" in boost["detail"]
    rec = s.to_records()
    assert {"patients", "analytes", "events"} == set(rec)
    empty = summarize(None, None)
    assert len(empty.patients) == 0
