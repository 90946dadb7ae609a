"""Hierarchical (population) fit of several patients: shared means and spreads.

The model (population means ``mu``, spreads ``omega``, covariate effects ``beta``, each
patient's ``eta``) is described in :mod:`carthema.fitting.model.hierarchical`; every patient's
observations enter through the single-patient likelihood and the one ODE Op
(:class:`~carthema.fitting.op.ode_op.SolveOp` over the batch of patients).

Samplers: ``"nutpie"`` (default; NUTS on the numba-compiled log-density) and ``"pymc"``
estimate the spreads properly. ``"map"`` (joint mode + Laplace) is for screening only:
the joint mode of a hierarchical model is not the posterior of the spreads (with
informative patients it over-states ``omega``; with uninformative ones it can collapse
it), and the fit says so in its notes.

The pieces live by job: :mod:`~carthema.fitting.model.covariates` (design matrix),
:mod:`~carthema.fitting.model.hierarchical` (the PyMC model),
:mod:`~carthema.fitting.results.population_result` (tables, saving); this module runs the fit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from carthema.data.errors import InputError
from carthema.data.patients import select_patients
from carthema.fitting.evaluation.diagnostics import diagnose, misfit_warnings
from carthema.fitting.evaluation.goodness import pointwise_loglik
from carthema.fitting.evaluation.vpc import PatientDesign
from carthema.fitting.model.build import fit_solver
from carthema.fitting.model.covariates import Covariates, design_matrix, parse_effects
from carthema.fitting.model.data import HISTORY_DAYS, PatientData, prepare_patient
from carthema.fitting.model.hierarchical import (
    MIN_PATIENTS,
    PopulationModel,
    build_population_model,
)
from carthema.fitting.results.population_result import PopulationResult
from carthema.fitting.sampling.samplers import run_sampler
from carthema.fitting.sampling.settings import RunSettings
from carthema.models.model import get_model
from carthema.models.simulate import resolve_params

__all__ = [
    "MIN_PATIENTS",
    "POPULATION_SAMPLERS",
    "Covariates",
    "PopulationModel",
    "PopulationResult",
    "build_population_model",
    "design_matrix",
    "fit_population",
    "parse_effects",
    "population_log_likelihood",
]

#: Samplers of a population fit.
POPULATION_SAMPLERS = ("nutpie", "pymc", "map")

_MAP_NOTE = (
    "MAP + Laplace of a hierarchical model is for screening only: the joint mode is not "
    "the posterior of the between-patient spreads (omega is over-stated when patients are "
    "well informed, and can collapse when they are not); use nutpie for spreads"
)


# ---------------------------------------------------------------------------------------
def _deterministic_draws(pm_: PopulationModel, X: np.ndarray, slices, chains: int):
    """InferenceData from unconstrained draws (n, dim) of the population model."""
    model = pm_.pymc_model
    names = ["mu", "omega", "eta", "log_params", "params"]
    if pm_.covariates is not None:
        names.append("beta")
    if pm_.sigma_free:
        names.append("sigma")
    outs = model.replace_rvs_by_values([model[n] for n in names])
    fn = model.compile_fn(outs, inputs=model.value_vars, on_unused_input="ignore", mode="NUMBA")
    n = X.shape[0] // chains
    X = X[: n * chains]
    values: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for x in X:
        point = {v: x[s].reshape(np.shape(model.initial_point()[v])) for v, s in slices.items()}
        for k, val in zip(names, fn(point), strict=True):
            values[k].append(np.asarray(val))
    post = {k: np.stack(v).reshape(chains, n, *np.shape(v[0])) for k, v in values.items()}
    dims = {
        "mu": ["param"],
        "omega": ["param"],
        "eta": ["patient", "param"],
        "log_params": ["patient", "param"],
        "params": ["patient", "param"],
        "beta": ["effect"],
        "sigma": ["analyte"],
    }
    coords = {k: list(v) for k, v in model.coords.items()}
    return az.from_dict(posterior=post, dims={k: dims[k] for k in names}, coords=coords)


def _diagnostic_view(idata: az.InferenceData) -> az.InferenceData:
    """Stack the monitored quantities into one ``params`` variable (and ``sigma``) so
    that :func:`carthema.fitting.evaluation.diagnostics.diagnose` checks all of them: mu, omega,
    covariate effects and every patient's log-parameters (R-hat and ESS are rank-based,
    so the log scale changes nothing)."""
    post = idata.posterior
    parts, labels = [], []
    for v in ("mu", "omega"):
        da = post[v]
        parts.append(da.values)
        labels += [f"{v}[{p}]" for p in da["param"].values]
    if "beta" in post:
        parts.append(post["beta"].values)
        labels += [f"beta[{e}]" for e in post["beta"]["effect"].values]
    lp = post["log_params"]
    c, d = lp.sizes["chain"], lp.sizes["draw"]
    parts.append(lp.values.reshape(c, d, -1))
    labels += [f"{pid}:{p}" for pid in lp["patient"].values for p in lp["param"].values]
    ds = {"params": (("chain", "draw", "param"), np.concatenate(parts, axis=-1))}
    coords = {"chain": post["chain"].values, "draw": post["draw"].values, "param": labels}
    if "sigma" in post:
        ds["sigma"] = post["sigma"]
    groups = {"posterior": xr.Dataset(ds, coords=coords)}
    if "sample_stats" in idata.groups():
        groups["sample_stats"] = idata.sample_stats
    return az.InferenceData(**groups)


def population_log_likelihood(pop: PopulationModel, idata: az.InferenceData) -> xr.Dataset:
    """The ``log_likelihood`` group of a population fit: ``y`` (chain, draw, observation),
    one entry per used observation of every patient (patients in fit order, censored
    rows with their M3 term), each at that draw's patient log-parameters and residual
    SDs, so that ``az.loo`` and ``az.compare`` work on ``population.nc``. The
    ``patient`` coordinate names each observation's patient. A draw whose solve fails
    gets -inf (a rejected draw)."""
    post = idata.posterior
    c, d = int(post.sizes["chain"]), int(post.sizes["draw"])
    lp = post["log_params"].values  # (chain, draw, patient, param)
    sigma = {a: np.full(c * d, v) for a, v in pop.sigma_fixed.items()}
    if pop.sigma_free:
        s = post["sigma"].values.reshape(c * d, -1)
        sigma.update({a: s[:, j] for j, a in enumerate(pop.sigma_free)})
    parts, who = [], []
    for i, (data, sched) in enumerate(zip(pop.data, pop.schedules, strict=True)):
        design = PatientDesign(data, sched, pop.op)
        parts.append(pointwise_loglik(design, lp[:, :, i].reshape(c * d, -1), sigma))
        who += [data.patient] * data.n
    ll = np.concatenate(parts, axis=1)
    return xr.Dataset(
        {"y": (("chain", "draw", "observation"), ll.reshape(c, d, -1))},
        coords={
            "chain": post["chain"].values,
            "draw": post["draw"].values,
            "observation": np.arange(ll.shape[1]),
            "patient": ("observation", np.array(who, dtype=str)),
        },
    )


def _cohort_notes(data: Sequence[PatientData]) -> list[str]:
    """Each patient's data notes once, with the patients they concern."""
    who: dict[str, list[str]] = {}
    for d in data:
        for n in d.notes:
            who.setdefault(n, []).append(d.patient)
        if len(d.unused):
            for reason, k in d.unused.groupby("reason").size().items():
                who.setdefault(f"unused observations: {reason}", []).append(f"{d.patient} ({k})")
    out = []
    for n, ids in who.items():
        tag = "all patients" if len(ids) == len(data) else ", ".join(ids[:5])
        if 5 < len(ids) < len(data):
            tag += f" and {len(ids) - 5} more"
        out.append(f"{n} [{tag}]")
    return out


