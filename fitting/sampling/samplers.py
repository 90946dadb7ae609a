"""``fit``: one patient, one call: build the model, sample (or MAP), diagnose.

Samplers
--------
``"nutpie"`` (default)
    nutpie's NUTS. A single patient's log-density and gradient are generated numba
    C callbacks cached on disk (:mod:`carthema.fitting.op.fastlogp`), checked against
    PyMC's own log-density at the initial point of every fit; on a mismatch (or for
    population models) PyTensor's numba backend compiles it, the ODE solve included (no
    object mode). Mass matrix: nutpie's low-rank modified
    adaptation, which learns the strong posterior correlations of ODE parameters
    (it cut the leapfrog steps per draw about 6-fold against a diagonal mass matrix on
    the synthetic patients).
``"nutpie-jax"``
    nutpie on the JAX-compiled log-density (diffrax solve).
``"numpyro"``
    numpyro's NUTS through ``pm.sample(nuts_sampler="numpyro")`` (diffrax solve,
    ``jax.grad`` through the Op's custom VJP).
``"pymc"``
    PyMC's own NUTS (Python loop; the ODE solve runs in the numba kernel).
``"map"``
    MAP + Laplace approximation (:mod:`carthema.fitting.sampling.laplace`): seconds, for
    screening; its draws are independent Gaussian draws in the unconstrained space.

NUTS chains start from the MAP point (jittered) unless ``init="prior"``: ODE posteriors
can have local modes far from the prior median, and a chain started there can stay.
Seeds: every random choice (MAP restarts, jitter, sampler) derives from ``seed``; when
``seed`` is None one is drawn and recorded in the result, so any run can be repeated.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from carthema._console import Step, interactive, progress_to_stderr
from carthema.data.course import check_fit_course
from carthema.fitting.evaluation.diagnostics import (
    diagnose,
    fit_warnings,
    summary_table,
)
from carthema.fitting.evaluation.goodness import (
    log_likelihood_group,
)
from carthema.fitting.model.build import FitModel, build_model, fit_solver
from carthema.fitting.model.data import prepare_patient
from carthema.fitting.op.compiled import logp_grad, nutpie_model
from carthema.fitting.results.fit_result import FIT_FORMAT, FitResult  # noqa: F401 (public here)
from carthema.fitting.sampling.laplace import MapResult, find_map, laplace_draws
from carthema.fitting.sampling.settings import RunSettings
from carthema.models.model import get_model
from carthema.models.simulate import resolve_params

SAMPLERS = ("nutpie", "nutpie-jax", "numpyro", "pymc", "map")


def _observations_group(fm: FitModel) -> xr.Dataset:
    r = fm.data.rows
    return xr.Dataset(
        {
            "day": ("row", r["day"].to_numpy(float)),
            "analyte": ("row", r["observable"].astype(str).to_numpy()),
            "value": ("row", r["value"].to_numpy(float)),
            "limit": ("row", r["limit"].to_numpy(float)),
            "censored": ("row", r["censored"].to_numpy(bool)),
        }
    )


def _idata_from_unconstrained(fm: FitModel, X: np.ndarray, slices, chains: int) -> az.InferenceData:
    """InferenceData from unconstrained draws (n, dim), reshaped to (chains, n/chains)."""
    n = X.shape[0] // chains
    X = X[: n * chains].reshape(chains, n, -1)
    z = X[..., slices["z"]]
    theta = fm.prior_mu + fm.prior_sd * z
    post = {"z": z, "log_params": theta, "params": np.exp(theta)}
    dims = {"z": ["param"], "log_params": ["param"], "params": ["param"]}
    coords = {"param": list(fm.free)}
    if fm.sigma_free:
        post["sigma"] = np.exp(X[..., slices["sigma_log__"]])
        dims["sigma"] = ["analyte"]
        coords["analyte"] = list(fm.sigma_free)
    return az.from_dict(posterior=post, dims=dims, coords=coords)


def _count_grad_evals(idata) -> int:
    n = 0
    for g in ("sample_stats", "warmup_sample_stats"):
        if g in idata.groups():
            st = idata[g]
            for key in ("n_steps", "num_steps"):
                if key in st:
                    n += int(st[key].sum())
                    break
    return n


def fit(
    observations: pd.DataFrame,
    events: pd.DataFrame | None,
    patient: str | None = None,
    components: str = "full",
    free: str | Iterable[str] | None = None,
    sampler: str = "nutpie",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    *,
    cores: int | None = None,
    init: str = "map",
    progress: bool | None = None,
    params: Mapping[str, float] | None = None,
    prior_sd: Mapping[str, float] | None = None,
    sigma: Mapping[str, float] | None = None,
    truth: Mapping[str, float] | None = None,
    target_accept: float = 0.8,
    low_rank: bool = True,
    history_days: float = 30.0,
    log: Callable[[str], None] | None = None,
    run: RunSettings | None = None,
    log_likelihood: bool = True,
    **solver_options,
) -> FitResult:
    """Fit one patient's parameters.

    Parameters
    ----------
    observations, events:
        Data-layer tables (may hold several patients). The patient's days count from its
        first CAR-T infusion (day 0): a course that contradicts this is refused before
        any work (:func:`carthema.data.course.check_fit_course`).
    patient:
        Patient to fit (may be omitted when the observations hold one).
    components:
        Component set (``"full"``, ``"cart"``, ``"cart_targets"``, ``"haematopoiesis"``).
    free:
        Free parameters (default: :data:`carthema.fitting.model.priors.DEFAULT_FREE`).
    sampler:
        ``"nutpie"`` (default), ``"nutpie-jax"``, ``"numpyro"``, ``"pymc"`` or ``"map"``.
    draws, tune, chains:
        Draws kept and tuning steps per chain; number of chains. For ``"map"``,
        ``draws`` Laplace draws are returned (one chain).
    seed:
        Random seed (recorded in ``settings``; drawn when None).
    cores:
        Chains run in parallel (default: min(chains, CPUs)).
    init:
        ``"map"`` (start NUTS at the jittered MAP point) or ``"prior"``.
    progress:
        Show progress: the sampler's bars and a line per long step (compile, MAP,
        sampling) on stderr. Default: when a person is watching (a terminal, IPython or
        Jupyter; :func:`carthema._console.interactive`).
    params:
        Values of the non-free parameters (default: model defaults).
    prior_sd, sigma:
        Prior spread overrides by parameter; residual SDs to hold fixed by analyte.
    truth:
        Known true values (synthetic patients): reported against the intervals.
    target_accept, low_rank:
        NUTS step-size target; nutpie's low-rank mass-matrix adaptation.
    history_days:
        Observations up to this many days before the first event are used.
    log:
        Called with a short status line before each long step (compile, MAP, sampling).
    log_likelihood:
        Add the ``log_likelihood`` group (one entry per used observation and draw,
        censored terms included) so that ``az.loo`` / ``az.compare`` work; one solve per
        draw.
    run:
        Already validated :class:`~carthema.fitting.sampling.settings.RunSettings` (a cohort
        validates once for all its patients); when given, ``sampler``, ``draws``,
        ``tune``, ``chains``, ``seed``, ``cores``, ``init``, ``target_accept`` and
        ``low_rank`` are taken from it.
    **solver_options:
        ``rtol``, ``atol``, ``max_steps``, ``method`` of the ODE solver.
    """
    run = RunSettings.of(run, SAMPLERS, components, locals())  # first: locals() = the arguments
    check_fit_course(observations, events, patient)  # day 0 = the first CAR-T infusion
    t_start = time.perf_counter()
    if progress is None:
        progress = interactive()
    if log is None and progress:
        log = progress_to_stderr
    model = get_model(components)
    p = resolve_params(model, params)
    data = prepare_patient(model, observations, events, patient, p, history_days=history_days)
    fm = build_model(
        data, free, prior_sd=prior_sd, sigma=sigma, solver=fit_solver(**solver_options)
    )
    timings = {"build_s": time.perf_counter() - t_start}
    settings = run.record(fm.op)
    sampler, seed = run.sampler, run.seed
    say = log or (lambda _msg: None)
    idata, grad_evals, map_res, notes = run_sampler(
        fm,
        sampler,
        lambda X, slices: _idata_from_unconstrained(fm, X, slices, 1),
        draws=run.draws,
        tune=run.tune,
        chains=run.chains,
        cores=run.cores,
        seed=seed,
        init_map=run.init == "map",
        progress=progress,
        target_accept=run.target_accept,
        low_rank=run.low_rank,
        timings=timings,
        say=say,
    )
    extra_warn: list[str] = []
    timings["total_s"] = time.perf_counter() - t_start
    timings["grad_evals"] = int(grad_evals)
    idata.add_groups({"carthema_observations": _observations_group(fm)})
    if log_likelihood:
        n_draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
        say(f"pointwise log-likelihood: {data.n} observations x {n_draws} draws (az.loo)")
        t0 = time.perf_counter()
        idata.add_groups({"log_likelihood": log_likelihood_group(fm, idata)})
        timings["loglik_s"] = time.perf_counter() - t0
    idata.posterior.attrs.update(
        {
            "carthema_patient": data.patient,
            "carthema_components": model.name,
            "carthema_free": ",".join(fm.free),
            "carthema_sampler": sampler,
            "carthema_seed": seed,
            "carthema_notes": " | ".join(list(data.notes) + notes),
        }
    )
    diag = diagnose(idata, "map" if sampler == "map" else sampler, extra_warn)
    diag.warnings += fit_warnings(
        summary_table(idata, fm.priors, fm.sigma_free, fm.sigma_fixed, method=sampler), model
    )
    ev_table = None
    if events is not None and len(events):
        ev_table = events[events["patient"].astype(str) == data.patient].reset_index(drop=True)
    obs_table = observations[observations["patient"].astype(str) == data.patient]
    return FitResult(
        idata=idata,
        diagnostics=diag,
        fit_model=fm,
        sampler=sampler,
        settings=settings,
        timings=timings,
        events_table=ev_table,
        observations_table=obs_table.reset_index(drop=True),
        truth=None if truth is None else {k: float(v) for k, v in truth.items()},
        map=map_res,
        notes=notes,
    )


def run_sampler(
    target,
    sampler: str,
    laplace_idata: Callable[[np.ndarray, dict], az.InferenceData],
    *,
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    seed: int,
    init_map: bool,
    progress: bool,
    target_accept: float,
    low_rank: bool,
    timings: dict,
    say: Callable[[str], None],
) -> tuple[az.InferenceData, int, MapResult | None, list[str]]:
    """Compile (nutpie), find the MAP (for ``sampler="map"`` or MAP starts) and sample.

    ``target`` has ``pymc_model`` (a :class:`FitModel` or a population model);
    ``laplace_idata(X, slices)`` turns Laplace draws in the unconstrained space into
    InferenceData. Seeds for the MAP restarts, the chain starts and the sampler derive
    from ``seed``. Fills ``timings`` (compile_s, map_s, sample_s); returns (idata,
    gradient evaluations, MAP result or None, notes).
    """
    notes: list[str] = []
    ss = np.random.SeedSequence(seed)
    map_seed, jitter_seed, sampler_seed = (int(s.generate_state(1)[0]) for s in ss.spawn(3))
    compiled = None
    if sampler in ("nutpie", "nutpie-jax"):
        t0 = time.perf_counter()
        with Step(say, f"compiling the log-density for {sampler}"):
            compiled = nutpie_model(
                target, "numba" if sampler == "nutpie" else "jax", fast=True, say=say
            )
        timings["compile_s"] = time.perf_counter() - t0
    map_res = None
    if sampler == "map" or init_map:
        t0 = time.perf_counter()
        step = Step(say, "finding the posterior mode (MAP)").__enter__()
        vg = None
        if getattr(target, "structure", ()):
            # The structure's compiled log-density (nutpie's when there is one) on this
            # patient's data: one compile per structure, not per patient.
            vg = logp_grad(target, compiled if sampler == "nutpie" else None, fast=True, say=say)
        elif compiled is not None and sampler == "nutpie":
            # nutpie's compiled log-density and gradient have the same variable layout.
            vg = compiled.logp_func
        try:
            map_res = find_map(target, value_grad=vg, seed=map_seed)
        finally:
            step.__exit__(None, None, None)
        timings["map_s"] = time.perf_counter() - t0
        notes += map_res.notes
        if not map_res.success:
            notes.append(f"the MAP optimiser stopped early: {map_res.message}")
    if sampler == "map":
        X = laplace_draws(map_res, int(draws), seed=sampler_seed)
        timings["sample_s"] = 0.0
        return laplace_idata(X, map_res.slices), map_res.n_grad_evals, map_res, notes
    with Step(say, f"sampling {chains} chains x ({tune} tune + {draws} draws) with {sampler}"):
        idata, grad_evals, t_samp = _run_nuts(
            target,
            sampler,
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=sampler_seed,
            map_res=map_res,
            jitter_seed=jitter_seed,
            progress=progress,
            target_accept=target_accept,
            low_rank=low_rank,
        )
    timings["sample_s"] = t_samp
    return idata, grad_evals, map_res, notes


def _laplace_init(map_res: MapResult, seed: int):
    def init(chain_seed=None) -> np.ndarray:
        key = [seed] if chain_seed is None else [seed, int(chain_seed) % (2**32)]
        return np.ascontiguousarray(laplace_draws(map_res, 1, np.random.default_rng(key))[0])

    return init


def _run_nuts(
    fm: FitModel,
    sampler: str,
    compiled,
    *,
    draws: int,
    tune: int,
    chains: int,
    cores: int,
    seed: int,
    map_res: MapResult | None,
    jitter_seed: int,
    progress: bool,
    target_accept: float,
    low_rank: bool,
):
    """Run a NUTS sampler; returns (idata, gradient evaluations, seconds)."""
    model = fm.pymc_model
    if sampler in ("nutpie", "nutpie-jax"):
        import nutpie

        if map_res is not None:
            # Each chain starts at a draw from the Laplace approximation around the MAP
            # (unconstrained space, the layout nutpie uses): inside the main mode, with a
            # spread like the posterior's. nutpie's own start (prior median + uniform(-1, 1)
            # jitter) can drop a chain into a minor local mode that it never leaves.
            init = _laplace_init(map_res, jitter_seed)
            # The numba model names the field initial_point_func, the JAX one
            # _make_initial_points (nutpie's CompiledPyMCModel vs PyFuncModel).
            names = {f.name for f in dataclasses.fields(compiled)}
            key = "initial_point_func" if "initial_point_func" in names else "_make_initial_points"
            compiled = dataclasses.replace(compiled, **{key: init})
        t0 = time.perf_counter()
        idata = nutpie.sample(
            compiled,
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            seed=seed,
            progress_bar=progress,
            low_rank_modified_mass_matrix=low_rank,
            target_accept=target_accept,
        )
        return idata, _count_grad_evals(idata), time.perf_counter() - t0

    import pymc as pm

    initvals = None
    init_kw = {}
    if map_res is not None:
        # One start per chain, drawn from the Laplace approximation (see nutpie above).
        X = laplace_draws(map_res, chains, seed=jitter_seed)
        initvals = []
        for x in X:
            pt = map_res.point(x)
            iv = {"z": pt["z"]}
            if "sigma_log__" in pt:
                iv["sigma"] = np.exp(pt["sigma_log__"])
            initvals.append(iv)
        init_kw = {"init": "adapt_diag"} if sampler == "pymc" else {}
    t0 = time.perf_counter()
    run = {"draws": draws, "tune": tune, "chains": chains, "random_seed": seed}
    run.update(initvals=initvals, progressbar=progress, target_accept=target_accept)
    with model:
        if sampler == "numpyro":
            from carthema.models import jax_backend  # noqa: F401  (float64 in JAX)

            idata = pm.sample(
                **run,
                nuts_sampler="numpyro",
                nuts_sampler_kwargs={"chain_method": "vectorized"},
                idata_kwargs={"log_likelihood": False},
                compute_convergence_checks=False,
            )
        else:
            idata = pm.sample(
                **run,
                cores=cores,
                compute_convergence_checks=False,
                discard_tuned_samples=False,
                # PyTensor's numba backend: the ODE Op runs natively and no C BLAS is needed.
                compile_kwargs={"mode": "NUMBA"},
                **init_kw,
            )
    t_all = time.perf_counter() - t0
    if "warmup_posterior" in idata.groups():
        # Keep the warm-up statistics (for gradient counts) but not its draws.
        del idata.warmup_posterior
    return idata, _count_grad_evals(idata), t_all
