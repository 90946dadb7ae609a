"""The CLI's fixed lists name exactly what the library offers (they are written out in
carthema/cli_options.py so that ``--help`` needs no PyMC import; this keeps them honest)."""

from carthema.cli_options import COMPONENT_SETS as CLI_COMPONENT_SETS
from carthema.cli_options import SAMPLERS as CLI_SAMPLERS
from carthema.fitting.samplers import SAMPLERS
from carthema.models.model import COMPONENT_SETS


def test_cli_component_sets_are_the_models():
    assert set(CLI_COMPONENT_SETS) == set(COMPONENT_SETS)


def test_cli_samplers_are_the_fitting_samplers():
    assert set(CLI_SAMPLERS) == set(SAMPLERS)
