"""Haematopoiesis and graft: stem cells and CD34+ progenitors by origin, precursor chains
feeding neutrophils and platelets, the insults of lymphodepletion and CAR-T
inflammation, host immunity and donor T cells.

**Stem cells** are fractions of one shared niche (1 = a healthy marrow). The patient's
own resident stem cells ``hsc_H`` start at ``hsc_mass`` (the stem-cell mass left by
earlier therapy, <= 1: marrow reserve) and regenerate logistically at ``hsc_regen``
(marrow fitness) towards it. Graft stem cells come in three compartments by origin, all
regenerating at the healthy rate ``graft_regen`` into the whole niche:

- ``hsc_A`` autologous (the patient's own collected cells: healthy, never rejected);
- ``hsc_P`` prior donor (the donor of an earlier allogeneic transplant: the patient is
  tolerant, no rejection);
- ``hsc_N`` new allogeneic donor (rejected by residual host immunity ``imm_R``).

**CD34+ progenitors** ``mpp_k`` (1 = the resident pool at baseline), one pool per
origin ``k``, are the amplifying stage: a share ``hsc_sigma`` of their influx comes from
stem cells (relative to the patient's baseline mass), the rest from their own limited
self-renewal under the demand of both lineages (Friberg feedback, geometric mean of
neutrophil and platelet feedback), braked as the whole pool grows past ``mpp_cap`` times
normal (niche occupancy; without the brake the pool grew for as long as the ANC stayed
below its set point and the neutrophil wave overshot it). A graft's CD34+ cells land
here (``graft_prog`` of the normal pool per CD34+ cell/kg) and amplify, which is why a
graft into an emptied marrow engrafts in about two weeks (graft_kinetics.csv); without a
graft an emptied marrow does not recover.

**Precursor chains** follow Friberg et al. 2002: a proliferating pool fed by the CD34+
progenitors under feedback ``fb = ((C0 + e) / (C + e)) ** gamma``, three transit
compartments with ``ktr = 4 / MTT`` and the circulating pool. Neutrophils are kept in two
chains by genotype (host, donor) so that myeloid chimerism is an output; platelets share
one chain.

**Marrow neutrophil reserve.** Between the chain and the blood sits the post-mitotic
storage pool ``neu_res_{g}`` (bands and segmented neutrophils in the marrow; mean
residence ``neu_res_mtt`` 2.5 d, between the 2.1 d of segmented granulocytes in the
marrow and the 3.5 d left of the 5.8 d post-mitotic transit of Lahoz-Beneytez et al.
2016, Blood 127:3431, once the chain's two non-dividing compartments are counted; about
eight times the blood pool). Its cells no longer divide, so
flu/cy does not kill them: after lymphodepletion the blood is fed from the reserve for
several days and the ANC nadir falls after the infusion, not on it. Release speeds up as
the ANC falls (``fb_n ** neu_res_gamma``: endogenous G-CSF, Quartino et al. 2014) and
during G-CSF (``neu_res_gcsf``); cells held back when the ANC is high age out
(``neu_res_apo``; Mackey et al. 2003), so the reserve absorbs part of an overshoot.

**Megakaryocyte progenitors** ``mkp`` (1 = normal; one pool for every origin) sit between
the CD34+ progenitors and the platelet chain: fed by the whole CD34+ pool under
thrombopoietin, which rises as platelets fall (``fb_p``, the platelet feedback, acting
here only), and by a TPO-receptor agonist (``tpo_emax``, scaled by the CD34+ pool as
G-CSF is); they stay ``mkp_mtt`` days before entering the megakaryocyte chain and divide
(flu/cy kills them at ``ld_kill_mk``). They make platelets lag neutrophils after a graft
(graft_kinetics.csv: platelets > 20 G/L in 13-18 d against ANC > 0.5 G/L in 10-14 d) and
after lymphodepletion. A patient with an earlier allogeneic transplant carries donor chimerism
``donor_chim0``: that share of the resident marrow's output is of donor genotype.

**Insults.** Lymphodepletion (input ``ld``) kills proliferating cells (CD34+ progenitors,
precursors and megakaryocyte precursors at their own rates), with a small, sourced
effect on stem cells (flu/cy is not myeloablative). CAR-T expansion on antigen drives an
inflammatory signal ``infl_I`` (CRS), which slows every division for days. A delayed,
slowly resolving injury ``infl_Z`` follows it (the saturated inflammation
``I / (late_i50 + I)`` passed through two stages ``infl_Y``, ``infl_Z`` at ``late_rate``:
a delay of shape 2 that peaks about two weeks after the CRS, so the second dip starts
after day 21, as in the intermittent recovery of Rejeski et al. 2021): it slows the
resident CD34+ progenitors by ``1 + late_supp * Z`` and removes resident stem cells at
``late_kill_hsc * Z``. Its strength is the patient's
susceptibility. Part of the injury does not resolve: ``infl_D`` accumulates the delayed
exposure (``late_rate * Z``, never repaired) and slows the resident progenitors by a
further ``niche_supp * D`` for good, the persistent tail of months of cytopenia (Logue et
al. 2021: about 12 % of axi-cel patients with ANC < 1 G/L on day 90 and on day 180).
Its driver is a pre-CAR-T susceptibility and the inflammatory course, which saturates
early (``late_i50`` 0.05), so CAR-T levels beyond those that saturate it add nothing
and the products differ less in late cytopenia than in CRS. The CD34+ progenitors that
survive lymphodepletion give a first recovery in the second week; the slowed divisions
during CRS and then the delayed injury give the second dip of the biphasic course, and,
with a low reserve, the persistent aplasia of a minority. It acts
on the resident marrow only: prolonged cytopenia after CAR-T is attributed to damaged
resident haematopoietic stem and progenitor cells (Rejeski et al. 2021; ICAHT consensus,
Rejeski et al. 2023, Blood 142:865), and cells infused afterwards carry healthy fitness
of their own (assumption, stated).

**Leukaemic crowding.** With the targets component, the counts the Friberg feedback
holds (``anc0``, ``plt0``: the patient's pre-lymphodepletion counts) scale with
``marrow_space`` (:func:`carthema.models.components.targets.derived`), the marrow's
normal (non-blast) share relative to the untreated patient: blasts crowding the marrow
keep the pre-treatment counts low (leukaemic niche take-over, Colmone et al. 2008,
Science 322:1861), and as CAR-T clears them the feedback drives the progenitors to the
counts of the freed marrow (the progenitor pool the niche holds, ``mpp_cap``, grows with
the same share), so recovery in B-ALL includes the clearance. (Scaling the progenitors'
output instead does not hold a cytopenia: their self-renewal under the feedback restores
the counts.)

**Immunity and GvH.** Host immunity ``imm_R`` (1 = normal) is depleted by
lymphodepletion and inflammation and recovers over months; it rejects new-donor stem
cells and progenitors and donor T cells at ``rej_rate * R``. Donor T cells ``gvh_T`` (1e8
CD3+ cells/kg) come only from an explicit CD3+ dose, decay, and attack host immunity and
the resident stem and CD34+ progenitor cells (graft-versus-host / graft-versus-marrow).

Why one module of about 1,100 lines: a component owns its states, its parameters with
every fact about them (about 650 lines of annotated ``Param`` blocks: value, unit,
bounds, source, plausible spread) and the events that act on it (boost, transfusion);
the equations themselves are about 250 lines. Splitting the parameter table from the
equations would put a parameter's facts and its use in two places.
"""

