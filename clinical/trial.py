"""Virtual trials: many virtual patients, boost policies, cumulative incidence of recovery.

Patients are, by default, rows of the calibrated virtual population
(:func:`carthema.clinical.population.virtual.load_population`, drawn by the one sampler
:func:`carthema.clinical.population.natural_history.sample_patients`; optionally one
product), each simulated after its own product's lymphodepletion and dose
(:func:`carthema.clinical.population.virtual.product_events`) with graft parameters of its own
(:func:`carthema.clinical.population.graft.draw_graft`). Other sources, as options: another
population CSV of the same form, the fitting priors (``"prior"``: a log-normal
distribution of the default free parameters around the defaults, simulated after a
typical course) or a population fit's means and between-patient spreads (a JSON). A policy
decides, from the patient's simulated counts on a trigger day, whether and when to give
a stem-cell boost; every patient is then simulated under what the policy gave them (a
boosted patient's graft fails outright with the dose's primary-failure probability,
:func:`carthema.clinical.population.graft.p_graft_failure`: about 10 % at 1e6 CD34+/kg,
1 % at 2e6/kg, its source there; ``graft_failed`` says whom it hit), and
the time from CAR-T to neutrophil and platelet engraftment (the one definition of
:mod:`carthema.clinical.endpoints`, counted from CAR-T day 0) is summarised as
cumulative incidence (1 - Kaplan-Meier over the patients not already engrafted; patients
without engraftment by the horizon are censored; the model has no death, so there is no
competing event).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from carthema.clinical.endpoints import (
    FROM_CART,
    kaplan_meier,
    lineage_engraftment,
    support_from_events,
)
from carthema.clinical.population.graft import draw_graft, fail_grafts
from carthema.clinical.population.virtual import simulate_obs
from carthema.clinical.trial_inputs import (  # noqa: F401 (public here)
    CALIBRATED,
    POLICY_COLUMNS,
    Policy,
    read_policies,
    read_population,
    trial_source,
)
from carthema.data.errors import InputError
from carthema.fitting.priors import DEFAULT_FREE, prior_table
from carthema.models.events import build_events
from carthema.models.model import Model, get_model
from carthema.models.posterior import Posterior
from carthema.models.scenarios import typical_course, with_plan
from carthema.models.solver_contract import PREDICT


def population_draws(
    model: Model,
    n: int,
    rng: np.random.Generator,
    mu: dict[str, float] | None = None,
    omega: dict[str, float] | None = None,
) -> np.ndarray:
    """``n`` virtual patients: log p ~ Normal(mu, omega) for the varying parameters
    (defaults: the population priors of the default free set), the graft parameters from
    their population distribution (:mod:`carthema.clinical.population.graft`), others at
    defaults."""
    P = draw_graft(model, np.tile(model.default_params(), (n, 1)), rng)
    priors = {pr.name: pr for pr in prior_table(model, DEFAULT_FREE[model.name])}
    # In the model's parameter order: a set's order follows the process's hash seed, and
    # each name takes the next n normals, so a set made the draws differ between runs.
    names = sorted(set(priors) | set(mu or {}), key=lambda name: model.index("param", name))
    for name in names:
        j = model.index("param", name)
        m = (mu or {}).get(name, priors[name].mu if name in priors else np.log(P[0, j]))
        s = (omega or {}).get(name, priors[name].sd if name in priors else 0.0)
        P[:, j] = np.exp(m + s * rng.standard_normal(n))
    return P


@dataclass(frozen=True)
class Cohort:
    """Virtual patients of a trial: parameters (natural scale, (n, n_params)), the events
    of each patient's course (one table per group) and each patient's group."""

    P: np.ndarray
    courses: dict[str, pd.DataFrame]
    group: np.ndarray  # (n,) key of ``courses``
    source: str


def calibrated_cohort(
    model: Model,
    n: int,
    rng: np.random.Generator,
    *,
    population: str | Path | pd.DataFrame | None = None,
    product: str | None = None,
) -> Cohort:
    """``n`` virtual patients of the calibrated population (or the population CSV
    ``population``), of ``product`` only when given, each after its own product's
    course, with graft parameters of its own.

    Drawn by the one sampler,
    :func:`carthema.clinical.population.natural_history.sample_patients`: the trial
    estimates each policy's outcome over the population, so the rows are a balanced
    draw (without replacement up to the population's size; beyond it every row
    ``n // size`` times plus ``n % size`` more), and without ``product`` the LBCL
    cohort's mix is given in fixed shares (axi-cel : tisa-cel 159 : 76, randomly
    assigned: one trait distribution is shared by every product) rather than a
    binomial draw of it; a frame with a ``product`` column keeps its rows' own."""
    from carthema.clinical.population.natural_history import sample_patients
    from carthema.clinical.population.virtual import (
        load_population,
        population_params,
        product_events,
    )

    pop = population if isinstance(population, pd.DataFrame) else load_population(population)[0]
    rows = sample_patients(pop, n, rng, product)
    P = draw_graft(model, population_params(model, rows), rng, population=pop)
    group = rows["product"].to_numpy(str)
    courses = {g: product_events(g, patient="virtual") for g in sorted(set(group))}
    label = "calibrated population" if population is None else f"population {population}"
    if isinstance(population, pd.DataFrame):
        label = "population frame"
    return Cohort(P, courses, group, label + (f", {product} rows" if product else ""))


