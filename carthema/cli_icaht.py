"""CLI command: ``carthema icaht``, ICAHT and T-ICAHT grades of measured blood counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from carthema._console import stdout_console
from carthema.data.atomic import write_atomic

console = stdout_console()

#: Events reported beside the grades (not used by them): kind -> column title.
SUPPORT = {
    "gcsf": "G-CSF",
    "tpo_agonist": "TPO agonist",
    "platelet_transfusion": "platelet transfusions",
    "stem_cell_boost": "stem-cell boost",
}


def _days(rows: pd.DataFrame) -> str:
    """Event days (with durations for periods) in days 0-100, e.g. ``3-9, 21``."""
    parts = []
    for r in rows.itertuples():
        d = float(r.day)
        dur = getattr(r, "duration", None)
        if dur is not None and dur == dur and dur > 1:
            parts.append(f"{d:g}-{d + dur - 1:g}")
        else:
            parts.append(f"{d:g}")
    return ", ".join(parts)


def supportive_care(events: pd.DataFrame | None, patient: str) -> dict[str, str]:
    """The patient's G-CSF, TPO agonist, platelet transfusions and boosts, days 0-100."""
    if events is None:
        return {}
    ev = events[(events["patient"].astype(str) == patient) & events["day"].between(0, 100)]
    return {title: _days(ev[ev["kind"] == kind]) for kind, title in SUPPORT.items()}


def check_day_zero(obs: pd.DataFrame, events: pd.DataFrame, events_name: str) -> None:
    """Every graded patient has its (first) CAR-T infusion on day 0 of the events: the
    reference of the grading windows."""
    from carthema.data.errors import InputError

    infusions = events[events["kind"] == "cart_infusion"]
    for patient in obs["patient"].astype(str).unique():
        days = infusions.loc[infusions["patient"].astype(str) == patient, "day"]
        if days.empty or float(days.min()) != 0.0:
            found = "none" if days.empty else f"first on day {float(days.min()):g}"
            raise InputError(
                f"patient {patient} has no CAR-T infusion on day 0 (cart_infusion: {found}); "
                "ICAHT windows count days from the infusion",
                file=events_name,
                column="day",
                fix="give days since the first CAR-T infusion in both files, with a "
                "cart_infusion row on day 0 for every patient",
            )


def register(app: typer.Typer) -> None:
    """Add ``icaht`` to ``app``."""

    @app.command("icaht")
    def icaht_cmd(
        observations: Annotated[
            str,
            typer.Argument(
                help="Observation table (CSV or Parquet) with anc and platelets, days since "
                "CAR-T; or example:NAME for a bundled set.",
                show_default=False,
            ),
        ],
        events: Annotated[
            str | None,
            typer.Option(
                "--events",
                help="Events table: checks the CAR-T infusion on day 0 and reports G-CSF, "
                "TPO agonists, platelet transfusions and boosts beside the grades.",
            ),
        ] = None,
        max_gap: Annotated[
            int,
            typer.Option(
                "--max-gap",
                min=1,
                help="Longest gap (days between two counts) bridged when both bounding "
                "counts lie on the same side of a threshold.",
            ),
        ] = 7,
        json_out: Annotated[
            Path | None, typer.Option("--json", help="Write the grades as JSON.")
        ] = None,
    ) -> None:
        """Grade early and late neutrophil ICAHT (EHA/EBMT consensus) and early and late
        platelet T-ICAHT (Rejeski et al. 2025) of every patient in an observation file."""
        from carthema.cli_data import _load_inputs
        from carthema.clinical.population.icaht import INTERPOLATION_RULE, grade_observations

        obs, ev, obs_name, ev_name = _load_inputs(observations, events)
        if ev is not None:  # also refuses a patient the events do not have
            check_day_zero(obs, ev, str(ev_name))
        grades = grade_observations(obs, max_gap=max_gap, source=obs_name)
        table = Table(title=f"ICAHT grades: {obs_name}")
        for col in ("patient", "grade", "early (days 0-30)", "late (days 31-100)", "decided by"):
            table.add_column(col)
        rows = []
        for g in grades:
            for label, early, late in (
                ("neutrophil ICAHT", g.icaht_early, g.icaht_late),
                ("platelet T-ICAHT", g.ticaht_early, g.ticaht_late),
            ):
                table.add_row(
                    g.patient,
                    label,
                    str(early.grade),
                    "n/a" if late.grade is None else str(late.grade),
                    f"early: {early.basis}; late: {late.basis}",
                )
            row = g.row()
            row["interpolated_days"] = g.interpolated
            row["supportive_care"] = supportive_care(ev, g.patient)
            rows.append(row)
        console.print(table)
        if ev is not None:
            care = Table(title="Supportive care in days 0-100 (reported, not used in grading)")
            for col in ("patient", *SUPPORT.values()):
                care.add_column(col)
            for r in rows:
                care.add_row(
                    r["patient"], *(r["supportive_care"][t] or "-" for t in SUPPORT.values())
                )
            console.print(care)
        rule = INTERPOLATION_RULE.format(max_gap=max_gap)
        console.print(f"interpolation rule: {rule}")
        console.print(
            "grades use the counts as measured: G-CSF, TPO agonists and transfusions do not "
            "change them (the consensus grades the measured counts)"
        )
        if json_out is not None:
            out = {"observations": obs_name, "events": ev_name, "interpolation_rule": rule}
            out["patients"] = rows
            write_atomic(json_out, json.dumps(out, indent=1), mkdir=True)
            console.print(f"wrote {json_out}")
