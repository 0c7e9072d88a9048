"""The one error type for bad input, wherever it comes from: a sweep file, a recipe, the command line,
a SLURM setting or a run folder.

It carries the file (or the flag, e.g. "--set"), the key at fault, the line when the file gives one, and
the message. Every command prints it as one paragraph and exits with code 2 (see :mod:`ablations.cli`).
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad input. ``InputError(message)``, ``InputError(key, message)`` or ``InputError(file, key, message)``."""

    def __init__(self, *args: object, line: int | None = None):
        if not 1 <= len(args) <= 3:
            raise TypeError("InputError(message), InputError(key, message) or InputError(file, key, message)")
        *where, message = args
        self.file = str(where[-2]) if len(where) == 2 and where[-2] is not None else None
        self.key = str(where[-1]) if where and where[-1] is not None else None
        self.message = str(message)
        self.line = line
        super().__init__(self.describe())

    def describe(self) -> str:
        place = self.file + (f" (line {self.line})" if self.line else "") if self.file else None
        return ": ".join(part for part in (place, self.key, self.message) if part)

    def __str__(self) -> str:
        return self.describe()

    def at_line(self, line: int | None) -> InputError:
        """The same error, now knowing the line (kept if already known)."""
        if self.line is None and line is not None:
            self.line = line
            self.args = (self.describe(),)
        return self
