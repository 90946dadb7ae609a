"""The inputs of predict-boost: the patient's boost-day state checked and understood
(:func:`read_inputs`), the simulated courses before and after the boost with their
support (:func:`boost_courses`), and the likelihood terms they give
(:func:`likelihood_terms`). Every refusal is an :class:`~carthema.data.errors.InputError`
naming the option and the fix."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carthema.clinical.boost.likelihood import GCSF_FALL_DAYS, LAB_SD, Term
from carthema.clinical.endpoints import ANC_ENGRAFT, PLT_ENGRAFT
from carthema.clinical.population.natural_history import DISEASE_MIX, check_disease
from carthema.clinical.population.virtual import PRODUCT_LD, product_events
from carthema.data.boost import BoostPlan, GraftSource
from carthema.data.errors import InputError
from carthema.fitting.priors import RESIDUALS
from carthema.models.events import build_events
from carthema.models.hematotox import hematotox as hematotox_score
from carthema.models.hematotox import parse_hematotox
from carthema.models.model import Model
from carthema.models.scenarios import EVENT_COLUMNS

#: Days of G-CSF (and of a TPO agonist) before the boost put into the simulated course.
SUPPORT_DAYS = 14.0
#: Product course used when none is given: the commoner product of the LBCL calibration
#: cohort (Rejeski et al. 2021: axi-cel 159, tisa-cel 76). A disease with one product in
#: its cohorts (MCL: brexu-cel) takes that product when none is given.
DEFAULT_PRODUCT_COURSE = "axi-cel"


@dataclass
class BoostInputs:
    """The checked inputs of one prediction (see
    :func:`carthema.clinical.boost.predict.predict_boost` for each)."""

    graft: BoostPlan
    day: float
    dose: float
    source: GraftSource
    cd3: float | None
    cd3_note: str | None
    anc: float | None
    anc_lloq: float
    platelets: float | None
    gcsf: bool
    gcsf_start: float
    gcsf_since: float | None
    gcsf_after: float
    gcsf_dependent: bool
    gcsf_note: str | None
    plt_transfused: bool
    tpo: bool
    neutropenia_days: float | None
    product: str | None
    disease: str
    hematotox: int | str | None
    hematotox_info: dict
    donor_chimerism: float | None
    horizon_days: float

    @property
    def labs(self) -> dict | None:
        """The five CAR-HEMATOTOX values, when given."""
        return self.hematotox_info.get("labs")


def _check_number(name, value, *, low=0.0, allow_zero=True, fix=""):
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", column=name, fix=fix) from None
    if not np.isfinite(v) or v < low or (v == low and not allow_zero):
        raise InputError(f"{name} = {value!r} is not allowed", column=name, fix=fix)
    return v


def _resolve_hematotox(hematotox, hematotox_labs) -> tuple[int | str | None, dict]:
    info: dict = {"score": None, "group": None, "from": None}
    labs = None
    if hematotox_labs is not None:
        vals = list(hematotox_labs)
        if len(vals) != 5:
            raise InputError(
                "CAR-HEMATOTOX needs five values before lymphodepletion: platelets, ANC, "
                "haemoglobin, CRP, ferritin",
                column="hematotox-labs",
                fix="e.g. --hematotox-labs 110,0.95,10.1,4.2,540 (G/L, G/L, g/dL, mg/dL, ng/mL)",
            )
        s = hematotox_score(*vals)
        labs = dict(zip(("platelets", "anc", "hemoglobin", "crp", "ferritin"), vals, strict=True))
        given = parse_hematotox(hematotox) if isinstance(hematotox, str) else hematotox
        if given is not None and given not in (s.total, s.group):
            raise InputError(
                f"--hematotox {hematotox} disagrees with the score of the given values ({s.total})",
                column="hematotox",
                fix="give either the score or the five values",
            )
        info.update(score=s.total, group=s.group, labs=labs, **{"from": "laboratory values"})
        return s.total, info
    if isinstance(hematotox, str):  # the CLI's form: "3", "low", "high"
        hematotox = parse_hematotox(hematotox)
    if hematotox in ("low", "high"):
        info.update(group=hematotox, **{"from": "given group"})
        return hematotox, info
    if hematotox is not None:
        h = _check_number("hematotox", hematotox, fix="a score from 0 to 7, or low or high")
        if h != int(h) or not 0 <= h <= 7:
            raise InputError(
                f"CAR-HEMATOTOX score must be an integer 0-7 (or the group low or high), "
                f"got {hematotox}",
                column="hematotox",
                fix="give the score (0-7), the group (low or high) or the five values with "
                "--hematotox-labs",
            )
        info.update(score=int(h), group="high" if h >= 2 else "low", **{"from": "given score"})
        return int(h), info
    return None, info


def read_inputs(
    graft: BoostPlan,
    *,
    anc,
    anc_lloq,
    platelets,
    gcsf,
    gcsf_after,
    gcsf_dependent,
    gcsf_since,
    plt_transfused,
    tpo,
    neutropenia_days,
    product,
    disease,
    hematotox,
    hematotox_labs,
    donor_chimerism,
    n_draws,
    min_ess: float,
    default_draws: int,
    horizon_days: float,
) -> BoostInputs:
    """The inputs checked (one-line refusals) and completed with the stated defaults."""
    source = graft.source
    dose = _check_number("dose", graft.cd34_per_kg, allow_zero=False,
                         fix="CD34+ cells/kg, e.g. --dose 3.1e6")  # fmt: skip
    if graft.day is None:
        raise InputError("the boost day is required", column="day", fix="e.g. --day 45")
    day = _check_number("day", graft.day, allow_zero=False,
                        fix="the boost day after CAR-T, e.g. 45")  # fmt: skip
    estimated, cd3_note = graft.t_cells()  # the one CD3+ rule (refuses a new donor's
    cd3 = estimated if cd3_note else graft.cd3_per_kg  # unselected graft without CD3+)
    fix_counts = "counts in G/L, e.g. --anc 0.3 --plt 15 (--anc 0: below the lab's limit)"
    anc = _check_number("anc", anc, fix=fix_counts)
    platelets = _check_number("plt", platelets, allow_zero=False, fix=fix_counts)
    anc_lloq = _check_number("anc-lloq", anc_lloq, allow_zero=False, fix="e.g. 0.05 G/L")
    gcsf_after = _check_number("gcsf-after", gcsf_after, fix="days of G-CSF after the boost")
    gcsf_note = None
    if gcsf_dependent and not gcsf:
        gcsf = True
        gcsf_note = "--gcsf-dependent: the patient is on G-CSF on the boost day"
    if gcsf_since is not None:  # G-CSF from that day (days since CAR-T) through the boost
        gcsf = True
        if not (np.isfinite(gcsf_since) and gcsf_since <= day):
            raise InputError(f"G-CSF since day {gcsf_since:g} is not on or before the boost "
                             f"day {day:g}", column="gcsf-since",
                             fix="give the day G-CSF started, e.g. --gcsf-since 19")  # fmt: skip
    # Without a start day, the stated assumption: G-CSF over the SUPPORT_DAYS before the boost.
    gcsf_start = float(gcsf_since) if gcsf_since is not None else day - SUPPORT_DAYS
    if gcsf_after and not gcsf:
        raise InputError("--gcsf-after needs G-CSF", column="gcsf-after", fix="add --gcsf-since")
    neutropenia_days = _check_number(
        "neutropenia-days", neutropenia_days, fix="days with ANC < 0.5 G/L before the boost"
    )
    if neutropenia_days is not None and neutropenia_days > day + 7:
        raise InputError(
            f"{neutropenia_days:g} neutropenic days before a boost on day {day:g} is more "
            "days than the course has",
            column="neutropenia-days",
            fix="count the days with ANC < 0.5 G/L between lymphodepletion and the boost",
        )
    # The disease's own calibrated population is conditioned (load_population(disease=)).
    disease = check_disease(disease, own_population=True)
    if product is None and len(DISEASE_MIX[disease]) == 1:
        # One product in the disease's cohorts (MCL: brexu-cel, the product its population
        # was calibrated under): its kinetics and course, as natural-history does.
        product = next(iter(DISEASE_MIX[disease]))
    if product is not None:
        product = str(product).strip().lower()
        if product not in PRODUCT_LD:
            raise InputError(f"unknown product '{product}'", column="product",
                             fix=f"choose one of {', '.join(sorted(PRODUCT_LD))}")  # fmt: skip
    if not isinstance(n_draws, int | np.integer) or n_draws < 2 * min_ess:
        raise InputError(
            f"{n_draws} particles cannot give {min_ess:.0f} effective draws",
            column="particles",
            fix=f"use at least {2 * min_ess:.0f} particles (n_draws; default {default_draws})",
        )
    ht, ht_info = _resolve_hematotox(hematotox, hematotox_labs)
    chim = _check_number("donor-chimerism", donor_chimerism, fix="a fraction 0-1, e.g. 0.95")
    if chim is not None and chim > 1.0:
        raise InputError(f"donor chimerism {chim:g} is not a fraction", column="donor-chimerism",
                         fix="give a fraction 0-1 (95 % = 0.95)")  # fmt: skip
    if chim is None and source == "prior-donor":
        chim = 1.0
    return BoostInputs(
        graft=graft, day=day, dose=dose, source=source, cd3=cd3, cd3_note=cd3_note, anc=anc,
        anc_lloq=anc_lloq, platelets=platelets, gcsf=bool(gcsf), gcsf_start=gcsf_start,
        gcsf_since=gcsf_since, gcsf_after=float(gcsf_after or 0.0),
        gcsf_dependent=bool(gcsf_dependent), gcsf_note=gcsf_note,
        plt_transfused=bool(plt_transfused), tpo=bool(tpo), neutropenia_days=neutropenia_days,
        product=product, disease=disease, hematotox=ht, hematotox_info=ht_info,
        donor_chimerism=chim, horizon_days=float(horizon_days),
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# the courses


def _row(day, kind, amount, unit, duration=None, **extra) -> dict:
    r = {c: None for c in EVENT_COLUMNS}
    r.update(patient="patient", day=float(day), kind=kind, amount=amount, unit=unit,
             duration=duration, **extra)  # fmt: skip
    return r


def _add(events: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return events
    cols = list(events.columns) if len(events.columns) else EVENT_COLUMNS
    for c in EVENT_COLUMNS:
        if c not in cols:
            cols.append(c)
    recs = events.to_dict("records") + rows
    out = pd.DataFrame.from_records([{c: r.get(c) for c in cols} for r in recs], columns=cols)
    return out.sort_values("day", kind="stable").reset_index(drop=True)


@dataclass
class Courses:
    """The event tables of one prediction: ``conditioned`` (the course to the boost day
    with its support), ``predicted`` (the same with what follows the boost day: the last
    platelet transfusion), ``own`` (without any support: the patient's own counts),
    ``off_gcsf`` (G-CSF stopped after the boost day: the --gcsf-dependent term), and the
    later boosts the given events had (``replaced``)."""

    conditioned: pd.DataFrame
    predicted: pd.DataFrame
    own: pd.DataFrame
    off_gcsf: pd.DataFrame
    course: str
    replaced: list[str] = field(default_factory=list)

    @property
    def own_is_conditioned(self) -> bool:
        """True when the course without support is the conditioned one (no support
        rows), so that its simulation serves both."""
        return len(self.own) == len(self.conditioned)


def boost_courses(inp: BoostInputs, events: pd.DataFrame | None) -> Courses:
    """The simulated courses before and after the boost (see :class:`Courses`): the
    given events or the product's course (:data:`DEFAULT_PRODUCT_COURSE` when no product
    is named), later boosts dropped, with the support of the inputs."""
    course = inp.product or DEFAULT_PRODUCT_COURSE
    day = inp.day
    if events is None:  # the product's course in the disease (MCL: ZUMA-2)
        ev = product_events(course, patient="patient", disease=inp.disease)
    else:
        ev = events
    later = (ev["kind"] == "stem_cell_boost") & (ev["day"] >= day)
    replaced = [f"stem_cell_boost on day {d:g}" for d in ev.loc[later, "day"]]
    ev = ev[~later].reset_index(drop=True)
    support_rows, after_rows = [], []
    if inp.gcsf:
        support_rows.append(
            # Through the boost day (its count is supported), then gcsf_after more days.
            _row(inp.gcsf_start, "gcsf", 5.0, "ug/kg/day",
                 day - inp.gcsf_start + 1.0 + inp.gcsf_after)
        )  # fmt: skip
    if inp.tpo:
        support_rows.append(
            _row(day - SUPPORT_DAYS, "tpo_agonist", None, "dose/day",
                 SUPPORT_DAYS + inp.horizon_days + 1.0)
        )  # fmt: skip
    if inp.plt_transfused:
        after_rows.append(_row(day, "platelet_transfusion", 1.0, "units"))
    ev_cond = _add(ev, support_rows)
    ev_pred = _add(ev_cond, after_rows)
    own_kinds = ("gcsf", "tpo_agonist", "platelet_transfusion")
    ev_own = ev_cond[~ev_cond["kind"].isin(own_kinds)].reset_index(drop=True)
    # --gcsf-dependent: the same course with G-CSF stopped after the boost day.
    stopped = [{**r, "duration": SUPPORT_DAYS + 1.0} if r["kind"] == "gcsf" else r
               for r in support_rows]  # fmt: skip
    ev_off_gcsf = _add(ev, stopped)
    return Courses(
        conditioned=ev_cond,
        predicted=ev_pred,
        own=ev_own,
        off_gcsf=ev_off_gcsf,
        course=course if events is None else "from --events",
        replaced=replaced,
    )


# --------------------------------------------------------------------------------------
# what is conditioned on


@dataclass
class Conditioned:
    """The likelihood terms, the simulated days they refer to (from the first event to
    the boost day), what each conditions on (for the output) and the analytes of the
    observations that are not used."""

    terms: list[Term]
    days: np.ndarray
    conditioned: list[dict]
    unused: list[str]


def likelihood_terms(
    model: Model,
    inp: BoostInputs,
    courses: Courses,
    base: np.ndarray,
    prior_names: list[str],
    observations: pd.DataFrame | None,
) -> Conditioned:
    """The terms of the boost-day state and of earlier ``observations``."""
    day = inp.day
    first = build_events(model, courses.conditioned, base).first_time
    start = np.floor(min(first if first is not None else 0.0, 0.0))
    days = np.arange(start, day + 0.5, 1.0)
    terms: list[Term] = []
    conditioned = []

    def count_term(d, analyte, value, lloq=np.nan, blq=False, label=""):
        res = RESIDUALS[analyte]
        i = int(np.searchsorted(days, np.round(d)))
        if i >= days.size or days[i] != np.round(d):
            return
        j = model.index("obs", analyte)
        if blq:
            terms.append(Term("below", label, i, j, np.log(lloq), res.typical_sd, res.floor))
            conditioned.append({"day": float(d), "analyte": analyte, "below": float(lloq)})
        else:
            terms.append(Term("obs", label, i, j, np.log(value), res.typical_sd, res.floor))
            conditioned.append({"day": float(d), "analyte": analyte, "value": float(value)})

    unused: list[str] = []
    if observations is not None and len(observations):
        obs = observations
        unused = sorted(set(obs["analyte"]) - {"anc", "platelets"})
        # Earlier values, and boost-day values the flags do not give.
        given = {a for a, v in (("anc", inp.anc), ("platelets", inp.platelets)) if v is not None}
        if inp.plt_transfused:
            given.add("platelets")
        same_day = np.round(obs["day"]) == np.round(day)
        obs = obs[
            obs["analyte"].isin(["anc", "platelets"])
            & (obs["day"] <= day)
            & ~(same_day & obs["analyte"].isin(sorted(given)))
        ]
        for r in obs.itertuples(index=False):
            blq = getattr(r, "blq", False)
            blq = False if blq is None or pd.isna(blq) else bool(blq)
            lloq = getattr(r, "lloq", None)
            lloq = np.nan if lloq is None or pd.isna(lloq) else float(lloq)
            if blq and not (np.isfinite(lloq) and lloq > 0):
                lloq = RESIDUALS[r.analyte].zero_limit
            if not blq and not (np.isfinite(r.value) and r.value > 0):
                blq, lloq = True, RESIDUALS[r.analyte].zero_limit
            count_term(r.day, r.analyte, r.value, lloq, blq, f"{r.analyte} on day {r.day:g}")
    if inp.anc is not None:
        blq = inp.anc < inp.anc_lloq
        what = f"below {inp.anc_lloq:g}" if blq else f"{inp.anc:g}"
        count_term(day, "anc", inp.anc, inp.anc_lloq, blq, f"ANC {what} G/L on the boost day")
    if inp.plt_transfused:
        count_term(day, "platelets", None, PLT_ENGRAFT, True,
                   "own platelets below 20 G/L (transfusion dependent)")  # fmt: skip
    elif inp.platelets is not None:
        what = f"platelets {inp.platelets:g} G/L on the boost day"
        count_term(day, "platelets", inp.platelets, label=what)
    if inp.gcsf_dependent:
        # "The ANC falls below 0.5 G/L whenever G-CSF stops": in the same particle's
        # course with G-CSF stopped after the boost day (and no boost), the lowest ANC of
        # the next GCSF_FALL_DAYS days is below 0.5 G/L (a censored term).
        res_anc = RESIDUALS["anc"]
        label = (f"ANC below 0.5 G/L within {GCSF_FALL_DAYS:g} days of stopping G-CSF "
                 "(G-CSF dependent)")  # fmt: skip
        terms.append(Term("off_gcsf", label, days.size - 1, model.index("obs", "anc"),
                          np.log(ANC_ENGRAFT), res_anc.typical_sd, res_anc.floor))  # fmt: skip
        conditioned.append({"day": float(day), "analyte": "anc", "below": ANC_ENGRAFT,
                            "course": f"G-CSF stopped, lowest of the next {GCSF_FALL_DAYS:g} "
                            "days"})  # fmt: skip
    if inp.neutropenia_days is not None:
        # The SD is the particle's own (neutropenia_sd of its simulated count).
        terms.append(Term("days", f"{inp.neutropenia_days:g} days with ANC < 0.5 G/L",
                          days.size - 1, -1, float(inp.neutropenia_days)))  # fmt: skip
    labs = inp.labs
    if labs is not None:
        for name, key in (("anc0", "anc"), ("plt0", "platelets"), ("hemoglobin", "hemoglobin"),
                          ("crp", "crp"), ("ferritin", "ferritin")):  # fmt: skip
            if name in prior_names and labs[key] > 0:
                terms.append(Term("lab", f"baseline {key} {labs[key]:g}", -1,
                                  prior_names.index(name), np.log(labs[key]), LAB_SD))  # fmt: skip
    return Conditioned(terms, days, conditioned, unused)


__all__ = [
    "DEFAULT_PRODUCT_COURSE",
    "SUPPORT_DAYS",
    "BoostInputs",
    "Conditioned",
    "Courses",
    "boost_courses",
    "likelihood_terms",
    "read_inputs",
]
