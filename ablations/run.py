"""python -m ablations.run SWEEP.yaml — plan a sweep, print the plan, run what is not done.

    python -m ablations.run sweeps/pe.yaml                       # quick recipe on bundled digits, locally
    python -m ablations.run sweeps/pe.yaml --dry-run             # the plan only; writes nothing
    python -m ablations.run sweeps/pe.yaml --recipe paper-ablation --data-root /data/imagenet
    python -m ablations.run sweeps/pe.yaml --seeds 0,1,2 --set train.epochs=2
    python -m ablations.run sweeps/pe.yaml --grid model.reduction=dwconv,avg   # 4 x 2 cells
    python -m ablations.run sweeps/paper-ablations.yaml          # every ablation table as one study
    python -m ablations.status sweeps/pe.yaml                    # every cell's state

Completed runs are skipped and partial ones resumed from their checkpoint. Runs go to results/runs/<run_id>/
(config.json, metrics.jsonl, checkpoint.pt, result.json, log.txt), shared by every sweep whose cells have
the same config: a run another sweep launched is reused, never trained twice. results/<sweep>/runs.jsonl lists
the runs the sweep uses; its tables go to results/<sweep>/reports/.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

from ablations import raise_if_interrupted, results_root, store
from ablations.checks import (
    check_datasets,
    check_devices,
    check_live_attention,
    check_loggers,
    check_models,
    check_run_folders,
    check_schedules,
)
from ablations.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PrintableFormatter, check_workers, command
from ablations.experiment import (
    DEFAULT_RESULTS_ROOT,
    add_selection_flags,
    add_sweeps_argument,
    launch_job_name,
    resolve,
    selection_from_args,
)
from ablations.plan import Launch, Plan, distinct_runs, make_plan, pending_states
from ablations.plan_text import format_plan, format_study, resource_groups
from ablations.spec.config import KEEP_CHECKPOINTS, LOGGERS
from ablations.spec.errors import InputError
from ablations.spec.study import sweep_paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweeps_argument(p)
    add_selection_flags(p)
    launch = p.add_argument_group("launching")
    launch.add_argument("--executor", choices=("local", "slurm", "auto"), default="auto",
                        help="auto (default): inside a SLURM allocation, local on it; else SLURM when a controller "
                             "answers (sinfo), else local")
    launch.add_argument("--dry-run", action="store_true", help="print the plan and stop; writes nothing")
    launch.add_argument("--retry-failed", action="store_true", help="run failed runs again (resuming their checkpoint)")
    launch.add_argument("--force", action="store_true", help="run every run again; earlier outputs go to previous/")
    launch.add_argument("--jobs", type=int, default=1, help="local executor: runs at once, each in its own process "
                                                          "(at most one per CPU core, or per GPU; default 1)")
    launch.add_argument("--workers", type=int, default=None,
                        help="data-loading worker processes per run (default: the job's CPU cores but one, at "
                             "most 8: --cpus-per-task on SLURM, this machine's cores, or their share under --jobs)")
    launch.add_argument("--logger", choices=LOGGERS, help="experiment tracking (sets train.logger; default "
                        "tensorboard: event files in each run folder; wandb: also Weights & Biases; none)")
    launch.add_argument("--keep-checkpoints", choices=KEEP_CHECKPOINTS, help="what a finished run keeps (sets "
                        "train.keep_checkpoints; default last: checkpoint.pt without optimizer state + best.pt)")
    launch.add_argument("--allow-inert-attention", action="store_true",
                        help="run cells whose input size leaves the attention knobs without effect (a 1x1 key map "
                             "in some stage); refused otherwise. The plan and the tables say so")
    launch.add_argument("--no-progress", action="store_true", help="no progress bars")
    launch.add_argument("--no-eta", action="store_true", help="no speed measurement behind the ETA")
    cluster = p.add_argument_group("SLURM (override the sweep file's slurm: block)")
    cluster.add_argument("--partition", help="SLURM partition (sbatch --partition)")
    cluster.add_argument("--account", help="account to charge (sbatch --account)")
    cluster.add_argument("--qos", help="quality of service (sbatch --qos)")
    cluster.add_argument("--constraint", help="node features, e.g. volta32gb (sbatch --constraint)")
    cluster.add_argument("--time-min", type=int, help="time limit per job, minutes")
    cluster.add_argument("--nodes", type=int, help="nodes per run (default 1)")
    cluster.add_argument("--gpus-per-node", type=int, help="GPUs per node (default 0)")
    cluster.add_argument("--tasks-per-node", type=int, help="one task per GPU; >1 runs torch.distributed")
    cluster.add_argument("--cpus-per-task", type=int, help="CPU cores per task (also the data-loading workers' share)")
    cluster.add_argument("--mem-gb", type=float, help="memory per node, GB")
    cluster.add_argument("--array-parallelism", type=int, help="at most this many runs at once")
    cluster.add_argument("--signal-delay-s", type=int, help="send the checkpoint signal (USR2) this many seconds "
                                                            "before the time limit (default 120)")
    cluster.add_argument("--max-requeues", type=int, dest="max_num_timeout", metavar="N",
                         help="requeues after a time limit before a run is given up (default 3)")
    cluster.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                         help="any other sbatch option: KEY=VALUE, or a bare flag such as --sbatch exclusive "
                              "(repeatable)")
    cluster.add_argument("--wait", action="store_true", help="block until the submitted jobs end, with progress")
    return p


# --------------------------------------------------------------------------------------------------------
def load_plans(args: argparse.Namespace) -> list[Plan]:
    """One plan per sweep the command line names (study files expanded), each run with its state; bad input
    raises InputError. Every sweep takes the same selection flags.

    --logger and --keep-checkpoints set keys outside the run id: the same runs, kept otherwise."""
    flags = {"logger": getattr(args, "logger", None), "keep_checkpoints": getattr(args, "keep_checkpoints", None)}
    typed = tuple((f"train.{key}", value) for key, value in flags.items() if value)
    selection = dataclasses.replace(selection_from_args(args), typed=typed)
    return [make_plan(resolve(path, selection, args.results_root)) for path in sweep_paths(args.sweeps)]


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(PrintableFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[terminal])
    check_workers(args.workers)
    plans = load_plans(args)
    check_loggers(plans)
    executor, why = resolve_executor(args.executor)
    # checked for every executor: a bad slurm: block is a bad sweep
    settings = {plan.sweep.path: slurm_settings(args, plan) for plan in plans}
    for plan in plans:
        if executor == "slurm":
            check_devices(plan, settings[plan.sweep.path])
        elif any(p.run.config.train.devices > 1 for p in plan.runs):  # the dry run refuses it too
            raise InputError("train.devices", "the local executor runs one process per run; train.devices > 1 "
                             "needs the SLURM executor (--tasks-per-node N) or torchrun "
                             "(python -m torch.distributed.run --nproc-per-node N -m ablations.train RUN_DIR)")
    if executor == "local":
        check_jobs(args.jobs)
    wanted = pending_states(args.retry_failed, args.force)
    todo = [launch for launch in distinct_runs(plans) if launch.planned.state.state in wanted]
    check_run_folders(todo)
    check_schedules(plans)
    check_models(plans)
    for plan in plans:
        check_live_attention(plan, args.allow_inert_attention)
        own = [launch.planned for launch in todo if launch.plan is plan]
        if own:
            check_datasets(plan, own)
    # The ETA of SLURM runs comes from recorded runs only: a measurement on the login node says nothing of the GPUs.
    measure = bool(todo) and not args.no_eta and not args.dry_run and executor == "local"
    where, costs = f"{executor} executor ({why})", bool(todo) and not args.no_eta
    if len(plans) == 1:
        print(format_plan(plans[0], wanted, where, costs=costs, measure=measure, on_slurm=executor == "slurm",
                          settings=settings[plans[0].sweep.path]), flush=True)
    else:
        print(format_study(plans, wanted, where, costs=costs, measure=measure, on_slurm=executor == "slurm",
                           settings=settings), flush=True)
    raise_if_interrupted()  # the last moment before anything is written or launched
    if args.dry_run:
        print("\n--dry-run: nothing was written or launched.")
        return EXIT_OK
    corrupt = [launch.planned for launch in distinct_runs(plans) if launch.planned.state.state == store.CORRUPT]
    if not todo:
        remember(plans)
        failed = sum(launch.planned.state.state == store.FAILED for launch in distinct_runs(plans))
        if corrupt:
            print(f"\nnothing to run; {describe_corrupt(corrupt)}")
            return EXIT_FAILED
        if failed:
            print(f"\nnothing to run: {failed} run(s) failed earlier (see python -m ablations.status); "
                  "--retry-failed runs them again.")
            return EXIT_FAILED
        print("\nnothing to run: every run is done (or running elsewhere). --force runs them again.")
        return EXIT_OK
    print(f"\nlaunching {len(todo)} run(s) with the {executor} executor", flush=True)
    code = submit_to_slurm(plans, todo, settings, args) if executor == "slurm" else launch_here(plans, todo, args)
    if corrupt and code == EXIT_OK:
        print(f"\n{describe_corrupt(corrupt)}")
        return EXIT_FAILED
    return code


def describe_corrupt(corrupt: list) -> str:
    """What a launch leaves alone because it cannot be trusted (store.CORRUPT): each run folder and why."""
    lines = [f"{len(corrupt)} run(s) are corrupt and never launched (their files are not trusted):"]
    lines += [f"  {planned.run_dir}: {planned.state.error}" for planned in corrupt]
    return "\n".join(lines) + "\nRestore or move each folder away (python -m ablations.status says the same)."


def remember(plans: list[Plan]) -> None:
    """List in each results/<sweep>/runs.jsonl the runs of its plan that exist (a table of the bare folder finds
    them)."""
    for plan in plans:
        results_root.record_members(plan.results_dir, [(p.run_dir, plan.meta(p.run)) for p in plan.runs
                                                       if (p.run_dir / store.CONFIG).is_file()])


def check_jobs(jobs: int) -> None:
    """--jobs N: at most one run per CPU core (or per GPU, where there are GPUs)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if jobs < 1 or jobs > cores:
        raise InputError("--jobs", f"{jobs}: expected 1 to {cores} (the CPU cores this process may use)")
    if jobs > 1 and os.environ.get("CUDA_VISIBLE_DEVICES", None) not in (None, ""):
        gpus = len(os.environ["CUDA_VISIBLE_DEVICES"].split(","))
        if jobs > gpus:
            raise InputError("--jobs", f"{jobs}: only {gpus} GPU(s) are visible (CUDA_VISIBLE_DEVICES); one run "
                                       "per GPU")


