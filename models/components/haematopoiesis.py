"""Haematopoiesis: host and donor stem cells, neutrophil and platelet lineages, marrow
inflammation, host immunity and donor T cells (graft rejection and chimerism).

Stem cells (``hsc_H`` host, ``hsc_D`` donor) are fractions of a shared niche (1 = full
marrow). They regenerate logistically into empty niche space at ``hsc_regen`` (host; the
marrow-reserve parameter) or ``graft_regen`` (donor), and are damaged by
lymphodepletion and by marrow inflammation. Their output drives each myeloid lineage
with an amplification that compensates partial stem-cell loss: the input to the
proliferating pool is proportional to ``Htot ** hsc_eta`` (``hsc_eta`` < 1), shared
between host and donor in proportion to their stem cells.

Each lineage is a Friberg et al. 2002 (J Clin Oncol 20:4713) chain: proliferating pool,
three transit compartments with ``ktr = 4 / MTT``, circulating pool, and feedback
``(Circ0 / Circ) ** gamma`` on the input. Lymphodepletion kills proliferating cells
during its days; marrow inflammation (driven by antigen-engaged CAR-T expansion)
divides the input by ``1 + infl_supp * I``; G-CSF multiplies the neutrophil input
and a TPO agonist the platelet input. Neutrophil chains are kept separately for host and
donor so that myeloid donor chimerism is an output; platelets share one chain.

Host immunity ``imm_R`` (1 = normal) is depleted by lymphodepletion, by inflammation and
by donor T cells, and recovers logistically over months; it rejects allogeneic donor
stem and progenitor cells and donor T cells at ``rej_rate * R``. Donor T cells
``gvh_T`` (units of 1e8 CD3+ cells/kg) come with unselected grafts, decay, and attack
host immunity and host stem cells (graft-versus-host / graft-versus-marrow), which is
how an unselected allogeneic graft reaches full donor chimerism in an immunosuppressed
host.
"""

from __future__ import annotations

import math

from ..parameters import Observable, Param, State
from .cart import antigen_drive

FRIBERG = "Friberg et al. 2002, J Clin Oncol 20:4713"
QUARTINO = "Quartino et al. 2014, Pharm Res 31:3390"

_CHAIN = ("prol", "tr1", "tr2", "tr3")

STATES = (
    State("hsc_H", "niche fraction", 1.0, "host stem cells"),
    State("hsc_D", "niche fraction", 1.0, "donor stem cells"),
    State("infl_I", "1", 1.0, "marrow inflammation"),
    State("imm_R", "1", 1.0, "host immunity (1 = normal)"),
    State("gvh_T", "1e8 CD3+ cells/kg", 0.1, "donor T cells"),
    *(State(f"neu_{c}_h", "G/L", 10.0, f"host neutrophil lineage, {c}") for c in _CHAIN),
    State("neu_circ_h", "G/L", 1.0, "host neutrophils in blood"),
    *(State(f"neu_{c}_d", "G/L", 10.0, f"donor neutrophil lineage, {c}") for c in _CHAIN),
    State("neu_circ_d", "G/L", 1.0, "donor neutrophils in blood"),
    *(State(f"plt_{c}", "G/L", 100.0, f"platelet lineage, {c}") for c in _CHAIN),
    State("plt_circ", "G/L", 100.0, "platelets in blood"),
)

