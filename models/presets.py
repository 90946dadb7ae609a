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

#: Sources of the co-stimulation difference: CD28 CARs (axi-cel, brexu-cel) expand faster
#: to an earlier, higher peak with more cytokine release and contract sooner; 4-1BB CARs
#: (tisa-cel, liso-cel) peak later and lower and persist longer.
COSTIM = (
    "Cappell & Kochenderfer 2021, Nat Rev Clin Oncol 18:715 (cytokine release greater "
    "with CD28 than with 4-1BB costimulation); Krawczyk et al. 2026, BBA Rev Cancer "
    "189519 (CD28: strong initial potency and rapid expansion; 4-1BB: greater persistence)"
)
#: CD28 products' kinetic overrides of the cart.py defaults (Stein's 4-1BB tisa-cel):
#: - cart_rho 1.35/d: the gross expansion rate at which the cart_targets model at the LBCL
#:   load peaks on day 7 (6.8 d at 2e6 CAR+ cells/kg; Stein's 1.05/d peaks on day 8.5):
#:   ZUMA-1 medians are highest on day 7 of days 7, 14, 28, 90 (Kimmel et al. 2021);
#: - infl_eref x 0.5 (2500 copies/ug/d): more cytokine per unit of antigen-driven
#:   expansion (COSTIM; assumption for the size: a factor 2);
#: - cart_beta 0.03/d: shorter persistence; ZUMA-1 medians fall from 2.1 (day 28) to 0.1
#:   CAR+ cells/uL (day 90), 0.049/d overall (Kimmel et al. 2021; a rate, comparable
#:   across units), against Stein's 0.0032/d for tisa-cel.
CD28_OVERRIDES = {"cart_rho": 1.35, "cart_beta": 0.03}
CD28_MARROW = {"infl_eref": 2500.0}
#: brexu-cel's per-cell killing potency over axi-cel's (the same CD28 construct): its
#: manufacturing removes circulating CD19+ malignant cells, "reducing the potential
#: activation and exhaustion of anti-CD19 CAR T cells in the ex vivo portion of the
#: process" (Nat Rev Clin Oncol 2020, research highlight on ZUMA-2, Wang et al. 2020,
#: NEJM 382:1331), so fewer cells clear the same CD19+ load. The size, kill_EC50 x 0.2, is
#: calibrated to natural_history_more.csv rows 4-5 (ZUMA-3: ANC < 1 G/L and platelets < 50
#: G/L on day 30 in 12 % each) together with rows 2-3 (ELIANA) on one shared B-ALL
#: population (calibrate --disease b-all --n 4000 --seed 1, 5 Dec 2026: 4/4 rows at x
#: 0.2 and x 0.3 (tisa-cel ANC 0.397 / 0.305), 4/4 at x 0.1; without it no patient is
#: worse under tisa-cel than under brexu-cel and 1/4 rows: benchmarks/ball_diagnosis.py).
BREXU_KILL_FACTOR = 0.2
CD28_SOURCE = (
    "CD28 co-stimulation (" + COSTIM + "): cart_rho 1.35/d puts the cart_targets peak at "
    "the LBCL load on day 7 (ZUMA-1 medians highest on day 7: Kimmel et al. 2021, Proc R "
    "Soc B 288:20210229); infl_eref halved (more cytokine per expansion; the factor 2 is "
    "an assumption); cart_beta 0.03/d from the ZUMA-1 median decline 2.1 -> 0.1 CAR+ "
    "cells/uL between days 28 and 90 (0.049/d, Kimmel et al. 2021)"
)


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
    #: Overrides of haematopoiesis.py parameters (the inflammation a unit of expansion
    #: makes); they act in the full model only (``apply_presets(..., full=True)``).
    marrow_overrides: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Course:
    """A product's lymphodepletion and dose as given in one disease's pivotal trial:
    fludarabine and cyclophosphamide in mg/m2 per day on the listed days (days relative
    to the CAR-T infusion on day 0) and the CAR+ cells/kg infused."""

    flu_mg_m2: float
    flu_days: tuple[float, ...]
    cy_mg_m2: float
    cy_days: tuple[float, ...]
    dose_per_kg: float
    source: str


