"""Import of a small hand-made NONMEM-style data set."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from carthema.data import InputError, read_nonmem

HEADER = "ID,TIME,DV,MDV,EVID,AMT,CMT,BLQ,LLOQ,WT"
ROWS = [
    "1,-5,.,1,1,30,3,0,.,70",  # row 1: fludarabine dose (CMT 3)
    "1,0,.,1,1,2,1,0,.,70",  # row 2: CAR-T dose, 2 x 10^6/kg (CMT 1)
    "1,7,15000,0,0,.,2,0,50,70",  # row 3: CAR-T copies
    "1,7,0.4,0,0,.,4,0,.,70",  # row 4: ANC in G/L
    "1,28,25,0,0,.,2,1,50,70",  # row 5: below the limit (DV is a placeholder)
    "1,30,.,1,0,.,4,0,.,70",  # row 6: missing sample (MDV=1): not imported, listed
    "1,34,.,1,1,5,5,0,.,70",  # row 7: boost 5 x 10^6 CD34+/kg
    "1,40,.,1,2,.,4,0,.,70",  # row 8: EVID=2 other event
    "2,0,.,1,1,1,1,0,.,60",  # row 9
    "2,14,300,0,0,.,2,0,50,60",  # row 10
]
CMT_MAP = {
    1: {"kind": "cart_infusion", "unit": "10^6 cells/kg"},
    2: {"analyte": "cart_copies", "compartment": "blood"},
    3: {"kind": "lymphodepletion", "drug": "fludarabine", "unit": "mg/m2"},
    4: "anc",
    5: {
        "kind": "stem_cell_boost",
        "unit": "10^6/kg",
        "source": "allogeneic",
        "cd34_selected": "yes",
    },
}


def _write(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "nm.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_import(tmp_path: Path) -> None:
    obs, ev = read_nonmem(_write(tmp_path, ROWS), CMT_MAP)
    assert len(obs) == 4
    assert obs.attrs["nonmem_ignored_columns"] == ["WT"]
    assert obs.attrs["nonmem_skipped_rows"] == [
        (6, "MDV=1 observation record"),
        (8, "EVID=2 (other-type event)"),
    ]
    p1 = obs[obs["patient"] == "1"]
    blq = p1[p1["blq"]]
    assert len(blq) == 1 and blq.iloc[0]["day"] == 28
    assert math.isnan(blq.iloc[0]["value"]) and blq.iloc[0]["lloq"] == 50
    anc = p1[p1["analyte"] == "anc"].iloc[0]
    assert anc["value"] == 0.4 and anc["unit"] == "G/L"
    assert list(ev["kind"]) == [
        "lymphodepletion",
        "cart_infusion",
        "stem_cell_boost",
        "cart_infusion",
    ]
    assert ev.iloc[1]["amount"] == pytest.approx(2e6)
    boost = ev.iloc[2]
    assert boost["amount"] == pytest.approx(5e6) and boost["source"] == "allogeneic"
    assert bool(boost["cd34_selected"]) is True
    assert ev.iloc[0]["drug"] == "fludarabine"


def test_hours_and_time_zero_and_addl(tmp_path: Path) -> None:
    rows = [
        "1,0,.,1,1,2,1,.,.,.,.",
        "1,24,.,1,1,1,6,.,.,4,24",  # platelet transfusion, then ADDL=4 more every 24 h
        "1,168,15000,0,0,.,2,.,.,.,.",
    ]
    cmt = {1: CMT_MAP[1], 2: CMT_MAP[2], 6: {"kind": "platelet_transfusion", "unit": "units"}}
    obs, ev = read_nonmem(
        _write(tmp_path, rows, "ID,TIME,DV,MDV,EVID,AMT,CMT,BLQ,LLOQ,ADDL,II"),
        cmt,
        time_unit="hour",
    )
    assert list(obs["day"]) == [7.0]
    plt = ev[ev["kind"] == "platelet_transfusion"]
    assert list(plt["day"]) == [1.0, 2.0, 3.0, 4.0, 5.0]  # 1 + ADDL 4, every 24 h


def test_blq_from_lloq_without_blq_column(tmp_path: Path) -> None:
    rows = ["1,7,20,0,0,.,2,50", "1,14,70,0,0,.,2,50"]
    obs, ev = read_nonmem(_write(tmp_path, rows, "ID,TIME,DV,MDV,EVID,AMT,CMT,LLOQ"), CMT_MAP)
    assert list(obs["blq"]) == [True, False]
    assert len(ev) == 0 and "kind" in ev.columns


@pytest.mark.parametrize(
    ("rows", "row", "column", "words"),
    [
        (["1,0,.,1,1,2,1,0,.,70", "1,7,5,0,0,.,9,0,.,70"], 2, "CMT", "not in the CMT map"),
        (["1,0,.,1,1,2,1,0,.,70", "1,7,high,0,0,.,2,0,50,70"], 2, "DV", "not a number"),
        (["1,7,100,0,0,.,2,0,50,70", "1,3,100,0,0,.,2,0,50,70"], 2, "TIME", "backwards"),
        (
            ["1,7,100,0,0,.,2,0,50,70", "2,7,100,0,0,.,2,0,50,70", "1,9,100,0,0,.,2,0,50,70"],
            3,
            "ID",
            "appears again",
        ),
        (["1,0,.,1,4,2,1,0,.,70"], 1, "EVID", "not supported"),
        (
            ["1,0,.,1,1,2,1,0,.,70", "1,5,.,1,1,,1,0,.,70", "1,7,9,0,0,.,2,0,5,70"],
            2,
            "AMT",
            "no amount",
        ),
        (["1,0,.,1,1,2,1,0,.,70", "1,7,100,0,0,.,2,2,50,70"], 2, "BLQ", "not 0 or 1"),
        (["1,0,.,1,1,2,1,0,.,70", "1,7,-3,0,0,.,4,0,.,70"], 2, "DV", "negative"),
        (["1,0,.,1,1,2,1,0,.,70", "1,7,100,0,0,.,1,0,50,70"], 2, "CMT", "not an analyte"),
    ],
    ids=[
        "unmapped_cmt",
        "dv_text",
        "time_backwards",
        "id_not_contiguous",
        "evid_reset",
        "dose_without_amt",
        "bad_blq",
        "negative_dv",
        "obs_cmt_is_dose_kind",
    ],
)
def test_refused(tmp_path: Path, rows: list[str], row: int, column: str, words: str) -> None:
    path = _write(tmp_path, rows)
    with pytest.raises(InputError) as err:
        read_nonmem(path, CMT_MAP)
    msg = err.value.message
    assert str(path) in msg and f"row {row}," in msg and f"column '{column}'" in msg, msg
    assert words in msg


def test_blq_without_any_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, ["1,7,0,0,0,.,2,1"], "ID,TIME,DV,MDV,EVID,AMT,CMT,BLQ")
    with pytest.raises(InputError) as err:
        read_nonmem(path, CMT_MAP)
    assert "row 1, column 'BLQ'" in err.value.message
    # a limit given in cmt_map is enough
    obs, _ = read_nonmem(path, {2: {"analyte": "cart_copies", "compartment": "blood", "lloq": 50}})
    assert bool(obs["blq"].iloc[0]) and obs["lloq"].iloc[0] == 50


def test_missing_nonmem_column(tmp_path: Path) -> None:
    path = _write(tmp_path, ["1,7,0,0"], "ID,TIME,DV,EVID")
    with pytest.raises(InputError) as err:
        read_nonmem(path, CMT_MAP)
    assert "row 0, column 'CMT'" in err.value.message
