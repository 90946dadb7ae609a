"""What event handlers write into: boluses and periods, plus the handlers that several
components share.

Each component declares the event kinds that act on its states in a module-level
``EVENTS = {kind: handler}``; :func:`carthema.models.events.build_events` dispatches
every row of a patient's events table to the handler of its kind. A handler receives an
:class:`EventContext` and the :class:`EventRow` and calls ``ctx.bolus`` (a jump in one
state, optionally scaled by a parameter so that its sensitivity is exact) or
``ctx.period`` (a piecewise-constant input). It never names another component's states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.errors import InputError

BOLUS, SET_INPUT = 0, 1

#: Lymphodepleting drugs: (reference dose mg/m2/day, weight). A standard
#: fludarabine 30 mg/m2 + cyclophosphamide 500 mg/m2 day has intensity 1.
LD_REFERENCE: dict[str, tuple[float, float]] = {
    "fludarabine": (30.0, 0.5),
    "cyclophosphamide": (500.0, 0.5),
    "bendamustine": (90.0, 1.0),
}


@dataclass(frozen=True)
class EventRow:
    """One row of an events table, with the columns a handler may read."""

    day: float
    kind: str
    amount: float | None
    duration: float
    row: pd.Series

    @property
    def label(self) -> str:
        return f"{self.kind} on day {self.day:g}"

    def get(self, col: str, default=None):
        """Column value, or ``default`` when the column is absent or empty."""
        val = self.row.get(col, default)
        if val is None or val is pd.NA or (isinstance(val, float) and np.isnan(val)):
            return default
        return val

    def flag(self, col: str) -> bool:
        """A yes/no column read as a boolean (``yes``, ``true``, ``1``, ``y``)."""
        val = self.get(col, False)
        if isinstance(val, str):
            return val.strip().lower() in ("yes", "true", "1", "y")
        return bool(val)


@dataclass
class EventContext:
    """Collects solver events for one patient while handlers run (sorted afterwards)."""

    model: object
    p: np.ndarray
    rows: list[tuple[float, int, int, float, int]] = field(default_factory=list)
    periods: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def has(self, name: str) -> bool:
        return self.model.has(name)

    def param(self, name: str) -> float:
        return float(self.p[self.model.index("param", name)])

    def bolus(self, day: float, state: str, amount: float, scale: str | None = None) -> None:
        """Add ``amount`` (times parameter ``scale`` when given) to ``state`` at ``day``."""
        j = self.model.index("param", scale) if scale is not None else -1
        self.rows.append((float(day), BOLUS, self.model.index("state", state), float(amount), j))

    def period(self, name: str, start: float, end: float, level: float = 1.0) -> None:
        """Input ``name`` raised by ``level`` during [start, end) days (levels add up)."""
        self.periods.setdefault(name, []).append((float(start), float(end), float(level)))


Handler = Callable[[EventContext, EventRow], None]


def lymphodepletion(ctx: EventContext, ev: EventRow) -> None:
    """Input ``ld`` = weight x amount / reference dose of the drug, for ``duration`` days
    (1 day when no duration is given)."""
    drug = str(ev.get("drug", "")).strip().lower()
    if drug not in LD_REFERENCE:
        raise InputError(
            f"the model has no reference dose for lymphodepletion drug '{drug}' (day {ev.day:g})",
            column="drug",
            fix=f"the model knows {sorted(LD_REFERENCE)}; express the regimen as an "
            "equivalent dose of one of them",
        )
    ref, weight = LD_REFERENCE[drug]
    span = ev.duration if ev.duration > 0 else 1.0
    ctx.period("ld", ev.day, ev.day + span, weight * ev.amount / ref)


def treatment_period(input_name: str) -> Handler:
    """Handler of a treatment given for ``duration`` days that raises ``input_name`` to 1."""

    def handler(ctx: EventContext, ev: EventRow) -> None:
        if ev.duration <= 0:
            raise InputError(
                f"{ev.kind} period on day {ev.day:g} has no duration",
                column="duration",
                fix="give the number of days the treatment was given",
            )
        ctx.period(input_name, ev.day, ev.day + ev.duration, 1.0)

    handler.__doc__ = f"Input ``{input_name}`` = 1 during ``duration`` days."
    return handler