@dataclass(frozen=True)
class Remission:
    """A product's published remission rate in one disease (a calibration target that is
    not in the shared CSV files): the share of infused patients in CR/CRi, read in the
    model as marrow blasts below ``blast_pct`` % on ``day``
    (:data:`carthema.clinical.population.statistics.RESPONSE_DEFINITIONS`)."""

    value: float
    n: int
    day: int
    blast_pct: float
    source: str
    #: The source in a few words (printed beside the model value).
    cite: str = ""


@dataclass(frozen=True)
class DiseaseTrait:
    """A patient trait drawn only for one disease's plausible patients (by the
    calibration, after the shared traits, so other diseases' draws are untouched): the
    parameter is multiplied by ``exp(sd * z)``, ``z`` standard normal."""

    sd: float
    source: str


@dataclass(frozen=True)
class DiseasePreset:
    name: str
    disease: str
    overrides: dict[str, float]
    override_source: str
    notes: str = ""
    #: Products' courses in this disease where they differ from the product's LBCL
    #: course (carthema.clinical.population.virtual.PRODUCT_LD / PRODUCT_DOSE).
    courses: dict[str, Course] = field(default_factory=dict)
    #: Published remission rates by product (calibration targets beside the CSV rows).
    remission: dict[str, Remission] = field(default_factory=dict)
    #: Traits of this disease's plausible patients beyond the shared ones.
    traits: dict[str, DiseaseTrait] = field(default_factory=dict)
    #: By product: responders' over non-responders' geometric-mean CAR-T peak (days
    #: 0-28), where a source gives it (a calibration target beside the remission rate).
    cmax_ratio: dict[str, Anchor] = field(default_factory=dict)


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
            "values (4-1BB); with disease 'b-all' the cart_targets model gives Cmax and Tmax "
            "close to Stein's, at the LBCL load a later (day 8.5) and lower peak than the "
            "CD28 products (" + COSTIM + ")"
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
        overrides=dict(CD28_OVERRIDES),
        marrow_overrides=dict(CD28_MARROW),
        override_source=CD28_SOURCE,
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
        overrides={"cart_beta": math.log(2.0) / 350.0},
        override_source=(
            "4-1BB (" + COSTIM + "): Stein's tisa-cel expansion; cart_beta = ln 2 / 350 d, "
            "the terminal half-life of Ogasawara et al. 2021 as listed in DESIGN.md "
            "section 2.1 (not read from the paper's table)"
        ),
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
        overrides={**CD28_OVERRIDES, "kill_EC50": 200.0 * BREXU_KILL_FACTOR},
        marrow_overrides=dict(CD28_MARROW),
        override_source=(
            "the CD28 construct of axi-cel (same co-stimulation): "
            + CD28_SOURCE
            + "; kill_EC50 200 x 0.2 = 40 copies/ug: a T-cell-enriched product made "
            "without CD19+ tumour cells (less ex vivo activation and exhaustion; Nat Rev "
            "Clin Oncol 2020 on Wang et al. 2020), its size calibrated to "
            "natural_history_more.csv rows 4-5 (ZUMA-3) with rows 2-3 (BREXU_KILL_FACTOR)"
        ),
        anchor_disease="mcl",
        notes=(
            "No ZUMA-2 or ZUMA-3 cellular-kinetics number could be verified; expansion and "
            "persistence are axi-cel's, killing potency its own (BREXU_KILL_FACTOR)."
        ),
    ),
}

