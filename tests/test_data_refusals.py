"""Every refused input gives ONE InputError naming the file, the row and the column.

One test per case (parametrised). Rows are 1-based data rows: the header is row 0.
The bad record is never on row 1, so that the row count is really checked.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from carthema.data import InputError, read_events, read_observations

OBS_HEADER = "patient,day,analyte,value,unit,compartment,lloq,blq"
GOOD_OBS = "p1,0,anc,1.2,G/L,blood,,"
EV_HEADER = "patient,day,kind,amount,unit,duration,drug,source,cd34_selected"
GOOD_EV = "p1,0,cart_infusion,1e6,cells/kg,,,,"


def _csv(tmp_path: Path, header: str, *rows: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _assert_names(exc: InputError, path: Path, row: int | None, column: str | None) -> None:
    msg = exc.message
    assert "\n" not in msg, msg  # one line
    assert str(path) in msg, msg
    if row is not None:
        assert f"row {row}," in msg or msg.endswith(f"row {row}") or f"row {row}:" in msg, msg
        assert exc.row == row
    if column is not None:
        assert f"column '{column}'" in msg, msg
        assert exc.column == column
    assert "Fix:" in msg, msg


# (case id, rows after the header (GOOD row first), bad row, bad column, words in message)
OBS_CASES = [
    ("unknown_analyte", ["p1,1,neutrophils,1.2,G/L,blood,,"], 2, "analyte", "did you mean 'anc'"),
    ("unknown_unit", ["p1,1,anc,1.2,furlongs,blood,,"], 2, "unit", "unknown unit 'furlongs'"),
    ("mismatched_unit", ["p1,1,anc,1.2,g/L,blood,,"], 2, "unit", "not a unit of anc"),
    ("mislabelled_unit", ["p1,1,anc,1200,G/L,blood,,"], 2, "value", "looks like cells/uL"),
    ("implausible_cart", ["p1,1,cart_copies,1e300,copies/ug,blood,,"], 2, "value", "maximum"),
    ("implausible_lloq", ["p1,1,cart_copies,,copies/ug,blood,1e300,yes"], 2, "lloq", "maximum"),
    ("day_implausible", ["p1,1e9,anc,1.2,G/L,blood,,"], 2, "day", "more than 20 years"),
    ("non_numeric_value", ["p1,1,anc,high,G/L,blood,,"], 2, "value", "'high' is not a number"),
    ("less_than_value", ["p1,1,cart_copies,<50,copies/ug DNA,blood,,"], 2, "value", "blq=true"),
    ("decimal_comma", ['p1,1,anc,"1,5",G/L,blood,,'], 2, "value", "decimal separator"),
    ("non_finite_value", ["p1,1,anc,inf,G/L,blood,,"], 2, "value", "not a finite number"),
    ("negative_count", ["p1,1,anc,-0.5,G/L,blood,,"], 2, "value", "a count"),
    ("percent_above_100", ["p1,1,chimerism,120,% donor,blood,,"], 2, "value", "between 0 and 100"),
    ("duplicated_record", ["p1,1,anc,1.0,G/L,blood,,", "p1,1,anc,1.1,G/L,,,"], 3, "day", "row 2"),
    ("day_is_a_date", ["p1,2017-01-26,anc,1.2,G/L,blood,,"], 2, "day", "not a date"),
    ("day_empty", ["p1,,anc,1.2,G/L,blood,,"], 2, "day", "day is empty"),
    ("patient_empty", [",1,anc,1.2,G/L,blood,,"], 2, "patient", "'patient' is empty"),
    ("unknown_compartment", ["p1,1,anc,1.2,G/L,csf,,"], 2, "compartment", "unknown compartment"),
    ("compartment_needed", ["p1,1,cart_copies,100,copies/ug,,,"], 2, "compartment", "which"),
    ("wrong_compartment", ["p1,1,anc,1.2,G/L,marrow,,"], 2, "compartment", "not measured in"),
    ("blq_without_lloq", ["p1,1,cart_copies,,copies/ug,blood,,yes"], 2, "lloq", "lloq"),
    ("blq_above_lloq", ["p1,1,cart_copies,80,copies/ug,blood,50,yes"], 2, "value", "above lloq"),
    ("below_lloq_unflagged", ["p1,1,cart_copies,20,copies/ug,blood,50,no"], 2, "blq", "below"),
    ("value_empty", ["p1,1,anc,,G/L,blood,,"], 2, "value", "value is empty"),
    ("bad_blq_flag", ["p1,1,anc,1.2,G/L,blood,,maybe"], 2, "blq", "yes/no"),
    ("lloq_not_positive", ["p1,1,cart_copies,20,copies/ug,blood,0,"], 2, "lloq", "not positive"),
    ("unit_empty", ["p1,1,anc,1.2,,blood,,"], 2, "unit", "'unit' is empty"),
]


@pytest.mark.parametrize(
    ("rows", "row", "column", "words"),
    [c[1:] for c in OBS_CASES],
    ids=[c[0] for c in OBS_CASES],
)
def test_observation_refused(
    tmp_path: Path, rows: list[str], row: int, column: str, words: str
) -> None:
    path = _csv(tmp_path, OBS_HEADER, GOOD_OBS, *rows)
    with pytest.raises(InputError) as err:
        read_observations(path)
    _assert_names(err.value, path, row, column)
    assert words in err.value.message


EVENT_CASES = [
    ("unknown_kind", ["p1,34,booster,1e6,cells/kg,,,,"], 2, "kind", "unknown event kind"),
    ("kind_suggestion", ["p1,34,boost,1e6,cells/kg,,,,"], 2, "kind", "'stem_cell_boost'"),
    ("no_amount", ["p1,1,platelet_transfusion,,,,,,"], 2, "amount", "has no amount"),
    ("amount_negative", ["p1,1,platelet_transfusion,-1,units,,,,"], 2, "amount", "not positive"),
    ("amount_text", ["p1,1,platelet_transfusion,two,units,,,,"], 2, "amount", "not a number"),
    ("amount_without_unit", ["p1,1,platelet_transfusion,1,,,,,"], 2, "unit", "without a unit"),
    ("wrong_unit", ["p1,1,cart_infusion,30,mg/m2,,,,"], 2, "unit", "not a unit of cart_infusion"),
    ("period_no_duration", ["p1,10,gcsf,5,ug/kg/day,,,,"], 2, "duration", "needs a duration"),
    ("duration_not_apply", ["p1,-5,lymphodepletion,30,mg/m2,3,fludarabine,,"], 2, "duration", ""),
    ("ld_without_drug", ["p1,-5,lymphodepletion,30,mg/m2,,,,"], 2, "drug", "needs the drug"),
    ("unknown_drug", ["p1,-5,lymphodepletion,30,mg/m2,,fludarabin,,"], 2, "drug", "fludarabine"),
    ("drug_not_apply", ["p1,3,platelet_transfusion,1,units,,fludarabine,,"], 2, "drug", "apply"),
    ("boost_no_source", ["p1,34,stem_cell_boost,1e6,cells/kg,,,,yes"], 2, "source", "source"),
    ("boost_bad_source", ["p1,34,stem_cell_boost,1e6,cells/kg,,,sibling,yes"], 2, "source", ""),
    ("boost_no_cd34", ["p1,34,stem_cell_boost,1e6,cells/kg,,,allogeneic,"], 2, "cd34_selected", ""),
    ("source_not_apply", ["p1,3,cart_infusion,1e6,cells/kg,,,allogeneic,"], 2, "source", "apply"),
    ("duplicated_event", ["p1,0,cart_infusion,1e6,cells/kg,,,,"], 2, "day", "duplicated"),
    ("event_day_text", ["p1,day 5,gcsf,5,ug/kg/day,3,,,"], 2, "day", "not a number"),
    ("amount_implausible", ["p1,1,cart_infusion,1e300,cells/kg,,,,"], 2, "amount", "exponent"),
    ("amount_in_millions", ["p1,1,cart_infusion,2,cells/kg,,,,"], 2, "amount", "10^6 cells/kg"),
    ("event_day_implausible", ["p1,1e9,cart_infusion,1e6,cells/kg,,,,"], 2, "day", "20 years"),
    ("duration_implausible", ["p1,10,gcsf,5,ug/kg/day,1e6,,,"], 2, "duration", "20 years"),
]


@pytest.mark.parametrize(
    ("rows", "row", "column", "words"),
    [c[1:] for c in EVENT_CASES],
    ids=[c[0] for c in EVENT_CASES],
)
def test_event_refused(tmp_path: Path, rows: list[str], row: int, column: str, words: str) -> None:
    path = _csv(tmp_path, EV_HEADER, GOOD_EV, *rows)
    with pytest.raises(InputError) as err:
        read_events(path)
    _assert_names(err.value, path, row, column)
    assert words in err.value.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "file not found" in err.value.message
    _assert_names(err.value, path, None, None)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "empty" in err.value.message
    _assert_names(err.value, path, 0, None)


def test_header_without_rows(tmp_path: Path) -> None:
    path = _csv(tmp_path, OBS_HEADER)
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "no data rows" in err.value.message
    _assert_names(err.value, path, 1, None)


def test_missing_required_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "patient,day,value,unit", "p1,0,1.2,G/L")
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "required column 'analyte' is missing" in err.value.message
    _assert_names(err.value, path, 0, "analyte")


def test_unknown_column_with_suggestion(tmp_path: Path) -> None:
    path = _csv(tmp_path, "patient,day,analyte,value,unit,llqo", "p1,0,anc,1.2,G/L,")
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "did you mean 'lloq'" in err.value.message
    _assert_names(err.value, path, 0, "llqo")


def test_events_missing_kind_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "patient,day,amount,unit", "p1,0,1e6,cells/kg")
    with pytest.raises(InputError) as err:
        read_events(path)
    _assert_names(err.value, path, 0, "kind")


def test_malformed_csv_line(tmp_path: Path) -> None:
    path = _csv(tmp_path, OBS_HEADER, GOOD_OBS, "p1,1,anc,1.2,G/L,blood,,,extra")
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "fields" in err.value.message
    _assert_names(err.value, path, 2, None)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "obs.xlsx"
    path.write_text("x")
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "unknown file type" in err.value.message
    _assert_names(err.value, path, None, None)


def test_blank_lines_keep_file_row_numbers(tmp_path: Path) -> None:
    # A blank line is skipped but still counted, so "row N" is line N+1 of the file.
    path = _csv(tmp_path, OBS_HEADER, GOOD_OBS, "", "p1,2,anc,oops,G/L,blood,,")
    with pytest.raises(InputError) as err:
        read_observations(path)
    _assert_names(err.value, path, 3, "value")


def test_parquet_bad_row_is_numbered_like_csv(tmp_path: Path) -> None:
    path = tmp_path / "obs.parquet"
    pd.DataFrame(
        {
            "patient": ["p1", "p1", "p1"],
            "day": [0.0, 1.0, 2.0],
            "analyte": ["anc", "anc", "anc"],
            "value": [1.0, 1.1, -3.0],
            "unit": ["G/L"] * 3,
        }
    ).to_parquet(path)
    with pytest.raises(InputError) as err:
        read_observations(path)
    _assert_names(err.value, path, 3, "value")


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "obs.parquet"
    path.write_text("patient,day\n")
    with pytest.raises(InputError) as err:
        read_observations(path)
    assert "not a readable Parquet file" in err.value.message
    _assert_names(err.value, path, None, None)
