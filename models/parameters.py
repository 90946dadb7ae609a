"""Parameter records: every model parameter has a unit, a default, a plausible range and a source.

Parameters are positive and are carried on the log scale by the fitting layer. The
plausible range (``low``, ``high``) is what the literature or clinical experience
supports; priors in :mod:`carthema.fitting` are centred on ``default``.
"""

from __future__ import annotations

from dataclasses import dataclass


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