#: How a tumour burden becomes the model's CD19+ load. The model counts CD19+ cells in
#: blood-equivalents: normal B cells are ``b_B0`` = 250 cells/uL, while blood holds about
#: 2 % of the body's lymphocytes (Westermann & Pabst 1992, Clin Investig 70:539) in about
#: 5 L (5e6 uL). A total-body burden of N CD19+ cells is therefore N x 0.02 / 5e6
#: cells/uL-equivalents, the scale on which the B cells of the same model sit.
BLOOD_SHARE, BLOOD_UL = 0.02, 5e6
#: Tumour cells per mL of tumour: about 1e9 cells/cm3 (Del Monte 2009, Cell Cycle 8:505),
#: about half of them lymphoma cells in a large B-cell lymphoma (assumption).
LBCL_CELLS_PER_ML = 0.5e9
#: Median baseline metabolic tumour volume of LBCL patients given axi-cel: 147.5 mL (Dean
#: et al. 2020, Blood Adv 4:3268, the median of their first cohort, n = 48).
LBCL_MTV_ML = 147.5


def burden_to_load(cells: float) -> float:
    """Total-body CD19+ tumour cells -> the model's load (cells/uL-equivalents)."""
    return cells * BLOOD_SHARE / BLOOD_UL


def marrow_ref(load: float, blast_share: float) -> float:
    """``leuk_marrow_ref`` (cells/uL-equivalents) at which a pre-treatment ``load`` is a
    marrow blast share ``blast_share`` (targets.py: share = L / (L + ref))."""
    return load * (1.0 - blast_share) / blast_share


#: B-ALL: CD19+ load and marrow blast share before CAR-T.
B_ALL_LOAD, B_ALL_MARROW = 2000.0, 0.70
#: MCL: CD19+ load and marrow share (assumptions, see the preset).
MCL_LOAD, MCL_MARROW = 1000.0, 0.20
#: Lymphodepletion and dose of the B-ALL and MCL pivotal trials.
ELIANA_COURSE = Course(
    30.0,
    (-6.0, -5.0, -4.0, -3.0),
    500.0,
    (-6.0, -5.0),
    3.1e6,
    "ELIANA / Kymriah US prescribing information (B-ALL): fludarabine 30 mg/m2 daily for 4 "
    "days and cyclophosphamide 500 mg/m2 daily for 2 days starting with the first "
    "fludarabine dose (as recalled from the label, not read in the stored copies), ending "
    "here on day -3; dose: median 3.1e6 CAR+ cells/kg in patients <= 50 kg ("
    + STEIN_T2
    + "; the ELIANA update abstract gives a median 3.0e6/kg, range 0.2-5.4e6)",
)
ZUMA3_COURSE = Course(
    25.0,
    (-4.0, -3.0, -2.0),
    900.0,
    (-2.0,),
    1.0e6,
    "ZUMA-3 (adult B-ALL; tecartushcp.com ZUMA-3 study design): fludarabine 25 mg/m2 on "
    "days -4, -3 and -2 and cyclophosphamide 900 mg/m2 on day -2; a single infusion of "
    "1 x 10^6 CAR T cells/kg (Shah et al. 2021, Lancet 398:491, abstract)",
)
ZUMA2_COURSE = Course(
    30.0,
    (-5.0, -4.0, -3.0),
    500.0,
    (-5.0, -4.0, -3.0),
    2.0e6,
    "ZUMA-2 (MCL; Wang et al. 2020, NEJM 382:1331, abstract: a single infusion of 2 x 10^6 "
    "CAR T cells/kg after conditioning chemotherapy); fludarabine 30 mg/m2 and "
    "cyclophosphamide 500 mg/m2 on days -5..-3 (Tecartus US prescribing information, as "
    "for axi-cel in LBCL)",
)


