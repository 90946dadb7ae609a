"""Column definitions and pandera schemas of the canonical tables.

Files are checked row by row in :mod:`carthema.data.validate`, which produces one
message naming file, row, column and fix. The pandera schemas below state what a
*validated* table looks like (dtypes, allowed values, keys); the loaders run them on
their output as a last guard, and other modules (fitting, the synthetic-patient
generator) can run them on tables they build in code with :func:`check_observations`
and :func:`check_events`.

Observations (long form, one measurement per row)
-------------------------------------------------
==============  ==========  =========================================================
column          required    meaning
==============  ==========  =========================================================
patient         yes         patient identifier (text)
day             yes         days since the first CAR-T infusion (day 0); may be
                            negative (before CAR-T) or fractional
analyte         yes         a name from :mod:`carthema.data.analytes`
value           yes*        the measurement, in ``unit``; *may be empty on a row with
                            ``blq`` true (stored as NaN, the limit kept in ``lloq``)
unit            yes         unit of ``value`` and ``lloq``; converted on load
compartment     no          ``blood`` or ``marrow``; empty -> the analyte's default
                            where it has one (counts: blood; marrow_blasts: marrow)
lloq            no          lower limit of quantification of this measurement, in
                            ``unit``; > 0
blq             no          true if the result was below ``lloq`` (yes/no/true/false/
                            1/0; empty = false)
note            no          free text, kept as is
==============  ==========  =========================================================

Events (one treatment per row)
------------------------------
==============  ==========  =========================================================
patient         yes         patient identifier
day             yes         day the event starts (day 0 = first CAR-T infusion)
kind            yes         a name from :mod:`carthema.data.events`
amount          kind        dose, in ``unit``; required for every kind but
                            ``tpo_agonist``
unit            with amount unit of ``amount``; converted on load
duration        kind        days; required (> 0) for periods (gcsf, tpo_agonist)
drug            kind        lymphodepletion / corticosteroid / TPO-agonist drug
source          boost       ``autologous``, ``prior-donor`` or ``allogeneic``
cd34_selected   boost       yes/no/true/false
cd3_per_kg      no          CD3+ T cells/kg in a stem-cell boost (cells/kg)
mnc_per_kg      no          mononuclear cells/kg in a stem-cell boost (cells/kg)
note            no          free text
==============  ==========  =========================================================

After loading, every value is in its canonical unit, ``unit`` holds that unit, rows are
sorted by patient then day, and the index is 0..n-1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

from carthema.data.analytes import ANALYTES, COMPARTMENTS
from carthema.data.boost import GRAFT_COLUMNS
from carthema.data.errors import InputError
from carthema.data.events import EVENT_KINDS, SOURCES

OBSERVATION_REQUIRED: tuple[str, ...] = ("patient", "day", "analyte", "value", "unit")
OBSERVATION_OPTIONAL: tuple[str, ...] = ("compartment", "lloq", "blq", "note")
OBSERVATION_COLUMNS: tuple[str, ...] = OBSERVATION_REQUIRED + OBSERVATION_OPTIONAL

EVENT_REQUIRED: tuple[str, ...] = ("patient", "day", "kind")
EVENT_OPTIONAL: tuple[str, ...] = (
    "amount",
    "unit",
    "duration",
    "drug",
    *GRAFT_COLUMNS,
    "note",
)
EVENT_COLUMNS: tuple[str, ...] = EVENT_REQUIRED + EVENT_OPTIONAL

OUTCOME_COLUMNS: tuple[str, ...] = ("patient", "outcome", "day", "source_quote")

# Key of one measurement: two rows with the same key are a duplicated record.
OBSERVATION_KEY: tuple[str, ...] = ("patient", "day", "analyte", "compartment")


def _finite(s: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(s.to_numpy(dtype=float)), index=s.index)


def _nonempty(s: pd.Series) -> pd.Series:
    return s.str.len() > 0


OBSERVATION_SCHEMA = pa.DataFrameSchema(
    {
        "patient": pa.Column(str, pa.Check(_nonempty, name="non-empty")),
        "day": pa.Column(float, pa.Check(_finite, name="finite")),
        "analyte": pa.Column(str, pa.Check.isin(list(ANALYTES))),
        "value": pa.Column(float, pa.Check.ge(0), nullable=True),
        "unit": pa.Column(str),
        "compartment": pa.Column(str, pa.Check.isin(list(COMPARTMENTS))),
        "lloq": pa.Column(float, pa.Check.gt(0), nullable=True),
        "blq": pa.Column(bool),
        "note": pa.Column(str, nullable=True),
    },
    checks=[
        # value may be missing only on below-limit rows, and then the limit is known
        pa.Check(
            lambda df: df["value"].notna() | (df["blq"] & df["lloq"].notna()),
            name="value present unless blq with lloq",
        ),
        pa.Check(
            lambda df: df["unit"] == df["analyte"].map(lambda a: ANALYTES[a].canonical_unit),
            name="canonical unit",
        ),
    ],
    unique=list(OBSERVATION_KEY),
    strict=True,
    ordered=True,
    name="observations",
)

EVENT_SCHEMA = pa.DataFrameSchema(
    {
        "patient": pa.Column(str, pa.Check(_nonempty, name="non-empty")),
        "day": pa.Column(float, pa.Check(_finite, name="finite")),
        "kind": pa.Column(str, pa.Check.isin(list(EVENT_KINDS))),
        "amount": pa.Column(float, pa.Check.gt(0), nullable=True),
        "unit": pa.Column(str, nullable=True),
        "duration": pa.Column(float, pa.Check.ge(0), nullable=True),
        "drug": pa.Column(str, nullable=True),
        "source": pa.Column(str, pa.Check.isin(list(SOURCES)), nullable=True),
        "cd34_selected": pa.Column("boolean", nullable=True),
        "cd3_per_kg": pa.Column(float, pa.Check.ge(0), nullable=True),
        "mnc_per_kg": pa.Column(float, pa.Check.ge(0), nullable=True),
        "note": pa.Column(str, nullable=True),
    },
    strict=True,
    ordered=True,
    name="events",
)


def _run(schema: pa.DataFrameSchema, df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Run a pandera schema; turn its first failure into one :class:`InputError`.

    Row numbers are 1-based positions in ``df`` (header = row 0).
    """
    try:
        return schema.validate(df, lazy=False, inplace=True)  # no copy of a large table
    except pa.errors.SchemaError as exc:
        row = None
        cases = getattr(exc, "failure_cases", None)
        if isinstance(cases, pd.DataFrame) and "index" in cases and len(cases):
            idx = cases["index"].iloc[0]
            if idx in df.index:
                row = int(df.index.get_loc(idx)) + 1
        column = getattr(exc.schema, "name", None) if exc.schema is not schema else None
        raise InputError(
            f"table does not match the {schema.name} schema: {exc.args[0]}".splitlines()[0],
            file=source,
            row=row,
            column=column,
            fix="build the table with carthema.data.validate (read_observations / "
            "read_events) so that units, types and keys are made canonical.",
        ) from None


def check_observations(df: pd.DataFrame, source: str = "<observations>") -> pd.DataFrame:
    """Assert ``df`` is a canonical observation table (as returned by the loaders)."""
    return _run(OBSERVATION_SCHEMA, df, source)


def check_events(df: pd.DataFrame, source: str = "<events>") -> pd.DataFrame:
    """Assert ``df`` is a canonical events table (as returned by the loaders)."""
    return _run(EVENT_SCHEMA, df, source)
