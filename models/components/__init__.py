"""Model components. Each module defines STATES, PARAMS, INPUTS, OBSERVABLES and the
functions ``derivatives``, ``initial`` and ``observables`` (see :mod:`carthema.models.model`)."""