#: Response assessment: CR/CRi is < 5 % marrow blasts (the trials' definition of
#: remission); the model reads it on day 28, the first marrow assessment after infusion
#: (as recalled for both trials, not read in the stored sources). The published rates
#: count remission within 3 months, so a patient cleared after day 28 is a late
#: responder that the day-28 reading counts as a non-responder.
CR_BLAST_PCT, RESPONSE_DAY = 5.0, 28
#: ELIANA (tisa-cel): overall remission (CR/CRi) within 3 months in 61 of 75 infused
#: patients, 81 % (Maude et al. 2018, NEJM 378:439; the updated analysis, Grupp et al.
#: ASH 2018 abstract: 65 of 79, 82 %; both read in the stored abstracts).
ELIANA_REMISSION = Remission(
    0.81,
    75,
    RESPONSE_DAY,
    CR_BLAST_PCT,
    "ELIANA: CR/CRi within 3 months in 61/75 infused patients, 81 % (Maude et al. 2018, "
    "NEJM 378:439; primary end point; updated 65/79, 82 %)",
    "ELIANA CR/CRi, Maude 2018 NEJM",
)
#: ZUMA-3 (brexu-cel): CR/CRi in 39 of 55 treated phase-2 patients, 70.9 % (Shah et al.
#: 2021, Lancet 398:491, abstract); in all 78 phase 1 + 2 patients at 1e6/kg, the cohort of
#: natural_history_more.csv rows 4-5, 73 % (Shah et al. 2023, J Immunother Cancer
#: 11:e007118). The target is the phase-2 number of the pivotal report.
ZUMA3_REMISSION = Remission(
    0.709,
    55,
    RESPONSE_DAY,
    CR_BLAST_PCT,
    "ZUMA-3 phase 2: CR/CRi in 39/55 treated patients, 70.9 % (Shah et al. 2021, Lancet "
    "398:491; all 78 patients at 1e6/kg: 73 %, Shah et al. 2023, J Immunother Cancer "
    "11:e007118)",
    "ZUMA-3 CR/CRi, Shah 2021 Lancet",
)
#: Primary non-response in B-ALL by poor CAR-T expansion: in ELIANA/ENSIGN responders
#: (N = 62) had 74 % higher geometric-mean Cmax and 104 % higher AUC0-28d than
#: non-responders (N = 8) (Mueller et al., "Clinical Pharmacology of Tisagenlecleucel in
#: B-cell Acute Lymphoblastic Leukemia", Clin Cancer Res 2018, abstract as read);
#: the T cells collected from heavily pretreated patients differ in their capacity to
#: expand (Fraietta et al. 2018, Nat Med 24:563: memory-like vs exhausted T-cell states of
#: the product determine response in CLL). The model carries that as the patient's own
#: factor on the CAR-T expansion rate ``cart_rho`` (a trait that exists before the
#: product is chosen, kept under every product): in B-ALL its spread is widened by a
#: log-SD drawn for B-ALL patients only, so that some patients' CAR-T cannot outgrow the
#: leukaemia before the response assessment. The size is calibrated (assumption, not a
#: measured spread): it must let the weights reach the remission rates above.
#: Mueller et al. 2018 (abstract as read): responders' geometric-mean Cmax 74 % higher
#: than non-responders' (tisa-cel, ELIANA + ENSIGN, 62 vs 8 patients). A calibration
#: target with the remission rate: without it the weights made the non-responders
#: patients whose CAR-T hardly expand (responders' peak 385-fold theirs, n 4000 seed 1).
MUELLER_CMAX_RATIO = Anchor(
    1.74,
    "responders' / non-responders' geometric-mean Cmax (qPCR, days 0-28)",
    "Mueller et al., Clinical Pharmacology of Tisagenlecleucel in B-cell Acute "
    "Lymphoblastic Leukemia, Clin Cancer Res 2018 (abstract: 74 % higher geometric-mean "
    "Cmax and 104 % higher AUC0-28d in responders, N = 62, than non-responders, N = 8)",
)
BALL_FITNESS = DiseaseTrait(
    0.6,
    "assumption (size): the patient's T-cell fitness, a factor on cart_rho, wider in "
    "B-ALL so that primary non-response by poor expansion occurs (Mueller et al. 2017: "
    "non-responders' geometric-mean Cmax 1.74-fold lower; Fraietta et al. 2018, Nat Med 24:563)",
)

