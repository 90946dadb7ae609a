"""Forward prediction of treatment plans over parameter draws, and the engraftment window.

A plan is a :class:`carthema.data.boost.BoostPlan`: "no boost" (no day) or a stem-cell
boost on a day. For each plan every parameter draw (posterior draws
of a fitted patient, or population-prior draws for a patient with little data) is
simulated with the numba population solver, and the engraftment metrics of
:mod:`carthema.clinical.endpoints` summarise the predictive distribution (its thresholds
and horizons live there too). The summaries of simulated draws
(engraftment, sustained recovery, chimerism, the window decision) are
:mod:`carthema.clinical.summaries`, the window's sentences
:mod:`carthema.clinical.plan_text` and its figure :mod:`carthema.clinical.window_plot`;
their names still import from here. This module simulates: a plan over draws
(:class:`Course`), the counterfactual, the transplant signals and the window scan and
job (:class:`WindowScan`; it writes no file), which share the one no-boost solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carthema.clinical.endpoints import (
    B_RECOVERY,
    CART_LOSS,
    DAYS_SAVED,
    FOLLOW_UP,
    FROM_CART,
    SIGNALS_HORIZON,
    STABLE,
    TRANSPLANT_DAY_LIMIT,
    WITHIN,
    days_below,
)
from carthema.clinical.plan_text import (
    chimerism_lines,
    counterfactual_lines,
    no_boost_lines,
    plain_summary,
)
from carthema.clinical.summaries import (  # noqa: F401 (their names import from here too)
    chimerism_summary,
    plan_engraftment,
    plan_summary,
    quantiles,
    sustained_summary,
    window_decision,
)
from carthema.clinical.window_plot import plot_observed as _plot_observed  # noqa: F401
from carthema.clinical.window_plot import plot_window  # noqa: F401 (imports from here too)
from carthema.data.boost import DEFAULT_GRAFT, BoostPlan, GraftSource
from carthema.models.events import build_events
from carthema.models.model import Model
from carthema.models.scenarios import with_plan
from carthema.models.solve import Schedule, solve_batch
from carthema.models.solver_contract import PREDICT, SolverOptions

#: A candidate plan is a :class:`carthema.data.boost.BoostPlan` (``day`` None: no boost).
Plan = BoostPlan


def simulate_plan(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    plan: Plan,
    *,
    horizon: float,
    options: SolverOptions = PREDICT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Daily observables of every draw under ``plan`` (solver ``options``, default
    :data:`~carthema.models.solver_contract.PREDICT`).

    Returns (days, status (n,), obs (n, days, n_obs), the plan's events table).
    """
    ev_df = with_plan(events, plan)
    ev = build_events(model, ev_df, model.default_params())
    start = min(ev.first_time if ev.first_time is not None else 0.0, 0.0)
    days = np.arange(np.floor(start), horizon + 0.5, 1.0)
    sched = Schedule.from_events(model, ev, days, t0=days[0])
    sol = solve_batch(model, draws, sched, options)
    status, obs = sol.status, sol.obs
    return days, status, obs, ev_df


@dataclass(frozen=True)
class Course:
    """Daily observables of every draw under one plan: what :func:`simulate_plan`
    returns, kept so that one simulation (the no-boost course above all) serves every
    summary drawn from it."""

    days: np.ndarray
    status: np.ndarray
    obs: np.ndarray
    events: pd.DataFrame

    def until(self, horizon: float) -> Course:
        """The same course cut at ``horizon`` (days since CAR-T)."""
        keep = self.days <= horizon + 1e-9
        return Course(self.days[keep], self.status, self.obs[:, keep, :], self.events)

    def on(self, days: np.ndarray) -> np.ndarray:
        """Observables on ``days`` (each one of the course's days)."""
        idx = np.searchsorted(self.days, days)
        if np.any(idx >= self.days.size) or not np.array_equal(self.days[idx], days):
            raise RuntimeError("the course does not cover the requested days")
        return self.obs[:, idx, :]


def simulate_course(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    plan: Plan,
    *,
    horizon: float,
    options: SolverOptions = PREDICT,
) -> Course:
    """:func:`simulate_plan` as a :class:`Course`."""
    return Course(*simulate_plan(model, draws, events, plan, horizon=horizon, options=options))


