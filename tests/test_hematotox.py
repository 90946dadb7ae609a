"""CAR-HEMATOTOX score: hand-computed cases at every cut-off (see models/hematotox.py for
what was verified against Rejeski et al. 2021 and the boundary conventions)."""

from __future__ import annotations

import numpy as np
import pytest

from carthema.data.errors import InputError
from carthema.models.hematotox import HematotoxScore, hematotox, hematotox_points

# A patient scoring 0 on every item; each case below changes one item.
BASE = {"platelets": 250.0, "anc": 3.0, "hemoglobin": 12.0, "crp": 0.5, "ferritin": 300.0}


@pytest.mark.parametrize(
    ("item", "value", "points"),
    [
        # platelets (G/L): > 175 -> 0, 75-175 (closed) -> 1, < 75 -> 2
        ("platelets", 175.1, 0),
        ("platelets", 175.0, 1),
        ("platelets", 120.0, 1),
        ("platelets", 75.0, 1),
        ("platelets", 74.9, 2),
        ("platelets", 0.0, 2),
        # ANC (G/L): >= 1.2 -> 0, < 1.2 -> 1
        ("anc", 1.2, 0),
        ("anc", 1.19, 1),
        ("anc", 0.0, 1),
        # haemoglobin (g/dL): >= 9.0 -> 0, < 9.0 -> 1
        ("hemoglobin", 9.0, 0),
        ("hemoglobin", 8.9, 1),
        # CRP (mg/dL): < 3.0 -> 0, >= 3.0 -> 1
        ("crp", 2.99, 0),
        ("crp", 3.0, 1),
        ("crp", 12.0, 1),
        # ferritin (ng/mL): < 650 -> 0, 650-2000 (closed) -> 1, > 2000 -> 2
        ("ferritin", 649.0, 0),
        ("ferritin", 650.0, 1),
        ("ferritin", 2000.0, 1),
        ("ferritin", 2001.0, 2),
    ],
)
def test_each_cutoff(item, value, points):
    score = hematotox(**{**BASE, item: value})
    assert getattr(score, item) == points
    assert score.total == points
    assert score.group == ("high" if points >= 2 else "low")


def test_all_zero_and_maximum():
    assert hematotox(**BASE) == HematotoxScore(0, 0, 0, 0, 0, 0, "low")
    worst = hematotox(platelets=40, anc=0.3, hemoglobin=7.5, crp=8.0, ferritin=5000)
    assert worst == HematotoxScore(2, 1, 1, 1, 2, 7, "high")


def test_low_high_split_at_two():
    one = hematotox(**{**BASE, "anc": 1.0})  # 1 point
    two = hematotox(**{**BASE, "anc": 1.0, "crp": 3.0})  # 2 points
    assert (one.total, one.group) == (1, "low")
    assert (two.total, two.group, two.high) == (2, "high", True)


def test_worked_example():
    # platelets 110 -> 1, ANC 0.95 -> 1, Hb 10.1 -> 0, CRP 4.2 -> 1, ferritin 540 -> 0.
    s = hematotox(platelets=110, anc=0.95, hemoglobin=10.1, crp=4.2, ferritin=540)
    assert (s.platelets, s.anc, s.hemoglobin, s.crp, s.ferritin, s.total) == (1, 1, 0, 1, 0, 3)
    assert s.group == "high"


def test_vectorised_matches_scalar():
    plt_ = np.array([250.0, 175.0, 74.0, 75.0])
    fer = np.array([300.0, 650.0, 2000.0, 2500.0])
    pts = hematotox_points(plt_, 1.5, 10.0, np.array([0.1, 3.0, 2.0, 5.0]), fer)
    np.testing.assert_array_equal(pts["platelets"], [0, 1, 2, 1])
    np.testing.assert_array_equal(pts["ferritin"], [0, 1, 1, 2])
    np.testing.assert_array_equal(pts["crp"], [0, 1, 0, 1])
    np.testing.assert_array_equal(pts["total"], [0, 3, 3, 4])
    np.testing.assert_array_equal(pts["high"], [False, True, True, True])
    for k in range(4):
        s = hematotox(plt_[k], 1.5, 10.0, [0.1, 3.0, 2.0, 5.0][k], fer[k])
        assert s.total == pts["total"][k]
    with pytest.raises(InputError, match="hematotox_points"):
        hematotox(plt_, 1.5, 10.0, 1.0, 300.0)


@pytest.mark.parametrize(
    ("item", "value", "fix"),
    [
        ("hemoglobin", 120.0, "divided by 10 is g/dL"),
        ("crp", 30.0, "mg/L"),
        ("platelets", 150000.0, "divided by 1000 is G/L"),
        ("anc", 1500.0, "divided by 1000 are G/L"),
    ],
)
def test_likely_unit_errors_are_refused_with_the_fix(item, value, fix):
    with pytest.raises(InputError, match=fix) as err:
        hematotox(**{**BASE, item: value})
    assert err.value.column == item
    # A genuine extreme value can still be scored on request.
    assert hematotox(**{**BASE, item: value}, check_units=False).total >= 0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "abc", None])
def test_negative_missing_and_non_numeric_are_refused(bad):
    with pytest.raises(InputError):
        hematotox(**{**BASE, "ferritin": bad})
