"""Errors in experiment files: each names the file and the (1-based) line."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: ``str(ExperimentErrors)`` lists at most this many errors, then says how many more there are.
MAX_LISTED = 100


class ExperimentError(Exception):
    """One problem in an experiment file. ``str()`` is ``"<path>:<line>: <message>"``."""

    def __init__(
        self, path: Path | str, line: int | None, message: str, *, column: int | None = None
    ) -> None:
        super().__init__(path, line, message)
        self.path = Path(path)
        self._path_text = str(path)
        self.line = line
        self.column = column
        self.message = message

    def __str__(self) -> str:
        where = self._path_text if self.line is None else f"{self._path_text}:{self.line}"
        return f"{where}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self._path_text, self.line, self.message, self.column))


def _rebuild(
    cls: type[ExperimentError], path: str, line: int | None, message: str, column: int | None
) -> ExperimentError:
    return cls(path, line, message, column=column)


class ExperimentErrors(ExperimentError):
    """Several problems in one file, sorted by line; ``str()`` puts each on its own line.

    ``path``, ``line``, ``column`` and ``message`` are those of the first error.
    """

    def __init__(self, errors: Iterable[ExperimentError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line or 0, e.column or 0))
        if not self.errors:
            raise ValueError("ExperimentErrors needs at least one error")
        first = self.errors[0]
        super().__init__(first._path_text, first.line, first.message, column=first.column)

    def __str__(self) -> str:
        lines = [str(e) for e in self.errors[:MAX_LISTED]]
        if len(self.errors) > MAX_LISTED:
            lines.append(f"... and {len(self.errors) - MAX_LISTED} more errors")
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ExperimentErrors, (self.errors,))
