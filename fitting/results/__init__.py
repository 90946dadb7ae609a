"""Fit results on disk and in memory: the fit folder (write, read back, draws;
:mod:`.fitdir`) and the population fit's result (:mod:`.population_result`)."""
