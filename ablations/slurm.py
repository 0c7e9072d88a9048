"""Launching runs on SLURM through submitit: one job array per submission, one `RunJob` per array task.

    settings = SlurmSettings.from_mapping(sweep_yaml.get("slurm", {}), source="sweeps/table5.yaml")
    settings = settings.with_cli(partition="learnfair", time_min=600)      # None = not given
    job_ids = submit(sweep_dir, run_dirs, settings, job_name=experiment.job_name())  # [] if nothing to run
    status(sweep_dir)   # one RunStatus per run folder: pending/running/requeued/done/failed/cancelled/new
    cancel(sweep_dir)   # scancel every job still pending or running
    named = jobs_named(sweep_dir, experiment.job_name(), run_dirs)  # also the jobs no file recorded
    status(sweep_dir, run_dirs, named); cancel(sweep_dir, run_dirs, named)

Nothing cluster-specific lives here: partition, account, QoS, constraint and any other sbatch option come
from the sweep file or the command line. The code is snapshotted at submission (a copy of the packages
rest/, ablations/, analysis/ in <sweep_dir>/.code/<hash>/, put first on the job's PYTHONPATH), so editing
the checkout while jobs wait in the queue cannot change them. submitit's files and the jobs' logs are in
<sweep_dir>/.submitit/. Each run folder's slurm.json says which job works on it (see ablations.job), and
.submitit/submissions.jsonl every job id of every submission. The job name is the experiment's
(ablations.experiment.Experiment.job_name), so its jobs are found in squeue even where neither was written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations import store
from ablations.config import bounded_repr, check_field, knob, rule_problem
from ablations.errors import InputError
from ablations.job import TRAINER, RunJob
from ablations.provenance import git_state, provenance_exports
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
CANCELLABLE_STATES = set(ACTIVE_STATES) - {"COMPLETING"}  # a completing job has ended its work


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
    setup: tuple[str, ...] = knob(factory=tuple)  # shell lines run before the job (module load, venv activation)
    per_level: dict[str, dict] = knob(factory=dict)  # level name -> settings for the cells with that level

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
            elif key == "setup":
                checked[key] = _check_setup(source, value)
            elif key == "per_level":
                checked[key] = _check_per_level(source, value, self)
            else:
                checked[key] = check_field(SlurmSettings, key, value, key=f"slurm.{key}", source=source)
        settings = dataclasses.replace(self, **checked)
        if settings.time_min * 60 <= settings.signal_delay_s:
            key = "slurm.time_min" if "time_min" in values or "signal_delay_s" not in values else "slurm.signal_delay_s"
            raise InputError(source, key, f"a time limit of {settings.time_min} min cannot fit the checkpoint signal "
                                          f"sent {settings.signal_delay_s} s before it (signal_delay_s): raise "
                                          "time_min or lower signal_delay_s")
        return settings


    def for_levels(self, levels: list[str]) -> SlurmSettings:
        """These settings with `per_level` applied for a cell whose levels are `levels` (in axis order)."""
        settings = dataclasses.replace(self, per_level={})
        for level in levels:
            if level in self.per_level:
                settings = settings._replaced(self.per_level[level], f"slurm.per_level.{level}")
        return settings


SBATCH_KEY = r"[a-z][a-z0-9_-]{0,40}"
SETUP_LINE = r"[^\x00-\x1f\x7f]{1,500}"  # one printable line: no newline, no control character


def _check_setup(source: str, value: Any) -> tuple[str, ...]:
    """Setup lines: the user's own shell lines (that is their purpose), one line each, printable, bounded."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or len(value) > 50:
        raise InputError(source, "slurm.setup", f"expected a list of shell lines, got {bounded_repr(value)}")
    for i, line in enumerate(value):
        if not isinstance(line, str) or not re.fullmatch(SETUP_LINE, line):
            raise InputError(source, f"slurm.setup[{i}]", f"{bounded_repr(line)}: one line of 1 to 500 printable "
                                                          "characters (no newline)")
    return tuple(value)


