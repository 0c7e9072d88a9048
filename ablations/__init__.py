"""The harness: a sweep file becomes runs, runs become run folders, run folders become results.

    spec/        what the user writes, validated (configs, sweeps, recipes)
    plan.py      the runs of an experiment with their state and cost; store.py: the run folders
    executors/   where runs run (RunJob, local, SLURM); training/: what a run does
    run.py status.py cancel.py train.py: the commands (python -m ablations.X)

docs/design.md follows one run through these modules.
"""
import signal
import sys

_INTERRUPTIONS: list[str] = []  # the Ctrl-Cs this process received: "said" (its line printed) or "raised"


def interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before a command's main() runs (importing torch and timm takes seconds) ends it as a Ctrl-C in
    main() does: one line, exit 130, not a traceback from deep inside an import."""
    print("\ninterrupted", file=sys.stderr)
    _INTERRUPTIONS.append("said")
    raise SystemExit(130)


def interrupted(signum: int, frame: object) -> None:
    """Ctrl-C while main() runs: KeyboardInterrupt, remembered. An exception raised while torch's C extension
    imports numpy is swallowed there (torch goes on without numpy, whose next import then fails with an
    ImportError): an error after a Ctrl-C is that Ctrl-C's (interruption, ablations.cli.command)."""
    _INTERRUPTIONS.append("raised")
    raise KeyboardInterrupt


def command_started() -> None:
    """main() runs: Ctrl-C raises KeyboardInterrupt again, which the command handles (ablations.cli.command)."""
    if signal.getsignal(signal.SIGINT) is interrupted_while_starting:
        signal.signal(signal.SIGINT, interrupted)


def interruption() -> str | None:
    """None if no Ctrl-C reached this process; "said" if its line is printed already, else "raised"."""
    return _INTERRUPTIONS[0] if _INTERRUPTIONS else None


def raise_if_interrupted() -> None:
    """Before a command acts (launches, writes): a Ctrl-C that an import swallowed stops it all the same."""
    if _INTERRUPTIONS:
        raise KeyboardInterrupt


# Installed first thing, only while Python starts a command (`python -m ...`: sys.argv[0] is "-m" while the module
# is being found), never in a program or a notebook that imports the package.
if sys.argv[:1] == ["-m"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, interrupted_while_starting)
