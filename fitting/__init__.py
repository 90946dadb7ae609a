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

import importlib

#: Public names imported on first use (PEP 562): importing a PyMC-free submodule such as
#: :mod:`carthema.fitting.priors` must not load PyMC through this package.
_LAZY = {
    "FitModel": "carthema.fitting.build",
    "build_model": "carthema.fitting.build",
    "build_patient_model": "carthema.fitting.build",
    "PatientData": "carthema.fitting.data",
    "prepare_patient": "carthema.fitting.data",
    "Diagnostics": "carthema.fitting.diagnostics",
    "SolveOp": "carthema.fitting.ode_op",
    "PopulationResult": "carthema.fitting.population",
    "fit_population": "carthema.fitting.population",
    "DEFAULT_FREE": "carthema.fitting.priors",
    "RESIDUALS": "carthema.fitting.priors",
    "Prior": "carthema.fitting.priors",
    "prior_table": "carthema.fitting.priors",
    "SAMPLERS": "carthema.fitting.samplers",
    "FitResult": "carthema.fitting.samplers",
    "fit": "carthema.fitting.samplers",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'carthema.fitting' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
