"""CAR-T cell kinetics: effector, memory and exhausted CAR+ cells, in transgene copies/ug DNA.

Effectors expand at ``cart_rho * phi`` where ``phi`` in [0, 1] is the antigen drive:
with the targets component, ``phi = A^2 / (A^2 + cart_K_antigen^2)`` with ``A`` the CD19+ load
(normal B cells plus leukemic blasts, cells/uL), the saturating drive of Liu et al. 2022;
without it, ``phi`` is the input ``cart_expand`` (1 from the first infusion until
``cart_tmax``, then 0), which gives the empirical model of Stein et al. 2019:

    before Tmax:  dE/dt = (rho - alpha) E      (Stein's net rate: ln(3900)/9.3 d)
    after Tmax:   dE/dt = -alpha E,   dM/dt = FB (alpha - beta) E - beta M

so that after Tmax the observed E + M follows
``(1 - FB) Cmax exp(-alpha tau) + FB Cmax exp(-beta tau)``. ``cart_rho`` is the gross
expansion rate: effectors also contract at ``alpha`` while they expand, so the default
``rho = ln(3900)/9.3 + 0.16 = 1.050/d`` reproduces Stein's fold expansion 3900 by Tmax
9.3 d and Cmax 24,000 copies/ug at the ELIANA median dose. Effectors convert to memory at
``FB (alpha - beta)`` (part of their loss ``alpha``; in the CAR-T-alone model after Tmax
only, as in Stein's model) and, with the targets component only, to an exhausted state
under antigen stimulation (the CAR-T-alone model has no antigen and therefore no
exhaustion, so it stays Stein's model exactly). The observable is E + M + X: qPCR
measures every transgene copy.
"""

from __future__ import annotations

import math

from ..dosing import EventContext, EventRow, Handler
from ..parameters import Observable, Param, Plausible, State

STEIN = (
    "Stein et al. 2019, CPT Pharmacometrics Syst Pharmacol 8:285 (tisagenlecleucel, 90 B-ALL pts)"
)

#: Stein et al. 2019 Table 1 typical values: fold expansion 3900 by Tmax 9.3 d; alpha 0.16/d.
STEIN_FOLD, STEIN_TMAX, STEIN_ALPHA = 3900.0, 9.3, 0.16
#: Gross effector expansion rate: Stein's net rate ln(3900)/9.3 d plus alpha (1.0502/d).
RHO_STEIN = math.log(STEIN_FOLD) / STEIN_TMAX + STEIN_ALPHA

STATES = (
    State("cart_E", "copies/ug DNA", 1e3, "effector CAR-T cells"),
    State("cart_M", "copies/ug DNA", 1e2, "memory CAR-T cells"),
    State("cart_X", "copies/ug DNA", 1e2, "exhausted CAR-T cells"),
)

PARAMS = (
    Param(
        "cart_rho",
        RHO_STEIN,
        "1/d",
        0.3,
        3.0,
        "derived from "
        + STEIN
        + " Table 1: Stein's net expansion rate ln(fold expansion)/Tmax = ln(3900)/9.3 d "
        "= 0.890/d plus the contraction rate alpha = 0.16/d that acts on effectors during "
        "expansion too, so rho - alpha = ln(3900)/9.3 and the CAR-T-alone model reaches "
        "Cmax = C(0) x 3900 = 24,000 copies/ug at Tmax 9.3 d. With targets the same rho is "
        "scaled by the antigen drive (and the exhaustion loss applies), so the full-model "
        "peak also depends on cart_K_antigen and the CD19+ load",
        "maximal effector expansion rate under full antigen drive",
        spread=0.2,
        spread_source="assumption: peak day varies about +-3 days",
        free=True,
        plausible=Plausible(
            None,
            0.15,
            "assumption: the patient's own factor on the product's expansion rate (the product "
            "preset's value, or the default), log-SD 0.15",
        ),
    ),
    Param(
        "cart_alpha",
        0.16,
        "1/d",
        0.03,
        0.8,
        STEIN + " (alpha, contraction rate)",
        "effector contraction rate (includes conversion to memory)",
        spread=0.5,
        spread_source="assumption; Stein et al. 2019 report large variability in alpha",
        free=True,
    ),
    Param(
        "cart_fb",
        0.0079,
        "1",
        1e-4,
        0.2,
        STEIN + " (FB)",
        "fraction of contracting effectors that become memory cells",
        spread=0.7,
        spread_source="assumption; Stein et al. 2019 report large variability in FB",
        free=True,
    ),
    Param(
        "cart_beta",
        0.0032,
        "1/d",
        5e-4,
        0.05,
        STEIN + " (beta; terminal half-life about 220 d)",
        "memory CAR-T decline rate",
        spread=0.5,
        spread_source="assumption",
        free=True,
    ),
    Param(
        "cart_f_dose",
        2.0e-6,
        "copies/ug per CAR+ cells/kg",
        1e-7,
        5e-5,
        "derived: C(0) = Cmax / fold expansion = 24,000 / 3,900 = 6.2 copies/ug ("
        + STEIN
        + ") at the ELIANA median dose 3.1e6 CAR+ cells/kg (Maude et al. 2018, NEJM)",
        "blood transgene copies/ug DNA right after infusion, per infused CAR+ cell/kg",
        spread=0.5,
        spread_source="assumption: Cmax varies over 1-2 decades (Mueller et al. 2017)",
        free=True,
        plausible=Plausible(
            None,
            0.7,
            "relative: the patient's own factor on the product preset's value",
        ),
    ),
    Param(
        "cart_K_antigen",
        20.0,
        "cells/uL",
        1.0,
        500.0,
        "calibrated: saturating antigen drive B/(B + K) of Liu L et al. 2022; K set so that "
        "the peak falls near day 10 (Mueller et al. 2017, Blood: Tmax about day 10)",
        "CD19+ target load giving half-maximal expansion",
    ),
    Param(
        "cart_k_exh",
        0.05,
        "1/d",
        1e-3,
        0.5,
        "assumption: antigen-driven exhaustion, small so that Stein's biphasic decline "
        "dominates; acts only with the targets component (CD19+ load), not in the "
        "CAR-T-alone empirical model",
        "effector to exhausted conversion rate under full antigen drive",
    ),
    Param(
        "cart_d_exh",
        0.2,
        "1/d",
        0.02,
        2.0,
        "assumption: exhausted cells are short-lived (days)",
        "exhausted CAR-T loss rate",
    ),
    Param(
        "cart_tmax",
        9.3,
        "d",
        3.0,
        28.0,
        STEIN + " (Tmax; used only without targets)",
        "end of the expansion phase after the first infusion (CAR-T-alone model)",
        structural=True,
    ),
)

