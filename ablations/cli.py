"""What every command line of the project shares: exit codes, how bad input is printed, how a signal ends it.

    @command
    def main(argv=None) -> int: ...

What a command prints on stdout, its log lines and its errors have control characters escaped (printable):
names come from files anyone could have written. InputError (a bad sweep, recipe, flag or run file) is
printed as one paragraph naming the file and key, exit code 2, with nothing half-done, and so is a file of
the wrong kind (store.UnsafeFile: a planted symbolic link, a FIFO or a device where a file belongs); a file
or folder the system refuses (a results root that is a file, a read-only or full disk) is one line naming it,
exit code 1; Ctrl-C prints one line and exits 130. No torch import here.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import re
import sys
from collections.abc import Callable

from ablations import command_started, interruption
from ablations.spec.errors import InputError
from ablations.store import UnsafeFile

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_FLAGS = ("-o", "--output")  # the one name of the output flag, in every command


def check_workers(workers: int | None) -> None:
    """--workers (ablations.run, ablations.train): None (the default share of cores) or 0 and more."""
    if workers is not None and workers < 0:
        raise InputError("--workers", f"{workers}: expected 0 (load in the training process) or more")


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # control characters, tab and newline aside


def printable(text: str) -> str:
    """Text with its control characters escaped (\\x1b, \\x00): a name read from a file or a folder must never
    move the cursor, clear the screen or cut a line on the terminal it is printed to."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class PrintableStream:
    """A text stream whose writes go through printable(): every command's stdout (plans, status, tables)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text))

    def __getattr__(self, name: str):  # flush, isatty, encoding, fileno...: the stream's own
        return getattr(self.stream, name)


class PrintableFormatter(logging.Formatter):
    """Log lines for a terminal, control characters escaped (a path or a reason in a message may hold them)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def say(text: str) -> None:
    """A line on stderr (a warning, a note, what was written), control characters escaped; stderr itself is not
    wrapped: progress bars draw there with cursor moves."""
    print(printable(text), file=sys.stderr)


def print_error(err: InputError | str) -> None:
    """One paragraph on stderr, as one line: scripts and terminals alike can take it whole."""
    text = err.describe() if isinstance(err, InputError) else str(err)
    print(f"error: {printable(' '.join(text.split()))}", file=sys.stderr)


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI main: InputError -> one paragraph on stderr, exit 2; Ctrl-C -> one line, exit 130."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        command_started()  # from here, Ctrl-C is caught below
        try:
            with contextlib.redirect_stdout(PrintableStream(sys.stdout)):
                code = main(argv)
            if interruption() is not None and code != EXIT_INTERRUPTED:  # a Ctrl-C an import swallowed
                raise KeyboardInterrupt
            return code
        except InputError as err:
            print_error(err)
            return EXIT_USAGE
        except OSError as err:  # the file system said no: name the file, no traceback
            where = err.filename or "a file"
            print_error(f"{where}: {err.strerror or err}" + (f" (and {err.filename2})" if err.filename2 else ""))
            return EXIT_USAGE if isinstance(err, UnsafeFile) else EXIT_FAILED
        except Exception:
            if interruption() is None:
                raise
            return ended_by_ctrl_c()  # e.g. an import that a swallowed Ctrl-C broke: see ablations.interrupted
        except KeyboardInterrupt:
            return ended_by_ctrl_c()

    def ended_by_ctrl_c() -> int:
        if interruption() != "said":  # printed by the start-up handler, whose exit torch's import swallowed
            print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

    return wrapped
