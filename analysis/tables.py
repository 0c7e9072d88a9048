"""A sweep's table as in the paper: one row per cell, ours (mean ± std over seeds) beside the published value.

    python -m analysis.tables sweeps/pe.yaml                   # -> results/pe/reports/quick_seeds-0/table.*
    python -m analysis.tables sweeps/pe.yaml --set train.epochs=1   # the runs launched with that override
    python -m analysis.tables results/pe                       # rows and baseline from the runs' meta
    python -m analysis.tables results/pe --sweep sweeps/pe.yaml --recipe quick

Every row is compared with the baseline row (a 95 % confidence interval, see analysis.table). Failed,
running and missing cells are rows that say so. A table shows one experiment (sweep + recipe +
--set overrides + seeds, selected with the flags of ablations.run): runs of other recipes or overrides in
the same folder are never mixed in, only named.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ablations.cli import OUTPUT_FLAGS, say
from ablations.experiment import add_selection_flags, selection_from_args
from analysis.runs import collect
from analysis.source import InputError, cli, load_layout, note, output_dir, require_runs, warn
from analysis.table import METRICS, build_table


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.tables", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", type=Path, help="a sweep file (sweeps/pe.yaml) or a sweep's results folder")
    p.add_argument("--sweep", type=Path, help="with a results folder: the sweep file, for row order and paper numbers")
    add_selection_flags(p)
    p.add_argument("--columns", type=lambda s: tuple(filter(None, s.split(","))),
                   help=f"metrics to show, comma-separated, among {','.join(METRICS)} (default: the sweep's)")
    p.add_argument(*OUTPUT_FLAGS, type=Path,
                   help="folder for table.{md,tex,csv} and table_long.csv (default: the experiment's own "
                        "folder, <results>/<sweep>/reports/<recipe+overrides_seeds>/)")
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.columns and (unknown := [c for c in args.columns if c not in METRICS]):
        raise InputError(f"--columns: unknown metric(s) {', '.join(unknown)}; choose among {', '.join(METRICS)}.")
    layout = load_layout(args.target, args.sweep, args.results_root, args.columns, selection_from_args(args))
    require_runs(layout)
    # a table needs no curves
    df, problems = collect(layout.results_dir, curves=False, run_dirs=layout.run_dirs, metas=layout.run_meta)
    warn(problems)
    table = build_table(df, layout)
    warn(table.problems)
    note(layout)
    from analysis.render import to_markdown, write_table

    paths = write_table(table, args.output or output_dir(layout))

    print(to_markdown(table), end="")
    say("wrote " + ", ".join(map(str, paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