def counterfactual(
    model: Model,
    boost: Course,
    no_boost: Course,
    *,
    reference: float,
    stable: int | None = STABLE,
) -> dict:
    """The same draws without the boost, from the boost day (``reference``) over the
    boost course's days.

    Returns ``no_boost``: per lineage ("neutrophil", "anc_gt_1", "platelet") the
    :func:`plan_engraftment` summary of the no-boost course timed from the boost day
    (recovery of the patient's own counts: ``p_within_14d``/``30d``/``60d``,
    ``p_never`` by the horizon, ...), and ``neutropenia_days_saved`` /
    ``thrombocytopenia_days_saved``: per draw (solved with and without the boost) the
    days in [boost day, horizon] with ANC < 0.5 G/L (platelets < 20 G/L) without the
    boost minus with it; their ``median``, ``q05``, ``q95`` and ``n_draws``. Both
    courses must hold the same draws in the same order.
    """
    if boost.obs.shape[0] != no_boost.obs.shape[0]:
        raise ValueError("the boost and no-boost courses hold different draws")
    obs0 = no_boost.on(boost.days)
    out: dict = {
        "no_boost": plan_engraftment(
            model, boost.days, no_boost.status, obs0, no_boost.events, reference=reference,
            stable=stable,
        ),
        "no_boost_sustained": sustained_summary(
            model, boost.days, no_boost.status, obs0, no_boost.events, reference=reference
        ),
    }  # fmt: skip
    both = (boost.status == 0) & (no_boost.status == 0)
    for _, name, thr, key in DAYS_SAVED:
        if name not in model.obs_names:
            continue
        j = model.index("obs", name)
        without = days_below(boost.days, obs0[both][:, :, j], thr, start=reference)
        with_ = days_below(boost.days, boost.obs[both][:, :, j], thr, start=reference)
        q = quantiles((without - with_).astype(float))
        out[key] = {**{k: None if np.isnan(v) else v for k, v in q.items()},
                    "n_draws": int(both.sum())}  # fmt: skip
    return out


def predict_plan(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    plan: Plan,
    *,
    reference: float | None = None,
    horizon: float | None = None,
) -> dict:
    """Predictive summary of one plan over parameter draws (natural scale, (n, n_p)).

    Times are counted from the boost day (or ``reference``, default day 0, for no
    boost). ``horizon`` (days since CAR-T) defaults to 120 days after the reference.
    "neutrophil", "anc_gt_1" and "platelet" are :func:`plan_engraftment` summaries.
    """
    ref = plan.day if plan.day is not None else (0.0 if reference is None else reference)
    horizon = ref + 120.0 if horizon is None else horizon
    days, status, obs, ev_df = simulate_plan(model, draws, events, plan, horizon=horizon)
    return plan_summary(model, plan, days, status, obs, ev_df, reference=ref, horizon=horizon)


def astuple_course(course: Course) -> tuple:
    """(days, status, obs, events) of a :class:`Course`."""
    return course.days, course.status, course.obs, course.events


def transplant_signals(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    horizon: float = SIGNALS_HORIZON,
    *,
    no_boost: Course | None = None,
) -> dict:
    """Consolidative-transplant signals without a boost: predicted day of CAR-T loss
    (below :data:`CART_LOSS` copies/ug after the peak) and of B-cell recovery (above
    :data:`B_RECOVERY` cells/uL after aplasia), with the probability that each happens
    before the day-90 limit. ``no_boost``: the no-boost course of ``draws`` to at least
    ``horizon`` (simulated when not given), cut at ``horizon``."""
    if no_boost is None:
        no_boost = simulate_course(model, draws, events, Plan(), horizon=horizon)
    days, status, obs, _ = astuple_course(no_boost.until(horizon))
    ok = status == 0
    out: dict = {"day_limit": TRANSPLANT_DAY_LIMIT}
    if "cart_copies" in model.obs_names:
        c = obs[ok, :, model.index("obs", "cart_copies")]
        after_peak = np.arange(days.size)[None, :] > c.argmax(axis=1)[:, None]
        loss = _first_day(days, (c < CART_LOSS) & after_peak)
        out["cart_loss"] = {**quantiles(loss), **_p_before(loss)}
    if "b_cells" in model.obs_names:
        b = obs[ok, :, model.index("obs", "b_cells")]
        after_nadir = np.arange(days.size)[None, :] > b.argmin(axis=1)[:, None]
        rec = _first_day(days, (b > B_RECOVERY) & after_nadir)
        out["b_cell_recovery"] = {**quantiles(rec), **_p_before(rec)}
    return out