from __future__ import annotations

import math

from ...data.boost import BoostPlan, GraftSource
from ..dosing import EventContext, EventRow, Handler, lymphodepletion, treatment_period
from ..parameters import Observable, Param, Plausible, State
from .cart import antigen_drive

FRIBERG = "Friberg et al. 2002, J Clin Oncol 20:4713"
QUARTINO = "Quartino et al. 2014, Pharm Res 31:3390"
GRAFT_CSV = "../shared/calibration/graft_kinetics.csv"
NH_CSV = "../shared/calibration/natural_history.csv"

_CHAIN = ("prol", "tr1", "tr2", "tr3", "circ")
#: Cell origins: resident marrow, autologous graft, prior-donor graft, new-donor graft.
STREAMS = ("h", "a", "t", "n")
#: Neutrophil chains by genotype: host, donor.
GENOTYPES = ("h", "d")
STEMS = ("hsc_H", "hsc_A", "hsc_P", "hsc_N")

STATES = (
    State("hsc_H", "niche fraction", 1.0, "resident (patient's own) stem cells"),
    State("hsc_A", "niche fraction", 1.0, "autologous graft stem cells"),
    State("hsc_P", "niche fraction", 1.0, "prior-donor graft stem cells"),
    State("hsc_N", "niche fraction", 1.0, "new allogeneic donor stem cells"),
    *(
        State(f"mpp_{k}", "fraction of normal", 1.0, f"CD34+ progenitors of origin {k}")
        for k in STREAMS
    ),
    State("mkp", "fraction of normal", 1.0, "megakaryocyte progenitors (all origins)"),
    State("infl_I", "1", 1.0, "CAR-T inflammatory signal (CRS)"),
    State("infl_Y", "1", 1.0, "delayed marrow suppression, first (transit) stage"),
    State("infl_Z", "1", 1.0, "delayed marrow suppression"),
    State("infl_D", "1", 1.0, "non-resolving marrow (niche) damage"),
    State("imm_R", "1", 1.0, "host immunity (1 = normal)"),
    State("gvh_T", "1e8 CD3+ cells/kg", 0.1, "donor T cells"),
    *(
        State(f"neu_{c}_{g}", "G/L", 1.0, f"neutrophil lineage ({g} genotype), {c}")
        for g in GENOTYPES
        for c in _CHAIN
    ),
    *(State(f"plt_{c}", "G/L", 100.0, f"platelet lineage, {c}") for c in _CHAIN),
    *(
        State(f"neu_res_{g}", "G/L", 10.0, f"marrow neutrophil reserve ({g} genotype)")
        for g in GENOTYPES
    ),
)


def _p(name, default, unit, low, high, source, description, **kw) -> Param:
    return Param(name, default, unit, low, high, source, description, **kw)


