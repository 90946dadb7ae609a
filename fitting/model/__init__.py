"""The PyMC model of a fit: priors and residual-error models (:mod:`.priors`), covariates
(:mod:`.covariates`), a patient's data as arrays (:mod:`.data`), the likelihood terms
(:mod:`.likelihood`), the single-patient model (:mod:`.build`) and the hierarchical
population model (:mod:`.hierarchical`). Submodules are imported by name; this package
imports nothing, so :mod:`.priors` stays PyMC-free."""
