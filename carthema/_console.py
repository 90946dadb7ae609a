"""The rich console the commands print to."""

from __future__ import annotations

import sys

from rich.console import Console


def stdout_console() -> Console:
    """A console 120 columns wide when output goes to a file or pipe (rich would fall back
    to 80 and truncate table columns), the terminal's width otherwise."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)