def _check_per_level(source: str, value: Any, base: SlurmSettings) -> dict[str, dict]:
    """per_level: {level name: {time_min: ..., gpus_per_node: ...}}, each checked as a slurm: block would be."""
    if not isinstance(value, dict):
        raise InputError(source, "slurm.per_level", f"expected a mapping of level name -> settings, got "
                                                    f"{bounded_repr(value)}")
    for level, settings in value.items():
        if not isinstance(settings, dict) or {"per_level"} & set(settings):
            raise InputError(source, f"slurm.per_level.{bounded_repr(level)}", "expected a mapping of settings")
        dataclasses.replace(base, per_level={})._replaced(settings, source)  # raises InputError if bad
    return {str(k): dict(v) for k, v in value.items()}


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
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def snapshot_code(sweep_dir: Path, root: Path | None = None) -> Path:
    """Copy the project's packages to <sweep_dir>/.code/<hash of their files>/ (reused if the same) and return it.

    The snapshot is readable by the group (folders 0755, files 0644), like the run folders. It has no .git: the
    jobs learn the checkout's commit and dirty state from make_executor (ablations.provenance).
    """
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
JOB_ID = re.compile(r"[0-9]{1,12}(_[0-9]{1,9})?")  # what sbatch gives: "123" or "123_4"


class SubmissionError(InputError):
    """sbatch refused the submission (invalid partition, account, time limit...): nothing was left behind."""


def valid_job_id(value: Any) -> str | None:
    """`value` if it is a SLURM job id ("123", "123_4"), else None: an "id" read from a run file such as
    "--user=alice" must never reach scancel or sacct as an option."""
    return value if isinstance(value, str) and JOB_ID.fullmatch(value) else None


def job_ids_of(record: dict) -> list[str]:
    """Every valid job id a run's slurm.json names (latest, all submitted, history), oldest first, no repeats."""
    ids = [*(record.get("job_ids") or []), *(e.get("job_id") for e in record.get("history") or []
                                               if isinstance(e, dict)), record.get("job_id")]
    return list(dict.fromkeys(i for i in ids if valid_job_id(i)))


@contextlib.contextmanager
def submission_lock(sweep_dir: Path):
    """One submission of a sweep at a time (flock on <sweep_dir>/.submit.lock, waited for): "check existing
    jobs, submit, record ids" is atomic, so two submissions at the same instant give one set of jobs."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    fd = store.open_fd(Path(sweep_dir) / SUBMIT_LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def submit(sweep_dir: Path, run_dirs: list[Path], settings: SlurmSettings, job_name: str, snapshot: bool = True,
           *, retry_failed: bool = False, force: bool = False, trainer: str = TRAINER,
           num_workers: int | None = None) -> list[str]:
    """Submit one job array with a task per run that still needs one; return the job ids ("<array>_<index>").

    Skipped: runs that are done (unless `force`), failed (unless `retry_failed` or `force`), locked by a running
    job, or with a job still pending/running/requeued (a corrupt run is refused by its RunJob). Every run folder
    must hold its config.json already. Each task is a RunJob, which claims its folder and (with `force`)
    archives it under the lock.
    Holds the sweep's submission lock throughout. SubmissionError (sbatch's message) if sbatch refuses: the
    code snapshot and submitit's files made for this submission are removed.
    """
    sweep_dir = Path(sweep_dir).absolute()
    run_dirs = [Path(d).absolute() for d in run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / store.CONFIG).is_file():
            raise FileNotFoundError(f"{run_dir / store.CONFIG}: write the run's config before submitting it")
    if not re.fullmatch(SBATCH_VALUE["pattern"], job_name):
        raise InputError("job name", job_name[:80], SBATCH_VALUE["pattern_text"])
    with submission_lock(sweep_dir):
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
        folder = sweep_dir / SUBMITIT_DIR
        before = set(os.listdir(folder)) if folder.is_dir() else None
        code_existed = snapshot and (sweep_dir / CODE_DIR).is_dir()
        code_before = set(os.listdir(sweep_dir / CODE_DIR)) if code_existed else set()
        code_dir = snapshot_code(sweep_dir) if snapshot else project_root()
        executor = make_executor(folder, settings, job_name, code_dir=code_dir)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's stderr; it is in `err`
                jobs = executor.submit_array([RunJob(d, force=force, retry_failed=retry_failed, trainer=trainer,
                                                     num_workers=num_workers) for d in todo])
        except Exception as err:  # submitit: FailedJobError with sbatch's stderr, FailedSubmissionError
            _remove_new(folder, before)
            if snapshot:
                _remove_new(sweep_dir / CODE_DIR, code_before if code_existed else None)
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


def submitted_job_ids(sweep_dir: Path, run_dirs: list[Path] | None = None) -> dict[str, Path]:
    """job id -> run folder, for every job the sweep's submissions log names (valid ids only; of `run_dirs`
    only, if given)."""
    wanted = {str(Path(d).absolute()) for d in run_dirs} if run_dirs is not None else None
    out: dict[str, Path] = {}
    for row in store.read_metrics(Path(sweep_dir) / SUBMITIT_DIR / SUBMISSIONS).rows:
        ids, dirs = row.get("job_ids"), row.get("run_dirs")
        if not isinstance(ids, list) or not isinstance(dirs, list) or len(ids) != len(dirs):
            continue
        for job_id, run_dir in zip(ids, dirs, strict=True):
            if valid_job_id(job_id) and isinstance(run_dir, str) and (wanted is None or run_dir in wanted):
                out[job_id] = Path(run_dir)
    return out


def _job_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state of each job id ("CANCELLED by 0" -> "CANCELLED"): squeue for the jobs the controller holds
    (it knows a job the moment it is submitted), sacct for those that ended. Ids neither knows are left out."""
    job_ids = [j for j in job_ids if valid_job_id(j)]
    if not job_ids:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    live = _live_jobs() or {}
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