def fit_population(
    observations: pd.DataFrame,
    events: pd.DataFrame | None,
    patients: Sequence[str] | str | None = None,
    components: str = "cart",
    free: str | Iterable[str] | None = None,
    covariates: pd.DataFrame | None = None,
    sampler: str = "nutpie",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    *,
    effects: Mapping[str, Iterable[str]] | str | None = None,
    cores: int | None = None,
    init: str = "map",
    progress: bool = False,
    params: Mapping[str, float] | None = None,
    prior_sd: Mapping[str, float] | None = None,
    omega_scale: Mapping[str, float] | None = None,
    sigma: Mapping[str, float] | None = None,
    truth: Mapping[str, Mapping[str, float]] | None = None,
    target_accept: float = 0.9,
    low_rank: bool = True,
    history_days: float = HISTORY_DAYS,
    log: Callable[[str], None] | None = None,
    run: RunSettings | None = None,
    **solver_options,
) -> PopulationResult:
    """Hierarchical fit of several patients (see the module docstring for the model).

    Parameters
    ----------
    observations, events:
        Data-layer tables holding the patients (days since the first CAR-T infusion).
    patients:
        Patients to fit (a list or a comma-separated string); default: all in
        ``observations``. At least :data:`MIN_PATIENTS`.
    components:
        Component set (``"cart"`` default, ``"cart_targets"``, ``"haematopoiesis"``,
        ``"full"``).
    free:
        Free parameters (default: :data:`carthema.fitting.model.priors.DEFAULT_FREE`).
    covariates, effects:
        Per-patient covariate table (``patient`` + covariate columns) and which free
        parameters each covariate acts on (default: all); see :func:`design_matrix`.
    sampler:
        ``"nutpie"`` (default), ``"pymc"`` or ``"map"`` (screening only, see the module
        docstring).
    draws, tune, chains:
        Draws kept and tuning steps per chain; number of chains (``"map"``: ``draws``
        Laplace draws in one chain).
    seed:
        Random seed (recorded in ``settings``; drawn when None).
    cores:
        Chains run in parallel (default: min(chains, CPUs)).
    init:
        ``"map"`` (nutpie chains start at Laplace draws around the joint mode) or
        ``"prior"`` (nutpie's own start). PyMC always uses its own jittered start.
    progress:
        Show progress bars.
    params:
        Values of the non-free parameters, shared by all patients (default: defaults).
    prior_sd, omega_scale, sigma:
        Prior SD overrides of the population means; half-normal scales of the spreads;
        residual SDs to hold fixed by analyte.
    truth:
        Known values of a synthetic cohort, ``{"mu": {...}, "omega": {...}}`` (log
        scale), shown against the intervals in :meth:`PopulationResult.summary`.
    target_accept, low_rank:
        NUTS step-size target (0.9: hierarchical posteriors curve more than single
        patients'); nutpie's low-rank mass-matrix adaptation.
    history_days:
        Observations up to this many days before the first event are used.
    log:
        Called with a short status line before each long step.
    run:
        Already validated :class:`~carthema.fitting.sampling.settings.RunSettings`; when
        given, ``sampler``, ``draws``, ``tune``, ``chains``, ``seed``, ``cores``,
        ``init``, ``target_accept`` and ``low_rank`` are taken from it.
    **solver_options:
        ``rtol``, ``atol``, ``max_steps``, ``method`` of the ODE solver.
    """
    # First: locals() holds only the arguments here.
    run = RunSettings.of(
        run, POPULATION_SAMPLERS, components, locals(), what=" for a population fit"
    )
    ids = _population_ids(observations, patients)
    say = log or (lambda _msg: None)

    t_start = time.perf_counter()
    model = get_model(components)
    p = resolve_params(model, params)
    data = [
        prepare_patient(model, observations, events, pid, p, history_days=history_days)
        for pid in ids
    ]
    pop = build_population_model(
        data,
        free,
        covariates=covariates,
        effects=effects,
        prior_sd=prior_sd,
        omega_scale=omega_scale,
        sigma=sigma,
        solver=fit_solver(**solver_options),
    )
    timings = {"build_s": time.perf_counter() - t_start}
    notes = _cohort_notes(data)
    idata, grad_evals, map_res, run_notes = _sample(pop, run, progress, timings, say)
    notes += run_notes
    if run.sampler == "map":
        notes.append(_MAP_NOTE)
    _add_log_likelihood(pop, idata, sum(d.n for d in data), timings, say)
    timings["total_s"] = time.perf_counter() - t_start
    timings["grad_evals"] = int(grad_evals)
    _record_provenance(idata, ids, model.name, pop, run, notes)
    return _result(idata, pop, run, timings, truth, map_res, notes)