def resolve_executor(name: str) -> tuple[str, str]:
    """(executor, why). auto: inside a SLURM allocation, run locally on it; else SLURM only when a controller
    answers (sbatch on PATH is not enough: a login node whose controller is down, or a laptop with the Slurm
    client installed, would queue the runs nowhere); else local."""
    if name == "slurm":
        from ablations.executors.slurm import slurm_installed

        if not slurm_installed():  # refused here: no traceback from submitit, nothing written
            raise InputError("--executor", "slurm, but this machine has no SLURM client (sbatch is not on PATH): "
                                           "run it on the cluster's login node, or --executor local here")
    if name != "auto":
        return name, "--executor " + name
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        return "local", f"inside SLURM allocation {job}: the runs use it"
    from ablations.executors.slurm import controller_answers, slurm_installed

    if not slurm_installed():
        return "local", "no SLURM client on this machine"
    if controller_answers():
        return "slurm", "a SLURM controller answers; --executor local runs here instead"
    return "local", "the SLURM client is installed but no controller answers"


def slurm_settings(args: argparse.Namespace, plan: Plan):
    """The sweep's slurm: block with the command line on top, checked before anything is submitted."""
    from ablations.executors.slurm import SlurmSettings

    # KEY=VALUE, or a bare flag (--sbatch exclusive -> #SBATCH --exclusive)
    extra = {key: value if sep else True for key, sep, value in (item.partition("=") for item in args.sbatch)}
    cli = {name: getattr(args, name) for name in (
        "partition", "account", "qos", "constraint", "time_min", "nodes", "gpus_per_node", "tasks_per_node",
        "cpus_per_task", "mem_gb", "array_parallelism", "signal_delay_s", "max_num_timeout")}
    settings = SlurmSettings.from_mapping(plan.sweep.slurm or None, str(plan.sweep.path)).with_cli(**cli)
    if extra:
        settings = settings.with_cli(additional_parameters={**settings.additional_parameters, **extra})
    return settings