def posterior_cohort(posterior: Posterior, n: int, rng: np.random.Generator) -> Cohort:
    """``n`` virtual patients from the draws of ``posterior`` (a fit's, or the calibrated
    population's, :meth:`~carthema.clinical.population.posterior.VirtualPopulation.sample`),
    a balanced draw of the equally weighted draws as the population's rows are drawn
    (:func:`~carthema.clinical.population.natural_history.balanced_rows`: without
    replacement up to their number), each after the posterior's events, with graft
    parameters of their own (those the fit estimated are kept)."""
    from carthema.clinical.population.natural_history import balanced_rows

    model = posterior.model
    missing = [o for o in ("anc", "platelets") if o not in model.obs_names]
    if missing:
        raise InputError(
            f"a virtual trial needs the model's {' and '.join(missing)}; the posterior's "
            f"component set '{model.name}' has none",
            fix="fit with --components full",
        )
    rows = balanced_rows(posterior.n_draws, int(n), rng)
    P = draw_graft(model, posterior.draws[rows], rng, keep=tuple(posterior.free))
    who = posterior.patient or "posterior"
    return Cohort(P, {"course": posterior.events}, np.full(int(n), "course"), f"{who} draws")


def trial_cohort(
    model: Model,
    n: int,
    rng: np.random.Generator,
    *,
    events: pd.DataFrame | None = None,
    mu: dict[str, float] | None = None,
    omega: dict[str, float] | None = None,
    population: str | Path | pd.DataFrame | None = CALIBRATED,
    product: str | None = None,
) -> Cohort:
    """The trial's virtual patients from the chosen source: the calibrated population
    (``population`` = :data:`CALIBRATED`, the default), a population CSV path or frame,
    or ``population=None`` / ``"prior"`` / ``mu``/``omega`` given: log-normal draws of
    :func:`population_draws` after ``events`` (default a typical course). ``events``
    given with a population replaces every product's course."""
    if mu is not None or omega is not None or population is None or population == "prior":
        P = population_draws(model, n, rng, mu, omega)
        course = events if events is not None else typical_course(patient="virtual")
        what = "population fit (mu, omega)" if mu is not None else "fitting priors"
        return Cohort(P, {"course": course}, np.full(n, "course"), what)
    pop = None if isinstance(population, str) and population == CALIBRATED else population
    cohort = calibrated_cohort(model, n, rng, population=pop, product=product)
    if events is not None:
        cohort = Cohort(cohort.P, {"course": events}, np.full(n, "course"), cohort.source)
    return cohort


