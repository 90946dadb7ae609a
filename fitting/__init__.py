"""carthema.fitting: Bayesian fits of individual patients with PyMC.

- :func:`fit`: one patient's observations and events -> :class:`FitResult` (posterior,
  diagnostics, summary, plot); samplers nutpie (numba, default), nutpie-jax, numpyro,
  PyMC, or MAP + Laplace.
- :func:`build_patient_model` / :func:`build_model`: the PyMC model alone.
- :mod:`carthema.fitting.priors`: population priors (:data:`DEFAULT_FREE`,
  :func:`prior_table`) and residual-error models (:data:`RESIDUALS`).
- :class:`SolveOp`: the ODE solves of a batch of patients as one PyTensor Op (numba and
  JAX implementations, forward-sensitivity gradient); a single patient is a batch of one.
- :mod:`carthema.fitting.compiled`: one compiled log-density per model structure, reused
  for every patient (their data enter as ``pm.Data``).
- :class:`~carthema.fitting.settings.RunSettings`, :mod:`carthema.data.patients`: the
  run settings and the patient selection shared by single-patient, population and
  cohort fits.
"""

from carthema.fitting.build import FitModel, build_model, build_patient_model
from carthema.fitting.data import PatientData, prepare_patient
from carthema.fitting.diagnostics import Diagnostics
from carthema.fitting.ode_op import SolveOp
from carthema.fitting.population import PopulationResult, fit_population
from carthema.fitting.priors import DEFAULT_FREE, RESIDUALS, Prior, prior_table
from carthema.fitting.samplers import SAMPLERS, FitResult, fit

__all__ = [
    "DEFAULT_FREE",
    "RESIDUALS",
    "SAMPLERS",
    "Diagnostics",
    "FitModel",
    "FitResult",
    "PatientData",
    "PopulationResult",
    "Prior",
    "SolveOp",
    "build_model",
    "build_patient_model",
    "fit",
    "fit_population",
    "prepare_patient",
    "prior_table",
]
