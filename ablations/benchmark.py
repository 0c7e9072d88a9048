"""python -m ablations.benchmark — how long planning a large sweep takes.

Builds a 10 x 10 x 10 grid x 10 seeds = 10,000-run sweep in a temporary folder, fills its results folder
with run folders (half done, a quarter partial, the rest absent), then times what `ablations.run` does
before it prints the plan: load and validate the sweep, load the recipe, expand and hash every run, and
read every existing folder's state. Imports and the model-complexity/ETA columns are not included.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from ablations import store
from ablations.plan import make_plan
from ablations.recipes import load_recipe
from ablations.spec import expand, load_sweep


def grid_sweep_yaml(levels: int, seeds: int) -> str:
    def axis(name: str, key: str, values: list[float]) -> str:
        items = ", ".join(f'"{i}": {v}' for i, v in enumerate(values))
        return f'  - {{name: {name}, key: {key}, baseline: "0", levels: {{{items}}}}}\n'

    return (
        "name: big\npaper_table: planning benchmark\nrecipe: quick\nmodel: rest_lite\n"
        f"seeds: {list(range(seeds))}\naxes:\n"
        + axis("lr", "optim.lr", [round(1e-3 * (i + 1), 6) for i in range(levels)])
        + axis("wd", "optim.weight_decay", [round(0.01 * i, 4) for i in range(levels)])
        + axis("dp", "model.drop_path_rate", [round(0.01 * i, 4) for i in range(levels)])
    )


def populate(results_root: Path, sweep_path: Path) -> int:
    """Write run folders for 3/4 of the runs: every other one done, every fourth one partial."""
    sweep = load_sweep(sweep_path)
    runs = expand(sweep, load_recipe(sweep.recipe))
    written = 0
    for i, run in enumerate(tqdm(runs, desc="writing run folders", unit="run")):
        if i % 4 == 3:
            continue
        run_dir = results_root / sweep.name / run.run_id
        run_dir.mkdir(parents=True)
        store.atomic_write_json(run_dir / store.CONFIG, {"config": run.config.to_dict(), "meta": {}})
        (run_dir / store.METRICS).write_text('{"epoch": 1, "top1": 10.0}\n')
        if i % 2 == 0:
            (run_dir / store.RESULT).write_text('{"final": {"top1": 10.0, "top5": 50.0}, "epochs": 1}\n')
        written += 1
    return written


def plan_once(sweep_path: Path, results_root: Path) -> tuple[float, int]:
    start = time.perf_counter()
    sweep = load_sweep(sweep_path)
    runs = expand(sweep, load_recipe(sweep.recipe))
    plan = make_plan(sweep, sweep.recipe, runs, results_root)
    return time.perf_counter() - start, len(plan.runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablations.benchmark", description=__doc__)
    p.add_argument("--levels", type=int, default=10, help="levels per axis (3 axes)")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sweep_path = tmp / "big.yaml"
        sweep_path.write_text(grid_sweep_yaml(args.levels, args.seeds))
        written = populate(tmp / "results", sweep_path)
        times = []
        for _ in range(args.repeats):
            seconds, n_runs = plan_once(sweep_path, tmp / "results")
            times.append(seconds)
    print(f"planned {n_runs} runs ({written} existing run folders): median {statistics.median(times):.2f} s "
          f"over {args.repeats} repeats (min {min(times):.2f} s, max {max(times):.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
