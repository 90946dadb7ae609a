"""Running the samplers: :func:`.samplers.fit` (nutpie, nutpie-jax, numpyro, PyMC, MAP;
its result is :class:`carthema.fitting.results.fit_result.FitResult`, also importable
from :mod:`.samplers`), MAP + Laplace (:mod:`.laplace`) and the run settings shared by
every fit (:class:`.settings.RunSettings`)."""
