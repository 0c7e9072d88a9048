"""What the SLURM controller says: whether it answers, and the state of job ids (squeue for the jobs it holds,
sacct for those that ended). Job ids read from files are checked to look like SLURM's before they reach a
command line.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ablations.store import read_slurm_record

# sacct states -> what status() reports while the run is not done
PENDING, RUNNING, REQUEUED, DONE, FAILED, CANCELLED, NEW = (
    "pending", "running", "requeued", "done", "failed", "cancelled", "new")
ACTIVE_STATES = {
    "PENDING": PENDING, "CONFIGURING": RUNNING, "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING,
    "RESIZING": RUNNING, "SIGNALING": RUNNING, "STAGE_OUT": RUNNING,
    "REQUEUED": REQUEUED, "REQUEUE_HOLD": REQUEUED, "REQUEUE_FED": REQUEUED, "PREEMPTED": REQUEUED,
}
CANCELLABLE_STATES = set(ACTIVE_STATES) - {"COMPLETING"}  # a completing job has ended its work
JOB_ID = re.compile(r"[0-9]{1,12}(_[0-9]{1,9})?")  # what sbatch gives: "123" or "123_4"


JOB_STATE = re.compile(r"[A-Z_]{1,40}")  # squeue's state names (PENDING, RUNNING, REQUEUE_HOLD...)


def valid_job_id(value: Any) -> str | None:
    """`value` if it is a SLURM job id ("123", "123_4"), else None: an "id" read from a run file such as
    "--user=alice" must never reach scancel or sacct as an option."""
    return value if isinstance(value, str) and JOB_ID.fullmatch(value) else None


def job_ids_of(record: dict) -> list[str]:
    """Every valid job id a run's slurm.json names (latest, all submitted, history), oldest first, no repeats."""
    ids = [*(record.get("job_ids") or []), *(e.get("job_id") for e in record.get("history") or []
                                               if isinstance(e, dict)), record.get("job_id")]
    return list(dict.fromkeys(i for i in ids if valid_job_id(i)))


def job_order(job_id: str) -> tuple[int, ...]:
    """A valid job id as numbers: later submissions (and array indices) sort after earlier ones."""
    return tuple(int(part) for part in job_id.split("_"))


def slurm_installed() -> bool:
    return shutil.which("sbatch") is not None


def controller_answers(timeout_s: float = 5.0) -> bool:
    """Whether a SLURM controller answers (sinfo lists a partition) within `timeout_s`."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and bool(out.stdout.strip())


def job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state of each job id ("CANCELLED by 0" -> "CANCELLED"): squeue for the jobs the controller holds
    (it knows a job the moment it is submitted), sacct for those that ended. Ids neither knows are left out."""
    job_ids = [j for j in job_ids if valid_job_id(j)]
    if not job_ids:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    live = live_jobs() or {}
    ended = [j for j in job_ids if j not in live]
    info = {}
    if ended:
        command = ["sacct", "-X", "--parsable2", "-o", "JobID,State"]
        for array_id in sorted({j.split("_")[0] for j in ended}):
            command += ["-j", array_id]
        info = SlurmInfoWatcher().read_info(client_output(command))  # expands array ranges such as 12_[3-5%2]
    states = {j: info[j]["State"] for j in ended if j in info}
    states.update({j: live[j] for j in job_ids if j in live})
    return {j: state.split()[0] for j, state in states.items() if state}


def live_jobs() -> dict[str, str] | None:
    """job id -> state of the user's jobs that the controller holds (squeue: pending, running, requeued...;
    array tasks one per line), or None if squeue fails."""
    try:
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    live = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        live[job_id.strip()] = state.strip()
    return live


def client_output(command: list[str]) -> str:
    """stdout of a SLURM client command; "" if it fails (status is then read from the run folders alone)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def active_jobs(run_dirs: list[Path]) -> set[Path]:
    """The runs that any job ever submitted for them is still pending, running or requeued."""
    ids = {d: job_ids_of(r) for d in run_dirs if (r := read_slurm_record(d))}
    states = job_states([j for js in ids.values() for j in js])
    return {d for d, js in ids.items() if any(states.get(j, "") in ACTIVE_STATES for j in js)}
