"""A stem-cell boost's whole vocabulary: the graft source and the boost plan.

One :class:`BoostPlan` is what every layer means by "a boost": the events validator reads
one from a ``stem_cell_boost`` row, the model's boost handler seeds the states from one,
the CLI graft options build one, and the clinical questions (window, predict-boost,
virtual-trial policies) simulate one. The CD3+ rule (an unselected graft from a new donor
brings T cells; given by its CD3+ dose or estimated from its MNC dose; refused without
either) is written here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum

from carthema.data.errors import InputError

#: CD3+ fraction of mononuclear cells in a mobilised apheresis product, used only when a
#: graft's MNC dose is given without its CD3+ dose (assumption: T cells are about a
#: quarter of the mononuclear cells; the estimate is reported as a note).
CD3_FRACTION_OF_MNC = 0.25


class GraftSource(StrEnum):
    """Where a graft's cells come from."""

    #: The patient's own cells (stored or newly mobilised).
    AUTOLOGOUS = "autologous"
    #: The donor of an earlier allogeneic transplant (the host is tolerant of it).
    PRIOR_DONOR = "prior-donor"
    #: A new allogeneic donor (alloreactive both ways).
    ALLOGENEIC = "allogeneic"

    @classmethod
    def parse(
        cls, value: object, *, file: str | None = None, row: int | None = None
    ) -> GraftSource:
        """The source a user wrote (any case; ``prior_donor``, ``prior donor`` and
        ``auto`` too), or an :class:`InputError` naming the accepted words."""
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        text = _ALIASES.get(text, text)
        for member in cls:
            if member.value == text:
                return member
        raise InputError(
            f"unknown graft source '{value}'",
            file=file,
            row=row,
            column="source",
            fix="use autologous, prior-donor (the donor of an earlier allogeneic transplant) "
            "or allogeneic (a new donor)",
        )


_ALIASES = {"prior_donor": "prior-donor", "prior donor": "prior-donor", "auto": "autologous"}
#: The words accepted in a ``source`` column or ``--source`` option.
SOURCES: tuple[str, ...] = tuple(s.value for s in GraftSource)
#: The graft's columns in an events table's ``stem_cell_boost`` row (and in a
#: virtual-trial policy file), in order: what a :class:`BoostPlan` holds besides its day
#: and CD34+ dose (``amount``).
GRAFT_COLUMNS: tuple[str, ...] = ("source", "cd34_selected", "cd3_per_kg", "mnc_per_kg")


@dataclass(frozen=True)
class BoostPlan:
    """A stem-cell boost: a graft on a day.

    Attributes
    ----------
    day:
        Boost day (days since the first CAR-T infusion); None: no boost (or, for a window
        scan, the graft whose day is still to be chosen; see :meth:`on`).
    cd34_per_kg:
        CD34+ cells/kg body weight.
    source:
        :class:`GraftSource` (a written word is parsed).
    cd34_selected:
        CD34-selected graft (T-cell depleted).
    cd3_per_kg:
        CD3+ T cells/kg, when known.
    mnc_per_kg:
        Mononuclear cells/kg, when known (gives the CD3+ dose of an unselected new-donor
        graft through :data:`CD3_FRACTION_OF_MNC` when ``cd3_per_kg`` is not given).

    The default graft is unselected autologous cells at 3e6 CD34+/kg (needs no CD3+ dose).
    """

    day: float | None = None
    cd34_per_kg: float = 3e6
    source: GraftSource = GraftSource.AUTOLOGOUS
    cd34_selected: bool = False
    cd3_per_kg: float | None = None
    mnc_per_kg: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", GraftSource.parse(self.source))
        object.__setattr__(self, "cd34_selected", bool(self.cd34_selected))
        for name in ("day", "cd34_per_kg", "cd3_per_kg", "mnc_per_kg"):
            v = getattr(self, name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                if name == "cd34_per_kg":
                    raise InputError("a boost needs its CD34+ dose", column=name,
                                     fix="give CD34+ cells/kg, e.g. 3e6 (--dose 3e6)")  # fmt: skip
                object.__setattr__(self, name, None)
                continue
            v = float(v)
            if name != "day" and not (math.isfinite(v) and v >= 0):
                raise InputError(f"{name} must be a number of cells/kg >= 0, got {v:g}",
                                 column=name, fix="e.g. 3e6 CD34+/kg, 1e7 CD3+/kg")  # fmt: skip
            object.__setattr__(self, name, v)

    @property
    def is_boost(self) -> bool:
        """Whether the plan boosts at all (a day is set)."""
        return self.day is not None

    def on(self, day: float | None) -> BoostPlan:
        """The same graft on ``day``."""
        return replace(self, day=None if day is None else float(day))

    @property
    def label(self) -> str:
        if self.day is None:
            return "no boost"
        sel = "selected" if self.cd34_selected else "unselected"
        return f"{self.source} {sel} {self.cd34_per_kg:.3g}/kg on day {self.day:g}"

    def t_cells(self, where: str = "the boost") -> tuple[float, str | None]:
        """CD3+ T cells/kg the graft brings into the model, and a note when estimated.

        Only a new donor's graft brings T cells (a tolerant host and an autologous graft
        have no alloreactivity: 0). A CD34-selected graft without a stated CD3+ dose
        brings none; an unselected one without it is estimated from its MNC dose as
        :data:`CD3_FRACTION_OF_MNC` x MNC (noted), and refused without either
        (graft-versus-host effects are never guessed from the CD34+ dose). ``where``
        names the boost in notes and the refusal.
        """
        if self.source is not GraftSource.ALLOGENEIC:
            return 0.0, None
        if self.cd3_per_kg is not None:
            return self.cd3_per_kg, None
        if self.cd34_selected:
            return 0.0, None
        if self.mnc_per_kg is not None:
            cd3 = CD3_FRACTION_OF_MNC * self.mnc_per_kg
            return cd3, (
                f"{where}: unselected graft without a CD3+ dose; estimated "
                f"{CD3_FRACTION_OF_MNC:g} of {self.mnc_per_kg:.3g} MNC/kg = {cd3:.3g} CD3+/kg"
            )
        raise InputError(
            f"{where}: an unselected graft from a new allogeneic donor needs its CD3+ dose "
            "(graft-versus-host effects are not guessed from the CD34+ dose)",
            column="cd3_per_kg",
            fix="give its CD3+ cells/kg (cd3_per_kg in an events file, --cd3 on the command "
            "line) or its MNC/kg (mnc_per_kg, --mnc), or mark it CD34-selected "
            "(cd34_selected=yes, --selected)",
        )

    def check(self) -> BoostPlan:
        """The plan itself, once its CD3+ rule holds (:meth:`t_cells` refuses)."""
        self.t_cells()
        return self


#: The graft every command and function assumes when none is given (unselected
#: autologous cells, 3e6 CD34+/kg; no day: the day is chosen or scanned).
DEFAULT_GRAFT = BoostPlan()
