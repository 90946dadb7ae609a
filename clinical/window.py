"""The engraftment window of a fitted patient, and the per-patient HTML report.

:func:`window_from_fit` takes a :class:`~carthema.models.posterior.Posterior` (a fit in
memory, a saved fit folder, or draws of the calibrated virtual population), takes draws
of the patient's parameters, scans candidate boost days with
:func:`carthema.clinical.plans.window_job` (which computes and writes nothing), writes
the folder (table, plot, JSON, run record and, optionally, a self-contained HTML
report with the fit plot, the window plot, the table and the diagnostics) and returns a
:class:`WindowResult`. The misfit
check reads the fit's :class:`~carthema.models.posterior.FitRecord`, carried by the
posterior; nothing is read back from files.

Existing stem-cell boosts in the patient's events are the decision being scanned: they
are removed before the scan (and listed in the output), so that every candidate plan is
"this boost instead of what was given".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from carthema._console import Step, interactive, progress_to_stderr
from carthema.clinical.decision import conditional, decision_line, misfit_reasons
from carthema.clinical.plans import WindowScan, window_job
from carthema.clinical.window_plot import plot_window
from carthema.data.atomic import swap_folder
from carthema.data.boost import DEFAULT_GRAFT, BoostPlan
from carthema.data.errors import InputError
from carthema.data.jsonsafe import dumps
from carthema.data.runrecord import RUN_JSON, run_record, write_run_record
from carthema.fitting.results.fitdir import FitFolder, write_csv
from carthema.models.model import Model
from carthema.models.posterior import Posterior


class WindowResult(TypedDict):
    """What :func:`window_from_fit` returns, as ``window.json`` holds it (JSON-ready);
    the console (``carthema window``), the decision line and the HTML report render it.
    The scan's part (``plan`` ... ``n_draws``) is :attr:`WindowScan.result
    <carthema.clinical.plans.WindowScan>`; the rest is the patient's."""

    plan: dict[str, Any]
    window: dict[str, Any]
    transplant_signals: dict[str, Any]
    no_boost: dict[str, Any]
    recommended: dict[str, Any] | None
    summary_lines: list[str]
    n_draws: int
    files: dict[str, str]
    patient: str | None
    graft_parameters: dict[str, str]
    fit: str | None
    draws_from: str
    replaced_events: list[str]
    today: float
    days_before_today_dropped: list[float]
    misfit_reasons: list[str]
    decision: str


#: Default number of posterior draws the window is predicted over.
WINDOW_DRAWS = 500

#: Observables a window needs (engraftment is defined on ANC and platelets).
NEEDED = ("anc", "platelets")


def parse_days(spec: str, step: float = 1.0) -> list[float]:
    """Boost days from ``"30:120"`` (inclusive, every ``step`` days) or ``"30,45,60"``.

    Days are counted from the first CAR-T infusion (day 0).
    """
    spec = str(spec).strip()
    how = 'give a range like "30:120" (with --step) or a list like "30,45,60"'
    try:
        if ":" in spec:
            a, b = (float(x) for x in spec.split(":", 1))
            if not np.isfinite(a) or not np.isfinite(b) or b < a:
                raise ValueError
            if not (np.isfinite(step) and step > 0):
                raise InputError(f"--step must be positive, got {step:g}", column="step")
            days = list(np.arange(a, b + step / 2.0, step))
        else:
            days = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"cannot read boost days '{spec}'", column="boost-days",
                         fix=how) from None  # fmt: skip
    if not days:
        raise InputError("no boost days given", column="boost-days", fix=how)
    bad = [d for d in days if not (np.isfinite(d) and d > 0)]
    if bad:
        raise InputError(
            f"boost day {bad[0]:g} is not after the CAR-T infusion (day 0)",
            column="boost-days",
            fix=how,
        )
    return [float(d) for d in days]


def without_boosts(events: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``events`` less its stem-cell boosts after day 0, and what was removed."""
    boost = (events["kind"] == "stem_cell_boost") & (events["day"] > 0)
    removed = [
        f"stem_cell_boost of {a:.3g} CD34+ cells/kg on day {d:g}"
        for d, a in zip(events.loc[boost, "day"], events.loc[boost, "amount"], strict=True)
    ]
    return events.loc[~boost].reset_index(drop=True), removed


def as_posterior(fit: str | Path | FitFolder | Posterior) -> Posterior:
    """``fit`` as a :class:`Posterior`: as it is, or read from a fit folder (a path or a
    loaded :class:`FitFolder`)."""
    return fit if isinstance(fit, Posterior) else Posterior.from_fit_folder(fit)


def window_draws(
    fit: Posterior | FitFolder, n_draws: int, *, seed: int = 0, dose: float | None = None
) -> tuple[np.ndarray, dict]:
    """Posterior draws for the window, each with graft and rejection parameters of its
    own (:func:`carthema.clinical.population.graft.draw_graft`): from the calibrated population's
    distribution when it has them as columns, else their plausible spread, else the stated
    log-normal assumption. Graft parameters the fit estimated keep their posterior
    values. With ``dose`` (CD34+ cells/kg) a share of the draws get a failed graft
    (:func:`carthema.clinical.population.graft.p_graft_failure`). Returns the draws and
    where each graft parameter came from."""
    from carthema.clinical.population.graft import draw_graft, graft_sources
    from carthema.clinical.population.virtual import load_population

    try:
        population = load_population()[0]
    except InputError:  # no population file in this installation: plausible spread / assumption
        population = None
    post = as_posterior(fit)
    draws = post.sample(n_draws, seed=seed)
    rng = np.random.default_rng([seed, 10])
    draws = draw_graft(post.model, draws, rng, population=population, keep=post.free, dose=dose)
    sources = graft_sources(post.model, population)
    for name in post.free:
        if name in sources:
            sources[name] = "estimated by the fit (posterior draws)"
    return draws, sources


def window_from_fit(
    fit: str | Path | FitFolder | Posterior,
    boost_days: Sequence[float] | None,
    out: str | Path,
    *,
    graft: BoostPlan = DEFAULT_GRAFT,
    threshold: float = 0.8,
    cart_limit: float = 1000.0,
    n_draws: int = WINDOW_DRAWS,
    seed: int = 0,
    report: bool = False,
    today: float | None = None,
    log: Callable[[str], None] | None = None,
) -> WindowResult:
    """Engraftment window of a fitted patient.

    Parameters
    ----------
    fit:
        The patient's :class:`~carthema.models.posterior.Posterior`: of a fit in memory
        (:meth:`FitResult.posterior`), of a fit folder (a path, ``carthema fit ... --out
        DIR``, or a loaded :class:`FitFolder`), or of the calibrated virtual population
        (:meth:`~carthema.clinical.population.posterior.VirtualPopulation.sample`: no
        fit, so no misfit check).
    boost_days:
        Candidate boost days (days since CAR-T day 0); None: every day from ``today``
        to ``today`` + 90 (:func:`default_days`). Days before ``today`` are dropped (a
        boost cannot be given in the past) and listed in the result.
    out:
        Output folder: ``window.csv`` (one row per boost day), ``window.json``,
        ``window.png`` and, with ``report``, ``report.html``.
    graft:
        The boost (:class:`carthema.data.boost.BoostPlan`; its day is the scanned one).
        Default: an unselected autologous graft of 3e6 CD34+ cells/kg, the default of
        every command.
    threshold:
        Wanted probability of neutrophil engraftment within 30 days of the boost.
    cart_limit:
        Highest acceptable median CAR-T level on the boost day (copies/ug DNA).
    n_draws:
        Posterior draws to predict over (picked at random with ``seed``), each with graft
        and rejection parameters drawn from their population distribution
        (:func:`window_draws`), so the intervals carry the graft's own uncertainty.
    today:
        The day of the decision (days since CAR-T); default: the patient's last
        observation (:func:`last_observed_day`). Draws without observations (the
        virtual population) need it given. No day before it is scanned or recommended.
    log:
        Called with progress lines (the scan reports every few seconds with an estimate
        of the time left); default: stderr when a person is watching, else silent.

    Returns the :class:`WindowResult` (what ``window.json`` holds; every file of the
    folder is written here, once the scan is done): ``decision`` (the one line the
    report and console open with, :func:`carthema.clinical.decision.decision_line`),
    ``misfit_reasons``,
    ``today``, window, transplant signals, summary lines (conditional on the model),
    files, ``fit`` (the fit folder; None for a fit only in memory or population draws)
    and ``draws_from`` (where the draws came from, in words). The folder also holds
    ``run.json`` (:mod:`carthema.data.runrecord`).
    """
    if log is None and interactive():  # a person is watching: show progress
        log = progress_to_stderr
    say = log or (lambda _m: None)
    post = as_posterior(fit)
    folder = post.fit.folder if post.fit is not None else None
    _check_inputs(post.model, folder, graft, threshold)
    events, removed = without_boosts(post.events)
    observed = _patient_rows(post.observations, post.patient)
    today = _check_today(today, observed)
    boost_days, past = split_past(default_days(today) if boost_days is None else boost_days, today)
    draws, graft_params = window_draws(post, n_draws, seed=seed, dose=graft.cd34_per_kg)
    out = Path(out)
    step = Step(
        log,
        f"window scan: {len(boost_days)} boost days x {draws.shape[0]} posterior draws of "
        f"patient {post.patient}",
    )
    # Written into a temporary folder that replaces ``out`` only when everything is there:
    # an interrupted scan leaves no half-written result.
    with swap_folder(out) as tmp, step:
        scan = window_job(
            post.model,
            draws,
            events,
            boost_days,
            graft=graft,
            threshold=threshold,
            cart_limit=cart_limit,
            observations=observed,
            progress=step.update,
        )
        result = scan.result
        written = _write_scan_files(scan, tmp, observed, today)
        result["files"] = {k: str(out / v.name) for k, v in written.items()}
        _describe_patient(result, post, folder, graft_params, removed, today, past)
        settings = {"n_draws": n_draws, "threshold": threshold, "today": today}
        _write_run(tmp, folder, seed, settings)
        result["files"]["run"] = str(out / RUN_JSON)
        if report:
            say("writing the HTML report")
            _write_report(post, result, written, tmp, draws, events)
            result["files"]["report"] = str(out / "report.html")
        (tmp / "window.json").write_text(dumps(result), encoding="utf-8")
    return result


def _check_inputs(model: Model, folder: Path | None, graft: BoostPlan, threshold: float) -> None:
    """Refuse a model, graft or threshold a window cannot use, before any solve."""
    _check_model(model, folder)
    graft.check()  # the CD3+ rule, before any solve
    if not graft.cd34_per_kg > 0:
        raise InputError(
            f"dose must be a positive number of CD34+ cells/kg, got {graft.cd34_per_kg:g}",
            column="dose",
            fix="e.g. --dose 3e6",
        )
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be in (0, 1], got {threshold:g}", column="threshold")


def _write_scan_files(
    scan: WindowScan, tmp: Path, observed: pd.DataFrame | None, today: float
) -> dict[str, Path]:
    """Write the scan's table and plot into ``tmp``; returns their paths there. The table
    in rounded numbers and true/false for people and other programs alike."""
    written = {"table": tmp / "window.csv", "plot": tmp / "window.png"}
    write_csv(scan.table, written["table"])
    plot_window(
        scan.table,
        scan.result["window"],
        written["plot"],
        bands=scan.bands,
        observed=observed,
        today=today,
    )
    return written


def _describe_patient(
    result: dict,
    post: Posterior,
    folder: Path | None,
    graft_params: dict,
    removed: list[str],
    today: float,
    past: list[float],
) -> None:
    """Add the patient's part to the scan's ``result`` (in place): who, where the draws
    came from, what was replaced or dropped, the misfit check, the decision line and the
    summary lines about them (made conditional on the model)."""
    result["patient"] = post.patient
    result["graft_parameters"] = graft_params
    result["fit"] = str(folder) if folder is not None else None
    result["draws_from"] = _draws_from(post)
    result["replaced_events"] = removed
    result["today"] = today
    result["days_before_today_dropped"] = past
    reasons = [] if post.fit is None else misfit_reasons(*_misfit_inputs(post))
    result["misfit_reasons"] = reasons
    result["decision"] = decision_line(result, reasons)
    if past:
        result["summary_lines"].append(
            f"Boost days before today (day {today:g}) are not scanned: {len(past)} "
            f"day(s) from day {min(past):g} to day {max(past):g} dropped."
        )
    if removed:
        result["summary_lines"].append(
            "The scan replaces the boost the patient received ("
            + "; ".join(removed)
            + "): each candidate day is predicted as if that boost had been given then."
        )
    if post.fit is None:
        result["summary_lines"].append(
            f"The draws are {result['draws_from']}, not a fit of this patient's data: "
            "no check of the model against the patient applies."
        )
    result["summary_lines"] = conditional(result["summary_lines"], reasons)


def _write_run(tmp: Path, folder: Path | None, seed: int, settings: dict) -> None:
    """Write ``run.json`` into ``tmp``. It names the command ("window"), so that the
    output-folder contract recognises this folder as the command's own next time."""
    inputs = [] if folder is None else [folder / "fit.json", folder / "posterior.nc"]
    record = run_record(inputs, seed=seed, settings=settings, subcommand="window")
    write_run_record(tmp, record)


def _write_report(
    post: Posterior,
    result: dict,
    written: dict[str, Path],
    tmp: Path,
    draws: np.ndarray,
    events: pd.DataFrame,
) -> None:
    """Write ``report.html`` into ``tmp``, linking the files as they lie there."""
    files = {**{k: str(v) for k, v in written.items()}, "run": str(tmp / RUN_JSON)}
    write_patient_report(
        post, {**result, "files": files}, tmp / "report.html", draws=draws, events=events
    )


#: Days after ``today`` the default scan covers.
SCAN_DAYS = 90


def last_observed_day(observed: pd.DataFrame | None) -> float:
    """The patient's last observation day (days since CAR-T; 0 without observations)."""
    if observed is None or not len(observed):
        return 0.0
    return float(pd.to_numeric(observed["day"], errors="coerce").max())


def _check_today(today: float | None, observed: pd.DataFrame | None) -> float:
    """The day of the decision: ``today`` as given, else the patient's last observation;
    draws without observations (the virtual population) have none, so they need it."""
    if today is None:
        if observed is None:
            raise InputError(
                "these draws have no observations (draws of the virtual population), so "
                "there is no last observation to take as today: a window needs the day of "
                "the decision",
                column="today",
                fix="give today (days since CAR-T), e.g. window_from_fit(..., today=30)",
            )
        return max(last_observed_day(observed), 0.0)
    if not (np.isfinite(today) and today >= 0):
        raise InputError(f"today must be a day since CAR-T (>= 0), got {today:g}",
                         column="today", fix="e.g. --today 40")  # fmt: skip
    return float(today)


def default_days(today: float) -> list[float]:
    """Candidate days of a scan that starts today: every day from ``today`` (at least
    day 1) to ``today`` + :data:`SCAN_DAYS`."""
    first = float(max(np.ceil(today), 1.0))
    return [first + k for k in range(SCAN_DAYS + 1)]


def split_past(days: Sequence[float], today: float) -> tuple[list[float], list[float]]:
    """(days from ``today`` on, days before it); refuses a scan with no day left."""
    future = [float(d) for d in days if d >= today]
    past = [float(d) for d in days if d < today]
    if not future:
        raise InputError(
            f"every boost day is before today (day {today:g}): a boost cannot be given in the past",
            column="boost-days",
            fix=f"give days from {today:g} on (e.g. --boost-days {today:g}:{today + 90:g}), "
            "or --today DAY for a retrospective scan",
        )
    return future, past


def _check_model(model: Model, folder: Path | None) -> None:
    """Refuse a model without the observables engraftment is defined on."""
    missing = [o for o in NEEDED if o not in model.obs_names]
    if missing:
        raise InputError(
            f"the fit used the '{model.name}' model, which has no {', '.join(missing)}: "
            "engraftment cannot be predicted",
            file=None if folder is None else str(folder / "fit.json"),
            fix="fit with --components full (or haematopoiesis)",
        )


def _patient_rows(observed: pd.DataFrame | None, patient: str | None) -> pd.DataFrame | None:
    """The rows of ``patient`` in ``observed`` (None stays None)."""
    if observed is None:
        return None
    return observed[observed["patient"].astype(str) == patient]


def _draws_from(post: Posterior) -> str:
    """Where a posterior's draws came from, in words (window.json ``draws_from``)."""
    prov = post.provenance
    if "fit_folder" in prov:
        return f"posterior draws of the fit in {prov['fit_folder']}"
    if "population" in prov:
        return f"draws of the calibrated virtual population ({prov['population']})"
    return "posterior draws of a fit in memory"


def _misfit_inputs(post: Posterior) -> tuple:
    """What :func:`misfit_reasons` reads of the fit: meta, summary, residuals."""
    return post.fit.meta, post.fit.summary, post.fit.residuals


def write_patient_report(
    fit: str | Path | FitFolder | Posterior, window: dict, path: str | Path, **kw
) -> Path:
    """The patient's HTML report of a window result
    (:func:`carthema.clinical.patient_report.write_patient_report`); ``fit`` as
    :func:`as_posterior` takes it."""
    from carthema.clinical.patient_report import write_patient_report as write

    return write(as_posterior(fit), window, path, **kw)
