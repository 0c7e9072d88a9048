"""The one error type for bad input, wherever it comes from: a sweep file, a recipe, the command line,
a SLURM setting or a run folder.

It carries the file (or the flag, e.g. "--set"), the key at fault, the line when the file gives one, and
the message. Every command prints it as one paragraph and exits with code 2 (see :mod:`ablations.cli`).
"""
from __future__ import annotations

from typing import Any


def bounded_repr(value: Any, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters: error messages never echo a huge value back."""
    text = repr(value) if not isinstance(value, list | dict | tuple | set) else _bounded_container(value, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bounded_container(value: Any, limit: int) -> str:
    # repr() of an alias-expanded container could be gigabytes: build only the first `limit` characters
    text = repr(value) if len(value) <= 8 and sum(1 for _ in _leaves(value, limit)) < limit else None
    if text is not None:
        return text
    return f"<{type(value).__name__} of {len(value)} items>"


def _leaves(value: Any, limit: int):
    stack = [value]
    n = 0
    while stack and n < limit:
        item = stack.pop()
        n += 1
        yield item
        if isinstance(item, list | tuple | set):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())


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
