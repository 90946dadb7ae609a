"""The rich consoles every command prints to: one for results (stdout), one for errors
and warnings (stderr)."""

from __future__ import annotations

import sys

from rich.console import Console

#: Results. 120 columns wide when output goes to a file or pipe (rich would fall back to
#: 80 and truncate table columns), the terminal's width otherwise.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
#: Errors and warnings (one line each; never wrapped).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def stdout_console() -> Console:
    """The shared results console (kept for modules that ask for it)."""
    return console
