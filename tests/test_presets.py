"""Product and disease presets: sources, units, and the cart_targets model against each
anchor in the same units (Cmax within a factor 1.5, Tmax within 3 days)."""

from __future__ import annotations

import numpy as np
import pytest

from carthema import simulate, typical_course
from carthema.data.errors import InputError
from carthema.models.model import get_model
from carthema.models.presets import DISEASES, PRODUCTS, apply_presets

MODEL_UNIT = "copies/ug DNA"


def _peak(product: str, disease: str):
    ov = apply_presets(product, disease)
    dose = ov.pop("cart_dose")
    tr = simulate(
        typical_course(cart_dose=dose),
        components="cart_targets",
        params=ov,
        t_out=np.arange(0.0, 60.0, 0.1),
    )
    assert tr.ok
    c = tr["cart_copies"]
    i = int(np.argmax(c))
    return c[i], tr.t[i]


def test_every_preset_has_sources_units_and_known_parameters():
    names = set(get_model("cart_targets").param_names)
    for p in PRODUCTS.values():
        assert p.dose_per_kg > 0
        assert "/kg" in p.dose_source
        assert p.dose_source and p.override_source
        assert set(p.overrides) <= names
        assert set(p.anchors) == {"cmax", "tmax", "auc0_28", "persistence"}
        for a in p.anchors.values():
            if a is not None:
                assert a.value > 0 and a.unit and a.source
    for d in DISEASES.values():
        assert d.override_source
        assert set(d.overrides) <= names


def test_apply_presets_returns_overrides_and_dose():
    assert apply_presets("tisa-cel", "b-all") == {
        "cart_dose": 3.1e6,
        "leuk_L0": 2000.0,
        "leuk_marrow_ref": pytest.approx(2000.0 * 0.3 / 0.7),
        "leuk_crowding": 1.0,
        "leuk_cd19neg": 0.005,  # median CD19-negative share (assumption, BALL_CD19NEG)
    }
    # LBCL: the burden of the median baseline tumour volume (Dean et al. 2020), not 10.
    assert apply_presets(None, "lbcl") == {"leuk_L0": 300.0}
    # The marrow (CRS) overrides of a product act in the full model only.
    assert "infl_eref" not in apply_presets("axi-cel")
    assert apply_presets("axi-cel", full=True)["infl_eref"] == 2500.0
    assert apply_presets("Liso-cel")["cart_dose"] == pytest.approx(100e6 / 70.0)
    assert apply_presets() == {}


@pytest.mark.parametrize(("product", "disease"), [("kymriah", None), (None, "cll")])
def test_unknown_names_list_the_choices(product, disease):
    with pytest.raises(InputError, match="choose one of") as err:
        apply_presets(product, disease)
    assert ("axi-cel" in str(err.value)) or ("b-all" in str(err.value))


def _anchored(kind: str, unit: str | None = None) -> list[str]:
    """Products with an anchor of ``kind`` (in ``unit`` when given)."""
    return sorted(
        name
        for name, p in PRODUCTS.items()
        if p.anchors[kind] is not None and (unit is None or p.anchors[kind].unit == unit)
    )


def test_which_products_have_a_comparable_anchor():
    """Stated by hand, so that a lost or added anchor is noticed: axi-cel's Cmax is in
    CAR+ cells/uL (not comparable with copies/ug DNA), brexu-cel has no anchor."""
    assert _anchored("cmax", MODEL_UNIT) == ["tisa-cel"]
    assert _anchored("tmax") == ["axi-cel", "liso-cel", "tisa-cel"]
    assert not any(a is not None for a in PRODUCTS["brexu-cel"].anchors.values())


@pytest.mark.parametrize("product", _anchored("cmax", MODEL_UNIT))
def test_preset_reproduces_its_cmax_anchor(product):
    p = PRODUCTS[product]
    cmax, _ = _peak(product, p.anchor_disease)
    a_c = p.anchors["cmax"]
    assert 1 / 1.5 <= cmax / a_c.value <= 1.5, (product, cmax, a_c.value)


@pytest.mark.parametrize("product", _anchored("tmax"))
def test_preset_reproduces_its_tmax_anchor(product):
    p = PRODUCTS[product]
    cmax, tmax = _peak(product, p.anchor_disease)
    assert np.isfinite(cmax) and cmax > 0
    a_t = p.anchors["tmax"]
    assert abs(tmax - a_t.value) <= 3.0, (product, tmax, a_t.value)


def test_tisa_cel_expands_less_in_lbcl_than_in_b_all():
    """Awasthi et al. 2020 (JULIET): expansion lower in DLBCL than in B-ALL."""
    assert _peak("tisa-cel", "lbcl")[0] < _peak("tisa-cel", "b-all")[0] / 3