PARAMS = (
    # --- neutrophil lineage
    _p(
        "anc0",
        4.0,
        "G/L",
        1.0,
        10.0,
        "normal adult ANC 2-7 G/L; the patient's own pre-lymphodepletion ANC is its set point",
        "baseline (pre-lymphodepletion) ANC",
        spread=0.25,
        spread_source="normal ANC range 2-7 G/L",
        free=True,
        plausible=Plausible(
            3.2,
            0.45,
            "pre-LD ANC of R/R LBCL patients, median about 3 G/L",
        ),
    ),
    _p(
        "neu_mtt",
        4.5,
        "d",
        2.5,
        8.0,
        FRIBERG + "; " + QUARTINO + " (MTT about 4-5.5 d)",
        "neutrophil maturation time",
    ),
    _p(
        "neu_gamma",
        0.2,
        "1",
        0.05,
        0.5,
        FRIBERG + " (gamma 0.16-0.24 across drugs)",
        "neutrophil feedback exponent",
        plausible=Plausible(
            0.25,
            0.25,
            "assumption: inside Friberg's 0.16-0.24 and a little above; with mpp_rate it sets "
            "how fast the first neutropenia ends (natural_history.csv median days < 0.5: 9)",
        ),
    ),
    _p(
        "neu_kcirc",
        math.log(2.0) / (7.0 / 24.0),
        "1/d",
        1.0,
        6.0,
        "circulating neutrophil half-life about 7 h (" + FRIBERG + ")",
        "neutrophil elimination rate from blood",
    ),
    _p(
        "neu_fb_floor",
        0.5,
        "G/L",
        0.01,
        2.0,
        "calibrated to " + GRAFT_CSV + " (ANC > 0.5 "
        "G/L 10-14 d after 5-12e6 CD34+/kg into an emptied marrow): bounds the Friberg "
        "feedback, and so the fastest progenitor amplification, when blood is empty",
        "ANC added to both sides of the neutrophil feedback",
    ),
    _p(
        "gcsf_m50",
        0.1,
        "fraction of normal",
        0.01,
        1.0,
        "assumption: G-CSF and TPO agonists act through the committed progenitors they "
        "stimulate (Quartino et al. 2014: G-CSF raises the proliferation of the "
        "progenitor pool and shortens maturation); their fractional effect falls with "
        "that pool, half at a tenth of the normal CD34+ pool, so an aplastic marrow is "
        "refractory (G-CSF-refractory late cytopenia: Rejeski et al. 2023, Blood 142:865) "
        "and a normal one gets the full effect",
        "CD34+ pool (fraction of normal) at which G-CSF / TPO-agonist effects are halved",
    ),
    _p(
        "gcsf_emax",
        1.0,
        "1",
        0.1,
        10.0,
        QUARTINO + " (G-CSF raises proliferation "
        "several-fold); assumption: filgrastim 5 ug/kg doubles progenitor division",
        "fractional increase of neutrophil progenitor division during G-CSF",
    ),
    _p(
        "neu_res_mtt",
        2.5,
        "d",
        1.0,
        6.0,
        "between the published bounds: segmented granulocytes stay about 50 h (2.1 d) in "
        "the marrow (tritiated thymidine, dog: Blood 31:195, 1968); the post-mitotic marrow "
        "transit of human neutrophils is 5.8 +/- 0.42 d (Lahoz-Beneytez et al. 2016, Blood "
        "127:3431, deuterium-glucose labelling), of which the chain's last two transit "
        "compartments (non-dividing metamyelocytes) hold 2 x neu_mtt / 4 = 2.25 d, leaving "
        "3.5 d. Calibrated to natural_history.csv rows 4, 12, 20 (ANC <= 0.1 G/L in 72, 54, "
        "80 %; n 4000, seed 1): at 3.5 d the calibrated population reached 59, 47 and 65 % "
        "(35 of 43 rows within tolerance), at 2.5 d 41 of 43",
        "mean residence in the marrow neutrophil reserve (bands and segmented cells)",
    ),
    _p(
        "neu_res_apo",
        0.1,
        "1/d",
        0.005,
        0.15,
        "Mackey, Aprikyan & Dale 2003, Cell Prolif 36:27: apoptosis about 0.28/d in "
        "post-mitotic neutrophil precursors (a larger share dies than is released); "
        "assumption: 0.1/d in the storage pool, so about a third of stored cells age out "
        "unreleased at steady state; must stay below 1 / neu_res_mtt",
        "loss rate of unreleased cells in the marrow neutrophil reserve",
    ),
    _p(
        "neu_res_gamma",
        4.0,
        "1",
        0.1,
        10.0,
        "assumption (" + QUARTINO + ": endogenous G-CSF, which rises as ANC falls, shortens "
        "the maturation and release of neutrophils): release from the reserve scales with "
        "the neutrophil feedback fb_n to this power, so a falling ANC draws on the reserve "
        "and a high ANC holds cells back, where they age out (the reserve buffers an "
        "overshoot). Chosen against the bound of issue 17 (no rebound above the pre-"
        "lymphodepletion ANC in days 5-20 without G-CSF): measured on the LBCL population "
        "of main (1000 patients, mpp_cap 1.5), 2: tisa-cel 51 %, axi-cel 24 % above; 4: 41 "
        "and 19 % (95th percentile of the peak 1.07 and 1.04 x pre-LD ANC); 8: 27 and 13 "
        "%, but 6 % of axi-cel solves failed the screening step budget",
        "exponent of the neutrophil feedback on release from the marrow reserve",
    ),
    _p(
        "neu_res_gcsf",
        1.0,
        "1",
        0.1,
        5.0,
        "assumption (" + QUARTINO + ": G-CSF shortens the "
        "maturation time of the post-mitotic compartments): filgrastim doubles release "
        "from the marrow reserve, independent of the progenitor pool (G-CSF mobilises "
        "stored neutrophils within hours)",
        "fractional increase of release from the marrow reserve during G-CSF",
    ),
    # --- platelet lineage
    _p(
        "plt0",
        250.0,
        "G/L",
        20.0,
        500.0,
        "normal platelets 150-400 G/L; the patient's own "
        "pre-lymphodepletion count is its set point",
        "baseline (pre-lymphodepletion) platelets",
        spread=0.25,
        spread_source="normal platelet range 150-400 G/L",
        free=True,
        plausible=Plausible(
            170.0,
            0.55,
            "pre-LD platelets, median about 170 G/L",
        ),
    ),
    _p(
        "plt_mtt",
        7.0,
        "d",
        4.0,
        12.0,
        "megakaryocyte maturation 5-10 d (Friberg-type platelet models, e.g. Kloft et al. 2006)",
        "platelet maturation time",
    ),
    _p(
        "plt_gamma",
        0.2,
        "1",
        0.05,
        0.6,
        "Friberg-type platelet models (gamma 0.1-0.3)",
        "platelet feedback exponent",
        plausible=Plausible(None, 0.25),
    ),
    _p(
        "plt_kcirc",
        1.0 / 9.0,
        "1/d",
        1.0 / 14.0,
        1.0 / 5.0,
        "platelet lifespan 8-10 d",
        "platelet elimination rate from blood",
    ),
    _p(
        "ld_kill_mk",
        3.0,
        "1/d",
        0.1,
        10.0,
        "calibrated to " + NH_CSV + " rows p_plt_lt_50 "
        "(62 % reach platelets < 50 G/L): megakaryocyte precursors are less exposed to flu/cy "
        "than myeloid ones",
        "megakaryocyte precursor kill rate per unit of lymphodepletion intensity",
        plausible=Plausible(None, 0.4),
    ),
    _p(
        "plt_fb_floor",
        30.0,
        "G/L",
        1.0,
        100.0,
        "calibrated to " + GRAFT_CSV + " (platelets "
        "> 20 G/L 13-18 d after 5-12e6 CD34+/kg), as neu_fb_floor",
        "platelets added to both sides of the platelet feedback",
    ),
    _p(
        "tpo_emax",
        1.0,
        "1",
        0.1,
        5.0,
        "assumption: TPO receptor agonists roughly double platelet production",
        "fractional increase of platelet progenitor division during a TPO agonist",
    ),
    _p(
        "mkp_mtt",
        2.0,
        "d",
        1.0,
        12.0,
        "calibrated to " + GRAFT_CSV + " rows 2-3 and 10-11 (platelets > 20 G/L 3-4 days "
        "after ANC > 0.5 G/L: Ergene 2007 10 and 13 d, Champlin 2000 14 and 18 d): 2 d "
        "gives 9 and 13 d after 11.5e6 CD34+/kg and 11 and 15 d after 5e6/kg; 4 d made "
        "the lag 5 days. Residence of committed megakaryocyte progenitors (CFU-Mk) "
        "before they enter the megakaryocyte chain; with plt_mtt it "
        "places the platelet response to one dose of a TPO-receptor agonist near day 12 "
        "(Harker et al. 2000, Blood 95:2514: PEG-rHuMGDF in volunteers doubled platelets, "
        "peak on day 12, normal by day 28)",
        "mean residence time of the megakaryocyte progenitors",
    ),
    _p(
        "plt_unit_increment",
        20.0,
        "G/L per unit",
        5.0,
        60.0,
        "adult platelet dose raises "
        "counts by roughly 10-30 G/L (Slichter et al. 2010, NEJM 362:600, PLADO)",
        "platelet count increment per transfused unit",
    ),
    # --- stem cells and marrow reserve
    _p(
        "hsc_mass",
        0.6,
        "niche fraction",
        0.05,
        1.0,
        "calibrated (population file): "
        "stem/progenitor mass before lymphodepletion relative to a healthy marrow; heavily "
        "pretreated lymphoma patients carry reduced reserve (Rejeski et al. 2021, Blood "
        "138:2499)",
        "marrow reserve: resident stem-cell mass before lymphodepletion",
        plausible=Plausible(None, 0.6),
    ),
    _p(
        "hsc_regen",
        0.05,
        "1/d",
        0.002,
        0.5,
        "calibrated (population file) to " + NH_CSV + " (duration and persistence of neutropenia)",
        "resident stem-cell regeneration rate (marrow fitness)",
        plausible=Plausible(None, 0.9),
    ),
    _p(
        "hsc_sigma",
        0.003,
        "1",
        0.0005,
        0.5,
        "assumption: share of the CD34+ progenitor pool's "
        "influx that comes from stem cells at steady state (the rest is its own "
        "self-renewal); multipotent progenitors self-renew for weeks only (Busch et al. "
        "2015, Nature 518:542); small, so that the surviving stem cells refill a pool "
        "emptied by flu/cy slowly enough for the published depth behind the marrow "
        "neutrophil reserve (natural_history.csv rows 4, 12, 20: ANC <= 0.1 G/L in 54-80 "
        "%; the typical course at 0.003: nadir 0.27 G/L on day 9, 7 days < 0.5 G/L). Lower "
        "bound 0.0005: the 0.002 set for the old default 0.015 clipped the plausible draws "
        "around 0.003 (a quarter of the earlier shipped population's rows sat at 0.002; the "
        "population recalibrated with this bound has none at a bound, 5th percentile 0.0013)",
        "stem-cell dependence of the CD34+ progenitor pool",
        plausible=Plausible(
            None,
            0.5,
            "assumption: the stem-cell share of the CD34+ pool's influx sets how deep the nadir"
            " after flu/cy goes (surviving stem cells refill the killed pool); centred on the "
            "default 0.003 (0.006 before the marrow neutrophil reserve, which feeds the blood "
            "for about 6 days after flu/cy) so that plausible patients reach the published "
            "depth (natural_history.csv rows 4, 12, 20: ANC <= 0.1 G/L in 54-80 %) without "
            "extreme weights",
        ),
    ),
    _p(
        "mpp_rate",
        0.7,
        "1/d",
        0.1,
        2.0,
        "calibrated to "
        + NH_CSV
        + " (all rows) together with graft_prog to "
        + GRAFT_CSV
        + " rows 2-5. With the marrow neutrophil reserve (neu_res_mtt) the blood is fed "
        "for about 6 days after flu/cy, so the 9 days of ANC < 0.5 G/L (natural_history.csv "
        "rows 8, 16, 24) need the emptied CD34+ pool to regrow over about two weeks: 1.0/d "
        "gave the typical course a nadir of 0.55 G/L and no day below 0.5, and an emptied "
        "marrow without a graft recovered ANC > 0.5 G/L by day 24; 0.7/d (with hsc_sigma "
        "0.003) a nadir of 0.27 G/L on day 9, 7 days below 0.5, and the graft rows 2-5 "
        "within a day at graft_prog 5e-10 (0.5/d put row 5 two days late). Before the "
        "reserve, 1.0/d; assumption: stressed CD34+ progenitors divide every 1-2 days",
        "CD34+ progenitor division (and exit) rate",
        plausible=Plausible(
            None,
            0.3,
            "assumption: around the default 0.7/d (1.2/d before the marrow neutrophil reserve, "
            "which hides the first week of the production gap after flu/cy); CD34+ turnover "
            "after flu/cy sets how fast the first neutropenia ends (natural_history.csv rows 8,"
            " 16, 24: median 9 days of ANC < 0.5 G/L) and whether a second dip follows",
        ),
    ),
    _p(
        "mpp_cap",
        1.2,
        "fraction of normal",
        1.05,
        3.0,
        "assumption: the CD34+ pool regulates its own size (niche occupancy; progenitor "
        "numbers stay within a few-fold of normal under stress); self-renewal falls as "
        "(1 + c^-8) / (1 + (M / c)^8) with the whole pool M: 1 at the normal pool, +4 % "
        "in an empty marrow, 0.89 at 1.2 and 0.52 at 1.5 x normal; without it the pool "
        "grows as long as the ANC is below its set point and the neutrophil wave "
        "overshoots (issue 17: 26-31 % of patients above their pre-lymphodepletion ANC in "
        "days 5-20)",
        "CD34+ pool size (fraction of normal) above which self-renewal is braked",
    ),
    _p(
        "ld_kill_prol",
        8.0,
        "1/d",
        0.5,
        30.0,
        "calibrated to " + NH_CSV + " rows p_anc_le_0.5, "
        "p_anc_le_0.1 (91 % and 72 % reach ANC <= 0.5 and <= 0.1 G/L)",
        "progenitor kill rate per unit of lymphodepletion intensity",
        plausible=Plausible(None, 0.6),
    ),
    _p(
        "ld_kill_mpp",
        3.0,
        "1/d",
        0.1,
        10.0,
        "calibrated to " + NH_CSV + " (duration of "
        "the first neutropenia); flu/cy spares part of the CD34+ progenitors (autologous "
        "recovery without stem-cell support is the rule after it)",
        "CD34+ progenitor kill rate per unit of lymphodepletion intensity",
        spread=0.7,
        spread_source="calibrated LBCL population (lbcl_population.json): log-SD of "
        "progenitor vulnerability to lymphodepletion",
        free=False,  # saturates (any rate above ~2/d empties the pool): a flat ridge for NUTS
        plausible=Plausible(None, 0.7),
    ),
    _p(
        "ld_kill_hsc",
        0.03,
        "1/d",
        0.001,
        0.3,
        "flu/cy is not myeloablative: stem cells are "
        "relatively resistant to cyclophosphamide through aldehyde dehydrogenase (Kastan et "
        "al. 1990, Blood 75:1947); assumption: 3 days of flu/cy remove about 10 % of stem "
        "cells",
        "stem-cell kill rate per unit of lymphodepletion intensity",
    ),
    # --- inflammation: early (CRS) and delayed
    _p(
        "infl_eref",
        5000.0,
        "copies/ug/d",
        100.0,
        1e5,
        "assumption: inflammation of order 1 at a typical expansion peak",
        "antigen-driven CAR-T expansion flux giving unit inflammation",
    ),
    _p(
        "infl_out",
        0.2,
        "1/d",
        0.02,
        1.0,
        "assumption: CRS resolves within 1-2 weeks "
        "(Lee et al. 2019, BBMT 25:625 grading; median CRS duration about 7 d)",
        "inflammation resolution rate",
    ),
    _p(
        "infl_supp",
        0.2,
        "1",
        0.01,
        30.0,
        "assumption: CRS adds to the early cytopenia "
        "(Fried et al. 2019, BMT 54:1643); kept modest because prolonged cytopenia does not "
        "follow CAR-T expansion (Rejeski et al. 2021)",
        "suppression of progenitor division per unit early inflammation",
        plausible=Plausible(None, 1.0),
    ),
    _p(
        "late_rate",
        0.1,
        "1/d",
        0.01,
        0.5,
        "assumption: the delayed suppression passes two stages at this rate (a gamma delay "
        "of shape 2: peak about 1 / late_rate = 10 d after the CRS peak, mean 2 / late_rate "
        "= 20 d), so the second neutrophil dip of the biphasic course starts in days 20-40: "
        "Rejeski et al. 2021 (Blood 138:2499) count a second dip after day 21 as "
        "intermittent recovery; in 93 % of patients haematological toxicity occurs after "
        "day 21 (Fried et al. 2019, Bone Marrow Transplant 54:1643, abstract). Measured on "
        "the earlier shipped LBCL population (600 patients): with one stage at 0.07/d the "
        "second dip began at a median day 23.5 (axi-cel) and 27 (tisa-cel), 42 and 31 % of "
        "them before day 21; on a population calibrated with two stages at 0.1/d (n 6000, "
        "2000 of its patients): day 32 and 29, 21 and 25 % before day 21. Faster rates "
        "(0.13-0.26) raised the days below 0.5 G/L (rows 25, 41) above their rows",
        "rate of each of the two stages of the delayed marrow suppression",
        plausible=Plausible(None, 0.5),
    ),
    _p(
        "late_i50",
        0.05,
        "1",
        0.01,
        5.0,
        "assumption: the delayed injury saturates in the inflammation (I / (late_i50 + I)): "
        "the duration of severe neutropenia did not follow CRS incidence, grade or peak "
        "cytokines (Rejeski et al. 2021, Blood 138:2499), and the products' late rows "
        "differ less than their CRS does: ANC <= 1 G/L after day 21 in 57 % (tisa-cel) vs "
        "68 % (axi-cel), >= 14 days < 0.5 G/L in 28 vs 29 % (natural_history.csv rows 15, "
        "23, 17, 25). Calibrated LBCL populations (n 6000, seed 1) with the two-stage delay: "
        "row 15 reached 0.43 at late_i50 1 and 0.3 (late_rate 0.085-0.13), 0.47 at 0.1 and "
        "0.49 at 0.05 (late_rate 0.1; within 0.10 only there); row 32 (CAR-HEMATOTOX high, "
        "median days < 0.5 G/L) stayed at 15-17 against 12 throughout",
        "inflammation at which the delayed marrow injury is half-saturated",
        needs="cart_E",
    ),
    _p(
        "late_supp",
        0.15,
        "1",
        0.01,
        100.0,
        "calibrated (population file) to "
        + NH_CSV
        + " rows p_anc_le_1_after_d21, p_severe_neutropenia_ge_14d; the default (the "
        "plausible population's median) is that of the one-stage delay with I / (1 + I): "
        "the two-stage delay lowers the injury's peak to about 0.65 for a median CRS "
        "course, the stronger saturation (late_i50) raises it about 1.5-fold; "
        "assumption: delayed "
        "inflammatory (IFN-gamma / T-cell-mediated) marrow suppression, the patient's "
        "susceptibility rising with baseline inflammation (CRP, ferritin)",
        "suppression of progenitor division per unit delayed suppression",
        spread=1.4,
        spread_source="calibrated LBCL population (lbcl_population.json): log-SD of the "
        "delayed marrow injury; CAR-HEMATOTOX low/high patients differ mostly here",
        free=True,
        needs="cart_E",
        plausible=Plausible(None, 1.4),
    ),
    _p(
        "late_kill_hsc",
        0.01,
        "1/d",
        1e-4,
        0.5,
        "assumption: inflammatory signalling "
        "exhausts stem cells (Baldridge et al. 2010, Nature 465:793: IFN-gamma drives HSC "
        "proliferation and loss); small so that only a low-fitness marrow stays aplastic",
        "stem-cell loss rate per unit delayed suppression",
        plausible=Plausible(None, 0.8),
    ),
    _p(
        "niche_supp",
        0.03,
        "1",
        1e-4,
        20.0,
        "calibrated (population file) to ../shared/calibration/natural_history_more.csv rows "
        "8-9 (Logue et al. 2021, Haematologica: ANC < 1.0 G/L on day 90 in 12.5 %, on day "
        "180 in 11.9 % of axi-cel LBCL patients: a tail that does not resolve between 3 and "
        "6 months). Mechanism (assumption, stated): inflammatory, IFN-gamma-mediated damage "
        "of the haematopoietic niche and stem/progenitor self-renewal that does not repair "
        "(IFN-gamma impairs HSC self-renewal and maintenance: Baldridge et al. 2010, Nature "
        "465:793; de Bruin et al. 2014, Blood 124:3711; persistent cytopenia after CAR-T "
        "with a hypocellular marrow and no recovery without stem-cell support: Rejeski et "
        "al. 2023, ICAHT consensus, Blood 142:865). The susceptibility is a pre-CAR-T trait "
        "(reserve, baseline inflammation); the exposure is the saturated inflammatory course "
        "(infl_Z), so CAR-T levels above those that saturate it add nothing. Default (the "
        "plausible median) 0.05 -> 0.03 with the stronger saturation of late_i50, which "
        "raises the cumulative exposure D about 1.5-fold",
        "suppression of resident progenitor division per unit non-resolving damage",
        needs="cart_E",
        plausible=Plausible(
            None,
            1.5,
            "assumption: susceptibility to non-resolving marrow damage, a pre-CAR-T trait of "
            "poor reserve (heavily pretreated marrow) and baseline inflammation, wide",
        ),
    ),
    # --- immunity, rejection and GvH
    _p(
        "imm_regen",
        0.03,
        "1/d",
        0.003,
        0.3,
        "assumption: half recovery (from the 20-fold fall of lymphodepletion) in about 100 "
        "days, between the CD8+ T cells' (> 300/uL within 2 months: Airosa Pardal et al. "
        "2025, HemaSphere) and the CD4+ T cells' (median 155/uL at 1 year: Logue et al. "
        "2021, Haematologica; < 200/uL in half at 18 months: Baird et al. 2021, Blood Adv "
        "5:143) after axi-cel; each prediction draws it (plausible: log-SD 0.7)",
        "host immunity (alloreactive T cells) recovery rate",
        plausible=Plausible(
            None,
            0.7,
            "host T-cell recovery after CAR-T varies widely between patients: CD8+ T cells > "
            "300/uL within 2 months (Airosa Pardal et al. 2025, HemaSphere, 76 axi-cel "
            "patients) while CD4+ T cells stay low, median 155/uL at 1 year (range 33-269; "
            "Logue et al. 2021, Haematologica, PMC8017820) and < 200/uL in half the patients at"
            " 18 months (Baird et al. 2021, Blood Adv 5:143); a log-SD of 0.7 puts the 5-95 % "
            "range of the time to half recovery at about 0.3x to 3x the default's 100 days "
            "(about a month to most of a year)",
        ),
    ),
    _p(
        "ld_kill_imm",
        1.0,
        "1/d",
        0.1,
        5.0,
        "assumption: lymphocytes fall about 20-fold over 3 days of flu/cy",
        "host immunity kill rate per unit of lymphodepletion intensity",
    ),
    _p(
        "infl_kill_imm",
        0.05,
        "1/d",
        1e-3,
        1.0,
        "assumption: CAR-T inflammation and B-cell aplasia deepen immunosuppression",
        "host immunity suppression per unit inflammation",
    ),
    _p(
        "rej_rate",
        1.0,
        "1/d",
        0.05,
        10.0,
        "assumption: an unconditioned allogeneic graft into a normal host is rejected within days",
        "rejection rate of new-donor cells at normal host immunity",
        plausible=Plausible(None, 0.5),
    ),
    _p(
        "gvh_decay",
        0.05,
        "1/d",
        0.005,
        0.5,
        "assumption: alloreactive donor T cells contract over weeks",
        "donor T-cell decay rate",
    ),
    _p(
        "gvh_kill",
        0.5,
        "1/d per 1e8 CD3+/kg",
        0.01,
        10.0,
        "assumption: alloreactive T cells "
        "of an unselected graft (about 1e8 CD3+/kg) eliminate residual host haematopoiesis "
        "and immunity within weeks in a lymphodepleted host, as donor lymphocyte infusions "
        "convert mixed to full donor chimerism",
        "donor T-cell attack on host immunity and the resident stem and progenitor cells",
    ),
    # --- graft content
    _p(
        "graft_regen",
        0.1,
        "1/d",
        0.01,
        1.0,
        "assumption: healthy stem cells double in about a week when the niche is empty",
        "graft stem-cell regeneration rate",
        plausible=Plausible(None, 0.3),
    ),
    _p(
        "graft_hsc",
        7e-9,
        "niche fraction per CD34+ cell/kg",
        1e-10,
        1e-7,
        "assumption: a "
        "graft carries stem cells in the proportion of a healthy marrow: about 1.4e8 CD34+ "
        "cells/kg in the marrow (1e12 nucleated cells, about 1 % CD34+), so 1 CD34+ cell/kg "
        "is 7e-9 of it",
        "long-term stem cells seeded per infused CD34+ cell/kg",
        plausible=Plausible(None, 0.5),
    ),
    _p(
        "graft_prog",
        5e-10,
        "fraction of the normal pool per CD34+ cell/kg",
        1e-11,
        1e-7,
        "calibrated to " + GRAFT_CSV + " rows 2-5 at mpp_rate 0.7/d, with the marrow "
        "neutrophil reserve (neu_res_mtt 2.5 d) and the megakaryocyte progenitors (mkp_mtt "
        "2 d): ANC > 0.5 G/L on day 9 and platelets > 20 G/L on day 13 after 11.5e6 "
        "CD34+/kg (Ergene 2007: 10 and 13), ANC > 1.0 G/L on day 10 after 20e6/kg and day "
        "12 after 6e6/kg (Ketterer 1998: 11 and 12); 4e-10 (10, 14, 10, 12) and 6e-10 "
        "are also within a day on every row, 1e-9 put rows 2 and 4 two days early. "
        "About 1.4e8 CD34+ cells/kg in a healthy marrow would give 7e-9: about 7 % of "
        "infused CD34+ cells act as amplifying progenitors (homing and commitment; no "
        "direct measurement)",
        "CD34+ progenitors seeded per infused CD34+ cell/kg",
        plausible=Plausible(
            None,
            0.5,
            "assumption: graft content and fitness vary between products and donors; "
            "engraftment ranges of graft_kinetics.csv",
        ),
    ),
    _p(
        "donor_chim0",
        1e-4,
        "fraction",
        1e-5,
        1.0,
        "patient history: donor share of the "
        "marrow before CAR-T after an earlier allogeneic transplant (1e-4 = none: below any "
        "assay)",
        "baseline donor chimerism of the resident marrow",
    ),
)