#: Antigen escape (targets.py ``leuk_cd19neg``): the share of a B-ALL patient's blasts
#: that CAR-T cannot kill. CD19-negative subclones and CD19 isoforms without the CAR
#: epitope exist before CAR-T (Sotillo et al. 2015, Cancer Discov 5:1282; Fischer et
#: al. 2017, J Immunother 40:187; Bueno et al. 2022, Blood 140:38: CD34+CD19-CD22+
#: leukaemic progenitors in about 70 % of B-ALL marrows), and a ZUMA-3 non-responder's
#: blasts lacked the FMC63 epitope (Blood Adv 2022, 6:5634, letter), but no
#: distribution of their share across patients was found in the stored sources: the
#: median 0.5 % and the log-SD 1.5 are assumptions (a patient keeps >= 5 % marrow
#: blasts when the share exceeds about 2 % at the B-ALL load: 16 % of plausible
#: patients), and the calibration weights them to the remission rates together with
#: Mueller et al.'s responders' / non-responders' Cmax ratio (non-responders by escape
#: expand; those by poor fitness do not).
BALL_CD19NEG = 0.005
BALL_ESCAPE = DiseaseTrait(
    1.5,
    "assumption (size): between-patient spread of the CD19-negative blast share "
    "(pre-existing escape: Sotillo et al. 2015; Fischer et al. 2017)",
)

