"""How well a fit describes its data: convergence and PIT diagnostics
(:mod:`.diagnostics`), posterior-predictive trajectories (:mod:`.predict`), the
prediction-corrected VPC (:mod:`.vpc`) and the fit plots (:mod:`.plots`)."""