def _first_day(days: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask.any(axis=1), days[mask.argmax(axis=1)], np.nan)


def _p_before(day: np.ndarray) -> dict[str, float]:
    return {
        f"p_before_day{TRANSPLANT_DAY_LIMIT:g}": float(np.mean(day < TRANSPLANT_DAY_LIMIT)),
        "p_never": float(np.mean(np.isnan(day))),
    }


def scan_window(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    boost_days: Sequence[float],
    *,
    graft: BoostPlan = DEFAULT_GRAFT,
    threshold: float = 0.8,
    cart_limit: float = 1000.0,
    within: int = 30,
    progress: Callable[[int, int], None] | None = None,
    no_boost: Course | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Predict a boost on each candidate day and compare it with the same draws without a
    boost.

    Per day (one row): the :func:`predict_plan` summaries of the boost (engraftment from
    the boost day, :mod:`carthema.clinical.endpoints`), the same engraftment summary of
    the draws *without* a boost from that day (``no_boost_neutrophil_p_within_<w>d``,
    ``no_boost_platelet_p_within_<w>d``, ``no_boost_neutrophil_p_already``), and the
    median over draws of the days saved from the boost day to :data:`FOLLOW_UP` days
    after it, boost against no boost on the same draw: ``neutropenia_days_saved_median``
    (ANC < 0.5 G/L) and ``thrombocytopenia_days_saved_median`` (platelets < 20 G/L).

    A day is ``in_window`` when all hold:

    - the boost helps: median neutropenia days saved > 0 or median thrombocytopenia days
      saved > 0;
    - most draws are not already recovered: ``neutrophil_p_already`` <
      :data:`ALREADY_RECOVERED` (else ``already_recovered`` is True);
    - P(neutrophil engraftment within ``within`` days of the boost) >= ``threshold``
      (``meets_probability``);
    - the median predicted CAR-T level on the boost day is below ``cart_limit`` copies/ug
      (``meets_cart_limit``).

    The counterfactual columns come from :func:`counterfactual`:
    ``no_boost_<lineage>_p_within_<14|30|60>d``, ``no_boost_<lineage>_p_never``,
    ``no_boost_<lineage>_p_already`` and ``neutropenia_days_saved_<median|q05|q95>``,
    ``thrombocytopenia_days_saved_<median|q05|q95>``. ``no_boost``: the no-boost course
    of ``draws`` (:func:`simulate_course` with ``Plan()``) to at least the last
    day + :data:`FOLLOW_UP`; simulated here when not given. Either way the no-boost
    course is solved once for all candidate days.

    ``progress(done, total)`` is called after each candidate day.

    Returns the table and a summary with the window (first/last day, or None).
    """
    boost_days = [float(d) for d in boost_days]
    last = max(boost_days) + FOLLOW_UP
    if no_boost is None:
        no_boost = simulate_course(model, draws, events, Plan(), horizon=last)
    elif no_boost.days[-1] < last:
        raise ValueError(f"the no-boost course ends before day {last:g}")
    rows = []
    for k, d in enumerate(boost_days):
        if progress is not None and k:
            progress(k, len(boost_days))
        plan = graft.on(d)
        course = simulate_course(model, draws, events, plan, horizon=d + FOLLOW_UP)
        res = plan_summary(model, plan, *astuple_course(course), reference=d, horizon=d + FOLLOW_UP)
        row = {"boost_day": d, "dose": graft.cd34_per_kg, "source": graft.source.value,
               "cd34_selected": graft.cd34_selected}  # fmt: skip
        for key in ("neutrophil", "platelet", "anc_gt_1"):
            if key in res:
                row.update({f"{key}_{k}": v for k, v in res[key].items()})
        for key in ("days_anc_lt_0.5", "days_plt_lt_20", "chimerism_day30",
                    "chimerism_whole_blood_day30", "cart_at_reference"):  # fmt: skip
            if key in res:
                row[f"{key}_median"] = res[key]["median"]
        if "p_graft_lost_day60" in res:
            row["p_graft_lost_day60"] = res["p_graft_lost_day60"]
        # The same draws without a boost, over the same days and from the same day.
        cf = counterfactual(model, course, no_boost, reference=d)
        for key in ("neutrophil", "platelet"):
            if key in cf["no_boost"]:
                nb = cf["no_boost"][key]
                for k in (*(f"p_within_{w}d" for w in WITHIN), "p_never", "p_already"):
                    row[f"no_boost_{key}_{k}"] = nb[k]
        for _, _, _, key in DAYS_SAVED:
            if key in cf:
                for q in ("median", "q05", "q95"):
                    v = cf[key][q]
                    row[f"{key}_{q}"] = np.nan if v is None else v
        rows.append(row)
    return window_decision(
        pd.DataFrame(rows), threshold=threshold, cart_limit=cart_limit, within=within
    )


def recovery_without_boost(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    *,
    horizon: float,
    no_boost: Course | None = None,
) -> dict:
    """Engraftment without any boost, counted from CAR-T day 0 (so times are days since
    CAR-T), with the one definition of :mod:`carthema.clinical.endpoints`.

    Per criterion ("neutrophil", "anc_gt_1", "platelet"): the summary of
    :func:`plan_engraftment` (``median_days``, ``q05``, ``q95``, ``p_within_14d``,
    ``p_within_30d``, ``p_never`` by ``horizon``, ``p_already``: never below the
    threshold from day 0 to ``horizon`` (:data:`~carthema.clinical.endpoints.FROM_CART`),
    ``n_draws``). ``no_boost``: the no-boost course of ``draws`` to at least ``horizon``
    (simulated when not given), cut at ``horizon``.
    """
    if no_boost is None:
        no_boost = simulate_course(model, draws, events, Plan(), horizon=horizon)
    days, status, obs, ev_df = astuple_course(no_boost.until(horizon))
    out: dict = {"horizon_day": horizon, "reference_day": 0.0}
    out.update(plan_engraftment(model, days, status, obs, ev_df, reference=0.0, stable=FROM_CART))
    out["sustained"] = sustained_summary(model, days, status, obs, ev_df, reference=0.0)
    return out


def plan_bands(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    plan: Plan,
    *,
    horizon: float,
    course: Course | None = None,
) -> dict:
    """Daily 5/50/95% predictive bands of ANC and platelets under ``plan``. ``course``:
    the plan's course of ``draws`` to at least ``horizon`` (simulated when not given)."""
    if course is None:
        course = simulate_course(model, draws, events, plan, horizon=horizon)
    days, status, obs, _ = astuple_course(course.until(horizon))
    out: dict = {"days": days}
    for name in ("anc", "platelets"):
        if name in model.obs_names:
            x = obs[status == 0, :, model.index("obs", name)]
            out[name] = tuple(np.quantile(x, [0.05, 0.5, 0.95], axis=0))
    return out


@dataclass(frozen=True)
class WindowScan:
    """What :func:`window_job` computes: ``result`` (the summary for window.json: the
    plan, the window, transplant signals, the no-boost recovery, the recommended day
    against no boost, the plain-language lines, ``n_draws``), ``table`` (one row per
    boost day: window.csv) and ``bands`` (the predicted courses the plot draws, with and
    without the boost)."""

    result: dict
    table: pd.DataFrame
    bands: dict


def window_job(
    model: Model,
    draws: np.ndarray,
    events: pd.DataFrame,
    boost_days: Sequence[float],
    *,
    observations: pd.DataFrame | None = None,
    **scan,
) -> WindowScan:
    """Scan boost days over ``draws`` (:func:`scan_window`, whose keywords ``scan`` are:
    ``graft``, ``threshold``, ``cart_limit``, ``within``, ``progress``) and add what the
    window reports besides the table: the transplant signals, the recovery without a
    boost, the recommended day against no boost and the plot's bands
    (:class:`WindowScan`). It writes nothing (the caller,
    :func:`carthema.clinical.window.window_from_fit`, writes every file of the window).

    ``observations``: the patient's data (data-layer table); its last ANC or platelet
    day extends the plot's courses so that the data sit beside the prediction.
    """
    from carthema.clinical.population.graft import GRAFT_FAILURE_SOURCE, p_graft_failure

    boost_days = [float(d) for d in boost_days]
    last = max(boost_days)
    graft: BoostPlan = scan.get("graft", DEFAULT_GRAFT)

    boost = graft.check().on  # the graft on a day (its CD3+ rule checked once, up front)

    # The course panels: 90 days past the recommended day (else the last candidate day),
    # and at least to the last observed day, so the data sit beside the prediction.
    counts = None
    if observations is not None:
        counts = observations.loc[observations["analyte"].isin(("anc", "platelets")), "day"]
    last_seen = float(counts.max()) if counts is not None and len(counts) else -np.inf
    # The draws without a boost, solved once for everything below: the scan's
    # counterfactual, the transplant signals, the recovery from day 0 and the bands.
    no_boost = simulate_course(
        model, draws, events, Plan(),
        horizon=max(last + FOLLOW_UP, SIGNALS_HORIZON, last + 90.0, last_seen),
    )  # fmt: skip
    table, summary = scan_window(model, draws, events, boost_days, no_boost=no_boost, **scan)
    signals = transplant_signals(model, draws, events, no_boost=no_boost)
    baseline = recovery_without_boost(
        model, draws, events, horizon=last + FOLLOW_UP, no_boost=no_boost
    )
    day = summary["recommended_day"]
    end = max((day if day is not None else last) + 90.0, last_seen)
    bands = {}
    recommended = None
    if day is not None:
        course = simulate_course(model, draws, events, boost(day), horizon=day + FOLLOW_UP)
        new_donor = graft.source is GraftSource.ALLOGENEIC
        recommended = _recommended(model, course, no_boost, day, new_donor=new_donor)
        if end > day + FOLLOW_UP:
            course = simulate_course(model, draws, events, boost(day), horizon=end)
        bands = plan_bands(model, draws, events, boost(day), horizon=end, course=course)
    # The same draws without a boost, on the same days.
    none = plan_bands(model, draws, events, Plan(), horizon=end, course=no_boost)
    bands.setdefault("days", none["days"])
    if np.array_equal(none["days"], bands["days"]):
        bands["no_boost"] = {k: v for k, v in none.items() if k != "days"}
    result = {
        "plan": {
            "dose_cd34_per_kg": graft.cd34_per_kg,
            "source": graft.source.value,
            "cd34_selected": graft.cd34_selected,
            "cd3_per_kg": graft.cd3_per_kg,
            "mnc_per_kg": graft.mnc_per_kg,
            "boost_days": boost_days,
            "p_graft_failure": p_graft_failure(graft.cd34_per_kg),
            "graft_failure_source": GRAFT_FAILURE_SOURCE,
        },
        "window": summary,
        "transplant_signals": signals,
        "no_boost": baseline,
        "recommended": recommended,
        "summary_lines": [
            *no_boost_lines(baseline, last + FOLLOW_UP),
            *plain_summary(summary, signals),
            *counterfactual_lines(recommended, FOLLOW_UP),
            *chimerism_lines(recommended),
        ],
        "n_draws": int(draws.shape[0]),
    }
    return WindowScan(result, table, bands)


def _recommended(
    model: Model, course: Course, no_boost: Course, day: float, *, new_donor: bool = False
) -> dict:
    """The boost on the recommended day against the same draws without it (the keys
    predict-boost writes): ``neutrophil``, ``platelet``, ``anc_gt_1`` (engraftment from
    the boost day), ``p_never`` per lineage, ``no_boost`` (the same shape: recovery of
    the patient's own counts from the boost day), ``no_boost_sustained``,
    ``neutropenia_days_saved`` and ``thrombocytopenia_days_saved``; for a new donor's
    graft (``new_donor``) the :func:`chimerism_summary` keys."""
    res = plan_engraftment(model, *astuple_course(course), reference=day)
    out: dict = {"boost_day": day, **res}
    out["p_never"] = {k: v["p_never"] for k, v in res.items()}
    out.update(counterfactual(model, course, no_boost, reference=day))
    if new_donor:
        out.update(chimerism_summary(model, course.days, course.status, course.obs, reference=day))
    return out
