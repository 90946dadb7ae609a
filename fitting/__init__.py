"""carthema.fitting: Bayesian fits of individual patients with PyMC.

- :func:`fit`: one patient's observations and events -> :class:`FitResult` (posterior,
  diagnostics, summary, plot); samplers nutpie (numba, default), nutpie-jax, numpyro,
  PyMC, or MAP + Laplace.
- :func:`build_patient_model` / :func:`build_model`: the PyMC model alone.
- :mod:`carthema.fitting.model.priors`: population priors (:data:`DEFAULT_FREE`,
  :func:`prior_table`) and residual-error models (:data:`RESIDUALS`).
- :class:`SolveOp`: the ODE solves of a batch of patients as one PyTensor Op (numba and
  JAX implementations, forward-sensitivity gradient); a single patient is a batch of one.
- :mod:`carthema.fitting.op.compiled`: one compiled log-density per model structure, reused
  for every patient (their data enter as ``pm.Data``).
- :class:`~carthema.fitting.sampling.settings.RunSettings`, :mod:`carthema.data.patients`: the
  run settings and the patient selection shared by single-patient, population and
  cohort fits.

Layout, by role: :mod:`.model` (priors, covariates, a patient's data arrays, likelihood,
the single-patient and hierarchical PyMC models), :mod:`.op` (the ODE Op and the compiled
log-density), :mod:`.sampling` (samplers, MAP + Laplace, run settings), :mod:`.evaluation`
(diagnostics, posterior predictive, VPC, plots), :mod:`.results` (fit folders, the
population result), :mod:`.workflows` (cohort and population fits). The modules' former
flat paths (``carthema.fitting.priors``, ``carthema.fitting.samplers``, ...) still import,
as the same module objects (:data:`MOVED`).
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

from carthema._lazy import lazy_getattr

#: Public names imported on first use (PEP 562): importing a PyMC-free submodule such as
#: :mod:`carthema.fitting.model.priors` must not load PyMC through this package.
_LAZY = {
    "FitModel": "carthema.fitting.model.build",
    "build_model": "carthema.fitting.model.build",
    "build_patient_model": "carthema.fitting.model.build",
    "PatientData": "carthema.fitting.model.data",
    "prepare_patient": "carthema.fitting.model.data",
    "Diagnostics": "carthema.fitting.evaluation.diagnostics",
    "SolveOp": "carthema.fitting.op.ode_op",
    "PopulationResult": "carthema.fitting.workflows.population",
    "fit_population": "carthema.fitting.workflows.population",
    "DEFAULT_FREE": "carthema.fitting.model.priors",
    "RESIDUALS": "carthema.fitting.model.priors",
    "Prior": "carthema.fitting.model.priors",
    "prior_table": "carthema.fitting.model.priors",
    "SAMPLERS": "carthema.fitting.sampling.samplers",
    "FitResult": "carthema.fitting.results.fit_result",
    "fit": "carthema.fitting.sampling.samplers",
}

__all__ = sorted(_LAZY)

#: Modules that moved into a subpackage: former name under ``carthema.fitting`` -> where
#: it lives now. Importing the former path gives the very same module object, so
#: ``import carthema.fitting.priors``, ``from carthema.fitting import fitdir`` and
#: monkeypatching a module by its former path all keep working.
MOVED = {
    "build": "model.build",
    "covariates": "model.covariates",
    "data": "model.data",
    "hierarchical": "model.hierarchical",
    "likelihood": "model.likelihood",
    "priors": "model.priors",
    "compiled": "op.compiled",
    "ode_op": "op.ode_op",
    "fastlogp": "op.fastlogp",
    "_native": "op.native",
    "laplace": "sampling.laplace",
    "samplers": "sampling.samplers",
    "settings": "sampling.settings",
    "diagnostics": "evaluation.diagnostics",
    "plots": "evaluation.plots",
    "predict": "evaluation.predict",
    "vpc": "evaluation.vpc",
    "fitdir": "results.fitdir",
    "population_result": "results.population_result",
    "cohort": "workflows.cohort",
    "population": "workflows.population",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves a former flat path of :data:`MOVED` to the module at its new path."""

    def find_spec(self, fullname: str, path=None, target=None):
        former = fullname.removeprefix(__name__ + ".")
        if former == fullname or former not in MOVED:
            return None
        new = f"{__name__}.{MOVED[former]}"
        real = importlib.util.find_spec(new)
        origin = real.origin if real is not None else None
        return importlib.machinery.ModuleSpec(fullname, self, origin=origin, loader_state=new)

    def create_module(self, spec):
        # The module already imported (or imported now) under its new name; the import
        # system keeps its own __name__ and __spec__ and files it under the former name too.
        return importlib.import_module(spec.loader_state)

    def exec_module(self, module) -> None:
        pass


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


__getattr__ = lazy_getattr("carthema.fitting", _LAZY, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
