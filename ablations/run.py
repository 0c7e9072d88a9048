"""python -m ablations.run SWEEP.yaml — plan a sweep, print the plan, run what is not done.

    python -m ablations.run sweeps/pe.yaml                       # quick recipe on bundled digits, locally
    python -m ablations.run sweeps/pe.yaml --dry-run             # the plan only; writes nothing
    python -m ablations.run sweeps/pe.yaml --recipe paper-ablation --data-root /data/imagenet
    python -m ablations.run sweeps/pe.yaml --seeds 0,1,2 --set train.epochs=2
    python -m ablations.status sweeps/pe.yaml                    # every cell's state

Completed runs are skipped and partial ones resumed from their checkpoint. Results go to
results/<sweep>/<run_id>/ (config.json, metrics.jsonl, checkpoint.pt, result.json, log.txt).
"""
from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

from ablations import store
from ablations.plan import Plan, dataset_sizes, estimate, format_duration, make_plan, reference_speed
from ablations.spec import SweepError, expand, load_sweep, parse_cli_sets

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input: printed as one paragraph, exit code 2, nothing written."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="sweep file, e.g. sweeps/pe.yaml")
    p.add_argument("--recipe", help="training protocol by name or path (default: the sweep's recipe)")
    p.add_argument("--data-root", help="dataset folder (sets data.root; or set REST_DATA_ROOT)")
    p.add_argument("--seeds", help="comma-separated seeds, replacing the sweep's (e.g. 0,1,2)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key for every run (repeatable), e.g. --set optim.lr=0.1")
    p.add_argument("--results-root", type=Path, default=Path("results"), help="default: results/")
    p.add_argument("--executor", choices=("local", "slurm", "auto"), default="auto",
                   help="auto: SLURM when sbatch is on PATH, else local (default)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop; writes nothing")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again (resuming their checkpoint)")
    p.add_argument("--force", action="store_true", help="run every run again; earlier outputs go to previous/")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes per run")
    cluster = p.add_argument_group("SLURM (override the sweep file's slurm: block)")
    cluster.add_argument("--partition")
    cluster.add_argument("--account")
    cluster.add_argument("--qos")
    cluster.add_argument("--constraint")
    cluster.add_argument("--time-min", type=int, help="time limit per job, minutes")
    cluster.add_argument("--nodes", type=int)
    cluster.add_argument("--gpus-per-node", type=int)
    cluster.add_argument("--tasks-per-node", type=int, help="one task per GPU; >1 runs torch.distributed")
    cluster.add_argument("--cpus-per-task", type=int)
    cluster.add_argument("--mem-gb", type=float)
    cluster.add_argument("--array-parallelism", type=int, help="at most this many runs at once")
    cluster.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                         help="any other sbatch option, e.g. --sbatch exclusive=true (repeatable)")
    cluster.add_argument("--wait", action="store_true", help="block until the submitted jobs end, with progress")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-eta", action="store_true", help="skip the speed measurement behind the ETA")
    return p


# --------------------------------------------------------------------------------------------------------
def load_plan(args: argparse.Namespace) -> Plan:
    """Everything that can be wrong with the input is found here, before anything is written."""
    from ablations.data import DatasetError, check_dataset
    from ablations.recipes import RecipeError, load_recipe

    sweep = load_sweep(args.sweep)
    recipe_name = args.recipe or sweep.recipe
    try:
        recipe = load_recipe(recipe_name)
    except RecipeError as err:
        where = "--recipe" if args.recipe else f"{sweep.path}: recipe"
        raise UsageError(f"{where}: {err}") from None
    cli = parse_cli_sets(args.sets)
    if args.data_root:
        cli = {**cli, "data.root": args.data_root}
    seeds = parse_seed_list(args.seeds) if args.seeds else None
    runs = expand(sweep, recipe, cli, seeds)
    checked = set()
    for run in runs:
        data = run.config.data
        if (data.dataset, data.root) in checked:
            continue
        checked.add((data.dataset, data.root))
        try:
            check_dataset(run.config)
        except DatasetError as err:
            raise UsageError(f"{sweep.path}: data.dataset={data.dataset!r} (recipe {recipe.name!r}): {err}") from None
    return make_plan(sweep, recipe.name, runs, args.results_root)


def parse_seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. --seeds 0,1,2")
    return seeds


