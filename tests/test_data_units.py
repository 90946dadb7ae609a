"""Unit conversion (carthema.data.units) and the analyte / event-kind catalogues."""

from __future__ import annotations

import math

import pytest

from carthema.data import units as U
from carthema.data.analytes import ANALYTES, get_analyte, suggest_analytes
from carthema.data.errors import InputError
from carthema.data.events import EVENT_KINDS, suggest_event_kinds


@pytest.mark.parametrize(
    ("value", "src", "dst", "expected"),
    [
        (1500, "cells/uL", "G/L", 1.5),  # ANC 1500/uL is 1.5 G/L
        (1.5, "G/L", "cells/uL", 1500),
        (1.5, "10^9/L", "G/L", 1.5),
        (1.5, "/nL", "G/L", 1.5),
        (1.5, "10^3/uL", "G/L", 1.5),
        (1500, "/mm3", "G/L", 1.5),
        (1500, "cells/µL", "G/L", 1.5),  # micro sign
        (1500, "cells / uL", "G/L", 1.5),  # spaces around the slash
        (9, "g/dL", "g/L", 90),  # haemoglobin
        (9000, "mg/dL", "g/L", 90),
        (5, "mg/dL", "mg/L", 50),  # CRP
        (500, "ng/mL", "ug/L", 500),  # ferritin
        (30, "ng/L", "pg/mL", 30),  # IL-6
        (0.95, "10^6 cells/kg", "cells/kg", 0.95e6),
        (0.95, "x10^6/kg", "cells/kg", 0.95e6),
        (30, "mg/m²", "mg/m2", 30),
        (5, "mcg/kg/day", "ug/kg/day", 5),
        (2, "L", "mL", 2000),
    ],
)
def test_convert(value: float, src: str, dst: str, expected: float) -> None:
    assert math.isclose(U.convert(value, src, dst), expected, rel_tol=1e-12)


def test_case_matters_between_giga_and_gram() -> None:
    # G/L (10^9 cells per litre) and g/L (grams per litre) differ only in case
    assert U.parse_unit("G/L").dimension == "cell_concentration"
    assert U.parse_unit("g/L").dimension == "mass_concentration"
    # an unambiguous case slip is read as the unit it can only mean
    assert U.parse_unit("MG/DL").symbol == "mg/dL"
    assert U.parse_unit("copies/ug dna").symbol == "copies/ug DNA"


def test_unknown_and_mismatched_units_raise() -> None:
    with pytest.raises(InputError, match="unknown unit 'furlongs'"):
        U.convert(1.0, "furlongs", "G/L")
    with pytest.raises(InputError, match="cannot convert 'g/L'"):
        U.convert(1.0, "g/L", "G/L")
    assert U.parse_unit("furlongs") is None


def test_catalogue_units_are_known() -> None:
    for a in ANALYTES.values():
        assert a.canonical_unit in a.units
        for sym in a.units:
            assert U.parse_unit(sym) is not None, (a.name, sym)
        if a.default_compartment is not None:
            assert a.default_compartment in a.compartments
    for k in EVENT_KINDS.values():
        for sym in k.units:
            assert U.parse_unit(sym) is not None, (k.name, sym)


def test_required_analytes_and_kinds_exist() -> None:
    for name in [
        "cart_copies",
        "anc",
        "platelets",
        "lymphocytes",
        "wbc",
        "b_cells",
        "marrow_blasts",
        "mrd",
        "chimerism",
        "haemoglobin",
        "crp",
        "ferritin",
        "il6",
    ]:
        assert get_analyte(name) is not None
    assert get_analyte("ANC").name == "anc"  # case is ignored
    assert ANALYTES["anc"].canonical_unit == "G/L"
    assert ANALYTES["b_cells"].canonical_unit == "cells/uL"
    assert ANALYTES["cart_copies"].canonical_unit == "copies/ug DNA"
    for name in [
        "cart_infusion",
        "lymphodepletion",
        "stem_cell_boost",
        "gcsf",
        "platelet_transfusion",
        "rbc_transfusion",
        "tpo_agonist",
    ]:
        assert name in EVENT_KINDS


def test_suggestions() -> None:
    assert suggest_analytes("neutrophils")[0] == "anc"
    assert suggest_analytes("hemoglobin")[0] == "haemoglobin"
    assert "platelets" in suggest_analytes("platelet")
    assert suggest_event_kinds("boost")[0] == "stem_cell_boost"
    assert "gcsf" in suggest_event_kinds("g-csf")


# ------------------------------------------------- lab spellings (issue 22) and separators
@pytest.mark.parametrize(
    "spelling", ["G/l", "g/l", "G/L", "x 10^9/L", "x10E9/L", "x10^9/l", "×10^9/L", "10^9/l"]
)
def test_lab_spellings_of_a_cell_count_are_read_as_g_per_l(spelling):
    assert U.parse_unit(spelling, ("G/L", "cells/uL", "cells/L")).symbol == "G/L"


def test_cells_per_mcl_is_cells_per_ul():
    assert U.parse_unit("cells/mcL").symbol == "cells/uL"
    assert U.convert(1500, "cells/mcL", "G/L") == pytest.approx(1.5)


def test_case_slip_g_per_l_takes_its_meaning_from_the_quantity():
    # alone, g/l is G/L or g/L: not guessed
    assert U.parse_unit("g/l") is None
    assert U.parse_unit("g/l", ("g/L", "g/dL")).symbol == "g/L"  # haemoglobin
    assert U.parse_unit("g/l", ("G/L", "cells/uL")).symbol == "G/L"  # ANC


def _obs(tmp_path, rows: str):
    path = tmp_path / "obs.csv"
    path.write_text("patient,day,analyte,value,unit\n" + rows)
    return path


def test_files_with_lab_spellings_are_converted(tmp_path):
    from carthema.data import read_observations

    rows = (
        "P1,1,anc,1.5,g/l\nP1,2,anc,1500,cells/mcL\nP1,3,platelets,80,x 10^9/L\n"
        "P1,4,platelets,90,x10E9/L\nP1,5,haemoglobin,95,g/l\nP1,6,anc,2,G/l\n"
    )
    obs = read_observations(_obs(tmp_path, rows))
    assert list(obs["value"]) == pytest.approx([1.5, 1.5, 80, 90, 95, 2])


def test_a_thousands_separator_is_refused_with_both_readings(tmp_path):
    from carthema.data import InputError, read_observations

    with pytest.raises(InputError) as e:
        read_observations(_obs(tmp_path, 'P1,1,platelets,"1,200",G/L\n'))
    msg = e.value.message
    assert "1200 (a thousands separator)" in msg and "1.2 (a decimal comma)" in msg
    assert "which is it?" in msg
    with pytest.raises(InputError, match="use a dot as the decimal separator"):
        read_observations(_obs(tmp_path, 'P1,1,anc,"0,5",G/L\n'))
    with pytest.raises(InputError, match="write 1200000 without thousands separators"):
        read_observations(_obs(tmp_path, 'P1,1,anc,"1,200,000",cells/L\n'))
