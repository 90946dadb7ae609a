"""What a virtual trial is asked: boost policies (:class:`Policy`, read from a policy CSV by
:func:`read_policies`) and where its virtual patients come from (:func:`trial_source`,
:func:`read_population`: the command-line population argument). Re-exported by
:mod:`carthema.clinical.trial`, which runs the trial."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.data.boost import GRAFT_COLUMNS, BoostPlan, GraftSource
from carthema.data.errors import InputError
from carthema.data.events import parse_yes_no

#: The default patient source of :func:`carthema.clinical.trial.run_trial`: the
#: calibrated virtual population.
CALIBRATED = "calibrated"

POLICY_COLUMNS = (
    "name",
    "trigger_day",
    "anc_below",
    "plt_below",
    "boost_day",
    "dose",
    *GRAFT_COLUMNS,
)


@dataclass(frozen=True)
class Policy:
    """Give ``graft`` (a :class:`~carthema.data.boost.BoostPlan`: its day is the boost
    day) when, on ``trigger_day``, ANC < ``anc_below`` G/L or platelets < ``plt_below``
    G/L. A policy without a graft never boosts."""

    name: str
    trigger_day: float = 28.0
    anc_below: float | None = 0.5
    plt_below: float | None = None
    graft: BoostPlan | None = None


def read_policies(path: str | Path) -> list[Policy]:
    """Policies from a CSV with columns :data:`POLICY_COLUMNS` (empty dose: no boost).

    The graft columns mean what the events table's ``stem_cell_boost`` columns and the
    commands' graft options mean (an empty ``source``/``cd34_selected``: the default
    graft of :class:`~carthema.data.boost.BoostPlan`, unselected autologous cells)."""
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=str(path), fix="check the path")
    df = pd.read_csv(path)
    missing = [c for c in ("name", "trigger_day", "boost_day", "dose") if c not in df.columns]
    unknown = [c for c in df.columns if c not in POLICY_COLUMNS]
    for what, columns in (("missing required column", missing), ("unknown column", unknown)):
        if columns:
            raise InputError(
                what,
                file=str(path),
                column=columns[0],
                fix=f"a policy file has columns {', '.join(POLICY_COLUMNS)}",
            )
    default = BoostPlan()
    out = []
    for i, row in enumerate(df.itertuples(index=False), start=1):

        def num(col, default=None, row=row, i=i):
            v = getattr(row, col, default)
            if v is None or (isinstance(v, float) and np.isnan(v)):
                return default
            try:
                return float(v)
            except (TypeError, ValueError):
                raise InputError(
                    f"'{v}' is not a number",
                    file=str(path),
                    row=i,
                    column=col,
                    fix="give a number or leave it empty",
                ) from None

        source = getattr(row, "source", None)
        if source is None or (isinstance(source, float) and np.isnan(source)) or source == "":
            source = default.source
        source = GraftSource.parse(source, file=str(path), row=i)
        sel = parse_yes_no(
            getattr(row, "cd34_selected", None),
            file=str(path),
            row=i,
            column="cd34_selected",
            default=default.cd34_selected,
        )
        graft = None
        if num("dose") is not None:
            if num("boost_day") is None:
                raise InputError("a policy with a dose needs its boost day", file=str(path),
                                 row=i, column="boost_day", fix="give the boost day")  # fmt: skip
            try:
                graft = BoostPlan(
                    num("boost_day"), num("dose"), source, sel, num("cd3_per_kg"), num("mnc_per_kg")
                ).check()
            except InputError as e:
                raise InputError(e.problem, file=str(path), row=i, column=e.column,
                                 fix=e.fix) from None  # fmt: skip
        out.append(Policy(str(row.name), num("trigger_day"), num("anc_below"),
                          num("plt_below"), graft))  # fmt: skip
    return out


def trial_source(pop: str | None) -> dict:
    """``run_trial`` keyword arguments for a command-line population argument: None or
    ``"calibrated"`` (the calibrated virtual population, the default), a population CSV
    (the form of :func:`carthema.clinical.population.virtual.load_population`), ``"prior"`` (the
    fitting priors) or a population-fit JSON (:func:`read_population`)."""
    if pop is None or pop == CALIBRATED:
        return {"population": CALIBRATED}
    if pop == "prior":
        return {"population": "prior"}
    if pop.lower().endswith(".csv"):
        if not Path(pop).exists():
            raise InputError(
                "population file not found",
                file=pop,
                fix='give "calibrated", "prior", a population CSV or a population JSON',
            )
        return {"population": pop}
    mu, omega = read_population(pop)
    return {"mu": mu, "omega": omega}


def read_population(pop: str) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """``"prior"`` (population priors) or a JSON file ``{"mu": {name: log-mean},
    "omega": {name: between-patient SD of log p}}``, e.g. from a population fit."""
    if pop == "prior":
        return None, None
    import json

    path = Path(pop)
    if not path.exists():
        raise InputError(
            "population file not found",
            file=pop,
            fix='give "prior" or a JSON file with "mu" and "omega"',
        )
    try:
        data = json.loads(path.read_text())
        return dict(data["mu"]), dict(data.get("omega", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(
            f"not a population file ({exc})",
            file=pop,
            fix='write {"mu": {name: value}, "omega": {name: value}}',
        ) from None
