"""What every command line of the project shares: exit codes, how bad input is printed, how a signal ends it.

    @command
    def main(argv=None) -> int: ...

InputError (a bad sweep, recipe, flag or run file) is printed as one paragraph naming the file and key,
exit code 2, with nothing half-done, and so is a file of the wrong kind (store.UnsafeFile: a planted symbolic
link, a FIFO or a device where a file belongs); a file or folder the system refuses (a results root that is a
file, a read-only or full disk) is one line naming it, exit code 1; Ctrl-C prints one line and exits 130. No
torch import here.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from ablations.spec.errors import InputError
from ablations.store import UnsafeFile

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
OUTPUT_FLAGS = ("-o", "--output")  # the one name of the output flag, in every command


def check_workers(workers: int | None) -> None:
    """--workers (ablations.run, ablations.train): None (the default share of cores) or 0 and more."""
    if workers is not None and workers < 0:
        raise InputError("--workers", f"{workers}: expected 0 (load in the training process) or more")


def print_error(err: InputError | str) -> None:
    """One paragraph on stderr, as one line: scripts and terminals alike can take it whole."""
    text = err.describe() if isinstance(err, InputError) else str(err)
    print(f"error: {' '.join(text.split())}", file=sys.stderr)


def command(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI main: InputError -> one paragraph on stderr, exit 2; Ctrl-C -> one line, exit 130."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except InputError as err:
            print_error(err)
            return EXIT_USAGE
        except OSError as err:  # the file system said no: name the file, no traceback
            where = err.filename or "a file"
            print_error(f"{where}: {err.strerror or err}" + (f" (and {err.filename2})" if err.filename2 else ""))
            return EXIT_USAGE if isinstance(err, UnsafeFile) else EXIT_FAILED
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapped
