"""carthema.clinical: the clinical questions, without PyMC.

Everything here works on parameter draws (a fit's posterior or the calibrated virtual
population) and the compiled model; nothing imports PyMC, PyTensor or nutpie, so
``carthema predict-boost`` and ``carthema natural-history`` start without them.

- :mod:`~carthema.clinical.endpoints`: engraftment and recovery definitions, every
  threshold, Kaplan-Meier summaries.
- :mod:`~carthema.clinical.plans`: a boost plan simulated over draws, with and without
  the boost.
- :mod:`~carthema.clinical.window`: the engraftment window of a fitted patient.
- :mod:`~carthema.clinical.boost`: predict-boost (population prior, SMC conditioning,
  prediction) and its self-calibration.
- :mod:`~carthema.clinical.population`: the virtual population (traits, the calibrated
  population, its calibration, graft draws), natural history and its statistics.
- :mod:`~carthema.clinical.trial`: virtual trials of boost policies.
- :mod:`~carthema.clinical.sensitivity`: global sensitivity analysis.
- :mod:`~carthema.clinical.report`: the self-contained HTML page;
  :mod:`~carthema.clinical.patient_report`: the patient's window report on it.
"""