def submit_to_slurm(plans: list[Plan], todo: list[Launch], settings: dict, args: argparse.Namespace) -> int:
    """One job array per resource group (slurm.per_level gives cells their own time/memory/GPUs; sweeps with the
    same resources share arrays), under the run store's submission lock. If sbatch refuses, nothing is left
    behind: the run folders this launch created are removed (the code snapshot and submitit's files are removed
    by ablations.executors.slurm.submit) and the command exits 2 with sbatch's message."""
    from ablations.executors import slurm
    from ablations.executors.local import write_configs

    groups: dict[str, tuple] = {}
    for plan in plans:
        for group_settings, planned_runs in resource_groups([t.planned for t in todo if t.plan is plan],
                                                            settings[plan.sweep.path]):
            key = json.dumps(dataclasses.asdict(group_settings), sort_keys=True, default=str)
            groups.setdefault(key, (group_settings, []))[1].extend(planned_runs)
    store_dir = plans[0].experiment.store_dir
    created = store_dir.absolute()  # the topmost folder this launch creates, if any
    while not created.parent.exists():
        created = created.parent
    created_now = not created.exists()
    new_dirs = [t.planned.run_dir for t in todo if not t.planned.run_dir.exists()]
    job_ids: list[str] = []
    job_name = launch_job_name([plan.experiment for plan in plans])
    try:
        write_configs(todo)
        for group_settings, planned_runs in groups.values():
            job_ids += slurm.submit(store_dir, [p.run_dir for p in planned_runs], group_settings, job_name,
                                    retry_failed=args.retry_failed, force=args.force, num_workers=args.workers)
    except slurm.SubmissionError as err:
        for run_dir in new_dirs:  # folders this launch made for runs that never went out
            if not (run_dir / store.SLURM_JSON).exists():
                shutil.rmtree(run_dir, ignore_errors=True)
        if job_ids:  # an earlier resource group went out: say so, and list its runs as the sweeps'
            remember(plans)
            arrays = ", ".join(sorted({j.split("_")[0] for j in job_ids}))
            raise slurm.SubmissionError("sbatch", f"{err.message}; {len(job_ids)} run(s) of other resource groups "
                                                  f"were submitted (job arrays {arrays})") from None
        if created_now:  # nothing went out: leave no trace of this launch
            shutil.rmtree(created, ignore_errors=True)
        raise
    remember(plans)
    if not job_ids:
        print("nothing submitted: every pending run already has a queued or running job")
        return EXIT_OK
    arrays = sorted({j.split("_")[0] for j in job_ids})
    how = "one job array" if len(arrays) == 1 else f"{len(arrays)} job arrays (one per resource group)"
    print(f"submitted {len(job_ids)} run(s) as {how}: {', '.join(arrays)} (logs: {store_dir}/.submitit/)")
    print(f"status: {follow_up('ablations.status', args)}\ncancel: {follow_up('ablations.cancel', args)}")
    if not args.wait:
        return EXIT_OK
    return wait_for_jobs(plans, args)


