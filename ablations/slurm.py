"""Launching runs on SLURM through submitit: one job array per submission, one `RunJob` per array task.

    settings = SlurmSettings.from_mapping(sweep_yaml.get("slurm", {}), source="sweeps/table5.yaml")
    settings = settings.with_cli(partition="learnfair", time_min=600)      # None = not given
    job_ids = submit(sweep_dir, run_dirs, settings, job_name="table5")     # [] if nothing is left to run
    status(sweep_dir)   # one RunStatus per run folder: pending/running/requeued/done/failed/cancelled/new
    cancel(sweep_dir)   # scancel every job still pending or running

Nothing cluster-specific lives here: partition, account, QoS, constraint and any other sbatch option come
from the sweep file or the command line. The code is snapshotted at submission (a copy of the packages
rest/, ablations/, analysis/ in <sweep_dir>/.code/<hash>/, put first on the job's PYTHONPATH), so editing
the checkout while jobs wait in the queue cannot change them. submitit's files and the jobs' logs are in
<sweep_dir>/.submitit/. Each run folder's slurm.json says which job works on it (see ablations.job).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations import store
from ablations.config import bounded_repr, check_field, knob, rule_problem
from ablations.errors import InputError
from ablations.job import TRAINER, RunJob
from ablations.store import now, read_slurm_record, update_slurm_record
from ablations.store import record_slurm_event as record_event

PACKAGES = ("rest", "ablations", "analysis")
CODE_DIR = ".code"
SUBMITIT_DIR = ".submitit"

# sacct states -> what status() reports while the run is not done
PENDING, RUNNING, REQUEUED, DONE, FAILED, CANCELLED, NEW = (
    "pending", "running", "requeued", "done", "failed", "cancelled", "new")
ACTIVE_STATES = {
    "PENDING": PENDING, "CONFIGURING": RUNNING, "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING,
    "RESIZING": RUNNING, "SIGNALING": RUNNING, "STAGE_OUT": RUNNING,
    "REQUEUED": REQUEUED, "REQUEUE_HOLD": REQUEUED, "REQUEUE_FED": REQUEUED, "PREEMPTED": REQUEUED,
}


SlurmSettingsError = InputError  # one error type for every input (ablations.errors)

# A value that goes into an #SBATCH line of the job script: no newline, quote or shell metacharacter.
SBATCH_VALUE = dict(pattern=r"[A-Za-z0-9_.,:=+@%/-]{1,200}",
                    pattern_text="sbatch values use letters, digits and _ . , : = + @ % / - only (no spaces, "
                                 "quotes, newlines or shell characters), at most 200 characters")


@dataclass(frozen=True)
class SlurmSettings:
    """Resources and placement of each array task; None leaves the choice to the cluster's defaults."""

    partition: str | None = knob(None, **SBATCH_VALUE)
    account: str | None = knob(None, **SBATCH_VALUE)
    qos: str | None = knob(None, **SBATCH_VALUE)
    constraint: str | None = knob(None, **SBATCH_VALUE)
    time_min: int = knob(240, min=1)
    nodes: int = knob(1, min=1)
    gpus_per_node: int = knob(0, min=0)
    tasks_per_node: int = knob(1, min=1)  # > 1: torch.distributed, one process per task (one per GPU)
    cpus_per_task: int | None = knob(None, min=1)
    mem_gb: float | None = knob(None, gt=0.0)
    array_parallelism: int = knob(64, min=1)  # at most this many tasks of the array run at once
    signal_delay_s: int = knob(120, min=0)  # USR2 this long before the time limit: checkpoint and requeue
    max_num_timeout: int = knob(3, min=0)  # requeues after a time limit before the run is given up
    additional_parameters: dict[str, Any] = knob(factory=dict)  # any other sbatch option

    @classmethod
    def from_mapping(cls, data: dict | None, source: str) -> SlurmSettings:
        """Settings from a sweep file's `slurm:` mapping; unknown keys and bad values raise InputError."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InputError(source, "slurm", f"expected a mapping, got {type(data).__name__}")
        return cls()._replaced(data, source)

    def with_cli(self, **overrides: Any) -> SlurmSettings:
        """A copy with command-line values applied; a None value means "not given" and changes nothing."""
        return self._replaced({k: v for k, v in overrides.items() if v is not None}, "command line")

    def _replaced(self, values: dict, source: str) -> SlurmSettings:
        names = [f.name for f in dataclasses.fields(self)]
        checked = {}
        for key, value in values.items():
            if key not in names:
                raise InputError(source, f"slurm.{key}", f"unknown setting; allowed: {', '.join(names)}")
            if key == "additional_parameters":
                checked[key] = _check_sbatch_options(source, value)
            else:
                checked[key] = check_field(SlurmSettings, key, value, key=f"slurm.{key}", source=source)
        return dataclasses.replace(self, **checked)


SBATCH_KEY = r"[a-z][a-z0-9_-]{0,40}"


def _check_sbatch_options(source: str, value: Any) -> dict[str, Any]:
    """Extra sbatch options: option names and values that cannot break out of an #SBATCH line."""
    where = "slurm.additional_parameters"
    if not isinstance(value, dict):
        raise InputError(source, where, f"expected a mapping of sbatch option -> value, got {bounded_repr(value)}")
    for key, option in value.items():
        if not isinstance(key, str) or not re.fullmatch(SBATCH_KEY, key):
            raise InputError(source, f"{where}.{bounded_repr(key)}", "sbatch option names are lower-case letters, "
                                                                   "digits and '-' (e.g. exclusive, mail-type)")
        if isinstance(option, bool):
            continue
        if not isinstance(option, str | int | float):
            raise InputError(source, f"{where}.{key}", f"expected a string, number or true, got "
                                                       f"{type(option).__name__}")
        problem = rule_problem(str(option), SBATCH_VALUE)
        if problem:
            raise InputError(source, f"{where}.{key}", problem)
    return dict(value)


