"""predict-boost: a boost's outcome for a patient without a fit.

:mod:`~carthema.clinical.boost.predict` (:func:`~carthema.clinical.boost.predict.
predict_boost`, and the description of the method) conditions the calibrated population
on the patient's state on the boost day and predicts engraftment with and without the
boost, in these steps, one module each: :mod:`~carthema.clinical.boost.inputs` (the
inputs checked, the courses with their support, the likelihood terms),
:mod:`~carthema.clinical.boost.prior` (the population prior),
:mod:`~carthema.clinical.boost.likelihood` (the terms on simulated particles, and the
refusals), :mod:`~carthema.clinical.boost.smc` (the sampler),
:mod:`~carthema.clinical.boost.outcome` (the solves with and without the boost) and
:mod:`~carthema.clinical.boost.summary` (the result, :class:`~carthema.clinical.boost.
summary.BoostPrediction`). :mod:`~carthema.clinical.boost.calibration` checks its
intervals on virtual patients.
"""
