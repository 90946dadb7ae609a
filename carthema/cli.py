"""Command-line interface: a thin layer over the public API.

User errors (:class:`carthema.data.errors.InputError`) print one line and exit with
code 2; no traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

try:  # typer >= 0.26 carries its own copy of click (typer._click)
    from typer import Abort
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click
    from click.exceptions import Abort, ClickException

from carthema.data.errors import InputError

app = typer.Typer(
    name="carthema",
    help="CAR-T kinetics, haematopoiesis and engraftment windows after CD19 CAR-T therapy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """CAR-T kinetics, haematopoiesis and engraftment windows after CD19 CAR-T therapy."""
    # A callback keeps commands as subcommands even while only one is registered.


# Command modules register themselves on `app` when imported.
from carthema import (  # noqa: E402
    cli_cohort,
    cli_data,
    cli_fit,
    cli_model,
    cli_natural,
    cli_population,
    cli_predict,
    cli_window,
)

cli_data.register(app)
cli_data.register_import(app)
cli_model.register(app)
cli_natural.register(app)
cli_fit.register(app)
cli_population.register(app)
cli_cohort.register(app)
cli_predict.register(app)
cli_predict.register_trial(app)
cli_window.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``carthema`` command."""
    try:
        code = app(args=argv, standalone_mode=False)
    except InputError as exc:
        err_console.print(f"error: {exc.message}", markup=False)
        sys.exit(2)
    except ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Abort:
        err_console.print("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