DISEASES: dict[str, DiseasePreset] = {
    "b-all": DiseasePreset(
        name="b-all",
        disease="relapsed/refractory B-cell acute lymphoblastic leukaemia",
        overrides={
            "leuk_L0": B_ALL_LOAD,
            "leuk_marrow_ref": marrow_ref(B_ALL_LOAD, B_ALL_MARROW),
            "leuk_crowding": 1.0,
            "leuk_cd19neg": BALL_CD19NEG,
        },
        override_source=(
            "leuk_cd19neg 0.005 (median; assumption, BALL_ESCAPE): pre-existing "
            "CD19-negative blasts escape CAR-T (Sotillo et al. 2015, Cancer Discov "
            "5:1282; Fischer et al. 2017, J Immunother 40:187). "
            "leuk_L0 2000 cells/uL-equivalents, set directly (not a ratio): the CD19+ blast "
            "load at which the cart_targets model with tisagenlecleucel defaults gives Stein "
            "et al. 2019's Cmax (about 23,800 vs 24,000 copies/ug, Tmax 10.2 vs 9.3 d); the "
            "burden rule of burden_to_load gives the same order: a marrow of about 1e12 "
            "nucleated cells with 70 % blasts, 7e11 cells, is 2800 cells/uL-equivalents. "
            "CAR-T Cmax rises with tumour burden (Mueller et al. 2017; Stein et al. 2019). "
            "Marrow infiltration: 70 % blasts at that load (leuk_marrow_ref = 2000 x 0.3 / "
            "0.7 = 857), assumption: R/R B-ALL trials enrol marrow disease of >= 5 % blasts "
            "(ELIANA) with most patients heavily infiltrated (ZUMA-3 reports responses by "
            "> 75 % marrow blasts: Shah et al. 2022, J Hematol Oncol 15:170; ELIANA's median "
            "74 % as recalled from Maude et al. 2018, NEJM 378:439, not read in the stored "
            "copies). leuk_crowding 1: the blasts' marrow share is lost to normal "
            "haematopoiesis (leukaemic niche take-over: Colmone et al. 2008, Science "
            "322:1861)"
        ),
        courses={"tisa-cel": ELIANA_COURSE, "brexu-cel": ZUMA3_COURSE},
        remission={"tisa-cel": ELIANA_REMISSION, "brexu-cel": ZUMA3_REMISSION},
        traits={"cart_rho": BALL_FITNESS, "leuk_cd19neg": BALL_ESCAPE},
        cmax_ratio={"tisa-cel": MUELLER_CMAX_RATIO},
        notes=(
            "Paediatric (tisa-cel, ELIANA) and adult (brexu-cel, ZUMA-3) patients share one "
            "trait distribution; they differ by their trial's lymphodepletion and dose per "
            "kg and by the product's own kinetics."
        ),
    ),
    "lbcl": DiseasePreset(
        name="lbcl",
        disease="relapsed/refractory large B-cell lymphoma",
        overrides={"leuk_L0": 300.0},
        override_source=(
            "derived (burden_to_load): median metabolic tumour volume 147.5 mL before "
            "axi-cel (Dean et al. 2020, Blood Adv 4:3268) x 0.5e9 lymphoma cells/mL (1e9 "
            "cells/cm3, Del Monte 2009, Cell Cycle 8:505; half of them tumour cells, "
            "assumption) = 7.4e10 cells, x 0.02 (blood share of the body's lymphocytes, "
            "Westermann & Pabst 1992) / 5e6 uL = 295, rounded to 300 cells/uL-equivalents: "
            "about 1/7 of the B-ALL load, so expansion is lower than in B-ALL (Awasthi et "
            "al. 2020, Blood Adv 4:560)"
        ),
    ),
    "mcl": DiseasePreset(
        name="mcl",
        disease="relapsed/refractory mantle cell lymphoma",
        overrides={
            "leuk_L0": MCL_LOAD,
            "leuk_marrow_ref": marrow_ref(MCL_LOAD, MCL_MARROW),
            "leuk_crowding": 1.0,
        },
        override_source=(
            "assumption (burden_to_load), set directly (not a ratio): nodal disease as in "
            "LBCL (300) plus marrow involvement, common in MCL, of about 20 % of 1e12 marrow "
            "cells (800): about 1000 cells/uL-equivalents; the marrow share of that load is "
            "20 % (leuk_marrow_ref = 1000 x 0.8 / 0.2 = 4000), crowding normal "
            "haematopoiesis as in B-ALL (leuk_crowding 1: Colmone et al. 2008, Science "
            "322:1861). No published MCL load or marrow share was verified in the stored "
            "sources; the natural history is calibrated to natural_history_more.csv row 6"
        ),
        courses={"brexu-cel": ZUMA2_COURSE},
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


def apply_presets(
    product: str | None = None, disease: str | None = None, *, full: bool = False
) -> dict[str, float]:
    """Parameter overrides and CAR-T dose for a product and/or disease.

    Returns a dict of model parameter overrides (names of cart.py / targets.py parameters;
    with ``full=True`` also the product's haematopoiesis.py overrides, for the full
    model) plus ``"cart_dose"`` (CAR+ cells/kg) when a product is given; pass the dose to
    :func:`carthema.typical_course` (``cart_dose=``) and the rest as ``params=``.
    Disease overrides are applied after product overrides; the dose is the product's
    dose in that disease's pivotal trial where the disease preset gives one
    (:attr:`DiseasePreset.courses`).
    """
    out: dict[str, float] = {}
    if product is not None:
        pp = _lookup(PRODUCTS, product, "product")
        out.update(pp.overrides)
        if full:
            out.update(pp.marrow_overrides)
        out["cart_dose"] = pp.dose_per_kg
    if disease is not None:
        dp = _lookup(DISEASES, disease, "disease")
        out.update(dp.overrides)
        if product is not None and pp.name in dp.courses:
            # The dose of the product's pivotal trial in this disease (ZUMA-3: 1e6/kg).
            out["cart_dose"] = dp.courses[pp.name].dose_per_kg
    return out


__all__ = [
    "Anchor",
    "Course",
    "DiseaseTrait",
    "Remission",
    "marrow_ref",
    "burden_to_load",
    "DISEASES",
    "DiseasePreset",
    "PRODUCTS",
    "ProductPreset",
    "REFERENCE_WEIGHT_KG",
    "apply_presets",
]
