"""CD19+ targets: normal B cells and leukemic blasts, killed by CAR-T cells.

Normal B cells (cells/uL blood) are produced from the lymphoid output of the stem-cell
compartment (when the haematopoiesis component is present; otherwise at a constant
rate), turn over with a lifetime of about 60 days (Leon-Triana et al. 2021) and are
killed by CAR-T cells with saturating kinetics. Leukemic blasts (CD19+ blast load,
cells/uL-equivalents) grow logistically up to their pre-treatment burden: the model
holds untreated disease at its diagnostic level so that the untreated patient is at
steady state, and lets surviving blasts regrow to it after CAR-T (relapse).

**Marrow crowding.** Blasts in the marrow occupy the space and niches of normal
haematopoiesis: leukaemic cells take over the progenitor niche and suppress normal
progenitors' output (Colmone et al. 2008, Science 322:1861), so a leukaemic marrow makes
fewer normal cells and its clearance lets the resident marrow recover. The marrow blast
share is ``L / (L + leuk_marrow_ref)``; :func:`derived` gives the haematopoiesis
component ``marrow_space``, the resident marrow's normal output relative to the
untreated patient (1 at the pre-treatment load, ``1 / (1 - leuk_crowding * share0)``
when every blast is gone). ``leuk_crowding`` is the share of the blasts' marrow space
taken from normal haematopoiesis: 1 (all of it) for a marrow leukaemia; its default is
off, because the LBCL population was calibrated without it (lymphoma marrow involvement
is in a minority; a disease preset sets it, :mod:`carthema.models.presets`).

**Antigen escape.** A share ``leuk_cd19neg`` of the pre-treatment blasts carries no (or
too little) CD19 to be killed: pre-existing CD19-negative subclones and CD19 isoforms
lacking the CAR epitope are found before CAR-T in B-ALL (Sotillo et al. 2015, Cancer
Discov 5:1282; Fischer et al. 2017, J Immunother 40:187; CD34+CD19-CD22+ leukaemic
progenitors in about 70 % of diagnostic and relapse marrows, Bueno et al. 2022, Blood
140:38), and a ZUMA-3 patient whose blasts lacked the FMC63 epitope had no response
(Blood Adv 2022, 6:5634, letter). ``tgt_L`` counts the CD19+ blasts (the CAR-T's antigen
and target); the CD19-negative ones are held at their pre-treatment size ``leuk_cd19neg
* leuk_L0`` (no state: within the weeks of the response assessment the model neither
kills nor grows them; an assumption), and they count in the marrow blast share and its
crowding, so a patient whose escape share exceeds the remission threshold keeps >= 5 %
blasts however well the CAR-T expand. Off (exactly, at its lower bound) by default and
in LBCL and MCL.
"""

from __future__ import annotations

from ..dosing import Handler, lymphodepletion
from ..parameters import Observable, Param, Plausible, State

STATES = (
    State("tgt_B", "cells/uL", 100.0, "normal CD19+ B cells in blood"),
    State("tgt_L", "cells/uL", 1.0, "CD19+ leukemic blast load"),
)

