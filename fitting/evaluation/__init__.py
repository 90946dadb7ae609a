"""How well a fit describes its data: convergence diagnostics, warnings and the summary
table (:mod:`.diagnostics`), goodness of fit and the likelihood records
(:mod:`.goodness`: PRED, IPRED, PIT, pointwise log-likelihood, -2LL/AIC/BIC),
posterior-predictive trajectories (:mod:`.predict`), the prediction-corrected VPC
(:mod:`.vpc`) and the fit plots (:mod:`.plots`)."""
