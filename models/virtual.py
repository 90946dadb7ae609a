"""Synthetic virtual patients: parameters drawn from population distributions, simulated
with a realistic sampling schedule and assay noise, written in the data layer's formats.

They are the ground truth for parameter-recovery tests and the demo: the true parameters
are written beside the observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .compiled import numba_model
from .components import cart, haematopoiesis, targets
from .events import build_events
from .model import Model, get_model
from .scenarios import typical_course, with_boost
from .solve import Schedule, solve
from .solver_contract import SIMULATE

#: Between-patient spread (SD of log values) of the parameters that vary between
#: patients, from each :class:`~carthema.models.parameters.Param` (``spread``); the others
#: stay at their defaults.
BETWEEN_PATIENT_SD: dict[str, tuple[float, str]] = {
    q.name: (q.spread, q.spread_source)
    for comp in (cart, targets, haematopoiesis)
    for q in comp.PARAMS
    if q.spread is not None
}

#: Sampling days (since CAR-T) per analyte: ELIANA-like qPCR schedule and blood counts.
SCHEDULE: dict[str, tuple[float, ...]] = {
    "cart_copies": (1, 4, 7, 10, 14, 21, 28, 56, 90, 180),
    "anc": (-5, -3, 0, 2, 4, 7, 10, 14, 17, 21, 28, 35, 42, 56, 90, 120, 180),
    "platelets": (-5, -3, 0, 2, 4, 7, 10, 14, 17, 21, 28, 35, 42, 56, 90, 120, 180),
    "b_cells": (-5, 28, 90, 180),
    "marrow_blasts": (-7, 28, 90),
}
#: Assay noise (SD on the log scale) and lower limits of quantification.
LOG_SD = {"cart_copies": 0.56, "anc": 0.12, "platelets": 0.12, "b_cells": 0.2, "marrow_blasts": 0.3}
LLOQ = {"cart_copies": 50.0, "b_cells": 1.0, "marrow_blasts": 0.01}
UNITS = {
    "cart_copies": "copies/ug DNA",
    "anc": "G/L",
    "platelets": "G/L",
    "b_cells": "cells/uL",
    "marrow_blasts": "%",
    "chimerism_cd15": "% donor",
}
COMPARTMENT = {"marrow_blasts": "marrow"}


@dataclass(frozen=True)
class VirtualCohort:
    """Observations, events and true parameters of virtual patients."""

    observations: pd.DataFrame
    events: pd.DataFrame
    parameters: pd.DataFrame

    def write(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.observations.to_csv(folder / "observations.csv", index=False)
        self.events.to_csv(folder / "events.csv", index=False)
        self.parameters.to_csv(folder / "parameters.csv", index=False)


def draw_parameters(model: Model, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` parameter vectors: log-normal around the defaults with
    :data:`BETWEEN_PATIENT_SD`, clipped to each parameter's plausible range."""
    p = np.tile(model.default_params(), (n, 1))
    for name, (sd, _) in BETWEEN_PATIENT_SD.items():
        if name in model.param_names:
            j = model.index("param", name)
            q = model.params[j]
            p[:, j] = np.clip(p[:, j] * np.exp(sd * rng.standard_normal(n)), q.low, q.high)
    return p


#: Recovery phenotypes of the neutrophil course without a boost, in the order the
#: cohort's first patients take them (:data:`PHENOTYPE_SLOTS`).
PHENOTYPES = ("quick", "intermittent", "aplastic")
#: ANC threshold of the phenotypes (G/L): severe neutropenia below it.
ANC_SEVERE = 0.5
#: Highest CAR-T level (copies/ug DNA) at which the engraftment window allows a boost
#: (the default ``cart_limit`` of :func:`carthema.clinical.plans.scan_window`).
CART_LIMIT = 1000.0


@dataclass(frozen=True)
class Slot:
    """What one patient of the cohort must be: its phenotype without a boost; whether
    it must meet the boost rule (True), must not receive a boost (False) or either
    (None); and ``open_days``: at least that many days on or after day 21 with ANC <
    0.5 G/L and CAR-T below :data:`CART_LIMIT` (days on which a boost is allowed and
    the patient is still neutropenic without it)."""

    phenotype: str
    boost: bool | None = None
    open_days: int = 0
    #: Every varying parameter within this many SDs of :data:`BETWEEN_PATIENT_SD` from
    #: its default (the fitting prior's spread): a patient the prior does not treat as
    #: an outlier; None: any draw.
    max_z: float | None = None


