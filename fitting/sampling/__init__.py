"""Running the samplers: :func:`.samplers.fit` and :class:`.samplers.FitResult` (nutpie,
nutpie-jax, numpyro, PyMC, MAP), MAP + Laplace (:mod:`.laplace`) and the run settings
shared by every fit (:class:`.settings.RunSettings`)."""
