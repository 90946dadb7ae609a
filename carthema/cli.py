"""Command-line interface: a thin layer over the public API.

Every user error ends in one line on stderr and exit code 2, no traceback: bad data
(:class:`carthema.data.errors.InputError`, naming file, row, column and the fix), bad
arguments (a missing or malformed option: the option and ``--help``), and files that
cannot be read or written (the path and the reason).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

try:  # typer >= 0.26 carries its own copy of click (typer._click)
    from typer import Abort
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # older typer runs on click
    from click.exceptions import Abort, ClickException, UsageError

from carthema import __version__
from carthema import cli_options as opt
from carthema._console import err_console
from carthema.data.errors import InputError

app = typer.Typer(
    name="carthema",
    help="CAR-T kinetics, haematopoiesis and engraftment windows after CD19 CAR-T therapy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        from carthema._console import console

        console.print(f"carthema {__version__}", markup=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar="",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = False,
) -> None:
    """CAR-T kinetics, haematopoiesis and engraftment windows after CD19 CAR-T therapy."""
    from carthema import _console

    _console.QUIET, _console.VERBOSE = quiet, verbose
    # A callback keeps commands as subcommands even while only one is registered.


# Command modules register themselves on `app` when imported.
from carthema import (  # noqa: E402
    cli_cohort,
    cli_data,
    cli_fit,
    cli_icaht,
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
cli_icaht.register(app)
cli_fit.register(app)
cli_population.register(app)
cli_cohort.register(app)
cli_predict.register(app)
cli_predict.register_trial(app)
cli_window.register(app)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _usage_line(exc: UsageError) -> str:
    """A bad argument in one line: what is wrong and where to read how to call it."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "carthema"
    return f"error: {_one_line(exc.format_message())} (see `{where} --help`)"


def _option_names() -> set[str]:
    """Every option name of every command (``--boost-days``, ...)."""
    import typer.main

    group = typer.main.get_command(app)
    return {
        o
        for cmd in group.commands.values()
        for p in cmd.params
        for o in (*p.opts, *getattr(p, "secondary_opts", ()))
        if o.startswith("--")
    }


def _option_message(exc: InputError) -> str:
    """An error about a command option names it as the user typed it: "option
    --boost-days: ..." rather than "column 'boost-days'" (a column is a data file's)."""
    col = exc.column
    if exc.file is not None or not col:
        return exc.message
    name = "--" + str(col).lstrip("-").replace("_", "-")
    if name not in _option_names():
        return exc.message
    text = f"option {name}"
    if exc.row is not None:
        text += f", row {exc.row}"
    text += f": {exc.problem}"
    return text + (f" Fix: {exc.fix}" if exc.fix else "")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``carthema`` command."""
    from carthema.data.runrecord import set_command

    set_command(sys.argv[1:] if argv is None else argv)  # for run.json
    try:
        code = app(args=argv, standalone_mode=False)
    except InputError as exc:
        err_console.print(f"error: {_one_line(_option_message(exc))}", markup=False)
        sys.exit(2)
    except UsageError as exc:
        err_console.print(_usage_line(exc), markup=False)
        sys.exit(2)
    except ClickException as exc:
        err_console.print(f"error: {_one_line(exc.format_message())}", markup=False)
        sys.exit(exc.exit_code)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        # A path the user gave that cannot be read or written: not a bug of carthema.
        where = exc.filename if exc.filename is not None else "a file"
        err_console.print(
            f"error: {where}: {exc.strerror or exc}; fix: give a path that exists and that "
            "you can read (inputs) or write (outputs)",
            markup=False,
        )
        sys.exit(2)
    except OSError as exc:
        # Any other failure of the file system (a full disk, a file-size limit, a
        # read-only mount, a quota): the path and the reason, not a traceback.
        import errno

        where = exc.filename if exc.filename is not None else "a file"
        code = errno.errorcode.get(exc.errno or 0, "")
        reason = exc.strerror or str(exc) or type(exc).__name__
        err_console.print(
            f"error: {where}: {reason}{f' ({code})' if code else ''}; fix: free space or "
            "raise the limit there, or write the output to another place",
            markup=False,
        )
        sys.exit(2)
    except Abort:
        err_console.print("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