#: Follow-up of a trial by default (days since CAR-T).
HORIZON = 180.0


def run_trial(
    policies: list[Policy],
    n: int = 10_000,
    *,
    seed: int = 0,
    horizon: float = HORIZON,
    patients: Posterior | None = None,
    events: pd.DataFrame | None = None,
    mu: dict[str, float] | None = None,
    omega: dict[str, float] | None = None,
    population: str | Path | pd.DataFrame | None = CALIBRATED,
    product: str | None = None,
) -> pd.DataFrame:
    """One row per (policy, patient): boosted or not, engraftment days since CAR-T and
    whether each is censored, and the patient's course (``course``: product, or
    "course" for a single given or typical course). Patients come from ``patients`` (a
    :class:`~carthema.models.posterior.Posterior`: :func:`posterior_cohort`) or else from
    :func:`trial_cohort` (default: the calibrated population). Each course is simulated
    without a boost once, whatever the number of policies; a policy simulates only its
    boosted patients again."""
    rng = np.random.default_rng(seed)
    if patients is not None:
        if mu is not None or omega is not None or product is not None:
            raise InputError(
                "the virtual patients come from one source",
                fix="give a posterior, or a population (mu/omega, product), not both",
            )
        model = patients.model
        cohort = posterior_cohort(patients, n, rng)
        if events is not None:
            cohort = Cohort(cohort.P, {"course": events}, cohort.group, cohort.source)
    else:
        model = get_model("full")
        cohort = trial_cohort(
            model,
            n,
            rng,
            events=events,
            mu=mu,
            omega=omega,
            population=population,
            product=product,
        )
    days = np.arange(-5.0, horizon + 0.5, 1.0)
    first = min(
        (build_events(model, ev, model.default_params()).first_time or 0.0)
        for ev in cohort.courses.values()
    )
    if first < days[0]:
        days = np.arange(np.floor(first), horizon + 0.5, 1.0)
    # The course without a boost, once per course (every policy starts from it).
    groups = {}
    for key, base in cohort.courses.items():
        idx = np.flatnonzero(cohort.group == key)
        groups[key] = (idx, simulate_obs(model, cohort.P[idx], base, days, PREDICT))
    frames = []
    # One stream of graft failures per policy (the cohort's own draws stay unchanged).
    streams = np.random.SeedSequence([seed, 18]).spawn(len(policies))
    for pol, stream in zip(policies, streams, strict=True):
        parts = []
        rng = np.random.default_rng(stream)
        for key, base in cohort.courses.items():
            idx, no_boost = groups[key]
            parts.append(_run_group(model, pol, cohort.P[idx], idx, key, base, days, rng, no_boost))
        df = pd.concat(parts).sort_values("patient", kind="stable").reset_index(drop=True)
        df.insert(0, "policy", pol.name)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out.attrs["source"] = cohort.source
    return out


