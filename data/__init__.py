"""carthema.data: patient data tables, validation, units and bundled data sets.

- :func:`read_observations`, :func:`read_events`: CSV/Parquet files -> validated tables
  in canonical units (see :mod:`carthema.data.schema` for the columns).
- :func:`read_nonmem`: a NONMEM-style data set -> (observations, events).
- :func:`load_example`, :func:`list_examples`: bundled data sets with provenance.
- :func:`summarize`: per-patient summary of observations and events.
- :class:`InputError`: the one exception for bad input (file, row, column, fix).
"""

from carthema.data.analytes import ANALYTES, Analyte, analyte_names
from carthema.data.errors import InputError
from carthema.data.events import EVENT_KINDS, EventKind, event_kind_names
from carthema.data.examples import Example, list_examples, load_example
from carthema.data.loaders import read_events, read_observations, read_outcomes, write_table
from carthema.data.nonmem import read_nonmem
from carthema.data.summary import DataSummary, summarize
from carthema.data.units import convert
from carthema.data.validate import validate_events, validate_observations

__all__ = [
    "ANALYTES",
    "EVENT_KINDS",
    "Analyte",
    "DataSummary",
    "EventKind",
    "Example",
    "InputError",
    "analyte_names",
    "convert",
    "event_kind_names",
    "list_examples",
    "load_example",
    "read_events",
    "read_nonmem",
    "read_observations",
    "read_outcomes",
    "summarize",
    "validate_events",
    "validate_observations",
    "write_table",
]