def slurm_installed() -> bool:
    return shutil.which("sbatch") is not None


def controller_answers(timeout_s: float = 5.0) -> bool:
    """Whether a SLURM controller answers (sinfo lists a partition) within `timeout_s`."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def make_executor(folder: Path, settings: SlurmSettings, job_name: str, *, code_dir: Path | None = None):
    """A submitit executor for SLURM; with `code_dir`, jobs import the project's packages from there first."""
    import submitit

    python = None
    setup = []
    if code_dir is not None:
        # -P: the job's working folder (often the checkout) must not come before the snapshot on sys.path
        python = f"{shlex.quote(sys.executable)} -P"
        setup.append(f"export PYTHONPATH={shlex.quote(str(code_dir))}${{PYTHONPATH:+:$PYTHONPATH}}")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=settings.max_num_timeout,
                                     slurm_python=python)
    params: dict[str, Any] = dict(
        name=job_name, timeout_min=settings.time_min, nodes=settings.nodes, tasks_per_node=settings.tasks_per_node,
        slurm_array_parallelism=settings.array_parallelism, slurm_signal_delay_s=settings.signal_delay_s,
        slurm_additional_parameters=dict(settings.additional_parameters), slurm_setup=setup,
    )
    optional = dict(gpus_per_node=settings.gpus_per_node or None, cpus_per_task=settings.cpus_per_task,
                    mem_gb=settings.mem_gb, slurm_partition=settings.partition, slurm_account=settings.account,
                    slurm_qos=settings.qos, slurm_constraint=settings.constraint)
    params.update({k: v for k, v in optional.items() if v is not None})
    executor.update_parameters(**params)
    return executor