def _run_group(model, pol, P, idx, key, base, days, rng, no_boost) -> pd.DataFrame:
    """One policy on the patients ``idx`` who share the course ``base`` (named ``key``),
    whose solve without a boost is ``no_boost`` (status, observables); ``rng`` draws which
    boosted patients' grafts fail."""
    anc_j, plt_j = model.index("obs", "anc"), model.index("obs", "platelets")
    st0, O0 = no_boost
    n = P.shape[0]
    # Support given to everyone (a boost adds none): G-CSF days and transfusion windows.
    gcsf, transfusions = support_from_events(base)
    anc, plt_, status = O0[:, :, anc_j].copy(), O0[:, :, plt_j].copy(), st0.copy()
    boosted = np.zeros(n, dtype=bool)
    failed = np.zeros(n, dtype=bool)
    if pol.graft is not None:
        at = days == pol.trigger_day
        trig = np.zeros(n, dtype=bool)
        if pol.anc_below is not None:
            trig |= O0[:, at, anc_j][:, 0] < pol.anc_below
        if pol.plt_below is not None:
            trig |= O0[:, at, plt_j][:, 0] < pol.plt_below
        boosted = trig & (st0 == 0)
        if boosted.any():
            ev = with_plan(base, pol.graft)
            Pb = P[boosted].copy()
            failed[boosted] = fail_grafts(model, Pb, pol.graft.cd34_per_kg, rng)
            st1, O1 = simulate_obs(model, Pb, ev, days, PREDICT)
            anc[boosted], plt_[boosted] = O1[:, :, anc_j], O1[:, :, plt_j]
            status[boosted] = st1
    # Engraftment from CAR-T day 0 with the one definition (engraftment.py): the first
    # qualifying run after the count has fallen below the threshold; patients who never
    # fall are "already engrafted", never day 0.
    res = lineage_engraftment(
        days,
        reference=0.0,
        anc=anc,
        platelets=plt_,
        gcsf=gcsf,
        transfusions=transfusions,
        stable=FROM_CART,
    )
    ne, pe = res["neutrophil"], res["platelet"]
    return pd.DataFrame(
        {
            "patient": idx,
            "course": key,
            "boosted": boosted,
            "graft_failed": failed,
            "status": status,
            "neutrophil_day": ne.day,
            "neutrophil_censored": ne.censored,
            "neutrophil_already": ne.already,
            "platelet_day": pe.day,
            "platelet_censored": pe.censored,
            "platelet_already": pe.already,
        }
    )


def _not_already(g: pd.DataFrame, outcome: str) -> pd.DataFrame:
    col = f"{outcome}_already"
    return g if col not in g else g[~g[col].astype(bool)]


def cumulative_incidence(trial: pd.DataFrame, outcome: str, horizon: float) -> pd.DataFrame:
    """1 - Kaplan-Meier (:func:`carthema.clinical.endpoints.kaplan_meier`) of days from
    CAR-T to ``outcome`` per policy, over the patients who solved and were not already
    engrafted (``<outcome>_already``, when the column is there), censored at
    ``horizon``."""
    grid = np.arange(0.0, horizon + 1.0)
    out = {"day": grid}
    for name, g in trial[trial["status"] == 0].groupby("policy", sort=False):
        g = _not_already(g, outcome)
        if g.empty:
            out[name] = np.full(grid.size, np.nan)
            continue
        cens = g[f"{outcome}_censored"].to_numpy(bool)
        t = np.where(cens, horizon, g[f"{outcome}_day"].to_numpy(float))
        km = kaplan_meier(t, ~cens)
        out[name] = np.array([1.0 - km.at(d) for d in grid])
    return pd.DataFrame(out)