def _live_jobs() -> dict[str, str] | None:
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


def _run(command: list[str]) -> str:
    """stdout of a SLURM client command; "" if it fails (status is then read from the run folders alone)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _active_jobs(run_dirs: list[Path]) -> set[Path]:
    """The runs that any job ever submitted for them is still pending, running or requeued."""
    ids = {d: job_ids_of(r) for d in run_dirs if (r := read_slurm_record(d))}
    states = _job_states([j for js in ids.values() for j in js])
    return {d for d, js in ids.items() if any(states.get(j, "") in ACTIVE_STATES for j in js)}


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


def status(sweep_dir: Path, run_dirs: list[Path] | None = None, named: NamedJobs | None = None) -> list[RunStatus]:
    """Every run folder of the sweep (or those given: one experiment's), its state combined from squeue/sacct
    and the folder's own files. `named` (jobs_named: the experiment's live jobs by job name) supplies the job of
    a run whose recorded job is not live, or that has no record at all (a submission that died before writing
    it)."""
    sweep_dir = Path(sweep_dir).absolute()
    run_dirs = [Path(d).absolute() for d in run_dirs if Path(d).is_dir()] if run_dirs is not None \
        else store.run_dirs_in(sweep_dir)
    records = {d: read_slurm_record(d) or {} for d in run_dirs}
    states = _job_states([r["job_id"] for r in records.values() if r.get("job_id")])
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
    """What the run's failure says: error.json's reason and traceback tail, else the job log's tail with the
    real reason (the last Python exception, not srun's "exited with exit code 1") as its last line."""
    error = store.read_error(run_dir)
    if error is not None:
        trace = str(error.get("traceback", "")).rstrip().splitlines()[-lines:]
        return "\n".join([str(error.get("reason", "unknown error")), *trace]).strip()
    if job_id:
        from submitit.core.utils import JobPaths

        stderr = JobPaths(sweep_dir / SUBMITIT_DIR, job_id=job_id).stderr
        if stderr.is_file():
            text = stderr.read_text(errors="replace")
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


def cancel(sweep_dir: Path, run_dirs: list[Path] | None = None, named: NamedJobs | None = None, *,
           unknown_runs: bool = False) -> list[str]:
    """scancel every job of the runs (of the sweep, or those given) that is still pending, running or requeued:
    every job id ever submitted for them (slurm.json's job_ids and history), those the sweep's submissions
    log names for them (a job whose run record was lost or never written), and those `named` (jobs_named: the
    experiment's live jobs by job name) finds for them though no file recorded their ids; with `unknown_runs`
    also the experiment's jobs whose run cannot be told. Return the ids cancelled."""
    sweep_dir = Path(sweep_dir).absolute()
    dirs = [Path(d).absolute() for d in run_dirs if Path(d).is_dir()] if run_dirs is not None \
        else store.run_dirs_in(sweep_dir)
    owner: dict[str, Path] = {}
    for run_dir in dirs:
        for job_id in job_ids_of(read_slurm_record(run_dir) or {}):
            owner[job_id] = run_dir
    for job_id, run_dir in submitted_job_ids(sweep_dir, run_dirs).items():
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
    live = _live_jobs()
    states = live if live is not None else _job_states(list(owner))
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


# ---- an experiment's jobs by name: also those no file recorded ---------------------------------------------------
JOB_STATE = re.compile(r"[A-Z_]{1,40}")  # squeue's state names (PENDING, RUNNING, REQUEUE_HOLD...)
MAX_PICKLE_BYTES = 1 << 20  # a RunJob's pickle is a few hundred bytes


@dataclass
class NamedJobs:
    """The user's live jobs (squeue) of one job name, i.e. of one experiment (ablations.experiment's job_name),
    whether or not any file recorded their ids."""

    job_name: str
    by_run: dict[Path, dict[str, str]] = field(default_factory=dict)  # run folder -> {job id: squeue state}
    unknown: dict[str, str] = field(default_factory=dict)  # job id -> state: no submitit pickle names its run

    def live_job(self, run_dir: Path) -> tuple[str, str] | None:
        """(job id, state) of the newest pending/running/requeued job found for `run_dir`, or None."""
        live = [(j, s) for j, s in self.by_run.get(run_dir, {}).items() if s in ACTIVE_STATES]
        return max(live, key=lambda item: job_order(item[0])) if live else None


def job_order(job_id: str) -> tuple[int, ...]:
    """A valid job id as numbers: later submissions (and array indices) sort after earlier ones."""
    return tuple(int(part) for part in job_id.split("_"))


def jobs_named(sweep_dir: Path, job_name: str, run_dirs: list[Path] | None = None) -> NamedJobs:
    """The user's pending and running jobs named `job_name` (`squeue --me -r -n`), each with the run folder of
    the sweep it works on (of `run_dirs` only, if given: the others belong to runs not selected), from
    submitit's own file (run_dir_of_job). Nothing read back is trusted: an id must look like SLURM's, a state
    like a state name, the name must be `job_name`; "" from squeue (no SLURM here) finds nothing."""
    sweep_dir = Path(sweep_dir).absolute()
    found = NamedJobs(job_name)
    if not re.fullmatch(SBATCH_VALUE["pattern"], job_name):
        return found
    wanted = {Path(d).absolute() for d in run_dirs} if run_dirs is not None else None
    for line in _run(["squeue", "--me", "-h", "-r", "-n", job_name, "-o", "%i|%T|%j"]).splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != 3:
            continue
        job_id, state, name = parts
        if name != job_name or not valid_job_id(job_id) or not JOB_STATE.fullmatch(state):
            continue
        run_dir = run_dir_of_job(sweep_dir, job_id)
        if run_dir is None:
            found.unknown[job_id] = state
        elif wanted is None or run_dir in wanted:
            found.by_run.setdefault(run_dir, {})[job_id] = state
    return found


def run_dir_of_job(sweep_dir: Path, job_id: str) -> Path | None:
    """The run folder of the sweep that job `job_id` works on, from submitit's pickle of its task
    (<sweep_dir>/.submitit/<job id>_submitted.pkl, named so by submitit as soon as sbatch answers; it holds
    the RunJob, which names its folder). The pickle is read with pickletools and never unpickled (no code from
    data): the first absolute path in it whose parent is the sweep folder and that holds a config.json. None
    if the pickle is missing, a link, too large or names no such folder."""
    import pickletools

    sweep_dir = Path(sweep_dir).absolute()
    try:
        with os.fdopen(store.open_fd(sweep_dir / SUBMITIT_DIR / f"{job_id}_submitted.pkl", os.O_RDONLY), "rb") as f:
            data = f.read(MAX_PICKLE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_PICKLE_BYTES:
        return None
    real_sweep = sweep_dir.resolve()
    try:
        for _, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and os.path.isabs(arg) and len(arg) < 4096:
                path = Path(arg)
                if path.parent.resolve() == real_sweep and (sweep_dir / path.name / store.CONFIG).is_file():
                    return sweep_dir / path.name
    except Exception:  # not a pickle, or a truncated one: pickletools raises ValueError and others
        return None
    return None
