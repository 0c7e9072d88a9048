"""python -m ablations.cancel SWEEP.yaml — cancel an experiment's queued and running SLURM jobs.

Takes the same selection flags as ablations.run: only the jobs of the runs they select are cancelled.
Cancelled runs keep their checkpoints: launching the sweep again resumes them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ablations.cli import EXIT_OK, command
from ablations.experiment import add_selection_flags, resolve, selection_from_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.cancel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="sweep file, e.g. sweeps/pe.yaml")
    add_selection_flags(p)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    experiment = resolve(args.sweep, selection_from_args(args), args.results_root)
    run_dirs = [experiment.run_dir(r) for r in experiment.runs]
    launched = [d for d in run_dirs if d.is_dir()]
    if not launched:
        print(f"nothing to cancel: {experiment.describe()} was never launched (no run folders in "
              f"{experiment.results_dir}/)")
        return EXIT_OK
    from ablations import slurm

    cancelled = slurm.cancel(experiment.results_dir, launched)
    print(f"cancelled {len(cancelled)} job(s){': ' + ', '.join(cancelled) if cancelled else ''}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