INPUTS = ("ld", "gcsf", "tpo")

OBSERVABLES = (
    Observable("anc", "G/L", "absolute neutrophil count"),
    Observable("platelets", "G/L", "platelet count"),
    Observable(
        "chimerism_cd15",
        "% donor",
        "donor fraction of blood neutrophils (myeloid, CD15+ chimerism)",
    ),
    Observable(
        "chimerism_wb",
        "% donor",
        "donor fraction of blood leukocytes, neutrophils and lymphocytes (whole-blood "
        "chimerism; see observables())",
    ),
)

#: Normal blood CD3+ T-cell count (G/L): median about 1.5 G/L in 232 healthy adults (Clin
#: Diagn Lab Immunol 2004, 11:168, PMC321350, table 3). The host's T cells in blood are
#: this times host immunity ``imm_R`` (1 = normal; the T cells that survive
#: lymphodepletion and regrow by homeostatic expansion).
T_CELLS0 = 1.5
#: Donor T cells in blood per 1e8 CD3+ cells/kg in the body (``gvh_T`` = 1), G/L: about 2 %
#: of the body's lymphocytes circulate (Westermann & Pabst 1992, Clin Investig 70:539) in
#: about 70 mL of blood per kg: 1e8 x 0.02 / 0.07 L = 2.9e7/L.
DONOR_T_BLOOD = 1e8 * 0.02 / 0.07 / 1e9