def wait_for_jobs(plans: list[Plan], args: argparse.Namespace, poll_s: float = 5.0) -> int:
    """--wait: poll the cluster and the run folders until no run of the sweeps is queued or running."""
    from tqdm.auto import tqdm

    from ablations.executors import slurm

    active = {"pending", "running", "requeued"}
    run_dirs = [launch.planned.run_dir for launch in distinct_runs(plans)]
    store_dir = plans[0].experiment.store_dir
    with tqdm(total=len(run_dirs), desc=describe_launch(plans), unit="run", disable=args.no_progress) as bar:
        while True:
            states = [s.state for s in slurm.status(store_dir, run_dirs)]
            finished = sum(s in ("done", "failed", "cancelled") for s in states)
            bar.n = finished
            bar.set_postfix_str(", ".join(f"{states.count(s)} {s}" for s in sorted(set(states))))
            bar.refresh()
            if not any(s in active for s in states):
                break
            time.sleep(poll_s)
    failed = [s for s in slurm.status(store_dir, run_dirs) if s.state in ("failed", "cancelled")]
    for run in failed:
        print(f"  {run.state} {run.run_id}: {(run.error or '').splitlines()[-1:] or ''}")
    return EXIT_FAILED if failed else EXIT_OK


def describe_launch(plans: list[Plan]) -> str:
    return f"sweep {plans[0].sweep.name}" if len(plans) == 1 else f"{len(plans)} sweeps"


