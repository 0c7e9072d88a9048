"""python -m ablations.train RUN_DIR — train the run in that folder (reads RUN_DIR/config.json).

Exit 0 done, 1 failed, 2 bad input, 3 stopped on request (checkpoint saved: run it again to resume).
A thin wrapper over ablations.executors.job.RunJob, the one path that claims, runs and records a run; the trainer
itself is ablations.training.trainer, whose names (train_run, Preempted, request_stop...) this module also offers.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ablations import command_started


def __getattr__(name: str) -> Any:
    """The trainer's names, imported on first use: --help must not pay for torch."""
    if name.startswith("__"):  # module protocol lookups (warnings, runpy...) must not import torch
        raise AttributeError(name)
    from ablations.training import trainer

    try:
        return getattr(trainer, name)
    except AttributeError:
        raise AttributeError(f"module 'ablations.train' has no attribute {name!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ablations.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run folder holding config.json")
    parser.add_argument("--workers", type=int, default=None,
                        help="data loader processes (default: the job's CPU cores but one, at most 8: "
                             "--cpus-per-task on SLURM, this machine's cores locally)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force", action="store_true", help="run it again even if done or failed "
                                                             "(earlier outputs go to previous/)")
    parser.add_argument("--retry-failed", action="store_true", help="run a failed run again")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before the imports below: --help answers without torch
    command_started()  # Ctrl-C from here: the run's own handlers
    from ablations import store
    from ablations.cli import check_workers, print_error, say
    from ablations.executors.job import FAILED_EARLIER, RunJob
    from ablations.spec.dataset_checks import DatasetError
    from ablations.spec.errors import InputError
    from ablations.training.trainer import Preempted

    try:
        check_workers(args.workers)
    except InputError as err:
        print_error(err)
        return 2
    job = RunJob(args.run_dir, force=args.force, retry_failed=args.retry_failed, num_workers=args.workers,
                 progress=not args.no_progress)
    try:
        outcome = job.run()
    except (InputError, DatasetError) as err:  # a worker's DatasetError: its one line, not torch's re-raise
        print_error(err if isinstance(err, InputError) else f"{args.run_dir}: {store.failure_reason(err)}")
        return 2
    except (store.RunLocked, store.UnsafeFile) as err:  # UnsafeFile: a planted link or FIFO, before training
        print_error(str(err))
        return 2
    except Preempted as err:
        say(str(err))
        return 3
    except Exception as err:  # recorded in error.json by train_run
        say(f"run failed: {store.failure_reason(err)}")
        return 1
    if outcome.status == FAILED_EARLIER:
        say(f"{args.run_dir}: failed earlier ({(store.read_error(args.run_dir) or {}).get('reason')}); "
            "--retry-failed runs it again")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
