"""The engraftment window of a fitted patient, and the per-patient HTML report.

:func:`window_from_fit` reads a fit folder, takes posterior draws of the patient's
parameters, scans candidate boost days with :func:`carthema.clinical.plans.window_job`
and (optionally) writes a self-contained HTML report with the fit plot, the window plot,
the table and the diagnostics.

Existing stem-cell boosts in the patient's events are the decision being scanned: they
are removed before the scan (and listed in the output), so that every candidate plan is
"this boost instead of what was given".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.clinical.plans import require_cd3, window_job
from carthema.data.atomic import swap_folder
from carthema.data.errors import InputError
from carthema.fitting.fitdir import FitFolder, load_fit

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
        raise InputError(f"cannot read boost days '{spec}'", column="boost-days", fix=how) from None
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


def window_draws(
    ff: FitFolder, n_draws: int, *, seed: int = 0, dose: float | None = None
) -> tuple[np.ndarray, dict]:
    """Posterior draws for the window, each with graft and rejection parameters of its
    own (:func:`carthema.clinical.population.graft.draw_graft`): from the calibrated population's
    distribution when it has them as columns, else their TRAITS spread, else the stated
    log-normal assumption. Graft parameters the fit estimated keep their posterior
    values. With ``dose`` (CD34+ cells/kg) a share of the draws get a failed graft
    (:func:`carthema.clinical.population.graft.p_graft_failure`). Returns the draws and
    where each graft parameter came from."""
    from carthema.clinical.population.graft import draw_graft, graft_sources
    from carthema.clinical.population.virtual import load_population

    try:
        population = load_population()[0]
    except InputError:  # no population file in this installation: TRAITS / assumption
        population = None
    draws = ff.draws(n_draws, seed=seed)
    rng = np.random.default_rng([seed, 10])
    draws = draw_graft(ff.model, draws, rng, population=population, keep=tuple(ff.free), dose=dose)
    sources = graft_sources(ff.model, population)
    for name in ff.free:
        if name in sources:
            sources[name] = "estimated by the fit (posterior draws)"
    return draws, sources


def window_from_fit(
    fit: str | Path | FitFolder,
    boost_days: Sequence[float],
    out: str | Path,
    *,
    dose: float = 3e6,
    source: str = "allogeneic",
    selected: bool = True,
    cd3_per_kg: float | None = None,
    threshold: float = 0.8,
    cart_limit: float = 1000.0,
    n_draws: int = WINDOW_DRAWS,
    seed: int = 0,
    report: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Engraftment window of a fitted patient.

    Parameters
    ----------
    fit:
        A fit folder (``carthema fit ... --out DIR``) or a loaded :class:`FitFolder`.
    boost_days:
        Candidate boost days (days since CAR-T day 0).
    out:
        Output folder: ``window.csv`` (one row per boost day), ``window.json``,
        ``window.png`` and, with ``report``, ``report.html``.
    dose, source, selected, cd3_per_kg:
        The boost: CD34+ cells/kg; ``"autologous"``, ``"prior-donor"`` or ``"allogeneic"``
        (a new donor); CD34-selected; CD3+ cells/kg (needed for an unselected graft from a
        new donor).
    threshold:
        Wanted probability of neutrophil engraftment within 30 days of the boost.
    cart_limit:
        Highest acceptable median CAR-T level on the boost day (copies/ug DNA).
    n_draws:
        Posterior draws to predict over (picked at random with ``seed``), each with graft
        and rejection parameters drawn from their population distribution
        (:func:`window_draws`), so the intervals carry the graft's own uncertainty.

    Returns the JSON summary (window, transplant signals, summary lines, files).
    """
    say = log or (lambda _m: None)
    ff = fit if isinstance(fit, FitFolder) else load_fit(fit)
    missing = [o for o in NEEDED if o not in ff.model.obs_names]
    if missing:
        raise InputError(
            f"the fit used the '{ff.model.name}' model, which has no {', '.join(missing)}: "
            "engraftment cannot be predicted",
            file=str(ff.path / "fit.json"),
            fix="fit with --components full (or haematopoiesis)",
        )
    from carthema.models.components.haematopoiesis import graft_source

    source = graft_source(source)  # autologous, prior-donor or allogeneic (or a refusal)
    if cd3_per_kg is not None and not (np.isfinite(cd3_per_kg) and cd3_per_kg >= 0):
        raise InputError(f"the CD3+ dose must be a number of cells/kg >= 0, got {cd3_per_kg:g}",
                         column="cd3", fix="e.g. --cd3 1e7")  # fmt: skip
    require_cd3(source, selected, cd3_per_kg)
    if not (np.isfinite(dose) and dose > 0):
        raise InputError(f"dose must be a positive number of CD34+ cells/kg, got {dose:g}",
                         column="dose", fix="e.g. --dose 3e6")  # fmt: skip
    if not 0.0 < threshold <= 1.0:
        raise InputError(f"threshold must be in (0, 1], got {threshold:g}", column="threshold")
    events, removed = without_boosts(ff.events)
    draws, graft = window_draws(ff, n_draws, seed=seed, dose=dose)
    observed = ff.observations
    if observed is not None:
        observed = observed[observed["patient"].astype(str) == ff.patient]
    out = Path(out)
    say(
        f"predicting {len(boost_days)} boost days x {draws.shape[0]} posterior draws "
        f"of patient {ff.patient}"
    )
    # Written into a temporary folder that replaces ``out`` only when everything is there:
    # an interrupted scan leaves no half-written result.
    with swap_folder(out) as tmp:
        result = window_job(
            ff.model,
            draws,
            events,
            boost_days,
            tmp,
            dose=dose,
            source=source,
            selected=selected,
            cd3_per_kg=cd3_per_kg,
            threshold=threshold,
            cart_limit=cart_limit,
            observations=observed,
        )
        written = result["files"]
        result["files"] = {k: str(out / Path(v).name) for k, v in written.items()}
        result["patient"] = ff.patient
        result["graft_parameters"] = graft
        result["fit"] = str(ff.path)
        result["replaced_events"] = removed
        if removed:
            result["summary_lines"].append(
                "The scan replaces the boost the patient received ("
                + "; ".join(removed)
                + "): each candidate day is predicted as if that boost had been given then."
            )
        if report:
            say("writing the HTML report")
            write_patient_report(ff, {**result, "files": written}, tmp / "report.html")
            result["files"]["report"] = str(out / "report.html")
        (tmp / "window.json").write_text(json.dumps(result, indent=2, default=float))
    return result


