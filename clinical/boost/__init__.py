"""predict-boost: a boost's outcome for a patient without a fit.

:mod:`~carthema.clinical.boost.predict` conditions the calibrated population on the
patient's state on the boost day and predicts engraftment;
:mod:`~carthema.clinical.boost.calibration` checks its intervals on virtual patients.
"""
