"""The virtual population and the natural history it reproduces.

- :mod:`~carthema.clinical.population.virtual`: between-patient traits, product courses,
  plausible patients and the calibrated population shipped with the package.
- :mod:`~carthema.clinical.population.calibrate`: how that population is calibrated.
- :mod:`~carthema.clinical.population.graft`: a graft's own between-graft variation.
- :mod:`~carthema.clinical.population.natural_history`: the course without a boost.
- :mod:`~carthema.clinical.population.statistics`: natural-history statistics and
  their published targets.
- :mod:`~carthema.clinical.population.posterior`: the calibrated population as a
  :class:`~carthema.models.posterior.Posterior` (:class:`VirtualPopulation`), so that the
  window runs from it as from a fit.
"""
