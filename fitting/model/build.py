"""Build the PyMC model of one patient: priors, ODE solve, residual-error likelihood.

Variables of the PyMC model
---------------------------
``z`` (dims ``param``)
    Standard-normal innovations; the free log-parameters are ``mu + sd * z`` (a
    non-centred form: the sampler sees unit-scale coordinates).
``log_params``, ``params`` (dims ``param``)
    Deterministic: free parameters on the log and the natural scale.
``sigma`` (dims ``analyte``)
    Residual SDs of the analytes with enough quantified observations (half-normal
    priors, :data:`carthema.fitting.model.priors.RESIDUALS`); the others are held at their
    typical SD (listed in :attr:`FitModel.sigma_fixed`).
``obs``
    Observed: quantified observations on their likelihood scale.
``blq_loglik``
    Potential: the M3 term of the below-limit observations.
``solver_ok``
    Potential: 0 when the ODE solve succeeded, -inf when it failed (a rejected draw).

Data of the model (``pm.Data``, :attr:`FitModel.inputs`): the priors (``prior_mu``,
``prior_sd``), the patient's schedule (``sched_*``, the batch-of-one inputs of
:class:`~carthema.fitting.op.ode_op.SolveOp`) and the observation rows (:func:`row_inputs`).
Two patients with the same :attr:`FitModel.structure` therefore have the same graph and
share one compiled log-density (:mod:`carthema.fitting.op.compiled`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from carthema.fitting.model.data import PatientData, prepare_patient
from carthema.fitting.model.likelihood import normal_lcdf_pt
from carthema.fitting.model.priors import RESIDUALS, Prior, prior_table, resolve_free
from carthema.fitting.op.ode_op import (
    ATOL,
    BATCH_INPUTS,
    MAX_STEPS,
    METHOD,
    RTOL,
    Schedule,
    SolveOp,
    solve_patient,
    stack_schedules,
)
from carthema.models.model import Model, get_model
from carthema.models.solver_contract import SolverOptions

#: The ODE solver inside a fit's likelihood: the fitting Op's defaults
#: (:mod:`carthema.fitting.op.ode_op`).
FIT_SOLVER = SolverOptions(METHOD, rtol=RTOL, atol=ATOL, max_steps=MAX_STEPS)


#: The solver settings a fit function takes as keywords (``**solver_options``).
SOLVER_FIELDS = ("rtol", "atol", "max_steps", "method")


def fit_solver(**changes) -> SolverOptions:
    """:data:`FIT_SOLVER` with some of ``rtol``, ``atol``, ``max_steps``, ``method``
    changed (the ``**solver_options`` of the fit functions)."""
    return FIT_SOLVER.replace(**changes)


#: An analyte needs at least this many quantified observations to estimate its own
#: residual SD; with fewer, the SD is held at its typical value.
MIN_OBS_FOR_SIGMA = 5


#: Likelihood scale of a row as a code (data input of the compiled log-density).
SCALE_CODES = {"identity": 0, "log": 1, "logit": 2}


@dataclass
class BuiltModel:
    """What a PyMC model of one patient or of a population was built from: the priors of
    its free parameters (log scale), its residual SDs (estimated, held fixed) and the
    solver Op."""

    pymc_model: pm.Model
    data: PatientData | list[PatientData]
    priors: list[Prior]
    free: tuple[str, ...]
    sigma_free: tuple[str, ...]
    sigma_fixed: dict[str, float]
    op: SolveOp

    @property
    def prior_mu(self) -> np.ndarray:
        return np.array([p.mu for p in self.priors])

    @property
    def prior_sd(self) -> np.ndarray:
        return np.array([p.sd for p in self.priors])


@dataclass
class FitModel(BuiltModel):
    """A PyMC model of one patient and what it was built from.

    Everything that belongs to the patient (schedule, observation rows, priors) enters the
    PyMC model as named data (``pm.Data``): :attr:`inputs` holds their values and
    :attr:`structure` what the compiled log-density depends on besides them, so a model
    with the same structure reuses a compiled log-density with this patient's inputs
    (:mod:`carthema.fitting.op.compiled`).
    """

    data: PatientData
    schedule: Schedule
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    structure: tuple = ()

    @property
    def model(self) -> Model:
        return self.data.model

    def theta_from_z(self, z: np.ndarray) -> np.ndarray:
        return self.prior_mu + self.prior_sd * np.asarray(z)

    def sigma_rows(self, sigma_free: np.ndarray | None = None) -> np.ndarray:
        """Residual SD of every observation row (numpy)."""
        values = dict(self.sigma_fixed)
        if sigma_free is not None:
            values.update(zip(self.sigma_free, np.atleast_1d(sigma_free), strict=True))
        else:
            values.update({a: RESIDUALS[a].typical_sd for a in self.sigma_free})
        return np.array([values[o] for o in self.data.rows["observable"]])


def row_inputs(
    rows: pd.DataFrame,
    y: np.ndarray,
    censored: np.ndarray,
    sigma_free: Iterable[str],
    sigma_fixed: Mapping[str, float],
) -> dict[str, np.ndarray]:
    """The observation rows as arrays of the row likelihood (:func:`add_row_likelihood`).

    ``rows``: columns ``observable``, ``scale``, ``floor``; ``y``: observed values or limits
    on each row's likelihood scale; ``censored``: below-limit rows. Returns ``row_scale``
    (:data:`SCALE_CODES`), ``row_floor``, ``row_sigma`` (index of the row's SD in
    ``[sigma_free..., sigma_fixed...]``), ``sigma_fixed`` (values), ``unc_idx`` and ``y_obs``
    (quantified rows), ``cen_idx`` and ``y_cen`` (censored rows).
    """
    order = list(sigma_free) + list(sigma_fixed)
    censored = np.asarray(censored, dtype=bool)
    unc = np.flatnonzero(~censored).astype(np.int64)
    cen = np.flatnonzero(censored).astype(np.int64)
    y = np.asarray(y, dtype=np.float64)
    scale = rows["scale"].to_numpy()
    return {
        "row_scale": np.array([SCALE_CODES.get(str(s), 0) for s in scale], dtype=np.int64),
        "row_floor": rows["floor"].to_numpy(np.float64).copy(),
        "row_sigma": np.array([order.index(o) for o in rows["observable"]], dtype=np.int64),
        "sigma_fixed": np.array([float(v) for v in sigma_fixed.values()], dtype=np.float64),
        "unc_idx": unc,
        "y_obs": np.ascontiguousarray(y[unc]),
        "cen_idx": cen,
        "y_cen": np.ascontiguousarray(y[cen]),
    }


def transform_rows_pt(pred, scale, floor):
    """Predictions on each row's likelihood scale, the scale given per row as a code
    (:data:`SCALE_CODES`; PyTensor vectors or numpy). The same formulas as
    :func:`~carthema.fitting.model.likelihood.transform_pt`; the branch not taken by a row gets a
    floor of 1 so that it, and its masked gradient, stay finite."""
    is_log = pt.eq(scale, SCALE_CODES["log"])
    is_logit = pt.eq(scale, SCALE_CODES["logit"])
    log_branch = pt.log(pt.maximum(pred, 0.0) + pt.switch(is_log, floor, 1.0))
    f = pt.clip(pred / 100.0, 0.0, 1.0)
    fl = pt.switch(is_logit, floor, 1.0) / 100.0
    logit_branch = pt.log(f + fl) - pt.log(1.0 - f + fl)
    return pt.switch(is_log, log_branch, pt.switch(is_logit, logit_branch, pred))


def add_row_likelihood(pred, inputs: Mapping, s_free, has_unc: bool, has_cen: bool) -> None:
    """Add ``obs`` (quantified rows) and ``blq_loglik`` (M3, censored rows) to the model in
    context. ``pred``: the model prediction of every row (natural scale, PyTensor);
    ``inputs``: :func:`row_inputs` (numpy arrays or their ``pm.Data``); ``s_free``: the
    :func:`residual_sd_variable` (or ``None``)."""
    # Every row vector gets the one length n, and each index vector and its values one
    # length each (specify_shape): with lengths PyTensor cannot tell equal, it adds
    # broadcast Asserts in an order taken from a set of variables, which changed from
    # process to process and with it the compiled graph's cache key.
    row = _same_length(inputs["row_scale"])
    mu = transform_rows_pt(row(pred), row(inputs["row_scale"]), row(inputs["row_floor"]))
    fixed = pt.as_tensor_variable(inputs["sigma_fixed"]).astype("float64")
    s_all = fixed if s_free is None else pt.concatenate([s_free, fixed])
    s_rows = s_all[row(inputs["row_sigma"])]
    if has_unc:
        unc = _same_length(inputs["unc_idx"])
        mu_u, s_u = mu[unc(inputs["unc_idx"])], s_rows[unc(inputs["unc_idx"])]
        pm.Normal("obs", mu=mu_u, sigma=s_u, observed=unc(inputs["y_obs"]))
    if has_cen:
        cen = _same_length(inputs["cen_idx"])
        z = (cen(inputs["y_cen"]) - mu[cen(inputs["cen_idx"])]) / s_rows[cen(inputs["cen_idx"])]
        pm.Potential("blq_loglik", normal_lcdf_pt(z).sum())


@dataclass
class ModelParts:
    """What the PyMC model of one patient or of several is built from besides its graph
    (:func:`model_parts`): priors, residual SDs, the observation rows as the row
    likelihood needs them (:func:`row_inputs`), one schedule per patient and the Op."""

    priors: list[Prior]
    free: tuple[str, ...]
    sigma_free: tuple[str, ...]
    sigma_fixed: dict[str, float]
    rows: dict[str, np.ndarray]
    has_unc: bool
    has_cen: bool
    schedules: list[Schedule]
    op: SolveOp

    def built(self, pymc_model: pm.Model, data) -> dict:
        """The fields of :class:`BuiltModel` for a model built from these parts."""
        return {
            "pymc_model": pymc_model,
            "data": data,
            "priors": self.priors,
            "free": self.free,
            "sigma_free": self.sigma_free,
            "sigma_fixed": self.sigma_fixed,
            "op": self.op,
        }

    def observe(self, pred, ok, rows: Mapping | None = None) -> None:
        """Inside a model context: reject a draw whose solve failed (``ok`` below 0.5 for
        any patient: a rejected draw, never an error), then the residual SDs
        (:func:`residual_sd_variable`) and the likelihood of every row
        (:func:`add_row_likelihood`); ``rows``: :attr:`rows` or their ``pm.Data``."""
        pm.Potential("solver_ok", pt.switch(pt.all(pt.gt(ok, 0.5)), 0.0, -np.inf))
        s_free = residual_sd_variable(self.sigma_free)
        rows = self.rows if rows is None else rows
        add_row_likelihood(pred, rows, s_free, self.has_unc, self.has_cen)


def model_parts(
    data: Sequence[PatientData],
    free: tuple[str, ...],
    priors: list[Prior],
    sigma: Mapping[str, float] | None,
    min_obs_for_sigma: int,
    solver: SolverOptions,
) -> ModelParts:
    """The :class:`ModelParts` of one patient or several (rows stacked in the order
    given): ``free`` from :func:`resolve_free` and its ``priors``, the residual SDs by
    :func:`split_residuals` over all rows, and a :class:`SolveOp` with the ``solver``
    settings (:mod:`carthema.fitting.op.ode_op`)."""
    rows = pd.concat([d.rows for d in data], ignore_index=True)
    used = set(rows["observable"])
    observables = [o for o in data[0].model.obs_names if o in used]
    sigma_free, sigma_fixed = split_residuals(rows, observables, sigma, min_obs_for_sigma)
    censored = rows["censored"].to_numpy(bool)
    y = np.concatenate([d.transformed() for d in data])
    return ModelParts(
        priors=priors,
        free=free,
        sigma_free=tuple(sigma_free),
        sigma_fixed=sigma_fixed,
        rows=row_inputs(rows, y, censored, sigma_free, sigma_fixed),
        has_unc=bool((~censored).any()),
        has_cen=bool(censored.any()),
        schedules=[Schedule.from_data(d, free) for d in data],
        op=SolveOp(data[0].model.name, solver.rtol, solver.atol, solver.max_steps, solver.method),
    )


def _same_length(first):
    """A function giving a vector the length of ``first`` (``specify_shape``)."""
    n = pt.as_tensor_variable(first).shape[0]
    return lambda v: pt.specify_shape(v, (n,))


def build_model(
    data: PatientData,
    free: str | Iterable[str] | None = None,
    *,
    prior_sd: Mapping[str, float] | None = None,
    sigma: Mapping[str, float] | None = None,
    min_obs_for_sigma: int = MIN_OBS_FOR_SIGMA,
    solver: SolverOptions = FIT_SOLVER,
    predictor=None,
) -> FitModel:
    """The PyMC model of one patient (see the module docstring for its variables).

    Parameters
    ----------
    data:
        From :func:`carthema.fitting.model.data.prepare_patient`.
    free:
        Free parameters (names or a comma-separated string); default
        :data:`carthema.fitting.model.priors.DEFAULT_FREE` of the component set.
    prior_sd:
        Overrides of the prior spreads (log scale) by parameter name.
    sigma:
        Residual SDs to hold fixed, by analyte (on the analyte's likelihood scale).
    min_obs_for_sigma:
        Estimate an analyte's residual SD only with at least this many quantified rows.
    solver:
        ODE solver settings (:func:`fit_solver`; see :mod:`carthema.fitting.op.ode_op`).
    predictor:
        Replace the ODE Op: a function ``theta -> (pred, ok)`` of PyTensor variables
        (predictions at the rows of ``data`` and a 0/1 success flag). Used to compare
        other ODE solvers under the same priors and likelihood (benchmarks).
    """
    model = data.model
    free = resolve_free(model, free)
    parts = model_parts(
        [data],
        free,
        prior_table(model, free, prior_sd),
        sigma,
        min_obs_for_sigma,
        solver,
    )
    op = parts.op
    inputs = {
        "prior_mu": np.array([p.mu for p in parts.priors]),
        "prior_sd": np.array([p.sd for p in parts.priors]),
        **{f"sched_{k}": v for k, v in stack_schedules(parts.schedules).items()},
        **parts.rows,
    }
    coords = {"param": list(free)}
    if parts.sigma_free:
        coords["analyte"] = list(parts.sigma_free)
    with pm.Model(coords=coords) as pm_model:
        d = {k: pm.Data(k, v) for k, v in inputs.items()}
        z = pm.Normal("z", 0.0, 1.0, dims="param")
        theta = pm.Deterministic("log_params", d["prior_mu"] + d["prior_sd"] * z, dims="param")
        pm.Deterministic("params", pt.exp(theta), dims="param")
        if predictor is None:
            batch = [d[f"sched_{k}"] for k in BATCH_INPUTS]
            pred, _jac, ok = solve_patient(op, theta, batch)
        else:
            pred, ok = predictor(theta)
        parts.observe(pred, ok, d)
    structure = (
        "patient",
        model.name,
        tuple(free),
        parts.sigma_free,
        parts.has_unc,
        parts.has_cen,
        tuple(getattr(op, k) for k in op.__props__),
    )
    return FitModel(
        **parts.built(pm_model, data),
        schedule=parts.schedules[0],
        inputs=inputs,
        # A custom predictor is not part of the key: such a model is never shared.
        structure=structure if predictor is None else (),
    )


def split_residuals(
    rows: pd.DataFrame,
    observables: Iterable[str],
    sigma: Mapping[str, float] | None = None,
    min_obs_for_sigma: int = MIN_OBS_FOR_SIGMA,
) -> tuple[list[str], dict[str, float]]:
    """Which residual SDs are estimated and which are held fixed.

    ``rows``: observation rows (columns ``observable`` and ``censored``) of one patient or
    of several pooled; ``observables``: the analytes used, in model order. An analyte
    given in ``sigma`` is held at that SD (on its likelihood scale); one with at least
    ``min_obs_for_sigma`` quantified rows gets its own SD; the others are held at
    :attr:`~carthema.fitting.model.priors.Residual.typical_sd`. Returns ``(free, fixed)``.
    """
    sigma = dict(sigma or {})
    n_quant = rows.loc[~rows["censored"].astype(bool)].groupby("observable").size()
    sigma_free, sigma_fixed = [], {}
    for o in observables:
        if o in sigma:
            sigma_fixed[o] = float(sigma[o])
        elif int(n_quant.get(o, 0)) >= min_obs_for_sigma:
            sigma_free.append(o)
        else:
            sigma_fixed[o] = RESIDUALS[o].typical_sd
    return sigma_free, sigma_fixed


def residual_sd_variable(sigma_free: Iterable[str]):
    """The half-normal residual SDs ``sigma`` (dims ``analyte``) inside a model context,
    or ``None`` when no SD is estimated."""
    sigma_free = list(sigma_free)
    if not sigma_free:
        return None
    return pm.HalfNormal(
        "sigma",
        sigma=np.array([RESIDUALS[a].prior_scale for a in sigma_free]),
        dims="analyte",
    )


def add_residual_likelihood(
    mu,
    y: np.ndarray,
    censored: np.ndarray,
    row_observable: np.ndarray,
    s_free,
    sigma_free: Iterable[str],
    sigma_fixed: Mapping[str, float],
) -> None:
    """Add ``obs`` (quantified rows) and ``blq_loglik`` (M3, censored rows) to the model
    in context, for predictions ``mu`` already on each row's likelihood scale.

    ``y``: observed values or limits on that scale; ``row_observable``: the analyte of each
    row; ``s_free``: the :func:`residual_sd_variable` (or ``None``). Rows given as
    constants; :func:`add_row_likelihood` takes them as data and transforms itself.
    """
    rows = pd.DataFrame(
        {"observable": np.asarray(row_observable), "scale": "identity", "floor": 0.0}
    )
    censored = np.asarray(censored, dtype=bool)
    inputs = row_inputs(rows, y, censored, sigma_free, sigma_fixed)
    add_row_likelihood(mu, inputs, s_free, bool((~censored).any()), bool(censored.any()))


def build_patient_model(
    observations: pd.DataFrame,
    events: pd.DataFrame | None,
    patient: str | None,
    components: str = "full",
    free: str | Iterable[str] | None = None,
    *,
    params: Mapping[str, float] | None = None,
    **kwargs,
) -> FitModel:
    """:func:`prepare_patient` + :func:`build_model` in one call.

    ``params`` sets the values of non-free parameters (default: model defaults); the
    solver's ``rtol``, ``atol``, ``max_steps`` and ``method`` among ``kwargs`` change
    :data:`FIT_SOLVER` (:func:`fit_solver`), the others go to :func:`build_model`.
    """
    from carthema.models.simulate import resolve_params

    model = get_model(components)
    p = resolve_params(model, params)
    data = prepare_patient(model, observations, events, patient, p)
    solver = {k: kwargs.pop(k) for k in SOLVER_FIELDS if k in kwargs}
    return build_model(data, free, solver=fit_solver(**solver), **kwargs)
