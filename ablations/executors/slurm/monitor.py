"""Status and cancel: each run's state combined from the queue and its folder's files, and scancel of the
jobs still pending or running.

    status(store_dir)   # one RunStatus per run folder: pending/running/requeued/done/failed/cancelled/new
    cancel(store_dir)   # scancel every job still pending or running
    named = jobs_named(store_dir, experiment.job_name(), run_dirs)  # also the jobs no file recorded
    status(store_dir, run_dirs, named); cancel(store_dir, run_dirs, named)
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ablations import store
from ablations.executors.slurm.named import NamedJobs
from ablations.executors.slurm.queue import (
    ACTIVE_STATES,
    CANCELLABLE_STATES,
    CANCELLED,
    DONE,
    FAILED,
    NEW,
    PENDING,
    REQUEUED,
    RUNNING,
    job_ids_of,
    job_order,
    job_states,
    live_jobs,
    valid_job_id,
)
from ablations.executors.slurm.submit import SUBMISSIONS, SUBMITIT_DIR
from ablations.store import read_slurm_record, update_slurm_record
from ablations.store import record_slurm_event as record_event


def submitted_job_ids(store_dir: Path, run_dirs: list[Path] | None = None) -> dict[str, Path]:
    """job id -> run folder, for every job the store's submissions log names (valid ids only; of `run_dirs`
    only, if given)."""
    wanted = {str(Path(d).absolute()) for d in run_dirs} if run_dirs is not None else None
    out: dict[str, Path] = {}
    for row in store.read_metrics(Path(store_dir) / SUBMITIT_DIR / SUBMISSIONS).rows:
        ids, dirs = row.get("job_ids"), row.get("run_dirs")
        if not isinstance(ids, list) or not isinstance(dirs, list) or len(ids) != len(dirs):
            continue
        for job_id, run_dir in zip(ids, dirs, strict=True):
            if valid_job_id(job_id) and isinstance(run_dir, str) and (wanted is None or run_dir in wanted):
                out[job_id] = Path(run_dir)
    return out


@dataclass
class RunStatus:
    run_id: str
    run_dir: Path
    state: str  # pending / running / requeued / done / failed / cancelled / new (never submitted)
    job_id: str | None = None
    slurm_state: str | None = None  # as squeue/sacct say, e.g. "RUNNING", "CANCELLED"
    epochs_done: int = 0
    error: str | None = None  # for failed and cancelled runs: the tail of error.json or of the job's stderr


def status(store_dir: Path, run_dirs: list[Path] | None = None, named: NamedJobs | None = None) -> list[RunStatus]:
    """Every run folder of the store (or those given: one experiment's), its state combined from squeue/sacct
    and the folder's own files. `named` (jobs_named: the experiment's live jobs by job name) supplies the job of
    a run whose recorded job is not live, or that has no record at all (a submission that died before writing
    it)."""
    store_dir = Path(store_dir).absolute()
    run_dirs = [Path(d).absolute() for d in run_dirs if Path(d).is_dir()] if run_dirs is not None \
        else store.run_dirs_in(store_dir)
    records = {d: read_slurm_record(d) or {} for d in run_dirs}
    states = job_states([r["job_id"] for r in records.values() if r.get("job_id")])
    out = []
    for run_dir in run_dirs:
        record = records[run_dir]
        job_id = valid_job_id(record.get("job_id"))
        slurm_state = states.get(job_id) if job_id else None
        unrecorded = named.live_job(run_dir) if named is not None and slurm_state not in ACTIVE_STATES else None
        if unrecorded is not None:
            job_id, slurm_state = unrecorded
        files = store.run_state(run_dir)
        row = RunStatus(run_dir.name, run_dir, NEW, job_id, slurm_state, files.epochs_done)
        if files.state == store.DONE:
            row.state = DONE
        elif slurm_state in ACTIVE_STATES:
            row.state = ACTIVE_STATES[slurm_state]
            started = any(e.get("job_id") == job_id and e.get("state") == "RUNNING" for e in record.get("history", []))
            if row.state == PENDING and started:
                row.state = REQUEUED  # waiting to start again after a requeue
        elif files.state == store.FAILED:
            row.state, row.error = FAILED, _error_tail(run_dir, store_dir, job_id)
        elif slurm_state == "CANCELLED":
            row.state, row.error = CANCELLED, _error_tail(run_dir, store_dir, job_id)
        elif slurm_state is not None:  # ended (FAILED, TIMEOUT, OUT_OF_MEMORY, COMPLETED...) without a result
            row.state, row.error = FAILED, f"{slurm_state}: " + (_error_tail(run_dir, store_dir, job_id) or "")
        elif job_id:  # submitted, but neither squeue nor sacct answers for it
            row.state = RUNNING if store.is_locked(run_dir) else PENDING
        out.append(row)
    return out


def _error_tail(run_dir: Path, store_dir: Path, job_id: str | None, lines: int = 15) -> str | None:
    """What the run's failure says: error.json's reason and traceback tail, else the job log's tail with the
    real reason (the last Python exception, not srun's "exited with exit code 1") as its last line."""
    error = store.read_error(run_dir)
    if error is not None:
        trace = str(error.get("traceback", "")).rstrip().splitlines()[-lines:]
        return "\n".join([str(error.get("reason", "unknown error")), *trace]).strip()
    if job_id:
        from submitit.core.utils import JobPaths

        for folder in dict.fromkeys((store_dir, run_dir.parent)):  # the latter: submitted by an earlier layout
            stderr = JobPaths(folder / SUBMITIT_DIR, job_id=job_id).stderr
            if stderr.is_file():
                text = store.read_tail(stderr)
                tail = text.rstrip().splitlines()[-lines:]
                reason = failure_reason(text)
                return "\n".join([*tail, reason] if reason and (not tail or tail[-1] != reason) else tail) or None
    return None


LAUNCHER_LINE = re.compile(r"^(srun|slurmstepd|submitit)[:\s]|^\s*$")
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Failed|Preempted)\b.*")