def _add_log_likelihood(
    pop: PopulationModel,
    idata: az.InferenceData,
    n_obs: int,
    timings: dict[str, float],
    say: Callable[[str], None],
) -> None:
    """Add the pointwise log-likelihood group to ``idata`` (for az.loo) and its time
    (seconds) to ``timings``."""
    say(f"pointwise log-likelihood: {n_obs} observations x all draws (az.loo)")
    t0 = time.perf_counter()
    idata.add_groups({"log_likelihood": population_log_likelihood(pop, idata)})
    timings["loglik_s"] = time.perf_counter() - t0


def _record_provenance(
    idata: az.InferenceData,
    ids: Sequence[str],
    components: str,
    pop: PopulationModel,
    run: RunSettings,
    notes: Sequence[str],
) -> None:
    """Record in the posterior's attributes what was fitted and how."""
    idata.posterior.attrs.update(
        {
            "carthema_patients": ",".join(ids),
            "carthema_components": components,
            "carthema_free": ",".join(pop.free),
            "carthema_sampler": run.sampler,
            "carthema_seed": run.seed,
            "carthema_notes": " | ".join(notes),
        }
    )


def _result(
    idata: az.InferenceData,
    pop: PopulationModel,
    run: RunSettings,
    timings: dict[str, float],
    truth: Mapping[str, Mapping[str, float]] | None,
    map_res,
    notes: list[str],
) -> PopulationResult:
    """The :class:`PopulationResult`: diagnostics (with misfit warnings), settings,
    timings and the known values of a synthetic cohort."""
    truth_d = None
    if truth is not None:
        truth_d = {q: {k: float(v) for k, v in vals.items()} for q, vals in truth.items()}
    result = PopulationResult(
        idata=idata,
        diagnostics=diagnose(_diagnostic_view(idata), run.sampler),
        population_model=pop,
        sampler=run.sampler,
        settings=run.record(pop.op),
        timings=timings,
        truth=truth_d,
        map=map_res,
        notes=notes,
    )
    _add_misfit_warnings(result)
    return result