INPUTS = ("cart_expand",)

OBSERVABLES = (Observable("cart_copies", "copies/ug DNA", "CAR transgene copies in blood"),)


def antigen_drive(s: dict, p: dict, u: dict, m) -> object:
    """Antigen drive phi in [0, 1] (dimensionless)."""
    if "tgt_B" in s:
        # A Hill coefficient of 2 makes the drive vanish at the low B-cell levels left
        # during aplasia, so memory cells persist without re-expanding.
        load2 = (s["tgt_B"] + s["tgt_L"]) ** 2
        return load2 / (load2 + p["cart_K_antigen"] ** 2)
    return u["cart_expand"]


def derivatives(s: dict, p: dict, u: dict, m) -> dict:
    E, M, X = s["cart_E"], s["cart_M"], s["cart_X"]
    phi = antigen_drive(s, p, u, m)
    alpha, beta, fb = p["cart_alpha"], p["cart_beta"], p["cart_fb"]
    if "tgt_B" in s:
        to_memory = fb * (alpha - beta) * E
        # Exhaustion follows the CD19+ antigen load.
        to_exhausted = p["cart_k_exh"] * phi * E
    else:
        # CAR-T alone is the empirical model of Stein et al. 2019: memory forms in the
        # contraction phase only (phi = 0 after Tmax) and there is no antigen, hence no
        # exhausted state, so the solution after Tmax is Stein's closed form exactly.
        to_memory = fb * (alpha - beta) * E * (1.0 - phi)
        to_exhausted = 0.0 * E
    return {
        "cart_E": p["cart_rho"] * phi * E - alpha * E - to_exhausted,
        "cart_M": to_memory - beta * M,
        "cart_X": to_exhausted - p["cart_d_exh"] * X,
    }


def initial(p: dict, m) -> dict:
    return {"cart_E": 0.0, "cart_M": 0.0, "cart_X": 0.0}


def observables(s: dict, p: dict, m) -> dict:
    return {"cart_copies": s["cart_E"] + s["cart_M"] + s["cart_X"]}


def _infusion(ctx: EventContext, ev: EventRow) -> None:
    """Bolus into effectors: CAR+ cells/kg x ``cart_f_dose``; a duration of N >= 2 days
    splits the dose into N equal daily infusions. Without targets, the first infusion
    also opens the expansion phase ``cart_expand`` until first dose + ``cart_tmax``."""
    n_split = max(1, int(round(ev.duration))) if ev.duration >= 2 else 1
    for i in range(n_split):
        ctx.bolus(ev.day + i, "cart_E", ev.amount / n_split, "cart_f_dose")
    # Rows arrive sorted by day, so the first infusion handled is the earliest.
    if not ctx.has("tgt_B") and "cart_expand" not in ctx.periods:
        ctx.period("cart_expand", ev.day, ev.day + ctx.param("cart_tmax"))


EVENTS: dict[str, Handler] = {"cart_infusion": _infusion}
