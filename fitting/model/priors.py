"""Population priors of the free parameters and of the residual (assay) error.

Every free parameter ``q`` is carried on the log scale with a normal prior

    log q ~ Normal(log default, sd)

so ``q`` is log-normal around the literature default of :mod:`carthema.models`. The
spread ``sd`` (on the natural-log scale) is, in this order of preference:

1. the between-patient spread of :data:`carthema.models.virtual.BETWEEN_PATIENT_SD`
   (the population distribution virtual patients are drawn from, with its source);
2. otherwise derived from the parameter's plausible range: ``log(high / low) / 4``, so that
   the range ``[low, high]`` spans about +-2 SD (about 95 % prior mass), with at least
   :data:`MIN_RANGE_SD`.

Which parameters are free is a user choice; :data:`DEFAULT_FREE` gives sensible sets per
component set (the parameters that vary most between patients and that the usual data
inform). Structural parameters (those that place events in time) cannot be free.

Residual error: each analyte has a residual SD on its likelihood scale
(:data:`RESIDUALS`) with a half-normal prior; analytes with few quantified observations
use a fixed SD instead (see :func:`carthema.fitting.model.build.build_model`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carthema.data.errors import InputError
from carthema.models.model import COMPONENT_SETS, Model, get_model
from carthema.models.virtual import BETWEEN_PATIENT_SD

#: Lower bound of a range-derived prior SD (log scale).
MIN_RANGE_SD = 0.25


def _default_free(model: Model) -> tuple[str, ...]:
    return tuple(q.name for q in model.params if q.free and (not q.needs or model.has(q.needs)))


#: Default free parameters per component set: the parameters marked ``free`` on their
#: :class:`~carthema.models.parameters.Param` (those that vary between patients and that
#: the usual data inform), where the component set has what they act through.
DEFAULT_FREE: dict[str, tuple[str, ...]] = {
    name: _default_free(get_model(name)) for name in COMPONENT_SETS
}


@dataclass(frozen=True)
class Prior:
    """Log-normal prior of one parameter: ``log q ~ Normal(mu, sd)``."""

    name: str
    default: float
    unit: str
    mu: float
    sd: float
    source: str

    @property
    def median(self) -> float:
        return float(np.exp(self.mu))

    def interval(self, mass: float = 0.9) -> tuple[float, float]:
        """Central prior interval on the natural scale."""
        from scipy.stats import norm

        z = norm.ppf(0.5 + mass / 2.0)
        return float(np.exp(self.mu - z * self.sd)), float(np.exp(self.mu + z * self.sd))


@dataclass(frozen=True)
class Residual:
    """Residual error model of one analyte.

    Attributes
    ----------
    analyte:
        Model observable (data-layer analyte name).
    scale:
        Likelihood scale: ``"log"`` (log-normal, additive on the log scale), ``"logit"``
        (percentages of a whole, additive on the logit of value/100) or ``"identity"``
        (additive normal, for donor chimerism in %, which reaches 0 and 100 exactly).
    typical_sd:
        Typical residual SD on that scale; used as the fixed SD when an analyte has too
        few observations to estimate its own.
    prior_scale:
        Scale of the half-normal prior of the SD.
    floor:
        Small amount added to a prediction (and to a zero observation's detection limit
        logic) before taking logs, in the analyte's unit, so that a prediction of exactly
        zero (e.g. CAR-T copies before the infusion) has a finite log.
    zero_limit:
        Detection limit assumed for a reported value of exactly 0 on a log or logit scale
        (such a value is treated as below this limit, M3-censored, and said so).
    source:
        Where the typical SD comes from.
    """

    analyte: str
    scale: str
    typical_sd: float
    prior_scale: float
    floor: float
    zero_limit: float
    source: str


RESIDUALS: dict[str, Residual] = {
    r.analyte: r
    for r in (
        Residual(
            "cart_copies",
            "log",
            0.56,
            0.8,
            1e-2,
            1.0,
            "Stein et al. 2019 (CPT:PSP 8:285): log-scale residual SD 0.56 of tisagenlecleucel "
            "qPCR; half-normal(0.8) has its median near 0.56",
        ),
        Residual(
            "b_cells",
            "log",
            0.2,
            0.4,
            1e-3,
            1.0,
            "assumption: flow-cytometric CD19+ counts, CV about 20 %",
        ),
        Residual(
            "marrow_blasts",
            "logit",
            0.3,
            0.6,
            1e-4,
            0.5,
            "assumption: morphology blast % on the logit scale, SD 0.3; a reported 0 % is "
            "below 0.5 % (one cell in a 200-cell differential)",
        ),
        Residual(
            "anc",
            "log",
            0.12,
            0.3,
            1e-4,
            0.01,
            "assumption: analytical + day-to-day variability of ANC, CV about 12 %; "
            "analysers report ANC to 0.01 G/L",
        ),
        Residual(
            "platelets",
            "log",
            0.12,
            0.3,
            1e-2,
            1.0,
            "assumption: analytical + day-to-day variability of platelet counts, CV about 12 %",
        ),
        Residual(
            "chimerism_cd15",
            "identity",
            3.0,
            10.0,
            0.0,
            0.0,
            "assumption: STR/qPCR chimerism assays are accurate to a few % donor",
        ),
    )
}


def _prior_for(model: Model, name: str, sd_override: float | None = None) -> Prior:
    q = model.params[model.index("param", name)]
    if sd_override is not None:
        sd, source = float(sd_override), "user-given spread"
    elif name in BETWEEN_PATIENT_SD:
        sd, why = BETWEEN_PATIENT_SD[name]
        source = f"between-patient SD {sd:g} ({why})"
    else:
        sd = max(float(np.log(q.high / q.low) / 4.0), MIN_RANGE_SD)
        source = f"plausible range {q.low:g}-{q.high:g} {q.unit} taken as +-2 SD"
    return Prior(
        name=name,
        default=float(q.default),
        unit=q.unit,
        mu=float(np.log(q.default)),
        sd=sd,
        source=f"median: {q.source}; spread: {source}",
    )


def resolve_free(model: Model, free: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """Validated tuple of free parameter names (``None``: :data:`DEFAULT_FREE`).

    ``free`` may be a comma-separated string. Unknown names, duplicates and structural
    parameters raise :class:`InputError`.
    """
    if free is None:
        return DEFAULT_FREE[model.name]
    if isinstance(free, str):
        names = [s.strip() for s in free.split(",") if s.strip()]
    else:
        names = [str(s).strip() for s in free]
    if not names:
        raise InputError(
            "no free parameters given",
            column="free",
            fix=f"name at least one, e.g. {','.join(DEFAULT_FREE[model.name][:3])}",
        )
    seen: set[str] = set()
    for name in names:
        if name not in model.param_names:
            close = difflib.get_close_matches(name, model.param_names, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see `carthema params`"
            raise InputError(
                f"unknown free parameter '{name}' for the '{model.name}' model",
                column="free",
                fix=hint,
            )
        if model.params[model.index("param", name)].structural:
            raise InputError(
                f"parameter '{name}' is structural (it places events in time) and cannot be "
                "fitted by gradient-based samplers",
                column="free",
                fix="fix it at a value instead (it is held at its default)",
            )
        if name in seen:
            raise InputError(f"free parameter '{name}' is listed twice", column="free")
        seen.add(name)
    return tuple(names)


def prior_table(
    model: Model,
    free: str | Iterable[str] | None = None,
    sd: Mapping[str, float] | None = None,
) -> list[Prior]:
    """Priors of the free parameters (in the order given), with optional SD overrides."""
    names = resolve_free(model, free)
    sd = positive_by_free(sd, names, "prior spread")
    return [_prior_for(model, n, sd.get(n)) for n in names]


def positive_by_free(
    values: Mapping[str, float] | None, free: Sequence[str], what: str
) -> dict[str, float]:
    """``values`` (e.g. prior spreads, log scale) by free parameter, checked: each name a
    free parameter and each value positive and finite (else :class:`InputError` naming
    ``what``)."""
    values = dict(values or {})
    for name, value in values.items():
        if name not in free:
            raise InputError(
                f"{what} given for '{name}', which is not a free parameter",
                fix=f"free parameters are {', '.join(free)}",
            )
        if not (np.isfinite(value) and value > 0):
            raise InputError(f"{what} of '{name}' must be positive, got {value}")
    return values


def priors_frame(priors: Iterable[Prior]) -> pd.DataFrame:
    """The prior table as a data frame (name, unit, default, sd_log, 90 % interval, source)."""
    rows = []
    for p in priors:
        lo, hi = p.interval(0.9)
        rows.append(
            {
                "name": p.name,
                "unit": p.unit,
                "default": p.default,
                "sd_log": p.sd,
                "prior_q05": lo,
                "prior_q95": hi,
                "source": p.source,
            }
        )
    return pd.DataFrame(rows)
