"""Submission: one submitit job array per call, one `RunJob` per array task, the code snapshotted first.

The code is snapshotted at submission (a copy of the packages rest/, ablations/, analysis/ and rest_knobs.py in
<store_dir>/.code/<hash>/, put first on the job's PYTHONPATH), so editing the checkout while jobs wait in the
queue cannot change them. submitit's files and the jobs' logs are in <store_dir>/.submitit/; each run
folder's slurm.json says which job works on it, and .submitit/submissions.jsonl every job id of every
submission.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ablations import store
from ablations.executors.job import TRAINER, RunJob
from ablations.executors.slurm.queue import active_jobs, job_ids_of
from ablations.executors.slurm.settings import SBATCH_VALUE, SlurmSettings
from ablations.provenance import git_state, project_root, provenance_exports
from ablations.spec.errors import InputError
from ablations.store import now, update_slurm_record

PACKAGES = ("rest", "ablations", "analysis")  # what a job imports: copied whole
MODULES = ("rest_knobs.py",)  # top-level modules the packages import
CODE_DIR = ".code"
SUBMITIT_DIR = ".submitit"


def make_executor(folder: Path, settings: SlurmSettings, job_name: str, *, code_dir: Path | None = None):
    """A submitit executor for SLURM; with `code_dir`, jobs import the project's packages from there first."""
    import submitit

    python = None
    setup = []
    if code_dir is not None:
        # -P: the job's working folder (often the checkout) must not come before the snapshot on sys.path
        python = f"{shlex.quote(sys.executable)} -P"
        setup.append(f"export PYTHONPATH={shlex.quote(str(code_dir))}${{PYTHONPATH:+:$PYTHONPATH}}")
        setup.append(provenance_exports(git_state(project_root())))
    setup.extend(settings.setup)
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
def snapshot_code(store_dir: Path, root: Path | None = None) -> Path:
    """Copy the project's packages to <store_dir>/.code/<hash of their files>/ (reused if the same) and return it.

    The snapshot is readable by the group (folders 0755, files 0644), like the run folders. It has no .git: the
    jobs learn the checkout's commit and dirty state from make_executor (ablations.provenance).
    """
    root = Path(root or project_root())
    files = sorted(
        path.relative_to(root)
        for package in PACKAGES if (root / package).is_dir()
        for path in (root / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ) + [Path(name) for name in MODULES if (root / name).is_file()]
    digest = hashlib.sha256()
    for rel in files:
        digest.update(f"{rel}\0".encode() + (root / rel).read_bytes() + b"\0")
    dest = Path(store_dir) / CODE_DIR / digest.hexdigest()[:12]  # jobs run this code: never through a planted link
    store.refuse_link(dest, 3)
    if dest.is_dir():
        return dest
    store.real_dir(dest.parent, 2)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tmp / rel)
        for folder, _, names in os.walk(tmp):
            os.chmod(folder, 0o755)  # mkdtemp makes 0700: collaborators could not read what a job ran
            for name in names:
                os.chmod(os.path.join(folder, name), store.FILE_MODE)
        os.rename(tmp, dest)  # atomic; fails if another submission created it meanwhile (same content)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():
            raise
    return dest


# ---- submission ----------------------------------------------------------------------------------------------------
SUBMIT_LOCK = ".submit.lock"
SUBMISSIONS = "submissions.jsonl"  # in .submitit/: every submission, its array and job ids, whatever happens next
class SubmissionError(InputError):
    """sbatch refused the submission (invalid partition, account, time limit...): nothing was left behind."""


@contextlib.contextmanager
def submission_lock(store_dir: Path):
    """One submission to a run store at a time (flock on <store_dir>/.submit.lock, waited for): "check existing
    jobs, submit, record ids" is atomic, so two submissions at the same instant give one set of jobs."""
    store.real_dir(store_dir, 1)
    fd = store.open_fd(Path(store_dir) / SUBMIT_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def submit(store_dir: Path, run_dirs: list[Path], settings: SlurmSettings, job_name: str, snapshot: bool = True,
           *, retry_failed: bool = False, force: bool = False, trainer: str = TRAINER,
           num_workers: int | None = None) -> list[str]:
    """Submit one job array with a task per run that still needs one; return the job ids ("<array>_<index>").

    Skipped: runs that are done (unless `force`), failed (unless `retry_failed` or `force`), locked by a running
    job, or with a job still pending/running/requeued (a corrupt run is refused by its RunJob). Every run folder
    must hold its config.json already. Each task is a RunJob, which claims its folder and (with `force`)
    archives it under the lock.
    Holds the store's submission lock throughout. SubmissionError (sbatch's message) if sbatch refuses: the
    code snapshot and submitit's files made for this submission are removed.
    """
    store_dir = Path(store_dir).absolute()
    run_dirs = [Path(d).absolute() for d in run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / store.CONFIG).is_file():
            raise FileNotFoundError(f"{run_dir / store.CONFIG}: write the run's config before submitting it")
    if not re.fullmatch(SBATCH_VALUE["pattern"], job_name):
        raise InputError("job name", job_name[:80], SBATCH_VALUE["pattern_text"])
    with submission_lock(store_dir):
        active = active_jobs(run_dirs)
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
        folder = store_dir / SUBMITIT_DIR
        store.refuse_link(folder, 2)  # jobs unpickle what submitit writes there: never through a planted link
        before = set(os.listdir(folder)) if folder.is_dir() else None
        code_existed = snapshot and (store_dir / CODE_DIR).is_dir()
        code_before = set(os.listdir(store_dir / CODE_DIR)) if code_existed else set()
        code_dir = snapshot_code(store_dir) if snapshot else project_root()
        executor = make_executor(folder, settings, job_name, code_dir=code_dir)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's stderr; it is in `err`
                jobs = executor.submit_array([RunJob(d, force=force, retry_failed=retry_failed, trainer=trainer,
                                                     num_workers=num_workers) for d in todo])
        except Exception as err:  # submitit: FailedJobError with sbatch's stderr, FailedSubmissionError
            _remove_new(folder, before)
            if snapshot:
                _remove_new(store_dir / CODE_DIR, code_before if code_existed else None)
            message = " ".join(str(err).split())
            raise SubmissionError("sbatch", f"the submission was refused (nothing of this job array was submitted): "
                                            f"{message[:1500]}") from None
        submitted_at = now()
        store.append_jsonl(folder / SUBMISSIONS, dict(
            at=submitted_at, job_name=job_name, array_job_id=jobs[0].job_id.partition("_")[0],
            job_ids=[job.job_id for job in jobs], run_dirs=[str(d) for d in todo]))
        for run_dir, job in zip(todo, jobs, strict=True):
            array_id, _, index = job.job_id.partition("_")

            def change(record: dict, job_id: str = job.job_id, array_id: str = array_id, index: str = index) -> None:
                earlier = job_ids_of(record)
                record.update(job_id=job_id, array_job_id=array_id, array_index=int(index) if index else None,
                              submitted_at=submitted_at, code=str(code_dir), job_name=job_name)
                record["job_ids"] = list(dict.fromkeys([*earlier, job_id]))  # every job ever submitted for the run
                record.setdefault("history", []).append({"job_id": job_id, "state": "SUBMITTED", "at": submitted_at})

            update_slurm_record(run_dir, change)
    return [job.job_id for job in jobs]


def _remove_new(folder: Path, before: set[str] | None) -> None:
    """Remove what appeared in `folder` since `before` was listed (the folder itself if it did not exist)."""
    if not folder.is_dir():
        return
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for name in set(os.listdir(folder)) - before:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
