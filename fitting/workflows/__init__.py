"""Fits of many patients: a cohort fitted patient by patient on a dask cluster
(:mod:`.cohort`) and the hierarchical population fit (:mod:`.population`)."""
