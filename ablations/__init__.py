"""The harness: a sweep file becomes runs, runs become run folders, run folders become results.

    spec/        what the user writes, validated (configs, sweeps, recipes)
    plan.py      the runs of an experiment with their state and cost; store.py: the run folders
    executors/   where runs run (RunJob, local, SLURM); training/: what a run does
    run.py status.py cancel.py train.py: the commands (python -m ablations.X)

docs/design.md follows one run through these modules.
"""
import signal
import sys


def interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before a command's main() runs (importing torch and timm takes seconds) ends it as a Ctrl-C in
    main() does: one line, exit 130, not a traceback from deep inside an import."""
    print("\ninterrupted", file=sys.stderr)
    raise SystemExit(130)


def command_started() -> None:
    """main() runs: Ctrl-C raises KeyboardInterrupt again, which the command handles (ablations.cli.command)."""
    if signal.getsignal(signal.SIGINT) is interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Installed first thing, only while Python starts a command (`python -m ...`: sys.argv[0] is "-m" while the module
# is being found), never in a program or a notebook that imports the package.
if sys.argv[:1] == ["-m"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, interrupted_while_starting)