#: The cohort's first patients, in order. VP003 is an aplastic patient exempt from the
#: boost with four weeks of neutropenia left once CAR-T is below the window's limit
#: (the demo asks when a boost would help); VP004 is a biphasic patient still
#: neutropenic on day 28, so the cohort keeps a boosted patient with chimerism data.
#: Patients past these slots take the first draw with any of :data:`PHENOTYPES`.
PHENOTYPE_SLOTS: tuple[Slot, ...] = (
    Slot("quick"),
    Slot("intermittent"),
    Slot("aplastic", boost=False, open_days=28, max_z=1.96),
    Slot("intermittent", boost=True),
)
#: Patients who never receive a boost, whatever their course (the demo's question).
NO_BOOST = ("VP003",)
#: Candidate draws searched per patient before the generator gives up (the aplastic slot
#: takes about one draw in 6000 with this population: up to a minute of CPU).
MAX_TRIES = 50_000


def recovery_phenotype(days: np.ndarray, anc: np.ndarray) -> str:
    """Recovery phenotype of one daily ANC course without a boost (``days`` since CAR-T,
    daily over at least 0-60; ``anc`` in G/L), after the quick / intermittent / aplastic
    phenotypes of Rejeski et al. 2021 (CAR-HEMATOTOX):

    - ``"aplastic"``: ANC < 0.5 G/L on more than half of days 21-60;
    - ``"intermittent"``: not aplastic, and biphasic over days 0-60: below 0.5, then at
      or above 0.5 on >= 3 consecutive days, then below 0.5 again (the population's
      ``p_biphasic``, :mod:`carthema.clinical.population.statistics`);
    - ``"quick"``: neither, and ANC >= 0.5 G/L on every day 21-60 (recovered for good
      within three weeks);
    - ``"unclassified"``: none of these (a single recovery after day 21 or a late fall).
    """
    from carthema.clinical.population.statistics import _biphasic

    days = np.asarray(days, dtype=float)
    anc = np.asarray(anc, dtype=float)
    late = anc[(days >= 21) & (days <= 60)]
    if (late < ANC_SEVERE).sum() > late.size / 2:
        return "aplastic"
    if _biphasic(anc[None, (days >= 0) & (days <= 60)])[0]:
        return "intermittent"
    if (late >= ANC_SEVERE).all():
        return "quick"
    return "unclassified"


def make_virtual_cohort(
    n: int = 5,
    *,
    seed: int = 2026,
    components: str = "full",
    boost_if_anc_below: float = 0.5,
    boost_day: float = 42.0,
    boost_dose: float = 5e6,
) -> VirtualCohort:
    """Simulate ``n`` virtual patients after a tisagenlecleucel-like course.

    Each patient gets a CAR-T dose drawn from 0.5-5e6 CAR+ cells/kg. A patient whose
    simulated ANC is still below ``boost_if_anc_below`` G/L on day 28 receives a
    CD34+-selected allogeneic stem-cell boost of ``boost_dose``/kg on ``boost_day``, as a
    clinician would, except the patients of :data:`NO_BOOST`. Values below an assay's
    LLOQ are reported as BLQ with no value.

    Patients are chosen by a seeded search over draws (parameters and CAR-T dose): patient
    ``i`` is the next draw whose course without a boost has the phenotype of slot ``i`` of
    :data:`PHENOTYPE_SLOTS` (:func:`recovery_phenotype`), so the cohort holds each
    phenotype whatever the model's parameter values. ``parameters`` carries a
    ``phenotype`` column (the same for all of a patient's rows).
    """
    rng = np.random.default_rng(seed)
    model = get_model(components)
    mod = numba_model(model)
    obs_rows, ev_frames, par_rows = [], [], []
    for i in range(n):
        pid = f"VP{i + 1:03d}"
        slot = PHENOTYPE_SLOTS[i] if i < len(PHENOTYPE_SLOTS) else None
        p, events, traj_t, obs, phenotype = _search(model, mod, rng, pid, slot, boost_if_anc_below)
        boosted = slot.boost if slot is not None else None
        if boosted is None:
            boosted = "anc" in model.obs_names and _needs_boost(
                model, traj_t, obs, boost_if_anc_below
            )
        if boosted and pid not in NO_BOOST:
            events = with_boost(events, boost_day, boost_dose, source="allogeneic")
            traj_t, obs = _solve(model, mod, p, events)
        ev_frames.append(events)
        schedule = dict(SCHEDULE)
        if (events["kind"] == "stem_cell_boost").any():
            schedule["chimerism_cd15"] = tuple(boost_day + d for d in (7, 14, 28, 56))
        for analyte, days in schedule.items():
            if analyte not in model.obs_names:
                continue
            j = model.index("obs", analyte)
            for day in days:
                true = float(obs[traj_t == float(day), j][0])
                obs_rows.append(_observe(pid, float(day), analyte, true, rng))
        for q, value in zip(model.params, p, strict=True):
            par_rows.append(
                {
                    "patient": pid,
                    "name": q.name,
                    "value": value,
                    "unit": q.unit,
                    "phenotype": phenotype,
                }  # fmt: skip
            )
    return VirtualCohort(
        pd.DataFrame(obs_rows),
        pd.concat(ev_frames, ignore_index=True),
        pd.DataFrame(par_rows),
    )