def failure_reason(log_text: str) -> str | None:
    """The real reason a job failed, from its log: the exception line ending the last traceback, else the last
    line that is not srun's or slurmstepd's; None for an empty log."""
    lines = log_text.splitlines()
    last_traceback = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")),
                         default=None)
    if last_traceback is not None:
        found = [line for line in lines[last_traceback + 1:] if EXCEPTION_LINE.match(line)]
        if found:
            return found[-1].strip()[:500]
    for line in reversed(lines):
        if not LAUNCHER_LINE.match(line):
            return line.strip()[:500]
    return None


def cancel(store_dir: Path, run_dirs: list[Path] | None = None, named: NamedJobs | None = None, *,
           unknown_runs: bool = False) -> list[str]:
    """scancel every job of the runs (of the store, or those given) that is still pending, running or requeued:
    every job id ever submitted for them (slurm.json's job_ids and history), those the store's submissions
    log names for them (a job whose run record was lost or never written), and those `named` (jobs_named: the
    experiment's live jobs by job name) finds for them though no file recorded their ids; with `unknown_runs`
    also the experiment's jobs whose run cannot be told. Return the ids cancelled."""
    store_dir = Path(store_dir).absolute()
    dirs = [Path(d).absolute() for d in run_dirs if Path(d).is_dir()] if run_dirs is not None \
        else store.run_dirs_in(store_dir)
    owner: dict[str, Path] = {}
    for run_dir in dirs:
        for job_id in job_ids_of(read_slurm_record(run_dir) or {}):
            owner[job_id] = run_dir
    for job_id, run_dir in submitted_job_ids(store_dir, run_dirs).items():
        owner.setdefault(job_id, run_dir)
    unrecorded = set()
    if named is not None:
        for run_dir, jobs in named.by_run.items():
            for job_id in jobs:
                if run_dir in dirs and job_id not in owner:
                    owner[job_id] = run_dir
                    unrecorded.add(job_id)
    # squeue alone says which jobs are live: sacct lags behind, and would have a job cancelled a moment ago
    # still pending (sacct only if squeue fails)
    live = live_jobs()
    states = live if live is not None else job_states(list(owner))
    # a job whose run is done, or that SLURM is already ending (COMPLETING), is exiting on its own: --wait
    # returns when the result is written, while the job may still be in squeue for a moment
    done = {d for d in set(owner.values()) if store.run_state(d).state == store.DONE}
    active = [j for j in owner if states.get(j, "") in CANCELLABLE_STATES and owner[j] not in done]
    if named is not None and unknown_runs:
        active += [j for j, state in named.unknown.items() if state in CANCELLABLE_STATES and j not in owner]
    if not active:
        return []
    subprocess.run(["scancel", *active], check=True, timeout=60)
    for job_id in active:
        run_dir = owner.get(job_id)
        if run_dir is not None and run_dir.is_dir():
            if job_id in unrecorded:  # the run's record now names the job its submission never recorded
                _record_job(run_dir, job_id, named.job_name)
            record_event(run_dir, job_id, "CANCELLED")
    return active


def _record_job(run_dir: Path, job_id: str, job_name: str) -> None:
    """Put `job_id` in the run's slurm.json as its latest job, as submit() records one."""
    array_id, _, index = job_id.partition("_")

    def change(record: dict) -> None:
        earlier = job_ids_of(record)
        latest = valid_job_id(record.get("job_id"))
        if latest is None or job_order(job_id) > job_order(latest):
            record.update(job_id=job_id, array_job_id=array_id, array_index=int(index) if index else None,
                          job_name=job_name)
        record["job_ids"] = list(dict.fromkeys([*earlier, job_id]))

    update_slurm_record(run_dir, change)
