"""python -m ablations.cancel SWEEP.yaml [SWEEP.yaml ...] — cancel an experiment's queued and running SLURM jobs
(of several sweeps, or a study file's: each sweep's in turn).

Takes the same selection flags as ablations.run: only the jobs of the runs they select are cancelled.
Cancelled runs keep their checkpoints: launching the sweep again resumes them.
A run that is already done is left alone: its job is on its way out (with --wait, ablations.run returns
as soon as the results are written, and the job may stay in squeue a moment longer).

The jobs are found from the run folders' slurm.json, the sweep's submissions log, and the experiment's job
name (squeue): a job array whose ids no file recorded (the submitting process died right after sbatch) is
cancelled too. Such a job whose run cannot be told is one of this experiment's; it is cancelled unless
--seeds selects only some of the experiment's runs.
"""
from __future__ import annotations

import argparse

from ablations.cli import EXIT_OK, command
from ablations.experiment import add_selection_flags, add_sweeps_argument, launch_job_name, resolve, selection_from_args
from ablations.spec.study import sweep_paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.cancel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweeps_argument(p)
    add_selection_flags(p)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selection = selection_from_args(args)
    experiments = [resolve(path, selection, args.results_root) for path in sweep_paths(args.sweeps)]
    name = launch_job_name(experiments)
    for experiment in experiments:
        cancel_experiment(experiment, whole=args.seeds is None, job_name=name)
    return EXIT_OK


def cancel_experiment(experiment, whole: bool, job_name: str) -> None:
    """Cancel one experiment's jobs and say what was cancelled. whole: every run of the experiment is selected (no
    --seeds), so a job of this experiment whose run cannot be told is one of them."""
    from ablations.executors import slurm

    run_dirs = [experiment.run_dir(r) for r in experiment.runs]
    launched = [d for d in run_dirs if d.is_dir()]
    never = f"nothing to cancel: {experiment.describe()} was never launched (none of its run folders exists)"
    if not launched and not (experiment.store_dir / slurm.SUBMITIT_DIR).is_dir():
        print(never)
        return
    named = slurm.jobs_named(experiment.store_dir, job_name, launched)
    if not launched and not named.unknown:
        print(never)
        return
    cancelled = slurm.cancel(experiment.store_dir, launched, named, unknown_runs=whole)
    print(f"cancelled {len(cancelled)} job(s){': ' + ', '.join(cancelled) if cancelled else ''}")
    unknown = sorted(j for j, state in named.unknown.items() if state in slurm.ACTIVE_STATES)
    if unknown and whole:
        print(f"  of them unrecorded job(s) of this experiment whose run is unknown: {', '.join(unknown)}")
    elif unknown:
        print(f"  left alone: unrecorded job(s) of this experiment whose run is unknown ({', '.join(unknown)}): "
              "--seeds selects only some of its runs; cancel without --seeds to include them")


if __name__ == "__main__":
    raise SystemExit(main())
