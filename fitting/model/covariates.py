"""Per-patient covariates of a population fit: the centred design matrix and which
log-parameters each covariate acts on (see :mod:`carthema.fitting.model.hierarchical`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carthema.data.errors import InputError


# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Covariates:
    """Design matrix of per-patient covariates and which log-parameters each acts on.

    Attributes
    ----------
    columns:
        Design columns (numeric covariates by name; text covariates dummy-coded as
        ``name[level]`` against their first level).
    x:
        (n_patients, n_columns) centred design matrix, in the covariates' own units.
    center:
        Cohort mean of each column (subtracted from ``x``).
    scale:
        Cohort SD of each column (sets the prior scale of the effects).
    effects:
        (column index, free-parameter index) of every estimated effect.
    labels:
        ``"column:parameter"`` label of every effect.
    """

    columns: tuple[str, ...]
    x: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    effects: tuple[tuple[int, int], ...]
    labels: tuple[str, ...]


def parse_effects(text: str | None) -> dict[str, tuple[str, ...]] | None:
    """``"age:cart_rho,cart_alpha;reserve:hsc_regen"`` -> ``{covariate: parameters}``."""
    if text is None or not text.strip():
        return None
    out: dict[str, tuple[str, ...]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if ":" not in part:
            raise InputError(
                f"covariate effect '{part.strip()}' has no ':'",
                column="effects",
                fix="write COVARIATE:PARAM[,PARAM...] with ';' between covariates, e.g. "
                "age:cart_rho,cart_alpha",
            )
        cov, params = part.split(":", 1)
        names = tuple(s.strip() for s in params.split(",") if s.strip())
        if not names:
            raise InputError(f"covariate '{cov.strip()}' acts on no parameter", column="effects")
        out[cov.strip()] = names
    return out or None


def design_matrix(
    covariates: pd.DataFrame,
    patients: Sequence[str],
    free: Sequence[str],
    effects: Mapping[str, Iterable[str]] | str | None = None,
) -> Covariates:
    """Centred design matrix of ``covariates`` for ``patients`` (see :class:`Covariates`).

    ``covariates``: a ``patient`` column and one column per covariate (numbers, or text
    levels such as an age group). ``effects``: covariate -> the free parameters it acts
    on (a mapping or the :func:`parse_effects` string); default: every covariate on
    every free parameter. Raises :class:`InputError` for a missing patient, a missing
    value, a covariate that does not vary across the patients, or an unknown name.
    """
    if "patient" not in covariates.columns:
        raise InputError(
            "the covariate table has no 'patient' column",
            column="patient",
            fix="give one row per patient: patient,COVARIATE[,COVARIATE...]",
        )
    names = [c for c in covariates.columns if c != "patient"]
    if not names:
        raise InputError(
            "the covariate table has no covariate column", fix="add e.g. a 'marrow_reserve' column"
        )
    ids = covariates["patient"].astype(str).str.strip()
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise InputError(
            f"patient(s) {', '.join(dup[:5])} appear more than once in the covariate table",
            column="patient",
            fix="give one row per patient",
        )
    table = covariates.assign(patient=ids).set_index("patient")
    missing = [p for p in patients if p not in table.index]
    if missing:
        raise InputError(
            f"the covariate table has no row for patient(s) {', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}",
            column="patient",
            fix="give a covariate row for every patient fitted (or leave those patients out)",
        )
    table = table.loc[list(patients), names]
    if isinstance(effects, str):
        effects = parse_effects(effects)
    if effects is None:
        effects = {c: tuple(free) for c in names}
    for cov, params in effects.items():
        if cov not in names:
            raise InputError(
                f"unknown covariate '{cov}' in the effects",
                column="effects",
                fix=f"covariates are: {', '.join(names)}",
            )
        for p in params:
            if p not in free:
                raise InputError(
                    f"covariate '{cov}' acts on '{p}', which is not a free parameter",
                    column="effects",
                    fix=f"free parameters are: {', '.join(free)}",
                )
    columns: list[str] = []
    blocks: list[np.ndarray] = []
    origin: list[str] = []
    for name in names:
        col = table[name]
        raw = col.astype(str).str.strip()
        bad = col.isna() | raw.isin(["", "nan", "NaN", "NA", "None"])
        if bad.any():
            who = ", ".join(list(table.index[bad.to_numpy()])[:5])
            raise InputError(
                f"covariate '{name}' is missing for patient(s) {who}",
                column=name,
                fix="fill in every patient's value (or drop the covariate)",
            )
        num = pd.to_numeric(raw, errors="coerce")
        if num.notna().all():
            values = num.to_numpy(float)[:, None]
            labels = [name]
        else:
            levels = sorted(raw.unique())
            values = np.stack([(raw == lv).to_numpy(float) for lv in levels[1:]], axis=1)
            labels = [f"{name}[{lv}]" for lv in levels[1:]]
        if values.shape[1] == 0 or np.any(values.std(axis=0) == 0.0):
            raise InputError(
                f"covariate '{name}' takes the same value for every patient fitted",
                column=name,
                fix="a covariate must vary between the patients to have an estimable effect",
            )
        columns += labels
        blocks.append(values)
        origin += [name] * len(labels)
    x = np.concatenate(blocks, axis=1)
    center = x.mean(axis=0)
    scale = x.std(axis=0)
    pairs, effect_labels = [], []
    for c, (col, cov) in enumerate(zip(columns, origin, strict=True)):
        for p in effects.get(cov, ()):
            pairs.append((c, list(free).index(p)))
            effect_labels.append(f"{col}:{p}")
    if not pairs:
        raise InputError("no covariate acts on any parameter", column="effects")
    return Covariates(
        columns=tuple(columns),
        x=x - center,
        center=center,
        scale=scale,
        effects=tuple(pairs),
        labels=tuple(effect_labels),
    )
