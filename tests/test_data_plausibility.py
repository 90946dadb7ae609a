"""Plausibility ranges: values no patient or assay gives are refused with the likely cause;
mixed units within an analyte are accepted when every row is labelled."""

from __future__ import annotations

import pandas as pd
import pytest

from carthema.data import InputError, load_example, validate_events, validate_observations
from carthema.data.analytes import ANALYTES
from carthema.data.events import EVENT_KINDS
from carthema.data.plausibility import ANALYTE_RANGES, EVENT_RANGES, describe

OBS_COLS = ["patient", "day", "analyte", "value", "unit", "compartment"]
EV_COLS = ["patient", "day", "kind", "amount", "unit"]


def _obs(*rows: list[object]) -> pd.DataFrame:
    return validate_observations(pd.DataFrame(list(rows), columns=OBS_COLS))


def _refused_obs(*rows: list[object]) -> InputError:
    with pytest.raises(InputError) as err:
        _obs(*rows)
    return err.value


def test_every_analyte_and_event_unit_has_a_range_with_reason() -> None:
    assert set(ANALYTE_RANGES) == set(ANALYTES)
    for a, r in ANALYTE_RANGES.items():
        assert r.unit == ANALYTES[a].canonical_unit and r.reason and r.low < r.high
        assert r.contains(r.typical)
    for k in EVENT_KINDS.values():
        for unit in k.units:
            r = EVENT_RANGES[(k.name, unit)]
            assert r.unit == unit and r.reason and r.contains(r.typical)
    assert "cart_copies" in describe()


def test_anc_in_hundreds_labelled_g_per_l_is_cells_per_ul() -> None:
    err = _refused_obs(["A", 1, "anc", 1.1, "G/L", "blood"], ["A", 2, "anc", 900, "G/L", "blood"])
    assert err.row == 2 and err.column == "value"
    assert "above the plausible maximum of 100 G/L" in err.message
    assert "900 looks like cells/uL (= 0.9 G/L), not G/L" in err.message


def test_cart_copies_1e300_refused() -> None:
    err = _refused_obs(["A", 1, "cart_copies", 1e300, "copies/ug DNA", "blood"])
    assert err.column == "value" and "copies/ug DNA" in err.message
    assert "exponent typo" in err.message


def test_haemoglobin_in_g_per_dl_labelled_g_per_l() -> None:
    err = _refused_obs(["A", 1, "haemoglobin", 9.5, "g/L", "blood"])
    assert "below the plausible minimum" in err.message and "looks like g/dL" in err.message


def test_mixed_units_accepted_when_each_row_is_labelled() -> None:
    df = _obs(
        ["A", 1, "anc", 1.2, "G/L", "blood"],
        ["A", 2, "anc", 1500, "cells/uL", "blood"],
        ["A", 3, "anc", 0.9, "10^9/L", "blood"],
        ["A", 1, "haemoglobin", 9.5, "g/dL", "blood"],
        ["A", 2, "haemoglobin", 101, "g/L", "blood"],
    )
    anc = df[df["analyte"] == "anc"]
    assert list(anc["value"]) == pytest.approx([1.2, 1.5, 0.9])
    assert set(anc["unit"]) == {"G/L"}
    assert list(df[df["analyte"] == "haemoglobin"]["value"]) == pytest.approx([95.0, 101.0])


@pytest.mark.parametrize(
    ("row", "column", "words"),
    [
        (["A", 0, "cart_infusion", 1e300, "cells/kg"], "amount", "exponent typo"),
        (["A", 1e9, "cart_infusion", 2e6, "cells/kg"], "day", "more than 20 years"),
        (["A", 0, "cart_infusion", 2, "cells/kg"], "amount", "looks like 10^6 cells/kg"),
        (["A", 0, "tocilizumab", 800, "mg/kg"], "amount", "plausible maximum of 50 mg/kg"),
        (["A", -5, "lymphodepletion", 3e4, "mg/m2"], "amount", "plausible maximum"),
    ],
    ids=["dose_1e300", "day_1e9", "dose_in_millions", "tocilizumab_mg", "ld_30000"],
)
def test_event_refused(row: list[object], column: str, words: str) -> None:
    df = pd.DataFrame([row], columns=EV_COLS)
    if row[2] == "lymphodepletion":
        df["drug"] = "fludarabine"
    with pytest.raises(InputError) as err:
        validate_events(df)
    assert err.value.column == column and words in err.value.message, err.value.message


def test_graft_cells_per_kg_bound() -> None:
    df = pd.DataFrame(
        [["A", 30, "stem_cell_boost", 3e6, "cells/kg", "allogeneic", "no", 5e12]],
        columns=[*EV_COLS, "source", "cd34_selected", "cd3_per_kg"],
    )
    with pytest.raises(InputError) as err:
        validate_events(df)
    assert err.value.column == "cd3_per_kg" and "plausible maximum" in err.value.message


@pytest.mark.parametrize("name", ["han2022", "synthetic"])
def test_bundled_examples_are_plausible(name: str) -> None:
    ex = load_example(name)
    assert ex.observations is not None and len(ex.observations)
