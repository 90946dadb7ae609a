"""Parameter records: every model parameter has a unit, a default, a plausible range and a source.

Parameters are positive and are carried on the log scale by the fitting layer. The
plausible range (``low``, ``high``) is what the literature or clinical experience
supports; priors in :mod:`carthema.fitting` are centred on ``default``.

A parameter that varies between patients has up to two log-normal spreads, on purpose
different, each with its source:

- ``spread`` (and ``spread_source``): the *fitting prior's* between-patient SD of the
  log value around ``default``; narrow enough to regularise a single patient's fit
  (:mod:`carthema.fitting.model.priors`, :data:`carthema.models.virtual.BETWEEN_PATIENT_SD`);
- ``plausible`` (:class:`Plausible`): the *plausible population* that the calibration of
  :mod:`carthema.clinical.population.calibrate` weights to the published natural
  history, and that graft draws use (:mod:`carthema.clinical.population.graft`); wide on
  purpose, around its own median where the literature gives one. Its correlations with
  the latent reserve and inflammation traits live in
  :data:`carthema.clinical.population.virtual.TRAITS`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Plausible:
    """Log-normal distribution of a parameter in the plausible population: median (in the
    parameter's unit; ``None``: the parameter's default, or the product or disease preset's
    value where one sets it), SD of the natural log, and where both come from."""

    median: float | None
    sd: float
    source: str = "assumption: wide plausible range around the default"

    def __post_init__(self) -> None:
        if self.sd <= 0 or (self.median is not None and self.median <= 0):
            raise ValueError(f"plausible spread needs sd > 0 and median > 0, got {self}")


@dataclass(frozen=True)
class Param:
    """One model parameter.

    Attributes
    ----------
    name:
        Identifier used in parameter files and in the API (``cart_alpha``).
    default:
        Typical value, in ``unit``.
    unit:
        Physical unit of the value (``1/d``, ``G/L``, ``copies/ug per cells/kg``).
    low, high:
        Plausible range of individual values, same unit.
    source:
        Where the default comes from: a publication, or ``calibrated`` with what it
        was calibrated to, or ``assumption`` with its reasoning.
    description:
        What the parameter does, in plain words.
    structural:
        True for parameters that place events in time (they cannot be fitted by
        gradient methods because event times are not differentiated).
    spread, spread_source:
        Between-patient spread (SD of the natural log of the value) of a parameter that
        varies between patients, and where it comes from; ``None`` for parameters held
        at their default in virtual patients. The fitting prior uses it as its SD.
    plausible:
        The parameter's distribution in the plausible population (:class:`Plausible`;
        see the module docstring for how it differs from ``spread``); ``None`` for
        parameters the plausible population holds at their default.
    free:
        Fitted by default (``carthema fit`` without ``--free``).
    needs:
        A state the parameter acts through; the parameter is free by default only in
        component sets that have it (``late_supp`` acts through CAR-T inflammation).
    """

    name: str
    default: float
    unit: str
    low: float
    high: float
    source: str
    description: str
    structural: bool = False
    spread: float | None = None
    spread_source: str = ""
    free: bool = False
    needs: str = ""
    plausible: Plausible | None = None

    def __post_init__(self) -> None:
        if not (0 < self.low <= self.default <= self.high):
            raise ValueError(
                f"parameter {self.name}: need 0 < low <= default <= high, got "
                f"{self.low}, {self.default}, {self.high}"
            )


@dataclass(frozen=True)
class State:
    """One state variable: name, unit, typical magnitude (sets the absolute tolerance)."""

    name: str
    unit: str
    scale: float
    description: str


@dataclass(frozen=True)
class Observable:
    """A model output comparable with data: ``analyte`` names the data-layer analyte."""

    name: str
    unit: str
    description: str
