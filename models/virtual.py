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
    clinician would. Values below an assay's LLOQ are reported as BLQ with no value.
    """
    rng = np.random.default_rng(seed)
    model = get_model(components)
    mod = numba_model(model)
    P = draw_parameters(model, n, rng)
    obs_rows, ev_frames, par_rows = [], [], []
    for i in range(n):
        pid = f"VP{i + 1:03d}"
        p = P[i]
        dose = float(np.exp(rng.uniform(np.log(0.5e6), np.log(5e6))))
        events = typical_course(patient=pid, cart_dose=round(dose, -4))
        traj_t, obs = _solve(model, mod, p, events)
        if "anc" in model.obs_names and obs[traj_t == 28.0, model.index("obs", "anc")][0] < (
            boost_if_anc_below
        ):
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
            par_rows.append({"patient": pid, "name": q.name, "value": value, "unit": q.unit})
    return VirtualCohort(
        pd.DataFrame(obs_rows),
        pd.concat(ev_frames, ignore_index=True),
        pd.DataFrame(par_rows),
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
