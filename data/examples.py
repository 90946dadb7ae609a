"""Bundled data sets: ``load_example(name)`` and ``list_examples()``.

Each data set is a folder ``examples/<name>/`` inside :mod:`carthema.data` holding a
``README.md`` (where every number comes from) and some of:

- ``observations.csv``: long-form measurements, read with :func:`read_observations`;
- ``events.csv``: treatments, read with :func:`read_events`;
- ``outcomes.csv``: stated outcomes (engraftment days, MRD negativity ...);
- any other ``*.csv``: cohort summary tables, read as plain tables into ``tables``.

Bundled files go through exactly the validation user files do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from carthema.data.errors import InputError
from carthema.data.loaders import read_events, read_observations, read_outcomes, read_table_text

_SPECIAL = {"observations.csv", "events.csv", "outcomes.csv"}


@dataclass
class Example:
    """A bundled data set.

    Attributes
    ----------
    name:
        Folder name, e.g. ``"han2022"``.
    path:
        Folder holding the files.
    readme:
        Text of its README.md (provenance of every number).
    observations, events, outcomes:
        Validated tables, or None when the data set has none.
    tables:
        Cohort summary tables by file stem (``"response"`` for ``response.csv``).
    """

    name: str
    path: Path
    readme: str
    observations: pd.DataFrame | None = None
    events: pd.DataFrame | None = None
    outcomes: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _root() -> Path:
    return Path(str(resources.files("carthema.data").joinpath("examples")))


def list_examples() -> list[str]:
    """Names of the bundled data sets."""
    root = _root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "README.md").is_file())


def example_path(name: str) -> Path:
    """Folder of a bundled data set; :class:`InputError` listing the names if unknown."""
    names = list_examples()
    if name not in names:
        raise InputError(
            f"unknown example data set '{name}'.",
            fix=f"use one of: {', '.join(names)}.",
        )
    return _root() / name


def _read_plain_table(path: Path) -> pd.DataFrame:
    """A cohort summary table: read as text (so it is checked like user files), then
    numbers where a whole column is numeric."""
    text = read_table_text(path)
    text = text.reset_index(drop=True)
    out = text.copy()
    for col in text.columns:
        s = text[col].astype(str)
        num = pd.to_numeric(s.where(s != ""), errors="coerce")
        if (num.notna() | (s == "")).all() and num.notna().any():
            out[col] = num.astype(float)
        else:
            out[col] = s.astype("str")
    return out


def load_example(name: str) -> Example:
    """Load a bundled data set by name (see :func:`list_examples`)."""
    path = example_path(name)
    readme = (path / "README.md").read_text(encoding="utf-8")
    ex = Example(name=name, path=path, readme=readme)
    if (path / "observations.csv").is_file():
        ex.observations = read_observations(path / "observations.csv")
    if (path / "events.csv").is_file():
        ex.events = read_events(path / "events.csv")
    if (path / "outcomes.csv").is_file():
        ex.outcomes = read_outcomes(path / "outcomes.csv")
    for csv in sorted(path.glob("*.csv")):
        if csv.name not in _SPECIAL:
            ex.tables[csv.stem] = _read_plain_table(csv)
    return ex