def _pool(circ0, kcirc, mtt):
    """Steady-state content (G/L-equivalents) of one compartment of a Friberg chain."""
    return circ0 * kcirc * mtt / 4.0


def _reserve(p: dict):
    """(baseline release rate 1/d, factor of chain flux over blood turnover) of the marrow
    neutrophil reserve: cells leave it at ``1 / neu_res_mtt``, released or aged out
    (``neu_res_apo``), so the chain must supply ``1 + apo / release`` times the blood
    turnover at steady state."""
    release = 1.0 / p["neu_res_mtt"] - p["neu_res_apo"]
    return release, 1.0 + p["neu_res_apo"] / release


def _stems(s: dict):
    return [s.get(n, 0.0) for n in STEMS]


def derived(s: dict, p: dict, u: dict, m) -> dict:
    """Quantities other components read: lymphoid stem-cell output (1 at baseline).

    The resident stem cells' output is relative to their own baseline mass (a reduced
    marrow keeps a normal output at steady state); graft stem cells are healthy and put
    out the normal amount per niche fraction, so a graft that fills the niche gives the
    output of a healthy marrow (1), not 1 / hsc_mass of it."""
    H, A, P, N = _stems(s)
    return {"hsc_output": H / p["hsc_mass"] + A + P + N}


def _chain(prefix, suffix, inflow, kill, ktr, kcirc, s):
    """Friberg chain; ``kill`` acts on the pool and the first transit compartment, whose
    precursors (myelocytes, megakaryoblasts) still divide."""
    names = [f"{prefix}_{c}{suffix}" for c in _CHAIN]
    x = [s[n] for n in names]
    d = {names[0]: inflow - (ktr + kill) * x[0]}
    d[names[1]] = ktr * (x[0] - x[1]) - kill * x[1]
    for i in (2, 3):
        d[names[i]] = ktr * (x[i - 1] - x[i])
    d[names[4]] = ktr * x[3] - kcirc * x[4]
    return d


