"""The harness: a sweep file becomes runs, runs become run folders, run folders become results.

    spec/        what the user writes, validated (configs, sweeps, recipes)
    plan.py      the runs of an experiment with their state and cost; store.py: the run folders
    executors/   where runs run (RunJob, local, SLURM); training/: what a run does
    run.py status.py cancel.py train.py: the commands (python -m ablations.X)

docs/design.md follows one run through these modules.
"""

from ablations.cli import quiet_interrupt_while_starting  # noqa: E402 - a Ctrl-C while `python -m` imports: one line

quiet_interrupt_while_starting()
