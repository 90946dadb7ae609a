"""Fits of many patients: a cohort fitted patient by patient on a dask cluster
(:mod:`.cohort`; its patient folders: :mod:`.cohort_folder`) and the hierarchical
population fit (:mod:`.population`)."""
