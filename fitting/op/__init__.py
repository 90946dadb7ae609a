"""The ODE solve inside the sampler: the batched PyTensor Op with its numba and JAX
implementations and forward-sensitivity gradient (:mod:`.ode_op`), and the compiled
log-density shared by every patient of one model structure (:mod:`.compiled`). The
generated C callback (:mod:`carthema.fitting._native`) and the fast log-density
(:mod:`carthema.fitting.fastlogp`) still sit one level up (they are generator sources
keyed in the code cache and under active work)."""
