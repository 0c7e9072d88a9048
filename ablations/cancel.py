"""python -m ablations.cancel SWEEP.yaml — cancel the sweep's queued and running SLURM jobs.

Cancelled runs keep their checkpoints: launching the sweep again resumes them.
"""
from __future__ import annotations

import sys

from ablations.run import EXIT_OK, EXIT_USAGE, paragraph
from ablations.spec import SweepError, load_sweep


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    from ablations import slurm

    parser = argparse.ArgumentParser(prog="python -m ablations.cancel", description=__doc__)
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--results-root", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    try:
        sweep = load_sweep(args.sweep)
    except SweepError as err:
        print(paragraph(f"error: {err}"), file=sys.stderr)
        return EXIT_USAGE
    cancelled = slurm.cancel(args.results_root / sweep.name)
    print(f"cancelled {len(cancelled)} job(s){': ' + ', '.join(cancelled) if cancelled else ''}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
