"""The ODE solve inside the sampler: the batched PyTensor Op with its numba and JAX
implementations and forward-sensitivity gradient (:mod:`.ode_op`), and the compiled
log-density shared by every patient of one model structure (:mod:`.compiled`), the
observation rows of one solve that both call (:mod:`.native`, generated per model) and
the generated single-patient log-density (:mod:`.fastlogp`)."""
