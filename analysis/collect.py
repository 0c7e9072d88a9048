"""python -m analysis.collect — every run of a results folder (or one experiment) as one table, for a notebook.

    python -m analysis.collect results/pe                  # print a summary of every run
    python -m analysis.collect results -o runs.csv         # every sweep, for a notebook (or .parquet)
    python -m analysis.collect sweeps/pe.yaml --seeds 0,1  # one experiment's runs

Every knob of a run's config is a column of its own ("optim.lr", "model.pos_encoding", ...), so a notebook
can group by any of them. The learning curves are a separate long table, one row per (run, epoch, metric):
`-o runs.csv` also writes runs_curves.csv (and runs.parquet, runs_curves.parquet). The reading is
analysis.runs: a corrupt file is a warning naming it, never a crash.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ablations.cli import OUTPUT_FLAGS, say
from ablations.experiment import Selection, add_selection_flags, selection_from_args
from analysis.runs import collect, collect_curves, curves_path, export, export_curves
from analysis.source import cli, is_sweep_file, load_layout, warn


def selected_runs(target: Path, selection: Selection, results_root: Path) -> tuple[Path, list | None, list | None]:
    """(folder, run folders, the sweep's meta for each): a sweep file gives its experiment's runs (the flags
    pick it, as for ablations.run); a folder with selection flags, the experiment they pick; a bare folder,
    every run (Nones)."""
    if (target.is_file() and is_sweep_file(target)) or selection.given:
        layout = load_layout(target, results_root=results_root, selection=selection)
        return layout.results_dir, list(layout.run_dirs or ()), list(layout.run_meta or ())
    return target, None, None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.collect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", type=Path, help="results root, a sweep's results folder, a run folder or a sweep file")
    p.add_argument(*OUTPUT_FLAGS, type=Path, help="write the DataFrame to .csv or .parquet")
    add_selection_flags(p)
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder, run_dirs, metas = selected_runs(args.target, selection_from_args(args), args.results_root)
    df, problems = collect(folder, run_dirs=run_dirs, metas=metas)
    warn(problems)
    if args.output:
        export(df, args.output)
        curves = collect_curves(folder, run_dirs, metas)
        export_curves(curves, curves_path(args.output))
        say(f"wrote {args.output} ({len(df)} runs, {len(df.columns)} columns) and {curves_path(args.output)} "
            f"({len(curves)} curve points)")
    else:
        counts = df.groupby(["sweep", "state"]).size().unstack(fill_value=0) if len(df) else df
        print(f"{len(df)} runs" + ("" if df.empty else f"\n{counts.to_string()}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