def _diagnostics_line(diag: dict) -> str:
    nan = float("nan")
    if diag.get("method") == "map":
        return f"MAP + Laplace approximation, {diag.get('draws', '?')} draws (no MCMC diagnostics)."
    return (
        f"{diag.get('method', '?')}: {diag.get('chains', '?')} chains x "
        f"{diag.get('draws', '?')} draws; max R-hat {diag.get('max_rhat', nan):.3f}, "
        f"min bulk ESS {diag.get('min_ess_bulk', nan):.0f}, divergences "
        f"{diag.get('divergences', '?')}."
    )


def _figure_lines(window: dict) -> list[str]:
    """What the window figure shows, in words, with the excluded days named."""
    w = window["window"]
    days = ", ".join(f"{d:g}" for d in w.get("days_over_cart_limit", [])) or "none"
    lines = [
        "Top: probability of neutrophil and platelet engraftment within "
        f"{w['within_days']} days of a boost on each candidate day, and of the same draws "
        "without a boost (open markers, dotted). Shaded: the window (green); days excluded "
        f"because the predicted CAR-T level is above {w['cart_limit']:g} copies/ug (red, "
        f"hatched; here: {days}), because most draws have already engrafted (grey), or "
        "because a boost saves no cytopenic days (purple). Middle: median days with ANC "
        "< 0.5 G/L and platelets < 20 G/L a boost saves against no boost. Bottom: ANC and "
        "platelets over time without a boost (grey median and 90 % band), with the boost "
        "on the recommended day when there is one (blue), and the patient's measured "
        "counts (black dots; open circles: below the limit, drawn at the limit)."
    ]
    removed = window.get("replaced_events") or []
    if removed:
        lines.append(
            "The patient received " + "; ".join(removed) + ": measured counts after it "
            "reflect that boost, which the predicted courses leave out."
        )
    return lines


def write_patient_report(ff: FitFolder, window: dict, path: str | Path) -> Path:
    """Self-contained HTML page: summary, window plot and table, fit plot, diagnostics,
    posterior table."""
    from carthema.clinical.report import Section, write_report

    diag = ff.meta.get("diagnostics", {})
    table = pd.read_csv(window["files"]["table"])
    keep = [
        c
        for c in (
            "boost_day",
            "neutrophil_median_days",
            "neutrophil_q05",
            "neutrophil_q95",
            "neutrophil_p_within_14d",
            "neutrophil_p_within_30d",
            "platelet_median_days",
            "platelet_p_within_30d",
            "days_anc_lt_0.5_median",
            "chimerism_day30_median",
            "cart_at_reference_median",
            "already_recovered",
            "in_window",
        )
        if c in table
    ]
    plan = window["plan"]
    sections = [
        Section(
            "Engraftment window",
            paragraphs=[
                f"Boost of {plan['dose_cd34_per_kg']:.3g} CD34+ cells/kg, {plan['source']}, "
                f"{'CD34-selected' if plan['cd34_selected'] else 'unselected'}; "
                f"{window['n_draws']} posterior draws per candidate day. Days are counted "
                "from CAR-T day 0; engraftment days from the boost.",
                *_figure_lines(window),
            ],
            figures=[window["files"]["plot"]],
            tables=[table[keep]],
        ),
        Section(
            "Fit to the patient's data",
            paragraphs=[
                "Observed values (dots; open circles below the assay limit) with the "
                "posterior predictive median and 50 % / 90 % bands."
            ],
            figures=[ff.path / "fit.png"] if (ff.path / "fit.png").exists() else [],
        ),
        Section(
            "Sampler diagnostics",
            warnings=list(diag.get("warnings", [])),
            paragraphs=[_diagnostics_line(diag)] + [f"Note: {n}" for n in ff.notes],
        ),
    ]
    if ff.summary is not None:
        wanted = ("name", "unit", "prior_median", "median", "q05", "q95", "shrinkage")
        cols = [c for c in (*wanted, "ess_bulk", "r_hat", "true") if c in ff.summary]
        sections.append(
            Section(
                "Parameters: prior and posterior",
                paragraphs=[
                    "Shrinkage near 0: the data say little about the parameter (posterior = "
                    "prior); near 1: the data pin it down."
                ],
                tables=[ff.summary[cols]],
            )
        )
    return write_report(
        path,
        f"carthema: patient {ff.patient}",
        window["summary_lines"],
        sections,
    )