def derivatives(s: dict, p: dict, u: dict, m) -> dict:
    H, A, P, N = _stems(s)
    I, Z, R, T = s["infl_I"], s["infl_Z"], s["imm_R"], s["gvh_T"]
    S = H + A + P + N
    K = p["hsc_mass"]
    c = p["donor_chim0"]
    ld = u["ld"]
    early = 1.0 + p["infl_supp"] * I
    rejection = p["rej_rate"] * R
    gvh = p["gvh_kill"] * T

    # Feedback from blood counts (Friberg), floored so that an empty marrow stays finite.
    anc = sum(s[f"neu_circ_{g}"] for g in GENOTYPES)
    e_n, e_p = p["neu_fb_floor"], p["plt_fb_floor"]
    # Leukaemic crowding (targets.derived, Colmone et al. 2008): the counts the marrow
    # sustains scale with its normal (non-blast) share, 1 at the pre-treatment load.
    space = s.get("marrow_space", 1.0)
    fb_n = ((p["anc0"] * space + e_n) / (anc + e_n)) ** p["neu_gamma"]
    fb_p = ((p["plt0"] * space + e_p) / (s["plt_circ"] + e_p)) ** p["plt_gamma"]

    # CD34+ progenitors of each origin (1 = the resident pool at baseline): stem-cell
    # influx plus limited self-renewal under the demand of both lineages. The delayed
    # insult damages the resident pool only (intrinsic injury of the HSPC exposed to the
    # CAR-T milieu); graft cells infused later carry healthy fitness of their own.
    km, sm = p["mpp_rate"], p["hsc_sigma"]
    div_m = km * (fb_n * fb_p) ** 0.5 / early
    # Self-renewal braked by the size of the whole pool (niche occupancy): 1 at the
    # normal pool, halved near mpp_cap times normal, so the pool does not keep growing
    # for as long as the ANC stays below its set point.
    m_all = sum(s[f"mpp_{k}"] for k in STREAMS)
    cap = p["mpp_cap"]
    # The pool the marrow holds grows with the space blasts leave it (marrow_space).
    crowd = (1.0 + cap**-8) / (1.0 + (m_all / (cap * space)) ** 8)
    # Delayed (resolving, Z) and non-resolving (D) injury of the resident progenitors.
    late = 1.0 + p["late_supp"] * Z + p["niche_supp"] * s["infl_D"]
    # Stem-cell influx relative to a normal marrow: the resident stem cells' relative to
    # their own baseline mass (K), graft stem cells' per niche fraction (healthy cells: a
    # full niche of them feeds the normal influx). Relative to K, a graft filling the
    # niche of a 0.1-mass marrow fed ten times the normal influx, B-cell output and CAR-T
    # antigen with it (measured: ANC 7.8 G/L, then CAR-T re-expansion and aplasia).
    stems = {"h": H / K, "a": A, "t": P, "n": N}
    d: dict = {}
    for k in STREAMS:
        mpp = s[f"mpp_{k}"]
        div = div_m / late if k == "h" else div_m
        kill = p["ld_kill_mpp"] * ld + {"h": gvh, "n": rejection}.get(k, 0.0)
        # Self-renewal of |mpp| (mpp^2 / sqrt(mpp^2 + 1e-24), smooth, 0 at 0): a solver
        # error that takes an empty pool below zero must not renew there. With mpp, under
        # the demand of an aplastic marrow the negative pool grew, drove the ANC below zero
        # and the solve non-finite (1.7 % of axi-cel patients by day 180 at rtol 1e-6).
        renew = mpp * mpp / (mpp * mpp + 1e-24) ** 0.5
        d[f"mpp_{k}"] = div * (sm * stems[k] + (1.0 - sm) * renew * crowd) - (km + kill) * mpp

    # Precursors amplify CD34+ output through a Friberg transit chain (no self-renewal:
    # committed precursors divide a few times and mature). Chains by genotype.
    m_h, m_a, m_t, m_n = (s[f"mpp_{k}"] for k in STREAMS)
    source = {"h": (1.0 - c) * m_h + m_a, "d": c * m_h + m_t + m_n}
    ktr_n = 4.0 / p["neu_mtt"]
    release0, supply = _reserve(p)
    pn = _pool(p["anc0"], p["neu_kcirc"], p["neu_mtt"]) * supply
    # G-CSF / TPO agonists act through the progenitor pool they stimulate: full effect
    # at a normal pool (1), little in an aplastic marrow (Quartino-type, gcsf_m50).
    responsive = m_all * (1.0 + p["gcsf_m50"]) / (m_all + p["gcsf_m50"])
    div_n = ktr_n * pn * fb_n * (1.0 + p["gcsf_emax"] * u["gcsf"] * responsive) / early
    kill_prol = p["ld_kill_prol"] * ld
    # Post-mitotic marrow reserve between the chain and the blood: not killed by flu/cy
    # (its cells no longer divide), released faster as the ANC falls (endogenous G-CSF)
    # and during G-CSF, held back when the ANC is high, where unreleased cells age out.
    release = release0 * fb_n ** p["neu_res_gamma"] * (1.0 + p["neu_res_gcsf"] * u["gcsf"])
    for g in GENOTYPES:
        d.update(_chain("neu", f"_{g}", div_n * source[g], kill_prol, ktr_n, p["neu_kcirc"], s))
        res = s[f"neu_res_{g}"]
        d[f"neu_res_{g}"] = ktr_n * s[f"neu_tr3_{g}"] - (release + p["neu_res_apo"]) * res
        d[f"neu_circ_{g}"] = release * res - p["neu_kcirc"] * s[f"neu_circ_{g}"]

    # Platelets: committed megakaryocyte progenitors (one pool for every origin) fed by
    # the CD34+ progenitors under thrombopoietin, which rises as platelets fall (fb_p);
    # a TPO agonist acts here, scaled by the progenitor pool (the platelet feedback acts
    # here only, not again on the megakaryocyte chain). They divide, so flu/cy
    # kills them at the megakaryocyte precursors' rate. Their residence makes platelets
    # lag neutrophils after a graft.
    tpo = 1.0 + p["tpo_emax"] * u["tpo"] * responsive
    kill_mk = p["ld_kill_mk"] * ld
    d["mkp"] = (m_all * fb_p * tpo - s["mkp"]) / p["mkp_mtt"] - kill_mk * s["mkp"]
    ktr_p = 4.0 / p["plt_mtt"]
    pp = _pool(p["plt0"], p["plt_kcirc"], p["plt_mtt"])
    inflow_p = ktr_p * pp * s["mkp"] / early
    d.update(_chain("plt", "", inflow_p, kill_mk, ktr_p, p["plt_kcirc"], s))

    # Stem cells: host regrows towards its own mass, grafts into the whole niche.
    stem_loss = p["ld_kill_hsc"] * ld
    d["hsc_H"] = p["hsc_regen"] * H * (1.0 - S / K) - (stem_loss + p["late_kill_hsc"] * Z + gvh) * H
    d["hsc_A"] = p["graft_regen"] * A * (1.0 - S) - stem_loss * A
    d["hsc_P"] = p["graft_regen"] * P * (1.0 - S) - stem_loss * P
    d["hsc_N"] = p["graft_regen"] * N * (1.0 - S) - (stem_loss + rejection) * N

    # Inflammation: CRS from antigen-driven expansion; a delayed, saturating copy of it.
    if "cart_E" in s:
        drive = p["cart_rho"] * antigen_drive(s, p, u, m) * s["cart_E"] / p["infl_eref"]
    else:
        drive = 0.0
    d["infl_I"] = drive - p["infl_out"] * I
    # Two stages (a gamma-distributed delay of shape 2, as a Friberg transit chain): the
    # injury peaks about 1 / late_rate (14 d) after the CRS and has a mean delay of
    # 2 / late_rate, so the second dip falls in days 20-40, not in the second week (with
    # one stage it began on day 16-21 in a third of the biphasic patients).
    d["infl_Y"] = p["late_rate"] * (I / (p["late_i50"] + I) - s["infl_Y"])
    d["infl_Z"] = p["late_rate"] * (s["infl_Y"] - Z)
    # Non-resolving damage: the cumulative delayed-injury exposure, never repaired
    # (D = late_rate x the integral of Z; about 1 after a typical CRS course).
    d["infl_D"] = p["late_rate"] * Z
    d["imm_R"] = (
        p["imm_regen"] * R * (1.0 - R) - (p["ld_kill_imm"] * ld + p["infl_kill_imm"] * I + gvh) * R
    )
    d["gvh_T"] = -(p["gvh_decay"] + rejection) * T
    return d


