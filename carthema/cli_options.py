"""Options that several commands take, as shared ``Annotated`` aliases: one name, one
help text and one default per option across ``fit``, ``fit-cohort``, ``fit-population``,
``simulate`` and ``window``.

Use as ``def cmd(components: Components = "full", draws: Draws = 1000): ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from carthema.data import boost
from carthema.data import plausibility as P
from carthema.data.boost import BoostPlan

#: Component sets and samplers (kept here so that ``--help`` needs no heavy import).
COMPONENT_SETS = ("full", "cart", "cart_targets", "haematopoiesis")
SAMPLERS = ("nutpie", "nutpie-jax", "numpyro", "pymc", "map")


def _one_of(choices: tuple[str, ...]):
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"'{value}' is not one of {', '.join(choices)}")
        return value

    return check


#: Callbacks that refuse an unknown component set or sampler (one line, exit 2).
check_components = _one_of(COMPONENT_SETS)
check_sampler = _one_of(SAMPLERS)

#: Component set of the model.
Components = Annotated[
    str,
    typer.Option(
        "--components",
        callback=check_components,
        help="Model components: full, cart, cart_targets or haematopoiesis.",
    ),
]
#: Free parameters of a fit.
Free = Annotated[
    str | None,
    typer.Option("--free", help="Comma-separated free parameters (default: per component set)."),
]
#: Sampler of a fit.
Sampler = Annotated[
    str,
    typer.Option(
        "--sampler",
        callback=check_sampler,
        help="nutpie (default), nutpie-jax, numpyro, pymc, or map (seconds; screening only).",
    ),
]
#: Draws kept per chain.
Draws = Annotated[int, typer.Option("--draws", min=1, help="Draws per chain kept.")]
#: Tuning steps per chain.
Tune = Annotated[int, typer.Option("--tune", min=0, help="Tuning steps per chain.")]
#: Number of chains.
Chains = Annotated[int, typer.Option("--chains", min=1, help="Number of chains.")]
#: Random seed (drawn and recorded when not given).
Seed = Annotated[
    int | None, typer.Option("--seed", help="Random seed (drawn and printed when not given).")
]
#: Cores.
Cores = Annotated[
    int | None,
    typer.Option("--cores", min=1, help="Chains run in parallel (default: min(chains, CPUs))."),
]
#: Replace a non-empty --out folder that is not this command's own earlier output.
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        metavar="",
        help="Replace a non-empty --out folder that is not this command's earlier output "
        "(never a folder holding the inputs).",
    ),
]
#: The observations a fit command fits (one patient's or a cohort's), or a bundled set.
Observations = Annotated[
    str,
    typer.Argument(help="Observations table (CSV or Parquet), or example:NAME for a bundled set."),
]
#: The output folder of a command that writes one.
Out = Annotated[Path, typer.Option("--out", help="Output folder.")]
#: Events table.
Events = Annotated[Path | None, typer.Option("--events", help="Events table (CSV or Parquet).")]
#: Events table or a bundled data set.
EventsOrExample = Annotated[
    str | None,
    typer.Option(
        "--events", help="Events table (CSV or Parquet), or example:NAME for a bundled set."
    ),
]

# ---------------------------------------------------------------------------------------
# One meaning per name across every command (issue 20, item 6)
# ---------------------------------------------------------------------------------------
#: The graft every command assumes when none is given: the default
#: :class:`~carthema.data.boost.BoostPlan`, unselected autologous cells (needs no CD3+
#: dose; a CD34+ dose of 3e6/kg, the usual boost dose).
DEFAULT_GRAFT = boost.DEFAULT_GRAFT
DEFAULT_SOURCE = DEFAULT_GRAFT.source.value
DEFAULT_SELECTED = DEFAULT_GRAFT.cd34_selected
DEFAULT_DOSE = DEFAULT_GRAFT.cd34_per_kg
#: Graft source.
Source = Annotated[
    str,
    typer.Option(
        "--source",
        help="Graft: autologous (default), prior-donor (the donor of an earlier allogeneic "
        "transplant) or allogeneic (a new donor; unselected needs --cd3).",
    ),
]
#: CD34 selection of the graft.
Selected = Annotated[
    bool,
    typer.Option(
        "--selected/--unselected", metavar="", show_default=False,
        help="CD34-selected graft (default: unselected).",
    ),
]  # fmt: skip
#: CD34+ dose of the graft.
Dose = Annotated[float, typer.Option("--dose", help="CD34+ cells/kg of the graft, e.g. 3e6.")]
#: CD3+ dose of the graft.
Cd3 = Annotated[
    float | None,
    typer.Option("--cd3", help="CD3+ cells/kg of the graft (needed for an unselected new donor)."),
]
#: MNC dose of the graft.
Mnc = Annotated[
    float | None,
    typer.Option("--mnc", help="MNC/kg of the graft, when its CD3+ dose is not known."),
]


def graft(
    dose: float,
    source: str,
    selected: bool,
    cd3: float | None,
    mnc: float | None,
    day: float | None = None,
) -> BoostPlan:
    """The :class:`~carthema.data.boost.BoostPlan` of the graft options (--dose, --source,
    --selected, --cd3, --mnc), on ``day``: what every command with a graft simulates.

    The cell doses are refused outside the plausible ranges an events file's
    ``stem_cell_boost`` row is held to (a dose written in millions, ``--dose 3`` for
    3e6/kg, is the usual slip)."""
    check_graft_numbers(dose, cd3, mnc)
    return BoostPlan(day, dose, source, selected, cd3, mnc)


def check_graft_numbers(dose: float, cd3: float | None, mnc: float | None) -> None:
    """Refuse graft doses (cells/kg) outside the plausible ranges an events file's
    ``stem_cell_boost`` row is held to, one line naming the option and the likely slip."""
    cd34 = P.EVENT_RANGES[("stem_cell_boost", "cells/kg")]
    P.check_option_value("--dose", dose, cd34, candidates=("10^6 cells/kg",), what="CD34+/kg")
    cells = P.Range(0.0, P.GRAFT_CELLS_LIMIT, "cells/kg", 1e7, P.GRAFT_CELLS_REASON)
    P.check_option_value("--cd3", cd3, cells, what="CD3+ cells/kg")
    P.check_option_value("--mnc", mnc, cells, what="MNC/kg")


#: The day of the decision.
Today = Annotated[
    float | None,
    typer.Option(
        "--today",
        help="The day of the decision (days since CAR-T); default: the last observation. "
        "No boost day before it is scanned or recommended.",
    ),
]
#: A PNG to write.
Plot = Annotated[Path | None, typer.Option("--plot", help="Write the plot (PNG) to this path.")]
#: A JSON file to write.
Json = Annotated[Path | None, typer.Option("--json", help="Write the result as JSON to this path.")]
#: NUTS step-size adaptation target.
TargetAccept = Annotated[
    float,
    typer.Option(
        "--target-accept", min=0.5, max=0.999,
        help="NUTS target acceptance rate; raise it (e.g. 0.95) when there are divergences.",
    ),
]  # fmt: skip
#: Particles of a sequential Monte Carlo sampler.
Particles = Annotated[
    int, typer.Option("--particles", min=2, help="Particles of the sequential Monte Carlo.")
]
#: Posterior draws a prediction is made over (window scans).
PredictDraws = Annotated[
    int,
    typer.Option(
        "--posterior-draws", min=1, help="Posterior draws to predict over (picked at random)."
    ),
]
#: Less or more on the console.
Quiet = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", metavar="", help="No progress lines: only the results and errors."
    ),
]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", metavar="",
        help="Progress lines every 10 s on a terminal too (always when piped).",
    ),
]  # fmt: skip


def check_hematotox(value: str | None) -> str | None:
    """``--hematotox`` in every command: a score 0-7 or the group low/high, normalised
    ("3", "low"); anything else is refused in one line naming the option."""
    from carthema.models.hematotox import parse_hematotox

    parsed = parse_hematotox(value)
    return None if parsed is None else str(parsed)


#: CAR-HEMATOTOX before lymphodepletion (natural-history, predict-boost).
Hematotox = Annotated[
    str | None,
    typer.Option(
        "--hematotox", callback=check_hematotox,
        help="CAR-HEMATOTOX before lymphodepletion: a score 0-7, or the group low (0-1) or "
        "high (>= 2).",
    ),
]  # fmt: skip
