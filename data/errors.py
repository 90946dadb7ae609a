"""User-input errors: one exception type that names the file, row, column and fix."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (data file, events table, parameter file, command option).

    The message is one line that names where the problem is and how to fix it.
    The command-line interface prints it without a traceback and exits with code 2.

    Parameters
    ----------
    problem:
        What is wrong, in plain words.
    file:
        The file the input came from, if any.
    row:
        1-based data row (the header is row 0), if the problem is in one row.
    column:
        The column (field) name, if the problem is in one column.
    fix:
        What the user should do about it.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.row = row
        self.column = column
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        text = (", ".join(where) + ": " if where else "") + self.problem
        if self.fix:
            text += f" Fix: {self.fix}"
        return text