# ---- code snapshot -----------------------------------------------------------------------------------------------
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def snapshot_code(sweep_dir: Path, root: Path | None = None) -> Path:
    """Copy the project's packages to <sweep_dir>/.code/<hash of their files>/ (reused if the same) and return it."""
    root = Path(root or project_root())
    files = sorted(
        path.relative_to(root)
        for package in PACKAGES if (root / package).is_dir()
        for path in (root / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    digest = hashlib.sha256()
    for rel in files:
        digest.update(f"{rel}\0".encode() + (root / rel).read_bytes() + b"\0")
    dest = Path(sweep_dir) / CODE_DIR / digest.hexdigest()[:12]
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tmp / rel)
        os.rename(tmp, dest)  # atomic; fails if another submission created it meanwhile (same content)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():
            raise
    return dest


# ---- submission ----------------------------------------------------------------------------------------------------
def submit(sweep_dir: Path, run_dirs: list[Path], settings: SlurmSettings, job_name: str, snapshot: bool = True,
           *, retry_failed: bool = False, force: bool = False, trainer: str = TRAINER,
           num_workers: int | None = None) -> list[str]:
    """Submit one job array with a task per run that still needs one; return the job ids ("<array>_<index>").

    Skipped: runs that are done (unless `force`), failed (unless `retry_failed` or `force`), locked by a running
    job, or whose latest job is still pending/running/requeued. Every run folder must hold its config.json
    already. Each task is a RunJob, which claims its folder and (with `force`) archives it under the lock.
    """
    sweep_dir = Path(sweep_dir).absolute()
    run_dirs = [Path(d).absolute() for d in run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / store.CONFIG).is_file():
            raise FileNotFoundError(f"{run_dir / store.CONFIG}: write the run's config before submitting it")
    active = _active_jobs(run_dirs)
    todo = []
    for run_dir in run_dirs:
        state = store.run_state(run_dir).state
        if (state == store.DONE and not force) or (state == store.FAILED and not (retry_failed or force)):
            continue
        if run_dir in active or store.is_locked(run_dir):
            continue
        todo.append(run_dir)
    if not todo:
        return []
    code_dir = snapshot_code(sweep_dir) if snapshot else project_root()
    executor = make_executor(sweep_dir / SUBMITIT_DIR, settings, job_name, code_dir=code_dir)
    jobs = executor.submit_array([RunJob(d, force=force, retry_failed=retry_failed, trainer=trainer,
                                         num_workers=num_workers) for d in todo])
    submitted_at = now()
    for run_dir, job in zip(todo, jobs, strict=True):
        array_id, _, index = job.job_id.partition("_")

        def change(record: dict, job_id: str = job.job_id, array_id: str = array_id, index: str = index) -> None:
            record.update(job_id=job_id, array_job_id=array_id, array_index=int(index) if index else None,
                          submitted_at=submitted_at, code=str(code_dir), job_name=job_name)
            record.setdefault("history", []).append({"job_id": job_id, "state": "SUBMITTED", "at": submitted_at})

        update_slurm_record(run_dir, change)
    return [job.job_id for job in jobs]


def _job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state of each job id ("CANCELLED by 0" -> "CANCELLED"): squeue for the jobs the controller holds
    (it knows a job the moment it is submitted), sacct for those that ended. Ids neither knows are left out."""
    if not job_ids:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    live = {}
    for line in _run(["squeue", "--me", "-h", "-r", "-o", "%i|%T"]).splitlines():
        job_id, _, state = line.partition("|")
        live[job_id.strip()] = state.strip()
    ended = [j for j in job_ids if j not in live]
    info = {}
    if ended:
        command = ["sacct", "-X", "--parsable2", "-o", "JobID,State"]
        for array_id in sorted({j.split("_")[0] for j in ended}):
            command += ["-j", array_id]
        info = SlurmInfoWatcher().read_info(_run(command))  # expands array ranges such as 12_[3-5%2]
    states = {j: info[j]["State"] for j in ended if j in info}
    states.update({j: live[j] for j in job_ids if j in live})
    return {j: state.split()[0] for j, state in states.items() if state}


def _run(command: list[str]) -> str:
    """stdout of a SLURM client command; "" if it fails (status is then read from the run folders alone)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _active_jobs(run_dirs: list[Path]) -> set[Path]:
    latest = {d: r["job_id"] for d in run_dirs if (r := read_slurm_record(d)) and r.get("job_id")}
    states = _job_states(list(latest.values()))
    return {d for d, job_id in latest.items() if states.get(job_id, "") in ACTIVE_STATES}


# ---- status and cancel -------------------------------------------------------------------------------------------
@dataclass
class RunStatus:
    run_id: str
    run_dir: Path
    state: str  # pending / running / requeued / done / failed / cancelled / new (never submitted)
    job_id: str | None = None
    slurm_state: str | None = None  # as squeue/sacct say, e.g. "RUNNING", "CANCELLED"
    epochs_done: int = 0
    error: str | None = None  # for failed and cancelled runs: the tail of error.json or of the job's stderr


def run_dirs_of(sweep_dir: Path) -> list[Path]:
    return store.run_dirs_in(sweep_dir)


def status(sweep_dir: Path, run_dirs: list[Path] | None = None) -> list[RunStatus]:
    """Every run folder of the sweep (or those given: one experiment's), its state combined from squeue/sacct
    and the folder's own files."""
    sweep_dir = Path(sweep_dir).absolute()
    run_dirs = [Path(d).absolute() for d in run_dirs if Path(d).is_dir()] if run_dirs is not None \
        else run_dirs_of(sweep_dir)
    records = {d: read_slurm_record(d) or {} for d in run_dirs}
    states = _job_states([r["job_id"] for r in records.values() if r.get("job_id")])
    out = []
    for run_dir in run_dirs:
        record = records[run_dir]
        job_id = record.get("job_id")
        slurm_state = states.get(job_id) if job_id else None
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
            row.state, row.error = FAILED, _error_tail(run_dir, sweep_dir, job_id)
        elif slurm_state == "CANCELLED":
            row.state, row.error = CANCELLED, _error_tail(run_dir, sweep_dir, job_id)
        elif slurm_state is not None:  # ended (FAILED, TIMEOUT, OUT_OF_MEMORY, COMPLETED...) without a result
            row.state, row.error = FAILED, f"{slurm_state}: " + (_error_tail(run_dir, sweep_dir, job_id) or "")
        elif job_id:  # submitted, but neither squeue nor sacct answers for it
            row.state = RUNNING if store.is_locked(run_dir) else PENDING
        out.append(row)
    return out


def _error_tail(run_dir: Path, sweep_dir: Path, job_id: str | None, lines: int = 15) -> str | None:
    error = store.read_error(run_dir)
    if error is not None:
        trace = str(error.get("traceback", "")).rstrip().splitlines()[-lines:]
        return "\n".join([str(error.get("reason", "unknown error")), *trace]).strip()
    if job_id:
        from submitit.core.utils import JobPaths

        stderr = JobPaths(sweep_dir / SUBMITIT_DIR, job_id=job_id).stderr
        if stderr.is_file():
            return "\n".join(stderr.read_text(errors="replace").rstrip().splitlines()[-lines:]) or None
    return None


def cancel(sweep_dir: Path, run_dirs: list[Path] | None = None) -> list[str]:
    """scancel the job of every run (of the sweep, or those given) that is still pending, running or requeued;
    return the ids cancelled."""
    rows = [r for r in status(sweep_dir, run_dirs) if r.state in (PENDING, RUNNING, REQUEUED) and r.job_id]
    if not rows:
        return []
    subprocess.run(["scancel", *[r.job_id for r in rows]], check=True, timeout=60)
    for row in rows:
        record_event(row.run_dir, row.job_id, "CANCELLED")
    return [r.job_id for r in rows]