def _needs_boost(model: Model, t: np.ndarray, obs: np.ndarray, below: float) -> bool:
    """The boost rule: ANC still below ``below`` G/L on day 28 (no boost yet)."""
    return bool(obs[t == 28.0, model.index("obs", "anc")][0] < below)


def _max_z(model: Model, p: np.ndarray) -> float:
    """Largest |log(value / default)| / SD over the parameters of :data:`BETWEEN_PATIENT_SD`."""
    d = model.default_params()
    z = [
        abs(np.log(p[model.index("param", n)] / d[model.index("param", n)])) / sd
        for n, (sd, _) in BETWEEN_PATIENT_SD.items()
        if n in model.param_names
    ]
    return max(z, default=0.0)


def _search(model: Model, mod, rng, pid: str, slot: Slot | None, below: float):
    """The next draw (parameters, CAR-T dose) whose course without a boost fills ``slot``
    (None: any of :data:`PHENOTYPES`); ``below``: the boost rule's ANC (G/L, day 28)."""
    if "anc" not in model.obs_names:  # a model without neutrophils has no phenotype
        slot = None
    for _ in range(MAX_TRIES):
        p = draw_parameters(model, 1, rng)[0]
        dose = float(np.exp(rng.uniform(np.log(0.5e6), np.log(5e6))))
        events = typical_course(patient=pid, cart_dose=round(dose, -4))
        traj_t, obs = _solve(model, mod, p, events)
        if "anc" not in model.obs_names:
            return p, events, traj_t, obs, ""
        anc = obs[:, model.index("obs", "anc")]
        phenotype = recovery_phenotype(traj_t, anc)
        if slot is None:
            if phenotype in PHENOTYPES:
                return p, events, traj_t, obs, phenotype
            continue
        if phenotype != slot.phenotype:
            continue
        if slot.boost is True and not _needs_boost(model, traj_t, obs, below):
            continue
        if slot.max_z is not None and _max_z(model, p) > slot.max_z:
            continue
        if slot.open_days:
            cart = obs[:, model.index("obs", "cart_copies")]
            open_days = (traj_t >= 21) & (anc < ANC_SEVERE) & (cart < CART_LIMIT)
            if open_days.sum() < slot.open_days:
                continue
        return p, events, traj_t, obs, phenotype
    raise RuntimeError(
        f"no draw in {MAX_TRIES} fills {pid}'s slot {slot}: the population's spread "
        "(BETWEEN_PATIENT_SD) no longer produces it"
    )


def _solve(model: Model, mod, p: np.ndarray, events: pd.DataFrame):
    # ``mod`` (the compiled module, loaded once by the caller) is reached through solve().
    ev = build_events(model, events, p)
    t = np.arange(-7.0, 181.0, 1.0)
    sol = solve(model, p, Schedule.from_events(model, ev, t, t0=t[0]), SIMULATE)
    status, obs = sol.status, sol.obs
    if status != 0:
        raise RuntimeError(f"virtual patient simulation failed with status {status}")
    return t, obs


def _observe(pid: str, day: float, analyte: str, true: float, rng: np.random.Generator) -> dict:
    row = {
        "patient": pid,
        "day": day,
        "analyte": analyte,
        "unit": UNITS[analyte],
        "compartment": COMPARTMENT.get(analyte, "blood"),
        "lloq": LLOQ.get(analyte, np.nan),
        "blq": False,
    }
    if analyte == "chimerism_cd15":
        value = float(np.clip(true + 2.0 * rng.standard_normal(), 0.0, 100.0))
    elif UNITS[analyte] == "%":
        # Noise on the logit scale keeps a percentage inside (0, 100).
        frac = min(max(true / 100.0, 1e-12), 1.0 - 1e-12)
        logit = np.log(frac / (1.0 - frac)) + LOG_SD[analyte] * rng.standard_normal()
        value = 100.0 / (1.0 + float(np.exp(-logit)))
    else:
        value = max(true, 1e-12) * float(np.exp(LOG_SD[analyte] * rng.standard_normal()))
    lloq = LLOQ.get(analyte)
    if lloq is not None and value < lloq:
        row.update(value=np.nan, blq=True)
    else:
        row["value"] = float(f"{value:.4g}")
    return row


if __name__ == "__main__":  # python -m carthema.models.virtual OUT [N] [SEED]
    import sys

    out = sys.argv[1]
    cohort = make_virtual_cohort(
        int(sys.argv[2]) if len(sys.argv) > 2 else 5,
        seed=int(sys.argv[3]) if len(sys.argv) > 3 else 2026,
    )
    cohort.write(out)
    print(f"wrote {out}")
