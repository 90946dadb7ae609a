"""Fit results in memory and on disk: a single-patient fit's result (:mod:`.fit_result`:
``FitResult``, its summary, goodness of fit, Posterior and fit folder), reading a fit
folder back (:mod:`.fitdir`) and the population fit's result
(:mod:`.population_result`)."""
