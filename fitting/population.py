"""Hierarchical (population) fit of several patients: shared means and spreads.

Model
-----
For patient ``i`` and free parameter ``k`` (log scale, natural log of the parameter in
its unit, e.g. ``log(cart_rho / (1/d))``):

    log p[i, k] = mu[k] + sum_c x[i, c] * beta[c, k] + omega[k] * eta[i, k]
    eta[i, k]   ~ Normal(0, 1)                      (non-centred: the sampler sees eta)
    mu[k]       = mu0[k] + sd0[k] * mu_z[k],  mu_z[k] ~ Normal(0, 1)
    omega[k]    ~ HalfNormal(omega_scale[k])        (default scale: sd0[k])
    beta[c, k]  = sd0[k] / s[c] * beta_z[c, k],  beta_z ~ Normal(0, 1)

``mu0``, ``sd0`` are the single-patient priors of :func:`carthema.fitting.priors.prior_table`
(literature default and spread), so ``mu`` is the population log-median and ``omega``
the between-patient SD of ``log p``. Covariates ``x`` are centred on the cohort mean
(``mu`` is then the log-median of a patient with average covariates) and act only on
the parameters chosen for them; ``s[c]`` is the covariate's SD in the cohort, so the
prior says a one-SD change of a covariate moves ``log p`` by about one prior SD at
most. ``beta`` is reported per unit of the covariate. Text covariates (e.g. an age
group) are dummy-coded against their first level in sorted order.

Every patient's observations enter through the single-patient likelihood: its
:class:`~carthema.fitting.data.PatientData` (:func:`~carthema.fitting.data.prepare_patient`),
the ODE solve on its own :class:`~carthema.fitting.ode_op.Schedule` with the numba
kernel and forward-sensitivity gradient of :class:`~carthema.fitting.ode_op.SolveOp`
(all patients in one :class:`CohortSolveOp` node rather than one node per patient,
which keeps the compiled log-density small), and the residual-error and M3 terms of
:func:`carthema.fitting.build.add_residual_likelihood`. Residual SDs (one per analyte,
:data:`~carthema.fitting.priors.RESIDUALS`) are shared by all patients.

Variables of the PyMC model: ``mu_z``, ``mu`` (dims ``param``), ``omega`` (``param``),
``beta_z``, ``beta`` (``effect``, only with covariates), ``eta``, ``log_params``,
``params`` (``patient``, ``param``), ``sigma`` (``analyte``), ``obs``, ``blq_loglik`` and
``solver_ok`` (0, or -inf when any patient's solve failed).

Samplers: ``"nutpie"`` (default; NUTS on the numba-compiled log-density) and ``"pymc"``
estimate the spreads properly. ``"map"`` (joint mode + Laplace) is for screening only:
the joint mode of a hierarchical model is not the posterior of the spreads (with
informative patients it over-states ``omega``; with uninformative ones it can collapse
it), and the fit says so in its notes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import arviz as az
import numba
import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.link.numba.dispatch.basic import numba_funcify

from ..data.errors import InputError
from ..models.model import Model, get_model
from ..models.simulate import resolve_params
from .build import (
    MIN_OBS_FOR_SIGMA,
    add_residual_likelihood,
    residual_sd_variable,
    split_residuals,
)
from .data import HISTORY_DAYS, PatientData, patients_in, prepare_patient
from .diagnostics import Diagnostics, _mcmc_stats, _moments, diagnose, misfit_warnings, trust_lines
from .laplace import MapResult
from .likelihood import transform_pt
from .ode_op import ATOL, MAX_STEPS, METHOD, RTOL, Schedule, SolveOp
from .priors import RESIDUALS, Prior, prior_table, resolve_free
from .samplers import check_run_settings, run_sampler, run_settings, seed_and_cores

#: Samplers of a population fit.
POPULATION_SAMPLERS = ("nutpie", "pymc", "map")

#: A population fit needs at least this many patients to estimate between-patient spreads.
MIN_PATIENTS = 3

#: Quantiles of a half-normal(1): median, 5 % and 95 %.
_HN_MEDIAN, _HN_Q05, _HN_Q95 = 0.6745, 0.0627, 1.96
#: 5 %/95 % quantile of a standard normal.
_Z95 = 1.6449

_MAP_NOTE = (
    "MAP + Laplace of a hierarchical model is for screening only: the joint mode is not "
    "the posterior of the between-patient spreads (omega is over-stated when patients are "
    "well informed, and can collapse when they are not); use nutpie for spreads"
)


# ---------------------------------------------------------------------------------------
# Covariates
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Covariates:
    """Design matrix of per-patient covariates and which log-parameters each acts on.

    Attributes
    ----------
    columns:
        Design columns (numeric covariates by name; text covariates dummy-coded as
        ``name[level]`` against their first level).
    x:
        (n_patients, n_columns) centred design matrix, in the covariates' own units.
    center:
        Cohort mean of each column (subtracted from ``x``).
    scale:
        Cohort SD of each column (sets the prior scale of the effects).
    effects:
        (column index, free-parameter index) of every estimated effect.
    labels:
        ``"column:parameter"`` label of every effect.
    """

    columns: tuple[str, ...]
    x: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    effects: tuple[tuple[int, int], ...]
    labels: tuple[str, ...]


def parse_effects(text: str | None) -> dict[str, tuple[str, ...]] | None:
    """``"age:cart_rho,cart_alpha;reserve:hsc_regen"`` -> ``{covariate: parameters}``."""
    if text is None or not text.strip():
        return None
    out: dict[str, tuple[str, ...]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if ":" not in part:
            raise InputError(
                f"covariate effect '{part.strip()}' has no ':'",
                column="effects",
                fix="write COVARIATE:PARAM[,PARAM...] with ';' between covariates, e.g. "
                "age:cart_rho,cart_alpha",
            )
        cov, params = part.split(":", 1)
        names = tuple(s.strip() for s in params.split(",") if s.strip())
        if not names:
            raise InputError(f"covariate '{cov.strip()}' acts on no parameter", column="effects")
        out[cov.strip()] = names
    return out or None


def design_matrix(
    covariates: pd.DataFrame,
    patients: Sequence[str],
    free: Sequence[str],
    effects: Mapping[str, Iterable[str]] | str | None = None,
) -> Covariates:
    """Centred design matrix of ``covariates`` for ``patients`` (see :class:`Covariates`).

    ``covariates``: a ``patient`` column and one column per covariate (numbers, or text
    levels such as an age group). ``effects``: covariate -> the free parameters it acts
    on (a mapping or the :func:`parse_effects` string); default: every covariate on
    every free parameter. Raises :class:`InputError` for a missing patient, a missing
    value, a covariate that does not vary across the patients, or an unknown name.
    """
    if "patient" not in covariates.columns:
        raise InputError(
            "the covariate table has no 'patient' column",
            column="patient",
            fix="give one row per patient: patient,COVARIATE[,COVARIATE...]",
        )
    names = [c for c in covariates.columns if c != "patient"]
    if not names:
        raise InputError(
            "the covariate table has no covariate column", fix="add e.g. a 'marrow_reserve' column"
        )
    ids = covariates["patient"].astype(str).str.strip()
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise InputError(
            f"patient(s) {', '.join(dup[:5])} appear more than once in the covariate table",
            column="patient",
            fix="give one row per patient",
        )
    table = covariates.assign(patient=ids).set_index("patient")
    missing = [p for p in patients if p not in table.index]
    if missing:
        raise InputError(
            f"the covariate table has no row for patient(s) {', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}",
            column="patient",
            fix="give a covariate row for every patient fitted (or leave those patients out)",
        )
    table = table.loc[list(patients), names]
    if isinstance(effects, str):
        effects = parse_effects(effects)
    if effects is None:
        effects = {c: tuple(free) for c in names}
    for cov, params in effects.items():
        if cov not in names:
            raise InputError(
                f"unknown covariate '{cov}' in the effects",
                column="effects",
                fix=f"covariates are: {', '.join(names)}",
            )
        for p in params:
            if p not in free:
                raise InputError(
                    f"covariate '{cov}' acts on '{p}', which is not a free parameter",
                    column="effects",
                    fix=f"free parameters are: {', '.join(free)}",
                )
    columns: list[str] = []
    blocks: list[np.ndarray] = []
    origin: list[str] = []
    for name in names:
        col = table[name]
        raw = col.astype(str).str.strip()
        bad = col.isna() | raw.isin(["", "nan", "NaN", "NA", "None"])
        if bad.any():
            who = ", ".join(list(table.index[bad.to_numpy()])[:5])
            raise InputError(
                f"covariate '{name}' is missing for patient(s) {who}",
                column=name,
                fix="fill in every patient's value (or drop the covariate)",
            )
        num = pd.to_numeric(raw, errors="coerce")
        if num.notna().all():
            values = num.to_numpy(float)[:, None]
            labels = [name]
        else:
            levels = sorted(raw.unique())
            values = np.stack([(raw == lv).to_numpy(float) for lv in levels[1:]], axis=1)
            labels = [f"{name}[{lv}]" for lv in levels[1:]]
        if values.shape[1] == 0 or np.any(values.std(axis=0) == 0.0):
            raise InputError(
                f"covariate '{name}' takes the same value for every patient fitted",
                column=name,
                fix="a covariate must vary between the patients to have an estimable effect",
            )
        columns += labels
        blocks.append(values)
        origin += [name] * len(labels)
    x = np.concatenate(blocks, axis=1)
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    pairs, effect_labels = [], []
    for c, (col, cov) in enumerate(zip(columns, origin, strict=True)):
        for p in effects.get(cov, ()):
            pairs.append((c, list(free).index(p)))
            effect_labels.append(f"{col}:{p}")
    if not pairs:
        raise InputError("no covariate acts on any parameter", column="effects")
    return Covariates(
        columns=tuple(columns),
        x=x - center,
        center=center,
        scale=scale,
        effects=tuple(pairs),
        labels=tuple(effect_labels),
    )


# ---------------------------------------------------------------------------------------
# All patients' solves in one Op
# ---------------------------------------------------------------------------------------
#: Inputs of :class:`CohortSolveOp` after ``theta``: every patient's
#: :class:`~carthema.fitting.ode_op.Schedule` arrays, stacked (``p_fixed``, ``t0``) or
#: concatenated with offsets (times, events, rows), and each row's patient.
COHORT_INPUTS = (
    "p_fixed",
    "free",
    "u0",
    "t0",
    "t_out",
    "t_off",
    "ev_t",
    "ev_kind",
    "ev_target",
    "ev_value",
    "ev_scale",
    "ev_off",
    "t_idx",
    "o_idx",
    "row_off",
    "row_patient",
)
_COHORT_INT = {"free", "t_off", "ev_kind", "ev_target", "ev_scale", "ev_off", "t_idx", "o_idx"}
_COHORT_INT |= {"row_off", "row_patient"}


def stack_schedules(schedules: Sequence[Schedule]) -> tuple[np.ndarray, ...]:
    """The inputs of :class:`CohortSolveOp` (in :data:`COHORT_INPUTS` order) built from
    one :class:`~carthema.fitting.ode_op.Schedule` per patient."""

    def cat(name, dtype):
        parts = [np.asarray(getattr(s, name), dtype=dtype) for s in schedules]
        off = np.concatenate([[0], np.cumsum([len(a) for a in parts])]).astype(np.int64)
        return np.ascontiguousarray(np.concatenate(parts)), off

    t_out, t_off = cat("t_out", np.float64)
    ev = {
        n: cat(n, np.float64 if n in ("ev_t", "ev_value") else np.int64)[0]
        for n in ("ev_t", "ev_kind", "ev_target", "ev_value", "ev_scale")
    }
    ev_off = cat("ev_t", np.float64)[1]
    t_idx, row_off = cat("t_idx", np.int64)
    o_idx = cat("o_idx", np.int64)[0]
    row_patient = np.repeat(np.arange(len(schedules)), np.diff(row_off)).astype(np.int64)
    return (
        np.ascontiguousarray(np.stack([s.p_fixed for s in schedules])),
        np.asarray(schedules[0].free, dtype=np.int64),
        np.asarray(schedules[0].u0, dtype=np.float64),
        np.array([float(s.t0) for s in schedules]),
        t_out,
        t_off,
        ev["ev_t"],
        ev["ev_kind"],
        ev["ev_target"],
        ev["ev_value"],
        ev["ev_scale"],
        ev_off,
        t_idx,
        o_idx,
        row_off,
        row_patient,
    )


_COHORT_KERNELS: dict[tuple, object] = {}


def _cohort_kernel(single: SolveOp):
    """numba loop over patients around the single-patient kernel of ``single``."""
    key = tuple(getattr(single, k) for k in single.__props__)
    if key in _COHORT_KERNELS:
        return _COHORT_KERNELS[key]
    kernel = single.kernel()

    @numba.njit(error_model="numpy", nogil=True)
    def cohort(
        theta, p_fixed, free, u0, t0, t_out, t_off, ev_t, ev_kind, ev_target, ev_value,
        ev_scale, ev_off, t_idx, o_idx, row_off, row_patient,
    ):  # fmt: skip
        n_pat = theta.shape[0]
        nf = theta.shape[1]
        n = t_idx.shape[0]
        pred = np.empty(n)
        jac = np.empty((n, nf))
        ok = np.empty(n_pat)
        for i in range(n_pat):
            a, b = t_off[i], t_off[i + 1]
            c, d = ev_off[i], ev_off[i + 1]
            r0, r1 = row_off[i], row_off[i + 1]
            p_i, j_i, ok_i = kernel(
                theta[i].copy(), p_fixed[i].copy(), free, u0, t0[i : i + 1], t_out[a:b],
                ev_t[c:d], ev_kind[c:d], ev_target[c:d], ev_value[c:d], ev_scale[c:d],
                t_idx[r0:r1], o_idx[r0:r1],
            )  # fmt: skip
            pred[r0:r1] = p_i
            jac[r0:r1, :] = j_i
            ok[i] = ok_i.item()
        return pred, jac, ok

    _COHORT_KERNELS[key] = cohort
    return cohort


class CohortSolveOp(Op):
    """Every patient's ODE solve in one Op: ``theta`` (n_patients, n_free) ->
    ``pred`` (all rows, patients in order), ``jac`` (rows, n_free: each row's
    derivative by its own patient's log-parameters), ``ok`` (n_patients, 1.0 or 0.0).

    It runs the numba kernel of :class:`~carthema.fitting.ode_op.SolveOp` (same solver,
    same failure handling) on each patient's :class:`~carthema.fitting.ode_op.Schedule`
    in one numba loop: one graph node instead of one per patient. Call as
    ``op(theta, *stack_schedules(schedules))``.
    """

    __props__ = ("single",)

    def __init__(self, single: SolveOp) -> None:
        self.single = single
        super().__init__()

    def kernel(self):
        return _cohort_kernel(self.single)

    def make_node(self, theta, *schedule) -> Apply:
        if len(schedule) != len(COHORT_INPUTS):
            raise TypeError(f"CohortSolveOp takes theta and {len(COHORT_INPUTS)} inputs")
        theta = pt.as_tensor_variable(theta).astype("float64")
        ins = []
        for name, x in zip(COHORT_INPUTS, schedule, strict=True):
            x = pt.as_tensor_variable(x)
            ins.append(x.astype("int64" if name in _COHORT_INT else "float64"))
        outputs = [pt.dvector("pred"), pt.dmatrix("jac"), pt.dvector("ok")]
        return Apply(self, [theta, *ins], outputs)

    def perform(self, node, inputs, output_storage) -> None:
        arrays = [np.ascontiguousarray(a) for a in inputs]
        pred, jac, ok = self.kernel()(*arrays)
        output_storage[0][0] = pred
        output_storage[1][0] = jac
        output_storage[2][0] = ok

    def infer_shape(self, fgraph, node, input_shapes):
        n = input_shapes[COHORT_INPUTS.index("t_idx") + 1][0]
        nf = input_shapes[0][1]
        return [(n,), (n, nf), (input_shapes[0][0],)]

    def connection_pattern(self, node):
        return [[True, True, False]] + [[False, False, False]] * len(COHORT_INPUTS)

    def L_op(self, inputs, outputs, output_grads):
        theta = inputs[0]
        g_pred, g_jac, _ = output_grads
        rest = [disconnected_type() for _ in COHORT_INPUTS]
        if not isinstance(g_jac.type, DisconnectedType):
            why = "second derivatives of the ODE solve"
            return [grad_not_implemented(self, 0, theta, why), *rest]
        if isinstance(g_pred.type, DisconnectedType):
            return [pt.zeros_like(theta)] + rest
        row_patient = inputs[-1]
        g = pt.zeros_like(theta)[row_patient].inc(g_pred[:, None] * outputs[1])
        return [g] + rest


@numba_funcify.register(CohortSolveOp)
def _numba_funcify_cohort(op: CohortSolveOp, node=None, **kwargs):
    return op.kernel()


# ---------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------
@dataclass
class PopulationModel:
    """The PyMC population model and what it was built from."""

    pymc_model: pm.Model
    data: list[PatientData]
    priors: list[Prior]
    free: tuple[str, ...]
    omega_scale: np.ndarray
    sigma_free: tuple[str, ...]
    sigma_fixed: dict[str, float]
    op: SolveOp
    schedules: list[Schedule]
    covariates: Covariates | None = None

    @property
    def model(self) -> Model:
        return self.data[0].model

    @property
    def patients(self) -> list[str]:
        return [d.patient for d in self.data]

    @property
    def prior_mu(self) -> np.ndarray:
        return np.array([p.mu for p in self.priors])

    @property
    def prior_sd(self) -> np.ndarray:
        return np.array([p.sd for p in self.priors])


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
    rtol: float = RTOL,
    atol: float = ATOL,
    max_steps: int = MAX_STEPS,
    method: str = METHOD,
) -> PopulationModel:
    """The hierarchical PyMC model of several patients (see the module docstring).

    Parameters
    ----------
    data:
        One :class:`PatientData` per patient (:func:`prepare_patient`), same model.
    free:
        Free parameters (default :data:`~carthema.fitting.priors.DEFAULT_FREE`).
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
    rtol, atol, max_steps, method:
        ODE solver settings (see :mod:`carthema.fitting.ode_op`).
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
    scales = dict(omega_scale or {})
    for name, v in scales.items():
        if name not in free:
            raise InputError(
                f"omega scale given for '{name}', which is not a free parameter",
                fix=f"free parameters are {', '.join(free)}",
            )
        if not (np.isfinite(v) and v > 0):
            raise InputError(f"omega scale of '{name}' must be positive, got {v}")
    om_scale = np.array([float(scales.get(n, s)) for n, s in zip(free, sd0, strict=True)])
    cov = None if covariates is None else design_matrix(covariates, ids, free, effects)

    rows = pd.concat([d.rows[["observable", "censored"]] for d in data], ignore_index=True)
    observables = [o for o in model.obs_names if o in set(rows["observable"])]
    sigma_free, sigma_fixed = split_residuals(rows, observables, sigma, min_obs_for_sigma)
    schedules = [Schedule.from_data(d, free) for d in data]
    op = SolveOp(model.name, rtol=rtol, atol=atol, max_steps=max_steps, method=method)

    coords: dict[str, list[str]] = {"param": list(free), "patient": ids}
    if sigma_free:
        coords["analyte"] = list(sigma_free)
    if cov is not None:
        coords["effect"] = list(cov.labels)
    y = np.concatenate([d.transformed() for d in data])
    censored = np.concatenate([d.censored for d in data])
    row_obs = rows["observable"].to_numpy()
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
        consts = [
            pt.constant(a, name=n)
            for n, a in zip(COHORT_INPUTS, stack_schedules(schedules), strict=True)
        ]
        pred, _jac, ok = CohortSolveOp(op)(theta, *consts)
        pm.Potential("solver_ok", pt.switch(pt.all(pt.gt(ok, 0.5)), 0.0, -np.inf))
        row_off = np.concatenate([[0], np.cumsum([d.n for d in data])])
        mu_rows = pt.concatenate(
            [transform_pt(pred[row_off[i] : row_off[i + 1]], d) for i, d in enumerate(data)]
        )
        s_free = residual_sd_variable(sigma_free)
        add_residual_likelihood(mu_rows, y, censored, row_obs, s_free, sigma_free, sigma_fixed)
    return PopulationModel(
        pymc_model=pm_model,
        data=data,
        priors=priors,
        free=free,
        omega_scale=om_scale,
        sigma_free=tuple(sigma_free),
        sigma_fixed=sigma_fixed,
        op=op,
        schedules=schedules,
        covariates=cov,
    )


# ---------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------
@dataclass
class PopulationResult:
    """Result of :func:`fit_population`.

    Attributes
    ----------
    idata:
        ArviZ InferenceData; posterior: ``mu``, ``omega`` (dims ``param``), ``beta``
        (``effect``), ``eta``, ``log_params``, ``params`` (``patient``, ``param``),
        ``sigma`` (``analyte``).
    diagnostics:
        R-hat, ESS, divergences, E-BFMI over mu, omega, effects, every patient's
        log-parameters and the residual SDs.
    population_model:
        The PyMC model and what it was built from.
    truth:
        Known values (synthetic cohorts): ``{"mu": {name: log-mean}, "omega": {name:
        SD}, "beta": {label: effect}}``, any part optional.
    """

    idata: az.InferenceData
    diagnostics: Diagnostics
    population_model: PopulationModel
    sampler: str
    settings: dict
    timings: dict
    truth: dict[str, dict[str, float]] | None = None
    map: MapResult | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def patients(self) -> list[str]:
        return self.population_model.patients

    def summary(self) -> pd.DataFrame:
        """One row per population mean (``mu``, log scale), between-patient SD
        (``omega``, log scale), covariate effect (``beta``, log scale per unit of the
        covariate) and residual SD (``sigma``).

        Columns: name, quantity, unit, prior_median, prior_q05, prior_q95, mean, sd,
        median, q05, q95 (90 % interval), typical (``exp(median mu)`` in the
        parameter's unit), ess_bulk, ess_tail, r_hat, [true, true_in_90], source.
        """
        pm_ = self.population_model
        post = self.idata.posterior
        mcmc = self.sampler != "map"
        rows = []
        for k, p in enumerate(pm_.priors):
            x = post["mu"].isel(param=k).values
            rows.append(
                {
                    "name": p.name,
                    "quantity": "mu",
                    "unit": f"log({p.unit})",
                    "prior_median": p.mu,
                    "prior_q05": p.mu - _Z95 * p.sd,
                    "prior_q95": p.mu + _Z95 * p.sd,
                    **_moments(x),
                    "typical": float(np.exp(np.median(x))),
                    **_mcmc_stats(x, mcmc),
                    "source": p.source,
                }
            )
        for k, p in enumerate(pm_.priors):
            x = post["omega"].isel(param=k).values
            s = float(pm_.omega_scale[k])
            rows.append(
                {
                    "name": p.name,
                    "quantity": "omega",
                    "unit": "SD of log",
                    "prior_median": _HN_MEDIAN * s,
                    "prior_q05": _HN_Q05 * s,
                    "prior_q95": _HN_Q95 * s,
                    **_moments(x),
                    **_mcmc_stats(x, mcmc),
                    "source": f"half-normal({s:g}) prior of the between-patient SD",
                }
            )
        cov = pm_.covariates
        if cov is not None:
            for j, ((c, k), label) in enumerate(zip(cov.effects, cov.labels, strict=True)):
                x = post["beta"].isel(effect=j).values
                s = float(pm_.prior_sd[k] / cov.scale[c])
                rows.append(
                    {
                        "name": label,
                        "quantity": "beta",
                        "unit": f"log per unit of {cov.columns[c]}",
                        "prior_median": 0.0,
                        "prior_q05": -_Z95 * s,
                        "prior_q95": _Z95 * s,
                        **_moments(x),
                        **_mcmc_stats(x, mcmc),
                        "source": f"normal(0, {s:.3g}): a 1-SD covariate change moves log p by "
                        "about one prior SD",
                    }
                )
        for j, a in enumerate(pm_.sigma_free):
            x = post["sigma"].isel(analyte=j).values
            res = RESIDUALS[a]
            rows.append(
                {
                    "name": a,
                    "quantity": "sigma",
                    "unit": f"{res.scale} scale",
                    "prior_median": _HN_MEDIAN * res.prior_scale,
                    "prior_q05": _HN_Q05 * res.prior_scale,
                    "prior_q95": _HN_Q95 * res.prior_scale,
                    **_moments(x),
                    **_mcmc_stats(x, mcmc),
                    "source": res.source,
                }
            )
        for a, v in pm_.sigma_fixed.items():
            rows.append(
                {
                    "name": a,
                    "quantity": "sigma (fixed)",
                    "unit": f"{RESIDUALS[a].scale} scale",
                    "median": v,
                    "mean": v,
                    "source": RESIDUALS[a].source,
                }
            )
        df = pd.DataFrame(rows)
        if self.truth:
            df["true"] = [
                float(self.truth.get(q, {}).get(n, np.nan))
                for q, n in zip(df["quantity"], df["name"], strict=True)
            ]
            inside = (df["true"] >= df["q05"]) & (df["true"] <= df["q95"])
            df["true_in_90"] = inside.astype(object).where(df["true"].notna(), None)
        return df

    def patient_summary(self) -> pd.DataFrame:
        """Per patient and parameter: posterior median and 90 % interval (natural scale)."""
        post = self.idata.posterior["params"]
        q = post.quantile([0.05, 0.5, 0.95], dim=("chain", "draw"))
        rows = []
        for pid in post["patient"].values:
            for name in post["param"].values:
                v = q.sel(patient=pid, param=name).values
                rows.append(
                    {
                        "patient": str(pid),
                        "name": str(name),
                        "median": float(v[1]),
                        "q05": float(v[0]),
                        "q95": float(v[2]),
                    }
                )
        return pd.DataFrame(rows)

    def population(self) -> dict:
        """The population file's content: ``{"mu": {name: posterior median of the
        log-mean}, "omega": {name: posterior median between-patient SD of log p}}`` (the
        format :func:`carthema.fitting.virtual_trial.read_population` reads), plus the
        covariate effects and what was fitted."""
        post = self.idata.posterior
        free = self.population_model.free
        out: dict = {
            "mu": {n: float(post["mu"].sel(param=n).median()) for n in free},
            "omega": {n: float(post["omega"].sel(param=n).median()) for n in free},
            "components": self.population_model.model.name,
            "patients": self.patients,
            "sampler": self.sampler,
            "seed": self.settings.get("seed"),
        }
        cov = self.population_model.covariates
        if cov is not None:
            out["beta"] = {lab: float(post["beta"].sel(effect=lab).median()) for lab in cov.labels}
            out["covariate_center"] = dict(zip(cov.columns, map(float, cov.center), strict=True))
            out["note"] = "mu is the log-median of a patient with the cohort-mean covariates"
        return out

    def report(self) -> list[str]:
        """Everything worth printing after a population fit."""
        pm_ = self.population_model
        n_rows = sum(d.n for d in pm_.data)
        n_cen = sum(int(d.censored.sum()) for d in pm_.data)
        lines = [
            f"{len(pm_.data)} patients, {n_rows} observations used ({n_cen} below a limit, "
            f"M3-censored); model '{pm_.model.name}', {len(pm_.free)} free parameters"
            + (f", {len(pm_.covariates.labels)} covariate effects" if pm_.covariates else ""),
        ]
        lines = [*trust_lines(self.diagnostics), *lines]
        lines += [f"note: {n}" for n in self.notes]
        t = self.timings
        lines.append(
            "time: "
            + ", ".join(
                f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items() if k.endswith("_s")
            )
        )
        sh = self.shrinkage()
        if len(sh) and sh["shrinkage"].notna().any():
            lines.append(
                "eta-shrinkage (1 - SD(eta) / omega; above 0.3 individual estimates lean on "
                "the population): "
                + ", ".join(
                    f"{r.name} {r.shrinkage:.2f}"
                    for r in sh.itertuples()
                    if r.shrinkage == r.shrinkage
                )
            )
        return lines

    def shrinkage(self) -> pd.DataFrame:
        """Pharmacometric eta-shrinkage per free parameter (Savic and Karlsson 2009, AAPS J
        11:558): ``1 - SD over patients of the posterior-mean eta / omega``, with ``eta``
        the patient's deviation from the population mean on the log scale
        (``omega * eta_std``) and ``omega`` its posterior median. Near 0: the data
        identify each patient's value; above about 0.3: individual estimates shrink to
        the population mean and diagnostics built on them mislead.

        Columns: name, omega (posterior median), sd_eta (SD over patients of the
        posterior-mean eta), shrinkage."""
        post = self.idata.posterior
        omega = post["omega"]  # (chain, draw, param)
        eta = post["eta"] * omega  # (chain, draw, patient, param): log-scale deviation
        eta_mean = eta.mean(dim=("chain", "draw"))  # (patient, param)
        rows = []
        for name in post["param"].values:
            om = float(omega.sel(param=name).median())
            sd = (
                float(np.std(eta_mean.sel(param=name).values, ddof=1))
                if eta_mean.sizes["patient"] > 1
                else np.nan
            )
            rows.append(
                {
                    "name": str(name),
                    "omega": om,
                    "sd_eta": sd,
                    "shrinkage": float(1.0 - sd / om) if om > 0 else np.nan,
                }
            )
        return pd.DataFrame(rows)

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``population.nc`` (InferenceData), ``population_summary.csv``,
        ``population.json`` (see :meth:`population`), ``population_patients.csv`` and
        ``population_shrinkage.csv`` (:meth:`shrinkage`).

        The folder is written whole or not at all: under a temporary name beside ``out``
        and swapped in at the end (:func:`carthema.data.atomic.swap_folder`); whatever
        ``out`` held before is replaced as a whole."""
        from ..data.atomic import swap_folder

        out = Path(out)
        names = {
            "posterior": "population.nc",
            "summary": "population_summary.csv",
            "population": "population.json",
            "patients": "population_patients.csv",
            "shrinkage": "population_shrinkage.csv",
        }
        with swap_folder(out) as tmp:
            self.idata.to_netcdf(str(tmp / names["posterior"]))
            self.summary().to_csv(tmp / names["summary"], index=False)
            (tmp / names["population"]).write_text(json.dumps(self.population(), indent=2) + "\n")
            self.patient_summary().to_csv(tmp / names["patients"], index=False)
            self.shrinkage().to_csv(tmp / names["shrinkage"], index=False)
        return {k: out / v for k, v in names.items()}


# ---------------------------------------------------------------------------------------
# Fit
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
    that :func:`carthema.fitting.diagnostics.diagnose` checks all of them: mu, omega,
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
        Free parameters (default: :data:`carthema.fitting.priors.DEFAULT_FREE`).
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
    **solver_options:
        ``rtol``, ``atol``, ``max_steps``, ``method`` of the ODE solver.
    """
    if sampler not in POPULATION_SAMPLERS:
        raise InputError(
            f"unknown sampler '{sampler}' for a population fit",
            fix=f"choose one of {', '.join(POPULATION_SAMPLERS)}",
        )
    check_run_settings(components, draws, tune, chains, init)
    if observations is None or len(observations) == 0:
        raise InputError("the observations table is empty", fix="give the cohort's observations")
    available = patients_in(observations)
    if patients is None:
        ids = available
    else:
        if isinstance(patients, str):
            patients = [s for s in patients.split(",")]
        ids = [str(p).strip() for p in patients if str(p).strip()]
        unknown = [p for p in ids if p not in available]
        if unknown:
            raise InputError(
                f"unknown patient(s) {', '.join(unknown[:5])} in the observations",
                column="patient",
                fix=f"patients are: {', '.join(available[:20])}"
                f"{', ...' if len(available) > 20 else ''}",
            )
        dup = sorted({p for p in ids if ids.count(p) > 1})
        if dup:
            raise InputError(f"patient(s) {', '.join(dup)} listed twice", column="patient")
    if len(ids) < MIN_PATIENTS:
        raise InputError(
            f"a population fit needs at least {MIN_PATIENTS} patients to estimate "
            f"between-patient spreads; got {len(ids)}",
            column="patient",
            fix="fit single patients with `carthema fit`, or add patients",
        )
    seed, cores = seed_and_cores(seed, cores, chains)
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
        **solver_options,
    )
    timings = {"build_s": time.perf_counter() - t_start}
    settings = run_settings(
        pop.op, sampler, draws, tune, chains, seed, cores, init, target_accept, low_rank
    )
    notes = _cohort_notes(data)
    # MAP starts for nutpie only: PyMC's sampler starts from PyMC's initial point here
    # (the per-chain start values built in _run_nuts name single-patient variables).
    idata, grad_evals, map_res, run_notes = run_sampler(
        pop,
        sampler,
        lambda X, slices: _deterministic_draws(pop, X, slices, 1),
        draws=int(draws),
        tune=int(tune),
        chains=int(chains),
        cores=cores,
        seed=seed,
        init_map=sampler == "nutpie" and init == "map",
        progress=progress,
        target_accept=target_accept,
        low_rank=low_rank,
        timings=timings,
        say=say,
    )
    notes += run_notes
    if sampler == "map":
        notes.append(_MAP_NOTE)
    timings["total_s"] = time.perf_counter() - t_start
    timings["grad_evals"] = int(grad_evals)
    idata.posterior.attrs.update(
        {
            "carthema_patients": ",".join(ids),
            "carthema_components": model.name,
            "carthema_free": ",".join(pop.free),
            "carthema_sampler": sampler,
            "carthema_seed": seed,
            "carthema_notes": " | ".join(notes),
        }
    )
    diag = diagnose(_diagnostic_view(idata), sampler)
    truth_d = None
    if truth is not None:
        truth_d = {q: {k: float(v) for k, v in vals.items()} for q, vals in truth.items()}
    result = PopulationResult(
        idata=idata,
        diagnostics=diag,
        population_model=pop,
        sampler=sampler,
        settings=settings,
        timings=timings,
        truth=truth_d,
        map=map_res,
        notes=notes,
    )
    table = result.summary()
    sig = table[table["quantity"] == "sigma"].assign(
        kind="residual SD", name=lambda d: "sigma_" + d["name"].astype(str)
    )
    diag.warnings += misfit_warnings(sig)
    return result