PARAMS = (
    # --- neutrophils
    Param("anc0", 4.0, "G/L", 1.5, 8.0, "normal adult ANC 2-7 G/L", "baseline ANC"),
    Param(
        "neu_mtt",
        4.5,
        "d",
        2.5,
        8.0,
        FRIBERG + "; " + QUARTINO + " (MTT about 4-5.5 d)",
        "neutrophil maturation time",
    ),
    Param(
        "neu_gamma",
        0.16,
        "1",
        0.05,
        0.5,
        FRIBERG + " (gamma 0.161 for docetaxel)",
        "neutrophil feedback exponent",
    ),
    Param(
        "neu_kcirc",
        math.log(2.0) / (7.0 / 24.0),
        "1/d",
        1.0,
        6.0,
        "circulating neutrophil half-life about 7 h (" + FRIBERG + ")",
        "neutrophil elimination rate from blood",
    ),
    Param(
        "gcsf_emax",
        1.5,
        "1",
        0.1,
        10.0,
        QUARTINO + " (G-CSF raises proliferation several-fold)",
        "fractional increase of neutrophil input during G-CSF",
    ),
    # --- platelets
    Param("plt0", 250.0, "G/L", 100.0, 450.0, "normal platelets 150-400 G/L", "baseline platelets"),
    Param(
        "plt_mtt",
        7.0,
        "d",
        4.0,
        12.0,
        "megakaryocyte maturation 5-10 d (Friberg-type platelet models)",
        "platelet maturation time",
    ),
    Param(
        "plt_gamma",
        0.2,
        "1",
        0.05,
        0.6,
        "Friberg-type platelet models (gamma 0.1-0.3)",
        "platelet feedback exponent",
    ),
    Param(
        "plt_kcirc",
        1.0 / 9.0,
        "1/d",
        1.0 / 14.0,
        1.0 / 5.0,
        "platelet lifespan 8-10 d",
        "platelet elimination rate from blood",
    ),
    Param(
        "tpo_emax",
        1.0,
        "1",
        0.1,
        5.0,
        "assumption: TPO receptor agonists roughly double platelet production",
        "fractional increase of platelet input during a TPO agonist",
    ),
    Param(
        "plt_unit_increment",
        20.0,
        "G/L per unit",
        5.0,
        60.0,
        "adult platelet dose raises counts by roughly 10-30 G/L (Slichter et al. 2010, "
        "NEJM, PLADO)",
        "platelet count increment per transfused unit",
    ),
    # --- stem cells
    Param(
        "hsc_regen",
        0.08,
        "1/d",
        0.001,
        0.5,
        "calibrated: marrow reserve; 0.08/d recovers ANC > 0.5 G/L by about day 30, "
        "0.005/d leaves months of cytopenia (Rejeski et al. 2021, Blood: prolonged "
        "cytopenia in high CAR-HEMATOTOX patients)",
        "host stem-cell regeneration rate (marrow reserve)",
    ),
    Param(
        "hsc_eta",
        1.0,
        "1",
        0.2,
        1.0,
        "assumption: progenitor amplification compensates partial stem-cell loss",
        "exponent of lineage input in total stem cells",
    ),
    Param(
        "ld_kill_hsc",
        1.0,
        "1/d",
        0.01,
        2.0,
        "calibrated: flu/cy causes neutropenia in most patients (ELIANA: grade 3-4 "
        "neutropenia in 53% beyond day 30, Mullanfiroze 2024)",
        "stem-cell kill rate per unit of lymphodepletion intensity",
    ),
    Param(
        "ld_kill_prol",
        1.5,
        "1/d",
        0.1,
        6.0,
        "calibrated: ANC nadir below 0.5 G/L within a week of CAR-T after flu/cy",
        "proliferating-cell kill rate per unit of lymphodepletion intensity",
    ),
    # --- inflammation
    Param(
        "infl_eref",
        5000.0,
        "copies/ug/d",
        100.0,
        1e5,
        "calibrated: inflammation of order 1 at a typical expansion peak",
        "antigen-driven CAR-T expansion flux giving unit inflammation",
    ),
    Param(
        "infl_out",
        0.1,
        "1/d",
        0.02,
        1.0,
        "calibrated: marrow suppression lasts weeks after CRS (biphasic recovery, "
        "Rejeski et al. 2021)",
        "inflammation resolution rate",
    ),
    Param(
        "infl_supp",
        3.0,
        "1",
        0.1,
        30.0,
        "calibrated: CRS grade relates to prolonged cytopenia (Fried et al. 2019)",
        "suppression of lineage input per unit inflammation",
    ),
    Param(
        "infl_kill_hsc",
        0.02,
        "1/d",
        1e-3,
        0.5,
        "assumption: inflammation damages HSPC (Rejeski et al. 2021)",
        "stem-cell kill rate per unit inflammation",
    ),
    # --- immunity and graft
    Param(
        "imm_regen",
        0.03,
        "1/d",
        0.003,
        0.3,
        "assumption: T-cell recovery after fludarabine takes months",
        "host immunity recovery rate",
    ),
    Param(
        "ld_kill_imm",
        1.0,
        "1/d",
        0.1,
        5.0,
        "calibrated: lymphocytes about 20-fold lower after 3 days of flu/cy",
        "host immunity kill rate per unit of lymphodepletion intensity",
    ),
    Param(
        "infl_kill_imm",
        0.05,
        "1/d",
        1e-3,
        1.0,
        "assumption: CAR-T inflammation and B-cell aplasia deepen immunosuppression",
        "host immunity suppression per unit inflammation",
    ),
    Param(
        "rej_rate",
        1.0,
        "1/d",
        0.05,
        10.0,
        "assumption: an unconditioned allogeneic graft into a normal host is rejected within days",
        "rejection rate of donor stem/progenitor cells at normal host immunity",
    ),
    Param(
        "graft_regen",
        0.15,
        "1/d",
        0.01,
        1.0,
        "assumption: healthy donor stem cells fill empty niche within weeks",
        "donor stem-cell regeneration rate",
    ),
    Param(
        "graft_hsc",
        2e-9,
        "niche fraction per CD34+ cell/kg",
        1e-10,
        1e-7,
        "calibrated: a 3e6/kg allogeneic graft into an aplastic, immunosuppressed host "
        "reaches majority donor chimerism within about a month (Han et al. 2022: full "
        "donor chimerism after 0.95e6/kg; ours needs donor T cells for that speed)",
        "long-term stem cells seeded per infused CD34+ cell/kg",
    ),
    Param(
        "graft_prog",
        1e-8,
        "G/L per CD34+ cell/kg",
        1e-9,
        1e-5,
        "calibrated: about a month to ANC > 1 G/L without G-CSF after a 6.75e6/kg "
        "CD34-selected boost into cytopenic hosts (Mullanfiroze et al. 2022 report a median "
        "42 days, range 11-192; benchmarks/validation.py)",
        "neutrophil progenitors seeded per infused CD34+ cell/kg",
    ),
    Param(
        "graft_prog_plt",
        5e-8,
        "G/L per CD34+ cell/kg",
        1e-9,
        1e-4,
        "calibrated with graft_prog (same progenitor content relative to the platelet "
        "lineage's larger steady-state pool)",
        "platelet progenitors seeded per infused CD34+ cell/kg",
    ),
    Param(
        "gvh_decay",
        0.05,
        "1/d",
        0.005,
        0.5,
        "assumption: alloreactive donor T cells contract over weeks",
        "donor T-cell decay rate",
    ),
    Param(
        "gvh_kill",
        0.5,
        "1/d per 1e8 CD3+/kg",
        0.01,
        10.0,
        "assumption: unselected grafts (about 1e8 CD3+/kg) give full donor chimerism "
        "within weeks (Han et al. 2022)",
        "donor T-cell attack on host immunity and host stem cells",
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
)


def _pss(circ0, kcirc, mtt):
    """Steady-state proliferating/transit content (G/L-equivalents) of a Friberg chain."""
    return circ0 * kcirc * mtt / 4.0


def derived(s: dict, p: dict, u: dict, m) -> dict:
    """Quantities other components read: lymphoid stem-cell output (1 at baseline)."""
    return {"hsc_output": (s["hsc_H"] + s["hsc_D"]) ** p["hsc_eta"]}


def _chain(prefix, suffix, inflow, kill, ktr, kcirc, s):
    names = [f"{prefix}_{c}{suffix}" for c in _CHAIN] + [f"{prefix}_circ{suffix}"]
    x = [s[n] for n in names]
    d = {names[0]: inflow - (ktr + kill) * x[0]}
    for i in (1, 2, 3):
        d[names[i]] = ktr * (x[i - 1] - x[i])
    d[names[4]] = ktr * x[3] - kcirc * x[4]
    return d


def derivatives(s: dict, p: dict, u: dict, m) -> dict:
    H, D, I, R, T = s["hsc_H"], s["hsc_D"], s["infl_I"], s["imm_R"], s["gvh_T"]
    Htot = H + D
    # Input per stem cell: Htot**eta / Htot, so that total input is Htot**eta.
    per_stem = Htot ** (p["hsc_eta"] - 1.0)
    suppression = 1.0 / (1.0 + p["infl_supp"] * I)

    ktr_n = 4.0 / p["neu_mtt"]
    anc = s["neu_circ_h"] + s["neu_circ_d"]
    fb_n = (p["anc0"] / anc) ** p["neu_gamma"]
    base_n = ktr_n * _pss(p["anc0"], p["neu_kcirc"], p["neu_mtt"])
    input_n = base_n * per_stem * fb_n * suppression * (1.0 + p["gcsf_emax"] * u["gcsf"])

    ktr_p = 4.0 / p["plt_mtt"]
    fb_p = (p["plt0"] / s["plt_circ"]) ** p["plt_gamma"]
    base_p = ktr_p * _pss(p["plt0"], p["plt_kcirc"], p["plt_mtt"])
    input_p = base_p * Htot ** p["hsc_eta"] * fb_p * suppression * (1.0 + p["tpo_emax"] * u["tpo"])

    ld = u["ld"]
    kill_prol = p["ld_kill_prol"] * ld
    rejection = p["rej_rate"] * R
    gvh = p["gvh_kill"] * T

    if "cart_E" in s:
        drive = p["cart_rho"] * antigen_drive(s, p, u, m) * s["cart_E"] / p["infl_eref"]
    else:
        drive = 0.0

    d = {
        "hsc_H": p["hsc_regen"] * H * (1.0 - Htot)
        - (p["ld_kill_hsc"] * ld + p["infl_kill_hsc"] * I + gvh) * H,
        "hsc_D": p["graft_regen"] * D * (1.0 - Htot)
        - (p["ld_kill_hsc"] * ld + p["infl_kill_hsc"] * I + rejection) * D,
        "infl_I": drive - p["infl_out"] * I,
        "imm_R": p["imm_regen"] * R * (1.0 - R)
        - (p["ld_kill_imm"] * ld + p["infl_kill_imm"] * I + gvh) * R,
        "gvh_T": -(p["gvh_decay"] + rejection) * T,
    }
    d.update(_chain("neu", "_h", input_n * H, kill_prol, ktr_n, p["neu_kcirc"], s))
    d.update(_chain("neu", "_d", input_n * D, kill_prol + rejection, ktr_n, p["neu_kcirc"], s))
    d.update(_chain("plt", "", input_p, kill_prol, ktr_p, p["plt_kcirc"], s))
    return d


def initial(p: dict, m) -> dict:
    y = {"hsc_H": 1.0, "hsc_D": 0.0, "infl_I": 0.0, "imm_R": 1.0, "gvh_T": 0.0}
    pn = _pss(p["anc0"], p["neu_kcirc"], p["neu_mtt"])
    pp = _pss(p["plt0"], p["plt_kcirc"], p["plt_mtt"])
    for c in _CHAIN:
        y[f"neu_{c}_h"] = pn
        y[f"neu_{c}_d"] = 0.0
        y[f"plt_{c}"] = pp
    y["neu_circ_h"] = p["anc0"]
    y["neu_circ_d"] = 0.0
    y["plt_circ"] = p["plt0"]
    return y


def observables(s: dict, p: dict, m) -> dict:
    host, donor = s["neu_circ_h"], s["neu_circ_d"]
    return {
        "anc": host + donor,
        "platelets": s["plt_circ"],
        "chimerism_cd15": 100.0 * donor / (host + donor),
    }
