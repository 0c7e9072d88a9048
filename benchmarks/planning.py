"""python -m benchmarks.planning — how long planning takes, and how fast the commands answer.

    python -m benchmarks.planning                # plan a 10,000-run sweep (in-process timing)
    python -m benchmarks.planning startup        # whole-process times of --help, status, run, --dry-run

plan: builds a 10 x 10 x 10 grid x 10 seeds = 10,000-run sweep in a temporary folder, fills its results folder
with run folders (half done, a quarter partial, the rest absent), then times what `ablations.run` does
before it prints the plan: load and validate the sweep, load the recipe, expand and hash every run, and
read every existing folder's state. Imports and the model-complexity/ETA columns are not included.

startup: times whole processes (`python -m ...`, median of --repeats runs) the way a user meets them:
every command's --help, `ablations.status sweeps/pe.yaml` on finished runs, `ablations.run sweeps/pe.yaml`
when everything is done, and `--dry-run` of every shipped sweep (the first one in a fresh results root pays
for the model-complexity cache; the table shows the first and the median of the rest).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from ablations import store
from ablations.experiment import Selection, resolve
from ablations.plan import make_plan
from ablations.results_root import store_dir
from ablations.spec.recipe import load_recipe
from ablations.spec.study import sweep_paths
from ablations.spec.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("ablations.run", "ablations.status", "ablations.cancel", "ablations.train", "analysis.tables",
            "analysis.plots", "analysis.collect", "analysis.report")


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
        run_dir = store_dir(results_root) / run.run_id  # where a launch puts it
        run_dir.mkdir(parents=True)
        store.atomic_write_json(run_dir / store.CONFIG, {"config": run.config.to_dict(), "meta": {}})
        (run_dir / store.METRICS).write_text('{"epoch": 1, "top1": 10.0}\n')
        if i % 2 == 0:
            (run_dir / store.RESULT).write_text('{"final": {"top1": 10.0, "top5": 50.0}, "epochs": 1}\n')
        written += 1
    return written


def plan_once(sweep_path: Path, results_root: Path) -> tuple[float, int]:
    start = time.perf_counter()
    plan = make_plan(resolve(sweep_path, Selection(), results_root))
    return time.perf_counter() - start, len(plan.runs)


# ---- startup ---------------------------------------------------------------------------------------------------
def finish_runs(sweep_path: Path, results_root: Path) -> int:
    """Make every run of the sweep as written look finished (config, one metrics row, result.json)."""
    experiment = resolve(sweep_path, Selection(), results_root)
    for run in experiment.runs:
        run_dir = experiment.run_dir(run)
        store.write_config(run_dir, run.config, experiment.meta(run))
        store.append_metrics(run_dir, {"epoch": 1, "top1": 90.0, "top5": 99.0, "val_loss": 0.3})
        store.write_result(run_dir, {"final": {"top1": 90.0, "top5": 99.0, "val_loss": 0.3}, "epochs": 1})
    return len(experiment.runs)


def time_command(args: list[str], repeats: int, cwd: Path, cache: Path) -> list[float]:
    """Wall time of `python -m ...` as whole processes, `repeats` times, with the code of checkout `cwd` and
    the planner's cache in `cache`; fails loudly on an exit code other than 0 or 1."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "XDG_CACHE_HOME": str(cache)}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return times


def startup(repeats: int, code: Path = ROOT) -> list[tuple[str, float, float, float, float]]:
    """(what, median, min, max, target) for every timed command, run with the checkout at `code` (another
    checkout of this project measures "before")."""
    from tqdm.auto import tqdm

    rows = []
    sweeps = sweep_paths(sorted((code / "sweeps").glob("*.yaml")))  # a study file expands to its sweeps
    with tempfile.TemporaryDirectory() as tmp:
        done_root, fresh_root, cache = Path(tmp) / "done", Path(tmp) / "fresh", Path(tmp) / "cache"
        finish_runs(ROOT / "sweeps" / "pe.yaml", done_root)
        jobs = [(f"{c} --help", [c, "--help"], 0.5) for c in COMMANDS]
        jobs += [("ablations.status sweeps/pe.yaml (finished)",
                  ["ablations.status", "sweeps/pe.yaml", "--results-root", str(done_root)], 1.0),
                 ("ablations.run sweeps/pe.yaml (all done)",
                  ["ablations.run", "sweeps/pe.yaml", "--results-root", str(done_root), "--executor", "local"], 1.5)]
        for command, args, target in tqdm(jobs, desc="startup", unit="command"):
            times = time_command(args, repeats, code, cache)
            rows.append((command, statistics.median(times), min(times), max(times), target))
        for sweep in tqdm(sweeps, desc="dry runs", unit="sweep"):
            args = ["ablations.run", str(sweep.relative_to(code)), "--dry-run", "--executor", "local",
                    "--results-root", str(fresh_root)]
            fresh_root.mkdir(exist_ok=True)
            first = time_command(args, 1, code, cache)[0]
            times = time_command(args, repeats, code, cache)
            rows.append((f"--dry-run {sweep.name} (first, cold cache)", first, first, first, 3.0))
            rows.append((f"--dry-run {sweep.name}", statistics.median(times), min(times), max(times), 3.0))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.planning", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=("plan", "startup"), default="plan")
    p.add_argument("--levels", type=int, default=10, help="plan: levels per axis (3 axes)")
    p.add_argument("--seeds", type=int, default=10, help="plan: seeds")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default: plan 3, startup 5)")
    p.add_argument("--code", type=Path, default=ROOT, help="startup: the checkout whose commands are timed "
                                                           "(default: this one)")
    args = p.parse_args(argv)
    if args.what == "startup":
        rows = startup(args.repeats or 5, args.code.resolve())
        print("| command | median (s) | min | max | target (s) |\n| --- | ---: | ---: | ---: | ---: |")
        for command, median, low, high, target in rows:
            mark = "" if median <= target else " (over)"
            print(f"| {command} | {median:.2f}{mark} | {low:.2f} | {high:.2f} | {target:g} |")
        return 0
    args.repeats = args.repeats or 3
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