def launch_here(plans: list[Plan], todo: list[Launch], args: argparse.Namespace) -> int:
    from ablations.executors.local import run_local, write_configs

    write_configs(todo)
    remember(plans)
    report = run_local([t.planned for t in todo], describe_launch(plans), force=args.force,
                       retry_failed=args.retry_failed, progress=not args.no_progress, num_workers=args.workers,
                       jobs=args.jobs)
    if report.interrupted is not None:
        name = signal.Signals(report.interrupted).name
        print(f"\nsweep interrupted by {name}: {len(report.done)} run(s) finished; the run in flight saved a "
              f"checkpoint. Launch the same command again to resume.", file=sys.stderr)
        return EXIT_INTERRUPTED if report.interrupted == signal.SIGINT else 128 + report.interrupted
    print(f"\n{len(report.done)} run(s) finished, {len(report.failed)} failed, {len(report.skipped)} skipped")
    for run_id, reason in report.failed.items():
        print(f"  failed  {run_id}: {reason}")
    for run_id, why in report.skipped.items():
        print(f"  skipped {run_id}: {why}")
    tables = ("tables", "analysis.tables") if len(plans) == 1 else ("report", "analysis.report")
    print(f"runs: {plans[0].experiment.store_dir}/\nstatus: {follow_up('ablations.status', args)}\n"
          f"{tables[0]}: {follow_up(tables[1], args)}")
    return EXIT_FAILED if report.failed else EXIT_OK


def follow_up(module: str, args: argparse.Namespace) -> str:
    """The command line of `module` that is about the same runs: the sweeps and every selection flag given."""
    flags = [*(["--recipe", args.recipe] if args.recipe else []), *(x for s in args.sets for x in ("--set", s)),
             *(x for g in args.grids for x in ("--grid", g)), *(["--seeds", args.seeds] if args.seeds else []),
             *(["--data-root", args.data_root] if args.data_root else [])]
    if Path(args.results_root) != Path(DEFAULT_RESULTS_ROOT):
        flags += ["--results-root", str(args.results_root)]
    return shlex.join(["python", "-m", module, *map(str, args.sweeps), *flags])


if __name__ == "__main__":
    raise SystemExit(main())
