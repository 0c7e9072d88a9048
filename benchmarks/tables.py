"""How long collecting + tabulating takes: 1,000 synthetic run folders in a temp dir (target: <= 3 s).

    python -m benchmarks.tables                        # 1000 runs of 30 epochs
    python -m benchmarks.tables --runs 1000 --epochs 300

The folders are complete (config.json, metrics.jsonl, result.json), spread over 10 cells; the timed part is
exactly what `python -m analysis.tables` does: collect every folder into the DataFrame, build the table and
render it as Markdown, LaTeX and CSV.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from analysis.render import to_csv, to_latex, to_markdown
from analysis.runs import collect
from analysis.source import Layout
from analysis.synthetic import write_run
from analysis.table import build_table


def make_runs(results_dir: Path, runs: int, epochs: int, cells: int = 10) -> None:
    rng = random.Random(0)
    for i in range(runs):
        cell, seed = i % cells, i // cells
        write_run(results_dir, f"C{cell}", seed, top1=70 + cell * 0.1 + rng.gauss(0, 0.3),
                  top5=90 + rng.gauss(0, 0.2), baseline=cell == 0, epochs=epochs)


def time_table(results_dir: Path) -> dict[str, float]:
    start = time.perf_counter()
    df, problems = collect(results_dir, progress=False, curves=False)  # as python -m analysis.tables does
    collected = time.perf_counter()
    table = build_table(df, Layout(name=results_dir.name, results_dir=results_dir))
    for render in (to_markdown, to_latex, to_csv):
        render(table)
    done = time.perf_counter()
    assert not problems, problems
    start_curves = time.perf_counter()
    collect(results_dir, progress=False, curves=True)  # what the plots and `analysis.collect` read
    curves_s = time.perf_counter() - start_curves
    return {"runs": len(df), "collect_s": collected - start, "table_s": done - collected, "total_s": done - start,
            "curves_s": curves_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tables", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=30, help="lines of metrics.jsonl per run")
    p.add_argument("--repeat", type=int, default=3, help="timed repetitions (the best is reported)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results_dir = Path(tmp) / "bench"
        start = time.perf_counter()
        make_runs(results_dir, args.runs, args.epochs)
        print(f"created {args.runs} run folders ({args.epochs} epochs each) in {time.perf_counter() - start:.1f} s")
        timings = [time_table(results_dir) for _ in range(args.repeat)]
    for i, t in enumerate(timings):
        # the first repetition also pays for lazy imports (scipy.special, tqdm) and a cold page cache
        print(f"collect + table of {t['runs']} runs: {t['total_s']:.2f} s (collect {t['collect_s']:.2f} s, "
              f"table {t['table_s']:.2f} s){' [first]' if i == 0 else ''}; "
              f"collect with every curve (plots, export): {t['curves_s']:.2f} s")
    worst = max(t["total_s"] for t in timings)
    print(f"{'OK' if worst <= 3.0 else 'TOO SLOW'}: worst {worst:.2f} s (target <= 3 s)")
    return 0 if worst <= 3.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