def format_plan(plan: Plan, with_eta: bool, pending_states: set[str]) -> str:
    first = plan.runs[0].run.config
    train_images, num_classes = dataset_sizes(first)
    lines = [
        f"sweep {plan.sweep.name}: {plan.sweep.paper_table}",
        f"  file {plan.sweep.path}   results {plan.results_dir}/",
        f"  recipe {plan.recipe}: {first.data.dataset} at {first.data.img_size}px, {train_images} training images, "
        f"{first.train.epochs} epochs, batch {first.train.batch_size}, {first.optim.name} lr {first.lr:g}",
    ]
    if plan.recipe == "quick":
        lines.append("  NOTE: the quick recipe is the same experiment, smaller (bundled digits): its numbers are "
                     "not comparable to the paper's. Use --recipe paper-ablation --data-root PATH for the protocol.")
    reference = reference_speed(first, num_classes) if with_eta else None

    by_cell: dict[str, list] = defaultdict(list)
    for planned in plan.runs:
        by_cell[planned.run.cell.label].append(planned)
    header = f"  {'cell':<24} {'seeds':<22} {'params':>9} {'GMACs':>7} {'GMACs+attn':>10} {'img-epochs':>11} {'ETA':>9}"
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    total_eta, total_image_epochs = 0.0, 0
    for label, planned_runs in by_cell.items():
        pending = sum(p.state.state in pending_states for p in planned_runs)
        config = planned_runs[0].run.config
        ref = reference or {"img_per_s": 0.0, "macs_total": 0}
        cost = estimate(config, num_classes, train_images, pending, ref)
        seeds = " ".join(f"{p.run.seed}:{p.state.state}" for p in planned_runs)
        eta = format_duration(cost.eta_s) if reference else "-"
        baseline = " *" if planned_runs[0].run.cell.is_baseline else ""
        lines.append(f"  {(label + baseline)[:24]:<24} {seeds[:22]:<22} {cost.params / 1e6:>8.2f}M "
                     f"{cost.macs_paper / 1e9:>7.3f} {cost.macs_total / 1e9:>10.3f} {cost.image_epochs:>11,} {eta:>9}")
        total_eta += cost.eta_s if reference else 0.0
        total_image_epochs += cost.image_epochs
    counts = plan.counts()
    summary = ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "partial", "failed", "new") if counts[s])
    lines += ["", f"  {len(by_cell)} cells x {len(plan.runs) // max(1, len(by_cell))} seeds = {len(plan.runs)} runs: "
                  f"{summary}.  (* = baseline)"]
    if reference:
        lines.append(f"  cost of what is left: {total_image_epochs:,} image-epochs; ETA {format_duration(total_eta)} "
                     f"at {reference['img_per_s']:.0f} training img/s measured here on {reference['model']}")
    for problem in plan.problems:
        lines.append(f"  warning: {problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        plan = load_plan(args)
        executor = resolve_executor(args.executor)
        settings = slurm_settings(args, plan) if executor == "slurm" else None
    except (SweepError, UsageError) as err:
        print(paragraph(f"error: {err}"), file=sys.stderr)
        return EXIT_USAGE
    pending_states = {store.NEW, store.PARTIAL}
    if args.retry_failed or args.force:
        pending_states.add(store.FAILED)
    if args.force:
        pending_states.add(store.DONE)
    print(format_plan(plan, with_eta=not args.no_eta, pending_states=pending_states), flush=True)
    if args.dry_run:
        print("\n--dry-run: nothing was written or launched.")
        return EXIT_OK
    todo = plan.pending(retry_failed=args.retry_failed, force=args.force)
    if not todo:
        failed = plan.counts()[store.FAILED]
        if failed:
            print(f"\nnothing to run: {failed} run(s) failed earlier (see python -m ablations.status); "
                  "--retry-failed runs them again.")
            return EXIT_FAILED
        print("\nnothing to run: every run is done (or running elsewhere). --force runs them again.")
        return EXIT_OK
    print(f"\nlaunching {len(todo)} run(s) with the {executor} executor", flush=True)
    if executor == "slurm":
        return submit_to_slurm(plan, todo, settings, args)
    return launch(plan, todo, args)


def resolve_executor(name: str) -> str:
    if name != "auto":
        return name
    import shutil

    chosen = "slurm" if shutil.which("sbatch") else "local"
    print(f"executor auto -> {chosen} ({'sbatch found' if chosen == 'slurm' else 'no sbatch on PATH'})",
          file=sys.stderr)
    return chosen


def slurm_settings(args: argparse.Namespace, plan: Plan):
    """The sweep's slurm: block with the command line on top, checked before anything is submitted."""
    from ablations.config import ConfigError
    from ablations.slurm import SlurmSettings

    try:
        extra = dict(item.split("=", 1) for item in args.sbatch)
    except ValueError:
        raise UsageError(f"--sbatch {args.sbatch}: expected KEY=VALUE, e.g. --sbatch exclusive=true") from None
    cli = {name: getattr(args, name) for name in (
        "partition", "account", "qos", "constraint", "time_min", "nodes", "gpus_per_node", "tasks_per_node",
        "cpus_per_task", "mem_gb", "array_parallelism")}
    try:
        settings = SlurmSettings.from_mapping(plan.sweep.slurm or None, str(plan.sweep.path)).with_cli(**cli)
        if extra:
            settings = settings.with_cli(additional_parameters={**settings.additional_parameters, **extra})
    except ConfigError as err:
        raise UsageError(str(err)) from None
    return settings


def submit_to_slurm(plan: Plan, todo, settings, args: argparse.Namespace) -> int:
    from ablations import slurm
    from ablations.launch import archive_previous, write_configs

    write_configs(plan, todo)
    if args.force:
        for planned in todo:
            if planned.state.state in (store.DONE, store.FAILED):
                archive_previous(planned.run_dir)
    job_ids = slurm.submit(plan.results_dir, [p.run_dir for p in todo], settings, plan.sweep.name,
                           retry_failed=args.retry_failed or args.force, num_workers=args.workers)
    if not job_ids:
        print("nothing submitted: every pending run already has a queued or running job")
        return EXIT_OK
    print(f"submitted {len(job_ids)} run(s) as one job array: {job_ids[0].split('_')[0]} "
          f"(logs: {plan.results_dir}/.submitit/)")
    print(f"status: python -m ablations.status {plan.sweep.path}   cancel: python -m ablations.cancel "
          f"{plan.sweep.path}")
    if not args.wait:
        return EXIT_OK
    return wait_for_jobs(plan, args)


def wait_for_jobs(plan: Plan, args: argparse.Namespace, poll_s: float = 5.0) -> int:
    """--wait: poll the cluster and the run folders until no run of the sweep is queued or running."""
    import time

    from tqdm.auto import tqdm

    from ablations import slurm

    active = {"pending", "running", "requeued"}
    with tqdm(total=len(plan.runs), desc=f"sweep {plan.sweep.name}", unit="run",
              disable=args.no_progress) as bar:
        while True:
            states = [s.state for s in slurm.status(plan.results_dir)]
            finished = sum(s in ("done", "failed", "cancelled") for s in states)
            bar.n = finished
            bar.set_postfix_str(", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))))
            bar.refresh()
            if not any(s in active for s in states):
                break
            time.sleep(poll_s)
    failed = [s for s in slurm.status(plan.results_dir) if s.state in ("failed", "cancelled")]
    for run in failed:
        print(f"  {run.state} {run.run_id}: {(run.error or '').splitlines()[-1:] or ''}")
    return EXIT_FAILED if failed else EXIT_OK


def launch(plan: Plan, todo, args: argparse.Namespace) -> int:
    from ablations.launch import run_local, write_configs

    write_configs(plan, todo)
    report = run_local(plan, todo, force=args.force, retry_failed=args.retry_failed,
                       progress=not args.no_progress, num_workers=args.workers)
    print(f"\n{len(report.done)} run(s) finished, {len(report.failed)} failed, {len(report.skipped)} skipped")
    for run_id, reason in report.failed.items():
        print(f"  failed  {run_id}: {reason}")
    for run_id, why in report.skipped.items():
        print(f"  skipped {run_id}: {why}")
    print(f"results: {plan.results_dir}/   status: python -m ablations.status {plan.sweep.path}")
    return EXIT_FAILED if report.failed else EXIT_OK


def paragraph(text: str) -> str:
    return "\n".join(textwrap.wrap(text, width=110, break_long_words=False, break_on_hyphens=False))


if __name__ == "__main__":
    raise SystemExit(main())