def initial(p: dict, m) -> dict:
    c = p["donor_chim0"]
    y = {"hsc_H": p["hsc_mass"], "hsc_A": 0.0, "hsc_P": 0.0, "hsc_N": 0.0}
    y.update(
        {"infl_I": 0.0, "infl_Y": 0.0, "infl_Z": 0.0, "infl_D": 0.0, "imm_R": 1.0, "gvh_T": 0.0}
    )
    y.update({"mpp_h": 1.0, "mpp_a": 0.0, "mpp_t": 0.0, "mpp_n": 0.0, "mkp": 1.0})
    release0, supply = _reserve(p)
    pn = _pool(p["anc0"], p["neu_kcirc"], p["neu_mtt"]) * supply
    pp = _pool(p["plt0"], p["plt_kcirc"], p["plt_mtt"])
    share = {"h": 1.0 - c, "d": c}
    for g in GENOTYPES:
        for cmp in _CHAIN[:-1]:
            y[f"neu_{cmp}_{g}"] = pn * share[g]
        y[f"neu_res_{g}"] = p["anc0"] * p["neu_kcirc"] / release0 * share[g]
        y[f"neu_circ_{g}"] = p["anc0"] * share[g]
    for cmp in _CHAIN[:-1]:
        y[f"plt_{cmp}"] = pp
    y["plt_circ"] = p["plt0"]
    return y


