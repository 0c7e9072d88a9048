"""The local executor: write each pending run's config.json, then run each run's `RunJob` on this machine.

With one job at a time (the default) every RunJob runs in this process, one after another. With `--jobs N`
they run N at a time, each in a worker process of its own (torch threads split between them, one GPU each
where there are GPUs). Either way the RunJob claims its folder, skips a run found done, archives on --force
and trains: the same object the SLURM executor submits, so both executors behave alike by construction.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ablations import store
from ablations.executors.job import ALREADY_DONE, FAILED_EARLIER, JOB_CPUS, Outcome, RunJob
from ablations.executors.signals import OnSignals
from ablations.plan import Launch, PlannedRun

log = logging.getLogger("ablations")


def write_configs(launches: Iterable[Launch]) -> None:
    """config.json for every run to launch, with the meta of the sweep that lists it first (unchanged files are
    left as they are; a run another launch made keeps its meta: store.write_config)."""
    for launch in launches:
        store.write_config(launch.planned.run_dir, launch.planned.run.config, launch.plan.meta(launch.planned.run))


def label(planned: PlannedRun) -> str:
    """How the launch's report names a run: its cell and seed in this sweep, and its folder."""
    return f"{planned.run.cell.label} seed {planned.run.seed} ({planned.run_dir.name})"


@dataclass
class LaunchReport:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why (done meanwhile, locked)
    interrupted: int | None = None  # the signal that stopped the sweep


def record(report: LaunchReport, run_id: str, run_dir: Path, outcome: Outcome | None = None,
           error: BaseException | None = None) -> None:
    """File what a RunJob did (or raised) under `run_id` (the run's label)."""
    if error is None:
        assert outcome is not None
        if outcome.status == ALREADY_DONE:
            report.skipped[run_id] = "finished by another launch"
        elif outcome.status == FAILED_EARLIER:
            report.skipped[run_id] = "failed in another launch (use --retry-failed)"
        else:
            report.done.append(run_id)
    elif isinstance(error, store.RunLocked):
        report.skipped[run_id] = "running in another launch"
    elif type(error).__name__ == "Preempted":
        report.skipped[run_id] = "stopped by a signal; checkpoint saved, relaunch to resume"
    else:  # the run wrote error.json itself; the sweep goes on
        error_file = store.read_error(run_dir) or {}
        reason = error_file.get("reason") or store.failure_reason(error)
        report.failed[run_id] = str(reason)
        log.error("%s failed: %s", run_id, reason)


def run_local(runs: list[PlannedRun], name: str, *, force: bool = False, retry_failed: bool = False,
              progress: bool = True, num_workers: int | None = None, jobs: int = 1) -> LaunchReport:
    """Run `runs` on this machine, `jobs` at a time; a failing run does not stop the others.

    A signal (Ctrl-C, SIGTERM) stops the sweep: the runs in flight save a checkpoint, and the report says
    which signal it was (`report.interrupted`).
    """
    from tqdm.auto import tqdm

    report = LaunchReport()
    bar = tqdm(total=len(runs), desc=name, unit="run", disable=not progress, position=0)
    try:
        if jobs <= 1:
            _run_in_process(runs, report, bar, force, retry_failed, progress, num_workers)
        else:
            _run_in_workers(runs, report, bar, force, retry_failed, num_workers, jobs)
    finally:
        bar.close()
    return report


def _run_in_process(runs, report, bar, force, retry_failed, progress, num_workers) -> None:
    for planned in runs:
        bar.set_postfix_str(planned.run.cell.label)
        job = RunJob(planned.run_dir, force=force, retry_failed=retry_failed, num_workers=num_workers,
                     progress=progress)
        try:
            record(report, label(planned), planned.run_dir, job.run())
        except Exception as err:
            record(report, label(planned), planned.run_dir, error=err)
            received = getattr(err, "signal", None)
            if received is not None:
                report.interrupted = received
                return
        bar.update()


# ---- N at a time ---------------------------------------------------------------------------------------------------
def _worker_init(slots, pids, threads: int) -> None:
    """A worker process: its share of the CPU threads and, where there are GPUs, a GPU of its own."""
    slot = slots.get()
    pids[slot] = os.getpid()  # the launcher relays a stop to its workers as SIGUSR1 (checkpoint, then stop)
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None or _gpu_count() > 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(_gpu_count())]
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[slot % len(devices)]
    import torch

    torch.set_num_threads(threads)
    os.environ[JOB_CPUS] = str(threads)  # the data-loading workers' default (ablations.executors.job.default_workers)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _run_job_in_worker(job: RunJob) -> tuple[Outcome | None, BaseException | None]:
    """A worker's task; the stop signal arrives as SIGUSR1, handled by the RunJob like any local signal."""
    try:
        return job.run(), None
    except Exception as err:  # sent back to the launcher, which files it
        return None, err


def _run_in_workers(runs, report, bar, force, retry_failed, num_workers, jobs) -> None:
    context = multiprocessing.get_context("spawn")  # CUDA and threads do not survive fork
    manager = context.Manager()
    slots, pids = manager.Queue(), manager.dict()
    for i in range(jobs):
        slots.put(i)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    pending = list(runs)
    stop = OnSignals((signal.SIGINT, signal.SIGTERM), raise_stopped)
    with stop, manager, ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                                            initargs=(slots, pids, threads)) as pool:
        running: dict[Future, PlannedRun] = {}
        try:
            while pending or running:
                while pending and len(running) < jobs and report.interrupted is None:
                    planned = pending.pop(0)
                    job = RunJob(planned.run_dir, force=force, retry_failed=retry_failed, num_workers=num_workers)
                    running[pool.submit(_run_job_in_worker, job)] = planned
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    planned = running.pop(future)
                    outcome, error = future.result()
                    record(report, label(planned), planned.run_dir, outcome, error)
                    bar.update()
        except Stopped as stopped:
            report.interrupted = stopped.signum
            for pid in pids.values():  # each worker saves a checkpoint and stops
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
            for future, planned in running.items():
                outcome, error = future.result()
                record(report, label(planned), planned.run_dir, outcome, error)


class Stopped(Exception):
    """Ctrl-C or SIGTERM reached the launcher while workers ran (the workers are told to stop)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def raise_stopped(signum: int, again: bool) -> None:
    raise Stopped(signum)