def _population_ids(
    observations: pd.DataFrame | None, patients: Sequence[str] | str | None
) -> list[str]:
    """The patients of a population fit: at least :data:`MIN_PATIENTS`."""
    if observations is None or len(observations) == 0:
        raise InputError("the observations table is empty", fix="give the cohort's observations")
    ids = select_patients(observations, patients)
    if len(ids) < MIN_PATIENTS:
        raise InputError(
            f"a population fit needs at least {MIN_PATIENTS} patients to estimate "
            f"between-patient spreads; got {len(ids)}",
            column="patient",
            fix="fit single patients with `carthema fit`, or add patients",
        )
    return ids


def _sample(
    pop: PopulationModel,
    run: RunSettings,
    progress: bool,
    timings: dict[str, float],
    say: Callable[[str], None],
):
    """Run the sampler on the population model: (InferenceData, gradient evaluations,
    MAP result or None, notes); adds its timings (seconds) to ``timings``."""
    # MAP starts for nutpie only: PyMC's sampler starts from PyMC's initial point here
    # (the per-chain start values built in _run_nuts name single-patient variables).
    return run_sampler(
        pop,
        run.sampler,
        lambda X, slices: _deterministic_draws(pop, X, slices, 1),
        draws=run.draws,
        tune=run.tune,
        chains=run.chains,
        cores=run.cores,
        seed=run.seed,
        init_map=run.sampler == "nutpie" and run.init == "map",
        progress=progress,
        target_accept=run.target_accept,
        low_rank=run.low_rank,
        timings=timings,
        say=say,
    )


def _add_misfit_warnings(result: PopulationResult) -> None:
    """Warn in the diagnostics where a residual SD says the model misses the data."""
    table = result.summary()
    sig = table[table["quantity"] == "sigma"].assign(
        kind="residual SD", name=lambda d: "sigma_" + d["name"].astype(str)
    )
    result.diagnostics.warnings += misfit_warnings(sig)
