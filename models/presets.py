"""Product and disease presets: typical dose, published cellular-kinetics anchors, overrides.

A preset is a set of parameter overrides for the ``cart_targets`` (or full) model plus the
typical CAR-T dose, each number with its source. Products and diseases combine:
``apply_presets("tisa-cel", "b-all")``. Numbers marked "not verified" were not found in
the stored copies of the sources reachable when this was written; they are either left
out (``None``) or given as model assumptions, never as published facts.

Units. The model observes blood CAR transgene in copies/ug genomic DNA (qPCR), the unit
of tisagenlecleucel and lisocabtagene maraleucel reports. Axicabtagene and
brexucabtagene reports give CAR+ T cells per uL blood (flow cytometry). There is no
published conversion between the two for one patient (copies per CAR+ cell and the
lymphocyte DNA per uL both vary), so anchors in cells/uL are kept as separate anchors
and only their timing (Tmax) is compared with the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..data.errors import InputError
from .components.cart import STEIN

#: Body weight used to convert a flat dose (total CAR+ cells) to cells/kg.
REFERENCE_WEIGHT_KG = 70.0

STEIN_T1 = (
    STEIN + ", Table 1 (typical values; as transcribed in nlmixr2lib Stein_2019_Tisagenlecleucel)"
)
STEIN_T2 = STEIN + ", Table 2 (doses; transcribed in nlmixr2lib Stein_2019_Tisagenlecleucel)"


@dataclass(frozen=True)
class Anchor:
    """A published cellular-kinetics number: value, unit and source."""

    value: float
    unit: str
    source: str


@dataclass(frozen=True)
class ProductPreset:
    name: str
    product: str
    dose_per_kg: float  # CAR+ cells/kg
    dose_source: str
    #: Published anchors, keyed "cmax", "tmax", "auc0_28", "persistence"; None where not verified.
    anchors: dict[str, Anchor | None]
    #: Parameter overrides (cart.py / targets.py names).
    overrides: dict[str, float] = field(default_factory=dict)
    override_source: str = ""
    #: Disease the anchors were measured in.
    anchor_disease: str = ""
    notes: str = ""


@dataclass(frozen=True)
class DiseasePreset:
    name: str
    disease: str
    overrides: dict[str, float]
    override_source: str
    notes: str = ""


PRODUCTS: dict[str, ProductPreset] = {
    "tisa-cel": ProductPreset(
        name="tisa-cel",
        product="tisagenlecleucel (Kymriah; 4-1BB, lentiviral)",
        dose_per_kg=3.1e6,
        dose_source=(
            "median 3.1e6 CAR+ viable T cells/kg (range 0.2-5.4e6) in B-ALL patients <= 50 kg; "
            "patients > 50 kg received a median total 1.0e8 (0.03-2.6e8), i.e. 1.4e6/kg at "
            "70 kg: " + STEIN_T2
        ),
        anchors={
            "cmax": Anchor(24000.0, "copies/ug DNA", STEIN_T1 + " (B-ALL, ELIANA + ENSIGN)"),
            "tmax": Anchor(9.3, "d", STEIN_T1),
            "auc0_28": None,  # not verified in the stored sources
            "persistence": Anchor(
                math.log(2.0) / 0.0032,
                "d (terminal half-life)",
                STEIN_T1 + ": beta 0.0032/d; Mueller et al. 2017 (Clin Cancer Res, "
                "'Clinical pharmacology of tisagenlecleucel in B-ALL', abstract): transgene "
                "persistence measurable beyond 2 years in responders",
            ),
        },
        overrides={},
        override_source=(
            "none: the cart.py defaults are Stein et al. 2019's tisagenlecleucel typical "
            "values; with disease 'b-all' the cart_targets model gives Cmax and Tmax close "
            "to Stein's"
        ),
        anchor_disease="b-all",
        notes=(
            "JULIET (DLBCL; Awasthi et al. 2020, Blood Adv 4:560, abstract): expansion was "
            "lower in DLBCL than in B-ALL and not related to response; persistence up to "
            "693 days by qPCR. Its Cmax/Tmax values were not found in the stored copies, so "
            "the DLBCL anchor is qualitative (lower Cmax than B-ALL)."
        ),
    ),
    "axi-cel": ProductPreset(
        name="axi-cel",
        product="axicabtagene ciloleucel (Yescarta; CD28, gammaretroviral)",
        dose_per_kg=2.0e6,
        dose_source=(
            "target dose 2 x 10^6 anti-CD19 CAR T cells/kg (ZUMA-1, NCT02348216 trial "
            "record; 5-year ZUMA-1 follow-up, Blood 2023;141:2307)"
        ),
        anchors={
            "cmax": Anchor(
                27.5,
                "CAR+ cells/uL blood (median at day 7; NOT comparable with copies/ug)",
                "ZUMA-1 medians of 101 patients as used by Kimmel et al. 2021 (Proc R Soc B "
                "288:20210229, Fig. 2b); the day-7 median 27.5 cells/uL is the value listed "
                "in DESIGN.md section 2.1 (the stored figure description gives a peak of "
                "about 35 cells/uL within the first week; not read from the primary table)",
            ),
            "tmax": Anchor(
                7.0,
                "d",
                "ZUMA-1 median curve peaks within the first week (Kimmel et al. 2021, Fig. 2b; "
                "DESIGN.md: day 7 is the highest of the listed medians 27.5, 9.1, 2.1, 0.1 "
                "cells/uL on days 7, 14, 28, 90)",
            ),
            "auc0_28": None,  # not verified
            "persistence": None,  # not verified (ZUMA-1 5-y: B-cell recovery by 3 years)
        },
        overrides={},
        override_source="none: no product-specific kinetic parameter verified",
        anchor_disease="lbcl",
    ),
    "liso-cel": ProductPreset(
        name="liso-cel",
        product="lisocabtagene maraleucel (Breyanzi; 4-1BB, lentiviral, CD4:CD8 1:1)",
        dose_per_kg=100e6 / REFERENCE_WEIGHT_KG,
        dose_source=(
            "flat dose 100 x 10^6 CAR+ T cells (TRANSCEND NHL 001 dose level 2, the dose "
            "recommended for confirmation; The Lancet report as summarised by "
            "Hematology Advisor), converted at 70 kg: 1.43e6/kg"
        ),
        anchors={
            "cmax": None,  # Ogasawara et al. 2021 value not found in the stored copies
            "tmax": Anchor(
                9.0,
                "d",
                "Ogasawara et al. 2021, Clin Pharmacokinet (doi:10.1007/s40262-021-01039-5): "
                "lag-growth-biphasic-decay model (structure confirmed in the stored abstract); "
                "Tmax about 9 d, lag about 3 d, doubling about 0.75 d as listed in DESIGN.md "
                "section 2.1, not read from the paper's table",
            ),
            "auc0_28": None,
            "persistence": Anchor(
                350.0,
                "d (terminal half-life)",
                "DESIGN.md section 2.1 citing Ogasawara et al. 2021; not read from the paper",
            ),
        },
        overrides={},
        override_source="none: no product-specific kinetic parameter verified",
        anchor_disease="lbcl",
    ),
    "brexu-cel": ProductPreset(
        name="brexu-cel",
        product="brexucabtagene autoleucel (Tecartus; CD28, gammaretroviral, T-cell enriched)",
        dose_per_kg=2.0e6,
        dose_source=(
            "2 x 10^6 anti-CD19 CAR T cells/kg, single infusion (ZUMA-2 design, "
            "tecartus.com HCP page; Wang et al. 2020 NEJM)"
        ),
        anchors={
            "cmax": None,  # ZUMA-2 peak (cells/uL) not found in the stored copies
            "tmax": None,
            "auc0_28": None,
            "persistence": None,
        },
        overrides={},
        override_source="none: no product-specific kinetic parameter verified",
        anchor_disease="mcl",
        notes="No ZUMA-2 cellular-kinetics number could be verified; the preset sets the dose.",
    ),
}

DISEASES: dict[str, DiseasePreset] = {
    "b-all": DiseasePreset(
        name="b-all",
        disease="relapsed/refractory B-cell acute lymphoblastic leukaemia",
        overrides={"leuk_L0": 2000.0},
        override_source=(
            "calibrated: the CD19+ blast load at which the cart_targets model with "
            "tisagenlecleucel defaults gives Stein et al. 2019's Cmax (about 23,800 vs "
            "24,000 copies/ug, Tmax 10.2 vs 9.3 d). In the model's marrow mapping "
            "L/(L + leuk_marrow_ref) it is 67% marrow blasts, a high marrow burden as in "
            "r/r B-ALL; CAR-T Cmax rises with tumour burden (Mueller et al. 2017; Stein et "
            "al. 2019). Not a measured blast count"
        ),
    ),
    "lbcl": DiseasePreset(
        name="lbcl",
        disease="relapsed/refractory large B-cell lymphoma",
        overrides={"leuk_L0": 10.0},
        override_source=(
            "assumption: mostly nodal disease with little CD19+ antigen in blood and marrow; "
            "10 cells/uL-equivalents (about 1% marrow blasts in the model's mapping). "
            "Expansion in DLBCL is lower than in B-ALL (Awasthi et al. 2020, Blood Adv "
            "4:560, abstract), which this load reproduces qualitatively"
        ),
    ),
    "mcl": DiseasePreset(
        name="mcl",
        disease="relapsed/refractory mantle cell lymphoma",
        overrides={"leuk_L0": 100.0},
        override_source=(
            "assumption: MCL involves blood and marrow more often than LBCL, so a CD19+ "
            "load between LBCL and B-ALL (100 cells/uL-equivalents, 9% marrow blasts in the "
            "model's mapping); no published load was verified"
        ),
    ),
}


def _lookup(table: dict, name: str, kind: str):
    key = name.strip().lower()
    if key not in table:
        raise InputError(
            f"unknown {kind} '{name}'.",
            column=kind,
            fix=f"choose one of {', '.join(sorted(table))}",
        )
    return table[key]


def apply_presets(product: str | None = None, disease: str | None = None) -> dict[str, float]:
    """Parameter overrides and CAR-T dose for a product and/or disease.

    Returns a dict of model parameter overrides (names of cart.py / targets.py parameters)
    plus ``"cart_dose"`` (CAR+ cells/kg) when a product is given; pass the dose to
    :func:`carthema.typical_course` (``cart_dose=``) and the rest as ``params=``.
    Disease overrides are applied after product overrides.
    """
    out: dict[str, float] = {}
    if product is not None:
        pp = _lookup(PRODUCTS, product, "product")
        out.update(pp.overrides)
        out["cart_dose"] = pp.dose_per_kg
    if disease is not None:
        dp = _lookup(DISEASES, disease, "disease")
        out.update(dp.overrides)
    return out


__all__ = [
    "Anchor",
    "DISEASES",
    "DiseasePreset",
    "PRODUCTS",
    "ProductPreset",
    "REFERENCE_WEIGHT_KG",
    "apply_presets",
]
