"""Day zero and the CAR-T infusion: checks of a patient's course across the two tables.

Every day in carthema counts from the first CAR-T infusion (day 0), and every model
prediction starts from it. A course that contradicts this is refused, not guessed:

- a patient whose first ``cart_infusion`` event is not on day 0 (the days of the tables
  would be counted from another origin, shifting every prediction);
- a patient with CAR-T copies (``cart_copies`` observations) but no ``cart_infusion``
  event (the model would see CAR-T cells that were never given);
- a patient with lymphodepletion after the CAR-T infusion that no later infusion
  follows (lymphodepletion comes before the cells it makes room for; a date slip or a
  sign error in ``day`` gives this);
- a patient in the events table with no ``cart_infusion`` at all, unless untreated
  patients are meant (``untreated=True``, ``check-data --untreated``).

:func:`course_problems` lists them; :func:`check_course` raises the first as an
:class:`InputError` naming the table, patient, row and fix; :func:`check_fit_course` is
the check of the one patient a fit uses (``carthema.fit`` and ``carthema fit``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from carthema.data.errors import InputError


@dataclass(frozen=True)
class CourseProblem:
    """One contradiction in a patient's course."""

    patient: str
    problem: str
    fix: str
    table: str  # "events" or "observations": where to look
    day: float | None = None


def course_problems(
    observations: pd.DataFrame | None,
    events: pd.DataFrame,
    *,
    patients: list[str] | None = None,
    untreated: bool = False,
) -> list[CourseProblem]:
    """The contradictions of day 0 and CAR-T in each patient's course (see the module
    docstring), in patient order. ``patients``: only these (default: every patient of
    ``events``, and of ``observations`` with CAR-T copies)."""
    # one pass per table (dicts and sets below): the cost grows with the rows
    ev_pid = events["patient"].astype(str)
    is_cart = (events["kind"] == "cart_infusion").to_numpy(bool)
    cart_days = events["day"][is_cart].groupby(ev_pid[is_cart])
    first_cart = cart_days.min().to_dict()
    last_cart = cart_days.max().to_dict()
    with_copies: set[str] = set()
    if observations is not None and len(observations):
        copies = (observations["analyte"] == "cart_copies").to_numpy(bool)
        with_copies = set(observations["patient"][copies].astype(str).unique())
    in_events = set(ev_pid.unique())
    who = patients if patients is not None else sorted(in_events | with_copies)
    # the first lymphodepletion after the patient's last CAR-T infusion
    is_ld = (events["kind"] == "lymphodepletion").to_numpy(bool)
    ld_pid = ev_pid[is_ld]
    ld_day = events["day"][is_ld].astype(float)
    after = ld_day > ld_pid.map(last_cart).astype(float)  # NaN (no infusion): False
    late_ld = ld_day[after].groupby(ld_pid[after]).min().to_dict()
    out: list[CourseProblem] = []
    for p in who:
        p = str(p)
        if p not in first_cart:
            if p in with_copies:
                out.append(
                    CourseProblem(
                        p,
                        f"patient {p} has CAR-T copies (cart_copies) but no cart_infusion "
                        "event: the model cannot place day 0 or give the cells.",
                        "add the patient's CAR-T infusion to the events table (kind "
                        "cart_infusion, day 0, amount in CAR+ cells/kg).",
                        "events",
                    )
                )
            elif p in in_events and not untreated:
                out.append(
                    CourseProblem(
                        p,
                        f"patient {p} has events but no cart_infusion: day 0 (the first "
                        "CAR-T infusion) is missing.",
                        "add the CAR-T infusion (kind cart_infusion on day 0), or pass "
                        "--untreated if patients without CAR-T are meant.",
                        "events",
                    )
                )
            continue
        d0 = float(first_cart[p])
        if d0 != 0.0:
            out.append(
                CourseProblem(
                    p,
                    f"patient {p}'s first CAR-T infusion is on day {d0:g}, not day 0 "
                    "(carthema counts every day from the first CAR-T infusion).",
                    f"shift this patient's days in both tables by {-d0:+g} so that the "
                    "infusion is on day 0.",
                    "events",
                    d0,
                )
            )
            continue
        if p in late_ld:
            d = float(late_ld[p])
            out.append(
                CourseProblem(
                    p,
                    f"patient {p} has lymphodepletion on day {d:g}, after the CAR-T "
                    "infusion (day 0) and before no later infusion.",
                    "lymphodepletion comes before the CAR-T infusion (negative days, e.g. "
                    "-5 to -3): check the sign of the day, or add the later infusion it "
                    "prepared.",
                    "events",
                    d,
                )
            )
    return out


def check_course(
    observations: pd.DataFrame | None,
    events: pd.DataFrame,
    *,
    events_name: str | None = None,
    patients: list[str] | None = None,
    untreated: bool = False,
) -> None:
    """Raise :class:`InputError` for the first problem of :func:`course_problems`,
    naming the events table (``events_name``), the patient and the fix."""
    problems = course_problems(observations, events, patients=patients, untreated=untreated)
    if problems:
        first = problems[0]
        more = f" ({len(problems) - 1} more problem(s) of this kind)" if len(problems) > 1 else ""
        raise InputError(first.problem + more, file=events_name, column="patient", fix=first.fix)


def check_fit_course(
    observations: pd.DataFrame,
    events: pd.DataFrame | None,
    patient: str | None = None,
    *,
    events_name: str | None = None,
) -> str | None:
    """Day 0 and the CAR-T infusion of the one patient a fit uses (``patient``, or the
    only patient of ``observations``): :func:`check_course` of that patient, untreated
    patients allowed (a haematopoiesis fit needs no CAR-T). Returns the patient."""
    from carthema.data.patients import select_patient

    pid = select_patient(observations, patient)
    if pid is not None and events is not None:
        check_course(observations, events, events_name=events_name, patients=[str(pid)],
                     untreated=True)  # fmt: skip
    return pid