def plot_incidence(curves: dict[str, pd.DataFrame], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), squeeze=False)
    for ax, (outcome, df) in zip(axes[0], curves.items(), strict=True):
        for col in df.columns[1:]:
            ax.step(df["day"], df[col], where="post", label=col)
        ax.set_title(f"{outcome} engraftment (cumulative incidence)")
        ax.set_xlabel("days since CAR-T")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def trial_summary(trial: pd.DataFrame) -> pd.DataFrame:
    """Per policy: fraction boosted, fraction whose graft failed, fraction already engrafted
    (``<outcome>_p_already``: never below the threshold after CAR-T) and
    engraftment by day 30/60/90 among the others (Kaplan-Meier)."""
    rows = []
    horizon = float(np.nanmax(trial[["neutrophil_day", "platelet_day"]].to_numpy()))
    curves = {o: cumulative_incidence(trial, o, horizon) for o in ("neutrophil", "platelet")}
    for name, g in trial.groupby("policy", sort=False):
        row = {
            "policy": name,
            "n": len(g),
            "boosted": float(g["boosted"].mean()),
            "graft_failed": float(g["graft_failed"].mean()) if "graft_failed" in g else 0.0,
            "failed_solves": int((g["status"] != 0).sum()),
        }
        ok = g[g["status"] == 0]
        for o, c in curves.items():
            if f"{o}_already" in ok:
                row[f"{o}_p_already"] = float(ok[f"{o}_already"].mean()) if len(ok) else np.nan
            for d in (30, 60, 90):
                if d <= horizon:
                    row[f"{o}_by_day{d}"] = float(c.loc[c["day"] == d, name].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


#: The outcomes a trial reports, in order.
OUTCOMES = ("neutrophil", "platelet")


@dataclass(frozen=True)
class TrialResult:
    """A virtual trial's answer (:func:`virtual_trial`): what the command prints, saves
    and a caller reads, in one object.

    Attributes
    ----------
    patients:
        One row per (policy, patient) (:func:`run_trial`).
    summary:
        One row per policy (:func:`trial_summary`).
    incidence:
        Cumulative incidence of engraftment per outcome (:data:`OUTCOMES`): a ``day``
        column and one column per policy (:func:`cumulative_incidence`).
    source:
        Where the virtual patients came from.
    n, horizon, seed:
        Virtual patients, follow-up (days since CAR-T) and the seed.
    policies:
        The policies, in order.
    """

    patients: pd.DataFrame
    summary: pd.DataFrame
    incidence: dict[str, pd.DataFrame]
    source: str
    n: int
    horizon: float
    seed: int
    policies: tuple[Policy, ...]

    def save(self, folder: str | Path, *, record: dict | None = None) -> dict[str, Path]:
        """Write ``patients.parquet``, ``summary.csv``, ``incidence_<outcome>.csv`` and
        ``incidence.png`` as the folder ``folder``, whole or absent: the files go into a
        temporary folder that replaces ``folder`` once every one is written (an earlier
        ``folder`` is replaced; ``record``, a run record, is written beside them as
        ``run.json``). Returns the final paths by kind."""
        from carthema.data.atomic import swap_folder

        folder = Path(folder)
        names = {"patients": "patients.parquet", "summary": "summary.csv"}
        names |= {f"incidence_{o}": f"incidence_{o}.csv" for o in self.incidence}
        names["plot"] = "incidence.png"
        with swap_folder(folder, record=record) as tmp:
            self.patients.to_parquet(tmp / names["patients"], index=False)
            self.summary.to_csv(tmp / names["summary"], index=False)
            for o, c in self.incidence.items():
                c.to_csv(tmp / names[f"incidence_{o}"], index=False)
            plot_incidence(self.incidence, tmp / names["plot"])
        return {kind: folder / name for kind, name in names.items()}

    def table(self) -> str:
        """The per-policy summary as the command prints it (3 significant digits)."""
        return self.summary.to_string(index=False, float_format=lambda v: f"{v:.3g}")

    def to_json(self) -> dict:
        """The settings, the source and the per-policy summary (JSON-ready)."""
        from carthema.data.jsonsafe import clean

        return clean(
            {
                "n": self.n,
                "horizon_days": self.horizon,
                "seed": self.seed,
                "source": self.source,
                "policies": [p.name for p in self.policies],
                "summary": self.summary.to_dict(orient="records"),
            }
        )


def virtual_trial(policies: list[Policy], n: int = 10_000, **trial_options) -> TrialResult:
    """Run ``policies`` on ``n`` virtual patients and summarise it: the per-policy summary
    and the cumulative incidence of each outcome to the horizon. ``trial_options`` are
    the keywords of :func:`run_trial` (``seed``, ``horizon``, and where the patients come
    from: ``patients``, a :class:`~carthema.models.posterior.Posterior`, or the
    patient-source keywords :func:`trial_source` gives)."""
    seed = int(trial_options.get("seed", 0))
    horizon = float(trial_options.get("horizon", HORIZON))
    trial = run_trial(policies, n, **trial_options)
    return TrialResult(
        patients=trial,
        summary=trial_summary(trial),
        incidence={o: cumulative_incidence(trial, o, horizon) for o in OUTCOMES},
        source=str(trial.attrs.get("source", "")),
        n=int(n),
        horizon=float(horizon),
        seed=int(seed),
        policies=tuple(policies),
    )