def observables(s: dict, p: dict, m) -> dict:
    """Counts and chimerism.

    ``chimerism_wb``, the donor share of blood leukocytes (whole-blood chimerism), counts
    neutrophils by genotype and lymphocytes: T cells and, where the model has them, B
    cells. ASSUMPTIONS (monocytes and NK cells are left out): the host's T cells
    (:data:`T_CELLS0` x ``imm_R``) carry the resident marrow's donor share
    ``donor_chim0`` (after an earlier allogeneic transplant the T cells are taken to be
    as chimeric as the myeloid cells); the T cells of a graft's CD3+ dose add
    :data:`DONOR_T_BLOOD` G/L per ``gvh_T``; B cells (``tgt_B``, cells/uL) take the donor
    share of the stem cells' current output. A CD34-selected new-donor graft therefore
    gives a split chimerism: donor myeloid cells, host T cells (as seen after T-depleted
    grafts), and a whole-blood value below the CD15+ one while host T cells are there.
    """
    host, donor = s["neu_circ_h"], s["neu_circ_d"]
    c = p["donor_chim0"]
    t_host = T_CELLS0 * s["imm_R"]
    t_graft = DONOR_T_BLOOD * s["gvh_T"]
    leuk = host + donor + t_host + t_graft
    donor_leuk = donor + c * t_host + t_graft
    if "tgt_B" in s:  # B cells, where the model has them, by stem-cell genotype
        H, A, P, N = _stems(s)
        out_h = H / p["hsc_mass"]
        share = (c * out_h + P + N) / (out_h + A + P + N + 1e-12)
        b = s["tgt_B"] / 1000.0  # cells/uL -> G/L
        leuk = leuk + b
        donor_leuk = donor_leuk + share * b
    return {
        "anc": host + donor,
        "platelets": s["plt_circ"],
        "chimerism_cd15": 100.0 * donor / (host + donor),
        "chimerism_wb": 100.0 * donor_leuk / leuk,
    }


# ---- events acting on this component's states -----------------------------------------

#: Graft sources and the stem-cell compartment and neutrophil chain each seeds.
GRAFT_SOURCES: dict[GraftSource, tuple[str, str]] = {
    GraftSource.AUTOLOGOUS: ("hsc_A", "a"),
    GraftSource.PRIOR_DONOR: ("hsc_P", "t"),
    GraftSource.ALLOGENEIC: ("hsc_N", "n"),
}


def _boost(ctx: EventContext, ev: EventRow) -> None:
    """Seed graft stem cells and progenitors by origin; T cells from a CD3+ dose
    (:meth:`carthema.data.boost.BoostPlan.t_cells`)."""
    plan = BoostPlan(
        ev.day,
        ev.amount,
        ev.get("source", "allogeneic"),
        ev.flag("cd34_selected"),
        ev.get("cd3_per_kg"),
        ev.get("mnc_per_kg"),
    )
    stem, origin = GRAFT_SOURCES[plan.source]
    ctx.bolus(ev.day, stem, ev.amount, "graft_hsc")
    ctx.bolus(ev.day, f"mpp_{origin}", ev.amount, "graft_prog")
    if plan.source is not GraftSource.ALLOGENEIC:
        if plan.cd3_per_kg is not None and plan.cd3_per_kg > 0:
            ctx.notes.append(
                f"{ev.label}: the CD3+ dose of a {plan.source} graft has no modelled effect "
                "(no alloreactivity against a tolerant host)"
            )
        return
    cd3, note = plan.t_cells(ev.label)
    if note:
        ctx.notes.append(note)
    if cd3 > 0:
        ctx.bolus(ev.day, "gvh_T", cd3 / 1e8)


def _platelet_transfusion(ctx: EventContext, ev: EventRow) -> None:
    """Jump in blood platelets: units x ``plt_unit_increment``."""
    ctx.bolus(ev.day, "plt_circ", ev.amount, "plt_unit_increment")


EVENTS: dict[str, Handler] = {
    "lymphodepletion": lymphodepletion,
    "gcsf": treatment_period("gcsf"),
    "tpo_agonist": treatment_period("tpo"),
    "platelet_transfusion": _platelet_transfusion,
    "stem_cell_boost": _boost,
}