PARAMS = (
    Param(
        "b_B0",
        250.0,
        "cells/uL",
        50.0,
        1000.0,
        "reference range of CD19+ B cells in adults 100-500 cells/uL (Morbach et al. 2010, "
        "Clin Exp Immunol)",
        "baseline B-cell count",
    ),
    Param(
        "b_turnover",
        1.0 / 60.0,
        "1/d",
        1.0 / 200.0,
        0.1,
        "normal B-cell lifetime about 60 d (Leon-Triana et al. 2021, Cancers)",
        "B-cell turnover rate",
    ),
    Param(
        "kill_max",
        3.0,
        "1/d",
        0.3,
        30.0,
        "calibrated: B-cell aplasia within about 2 weeks of CAR-T (Maude et al. 2018)",
        "maximal CAR-T killing rate of CD19+ cells",
    ),
    Param(
        "kill_EC50",
        200.0,
        "copies/ug DNA",
        5.0,
        5000.0,
        "calibrated: B-cell recovery follows loss of CAR-T transgene (Mueller et al. 2018, "
        "Clin Cancer Res); aplasia lasts while copies stay above tens per ug",
        "CAR-T level giving half-maximal killing",
        spread=0.4,
        spread_source="assumption",
        free=True,
    ),
    Param(
        "kill_Asat",
        10.0,
        "cells/uL",
        0.5,
        1000.0,
        "calibrated: CAR-T Cmax rises with tumour burden (Mueller et al. 2017, Blood; "
        "Stein et al. 2019)",
        "CD19+ load above which killing becomes effector-limited",
    ),
    Param(
        "leuk_L0",
        1000.0,
        "cells/uL",
        1e-3,
        1e5,
        "assumption: patient-specific; 1000 cells/uL-equivalents (50% marrow blasts) is a "
        "typical relapsed/refractory burden",
        "pre-treatment leukemic blast load (also its regrowth ceiling)",
        spread=1.0,
        spread_source="assumption: marrow blast burden varies from MRD to >90%",
        free=True,
        plausible=Plausible(
            None,
            0.6,
            "relative: multiplies the disease's value; log-SD 0.6 (was 1.0): with the marrow "
            "neutrophil reserve the weights bought the late rows (natural_history.csv rows 7, "
            "15, 23: ANC <= 1.0 G/L after day 21) with tumour load, moving the population's "
            "geometric-median load to 1.5 x the LBCL preset (459 against 300); at 0.6, 363 (n "
            "4000, seed 1), the LBCL load stays the disease's",
        ),
    ),
    Param(
        "leuk_growth",
        0.1,
        "1/d",
        0.01,
        1.0,
        "blast doubling time about 1 week in relapsed B-ALL (Leon-Triana et al. 2021)",
        "leukemic blast growth rate",
    ),
    Param(
        "ld_kill_lymph",
        0.3,
        "1/d",
        0.1,
        5.0,
        "calibrated: CD19+ targets fall about 2.5-fold over 3 days of flu/cy, leaving the "
        "antigen that drives expansion (marrow B-lineage and blasts are less exposed)",
        "lymphocyte (B cell, blast) kill rate per unit of lymphodepletion intensity",
    ),
    Param(
        "leuk_marrow_ref",
        1000.0,
        "cells/uL",
        100.0,
        1e5,
        "assumption: blast load equivalent to 50% marrow blasts; a disease preset sets it "
        "from the disease's marrow infiltration (carthema.models.presets)",
        "blast load at which marrow blasts are 50%",
    ),
    Param(
        "leuk_cd19neg",
        1e-6,
        "1",
        1e-6,
        0.5,
        "mechanism: pre-existing CD19-negative / CD19-epitope-lacking blasts escape CAR-T "
        "(Sotillo et al. 2015, Cancer Discov 5:1282; Fischer et al. 2017, J Immunother "
        "40:187; Bueno et al. 2022, Blood 140:38); default 1e-6, the lower bound = off "
        "exactly (escape_share); the B-ALL preset sets its median and the calibration its "
        "between-patient spread (carthema.models.presets)",
        "share of the pre-treatment blasts that CAR-T cannot kill (CD19-negative)",
    ),
    Param(
        "leuk_crowding",
        1e-3,
        "1",
        1e-3,
        1.0,
        "mechanism: leukaemic cells take over the marrow niche and suppress normal "
        "progenitors (Colmone et al. 2008, Science 322:1861); 1 = the blasts' marrow share "
        "is lost to normal haematopoiesis (B-ALL, MCL presets); default 1e-3 (the lower bound) "
        "= off exactly: the LBCL population's calibration (lbcl_population.json) has no "
        "marrow crowding",
        "share of the marrow blasts' space taken from normal haematopoiesis (none at the "
        "lower bound 1e-3, the default)",
    ),
)

