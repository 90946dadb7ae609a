"""The hierarchical PyMC model of a population fit: shared means, spreads, covariates.

Model
-----
For patient ``i`` and free parameter ``k`` (log scale, natural log of the parameter in
its unit, e.g. ``log(cart_rho / (1/d))``):

    log p[i, k] = mu[k] + sum_c x[i, c] * beta[c, k] + omega[k] * eta[i, k]
    eta[i, k]   ~ Normal(0, 1)                      (non-centred: the sampler sees eta)
    mu[k]       = mu0[k] + sd0[k] * mu_z[k],  mu_z[k] ~ Normal(0, 1)
    omega[k]    ~ HalfNormal(omega_scale[k])        (default scale: sd0[k])
    beta[c, k]  = sd0[k] / s[c] * beta_z[c, k],  beta_z ~ Normal(0, 1)

``mu0``, ``sd0`` are the single-patient priors of :func:`carthema.fitting.model.priors.prior_table`
(literature default and spread), so ``mu`` is the population log-median and ``omega``
the between-patient SD of ``log p``. Covariates ``x`` are centred on the cohort mean
(``mu`` is then the log-median of a patient with average covariates) and act only on
the parameters chosen for them; ``s[c]`` is the covariate's SD in the cohort, so the
prior says a one-SD change of a covariate moves ``log p`` by about one prior SD at
most. ``beta`` is reported per unit of the covariate. Text covariates (e.g. an age
group) are dummy-coded against their first level in sorted order.

Every patient's observations enter through the single-patient likelihood: its
:class:`~carthema.fitting.model.data.PatientData` (:func:`~.data.prepare_patient`),
the ODE solve on its own :class:`~carthema.fitting.op.ode_op.Schedule` with the numba
kernel and forward-sensitivity gradient of :class:`~carthema.fitting.op.ode_op.SolveOp`
(the Op of a single-patient fit, here over a batch of every patient's schedule: one graph
node rather than one per patient, which keeps the compiled log-density small), and the
residual-error and M3 terms of :func:`carthema.fitting.model.build.add_row_likelihood`.
Residual SDs (one per analyte, :data:`~carthema.fitting.model.priors.RESIDUALS`) are shared by
all patients.

Variables of the PyMC model: ``mu_z``, ``mu`` (dims ``param``), ``omega`` (``param``),
``beta_z``, ``beta`` (``effect``, only with covariates), ``eta``, ``log_params``,
``params`` (``patient``, ``param``), ``sigma`` (``analyte``), ``obs``, ``blq_loglik`` and
``solver_ok`` (0, or -inf when any patient's solve failed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from carthema.data.errors import InputError
from carthema.fitting.model.build import (
    FIT_SOLVER,
    MIN_OBS_FOR_SIGMA,
    BuiltModel,
    model_parts,
)
from carthema.fitting.model.covariates import Covariates, design_matrix
from carthema.fitting.model.data import PatientData
from carthema.fitting.model.priors import positive_by_free, prior_table, resolve_free
from carthema.fitting.op.ode_op import BATCH_INPUTS, Schedule, stack_schedules
from carthema.models.model import Model
from carthema.models.solver_contract import SolverOptions

#: A population fit needs at least this many patients to estimate between-patient spreads.
MIN_PATIENTS = 3


# ---------------------------------------------------------------------------------------
@dataclass
class PopulationModel(BuiltModel):
    """The PyMC population model and what it was built from."""

    data: list[PatientData]
    omega_scale: np.ndarray
    schedules: list[Schedule]
    covariates: Covariates | None = None

    @property
    def model(self) -> Model:
        return self.data[0].model

    @property
    def patients(self) -> list[str]:
        return [d.patient for d in self.data]


def build_population_model(
    data: Sequence[PatientData],
    free: str | Iterable[str] | None = None,
    *,
    covariates: pd.DataFrame | None = None,
    effects: Mapping[str, Iterable[str]] | str | None = None,
    prior_sd: Mapping[str, float] | None = None,
    omega_scale: Mapping[str, float] | None = None,
    sigma: Mapping[str, float] | None = None,
    min_obs_for_sigma: int = MIN_OBS_FOR_SIGMA,
    solver: SolverOptions = FIT_SOLVER,
) -> PopulationModel:
    """The hierarchical PyMC model of several patients (see the module docstring).

    Parameters
    ----------
    data:
        One :class:`PatientData` per patient (:func:`prepare_patient`), same model.
    free:
        Free parameters (default :data:`~carthema.fitting.model.priors.DEFAULT_FREE`).
    covariates, effects:
        Per-patient covariate table and which parameters each covariate acts on (see
        :func:`design_matrix`); ``None``: no covariates.
    prior_sd:
        Overrides of the prior SD of the population means (log scale) by parameter.
    omega_scale:
        Half-normal scale of the between-patient SD (log scale) by parameter (default:
        the parameter's prior SD).
    sigma:
        Residual SDs to hold fixed, by analyte (on the analyte's likelihood scale).
    min_obs_for_sigma:
        Estimate an analyte's residual SD only with at least this many quantified rows
        (pooled over patients).
    solver:
        ODE solver settings (:func:`~carthema.fitting.model.build.fit_solver`).
    """
    data = list(data)
    if len(data) < MIN_PATIENTS:
        raise InputError(
            f"a population fit needs at least {MIN_PATIENTS} patients to estimate "
            f"between-patient spreads; got {len(data)}",
            fix="fit single patients with `carthema fit`, or add patients",
        )
    model = data[0].model
    if any(d.model.name != model.name for d in data):
        raise InputError("all patients of a population fit must use the same model")
    ids = [d.patient for d in data]
    if len(set(ids)) != len(ids):
        raise InputError("a patient is listed twice", column="patient")
    free = resolve_free(model, free)
    priors = prior_table(model, free, prior_sd)
    mu0 = np.array([p.mu for p in priors])
    sd0 = np.array([p.sd for p in priors])
    scales = positive_by_free(omega_scale, free, "omega scale")
    om_scale = np.array([float(scales.get(n, s)) for n, s in zip(free, sd0, strict=True)])
    cov = None if covariates is None else design_matrix(covariates, ids, free, effects)

    parts = model_parts(data, free, priors, sigma, min_obs_for_sigma, solver)
    batch = stack_schedules(parts.schedules)

    coords: dict[str, list[str]] = {"param": list(free), "patient": ids}
    if parts.sigma_free:
        coords["analyte"] = list(parts.sigma_free)
    if cov is not None:
        coords["effect"] = list(cov.labels)
    with pm.Model(coords=coords) as pm_model:
        mu_z = pm.Normal("mu_z", 0.0, 1.0, dims="param")
        mu = pm.Deterministic("mu", mu0 + sd0 * mu_z, dims="param")
        omega = pm.HalfNormal("omega", sigma=om_scale, dims="param")
        theta = mu[None, :]
        if cov is not None:
            c_idx = np.array([c for c, _ in cov.effects], dtype=np.int64)
            k_idx = np.array([k for _, k in cov.effects], dtype=np.int64)
            beta_z = pm.Normal("beta_z", 0.0, 1.0, dims="effect")
            beta = pm.Deterministic("beta", sd0[k_idx] / cov.scale[c_idx] * beta_z, dims="effect")
            B = pt.zeros((len(cov.columns), len(free)))[c_idx, k_idx].set(beta)
            theta = theta + pt.dot(pt.constant(cov.x), B)
        eta = pm.Normal("eta", 0.0, 1.0, dims=("patient", "param"))
        theta = pm.Deterministic(
            "log_params", theta + omega[None, :] * eta, dims=("patient", "param")
        )
        pm.Deterministic("params", pt.exp(theta), dims=("patient", "param"))
        consts = [pt.constant(batch[n], name=n) for n in BATCH_INPUTS]
        pred, _jac, ok = parts.op(theta, *consts)
        parts.observe(pred, ok)
    return PopulationModel(
        **parts.built(pm_model, data),
        omega_scale=om_scale,
        schedules=parts.schedules,
        covariates=cov,
    )