INPUTS = ("ld",)

OBSERVABLES = (
    Observable("b_cells", "cells/uL", "CD19+ B cells in blood"),
    Observable("marrow_blasts", "%", "leukemic blasts in marrow"),
)


#: Lower bound of ``leuk_crowding``, its default: no crowding at all (exactly, so that a
#: model without marrow disease computes what it computed before the mechanism).
CROWDING_OFF = 1e-3


def crowding(value):
    """The crowding strength in [0, 1] of a ``leuk_crowding`` value (0 at its lower
    bound :data:`CROWDING_OFF`, 1 at 1)."""
    return (value - CROWDING_OFF) / (1.0 - CROWDING_OFF)


def marrow_share(L, p: dict):
    """Leukaemic blast share of the marrow (fraction) at a total blast load ``L``
    (cells/uL-equivalents, CD19+ and CD19-negative)."""
    return L / (L + p["leuk_marrow_ref"])


#: Lower bound of ``leuk_cd19neg``, its default: no escape at all (exactly, so that a
#: model without it computes what it computed before the mechanism).
ESCAPE_OFF = 1e-6


def escape_share(value):
    """The CD19-negative share of the pre-treatment blasts of a ``leuk_cd19neg`` value
    (0 exactly at its lower bound :data:`ESCAPE_OFF`)."""
    return value - ESCAPE_OFF


def escaped(p: dict):
    """CD19-negative blasts (cells/uL-equivalents): the escape share of the
    pre-treatment load, held at that size (0 exactly when off)."""
    return escape_share(p["leuk_cd19neg"]) * p["leuk_L0"]


def derived(s: dict, p: dict, u: dict, m) -> dict:
    """Quantities other components read: ``marrow_space``, the resident marrow's normal
    output relative to the untreated patient's (1 at the pre-treatment blast load; more
    as CAR-T clears the blasts, less if they regrow)."""
    c = crowding(p["leuk_crowding"])
    free = 1.0 - c * marrow_share(s["tgt_L"] + escaped(p), p)
    free0 = 1.0 - c * marrow_share(p["leuk_L0"], p)
    return {"marrow_space": free / free0}


def derivatives(s: dict, p: dict, u: dict, m) -> dict:
    B, L = s["tgt_B"], s["tgt_L"]
    C = s["cart_E"] + s["cart_M"] if "cart_E" in s else 0.0
    # Ratio-dependent killing: each CAR-T cell engages a limited number of targets, so
    # a large CD19+ load raises the CAR-T level needed for fast killing. This lets CAR-T
    # expand for days on a heavy load yet keeps B cells aplastic at memory levels.
    kill = p["kill_max"] * C / (C + p["kill_EC50"] * (1.0 + (B + L) / p["kill_Asat"]))
    lymphoid_output = s["hsc_output"] if "hsc_output" in s else 1.0
    ld = p["ld_kill_lymph"] * u["ld"]
    return {
        "tgt_B": p["b_turnover"] * p["b_B0"] * lymphoid_output - (p["b_turnover"] + kill + ld) * B,
        # CD19+ blasts regrow towards the pre-treatment load less the escaped ones.
        "tgt_L": p["leuk_growth"] * L * (1.0 - (L + escaped(p)) / p["leuk_L0"]) - (kill + ld) * L,
    }


def initial(p: dict, m) -> dict:
    return {"tgt_B": p["b_B0"], "tgt_L": p["leuk_L0"] * (1.0 - escape_share(p["leuk_cd19neg"]))}


def observables(s: dict, p: dict, m) -> dict:
    L = s["tgt_L"] + escaped(p)
    return {"b_cells": s["tgt_B"], "marrow_blasts": 100.0 * marrow_share(L, p)}


EVENTS: dict[str, Handler] = {"lymphodepletion": lymphodepletion}
