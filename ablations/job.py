"""The one job callable of the harness: `RunJob(run_dir)()` trains the run in that folder and returns its result.

The same object runs in-process, under submitit's LocalExecutor and as a SLURM job or array task, with one
task or several (torch.distributed, rank and world size from `submitit.JobEnvironment`). Rank 0 holds the
run folder's lock (`store.run_lock`) for the whole run; a run found done once the lock is held is not trained
again, so no cell is ever counted twice.

Preemption and time limits. submitit installs its handler for the checkpoint signal (USR2; SLURM sends it
`signal_delay_s` before the time limit, `scancel --signal USR2` sends it by hand) before it calls the job.
That handler runs on the main thread *between two bytecodes of the training step*, calls `checkpoint()`,
requeues the job and exits at once: saving the model from there could write a half-updated optimizer state.
So while it trains, RunJob puts its own handler in front: the signal only asks the trainer to stop
(`request_stop()`); the trainer saves a consistent mid-epoch checkpoint at the next step boundary (all
ranks agree on the step) and raises `Preempted`; RunJob then hands the signal to submitit's handler, which
calls `checkpoint()` (rank 0 only: it returns a fresh `RunJob` for the same folder, whose state is all on
disk), requeues the job (`scontrol requeue`) and exits. The requeued job resumes from checkpoint.pt.
A signal that arrives before RunJob's handler is in place (while the job loads) takes submitit's own path:
checkpoint(), requeue, exit, and the run resumes from what is on disk (the per-epoch checkpoint is always
there). One that arrives after training ended only sets the stop flag: a finished run is not requeued.
SIGTERM (scancel, `scontrol requeue`, node loss) is left to submitit, which ignores it: SLURM kills the job
KillWait seconds later and the requeued job resumes from the last checkpoint on disk.

slurm.json (in the run folder) records the SLURM side of the run: the latest job id, array index, when it
was submitted, and a history of (job_id, state) events: SUBMITTED, RUNNING (once per start, with SLURM's
restart count), REQUEUED, COMPLETED, FAILED, CANCELLED. Written atomically, read-modify-write under a
small flock of its own (the run lock is held by the job for the whole run).
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import signal
import threading
import types
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ablations import store

SLURM_JSON = "slurm.json"
SLURM_LOCK = ".slurm.lock"
TRAINER = "ablations.train"


# ---- slurm.json ------------------------------------------------------------------------------------------------
def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_slurm_record(run_dir: Path) -> dict | None:
    """The run's slurm.json, or None if it has none (or an unreadable one)."""
    record, problem = store.read_json(Path(run_dir) / SLURM_JSON)
    return record if problem is None and isinstance(record, dict) else None


def update_slurm_record(run_dir: Path, change: Callable[[dict], None]) -> dict:
    """Read slurm.json, apply `change` to it in place, write it back atomically; serialized by a flock."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / SLURM_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        record = read_slurm_record(run_dir) or {"history": []}
        change(record)
        store.atomic_write_json(run_dir / SLURM_JSON, record)
        return record
    finally:
        os.close(fd)  # releases the flock


def record_event(run_dir: Path, job_id: str, state: str, **extra: Any) -> None:
    event = {"job_id": job_id, "state": state, "at": now(), **extra}
    update_slurm_record(run_dir, lambda record: record.setdefault("history", []).append(event))


# ---- the job environment -----------------------------------------------------------------------------------------
def job_environment() -> Any | None:
    """submitit's JobEnvironment when running as a submitit job (local or SLURM), else None."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return submitit.JobEnvironment()


def _on_slurm(env: Any | None) -> bool:
    return env is not None and env.cluster == "slurm"


def _init_distributed(env: Any, train: types.ModuleType) -> int:
    """Export MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the job environment; init torch.distributed."""
    from submitit.helpers import TorchDistributedEnvironment

    dist_env = TorchDistributedEnvironment()  # master: first node of the job, port derived from the job id
    if env.num_nodes == 1:
        dist_env.master_addr = "127.0.0.1"  # one node: keep the rendezvous on loopback
    # CUDA_VISIBLE_DEVICES is left as SLURM set it; the trainer picks GPU LOCAL_RANK
    dist_env.export(set_cuda_visible_devices=False, overwrite=True)
    train.init_distributed_from_env()
    return dist_env.rank


def _share(value: str, distributed: bool) -> str:
    """Rank 0's `value` on every rank."""
    if not distributed:
        return value
    import torch
    import torch.distributed as dist

    shared = [value]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    dist.broadcast_object_list(shared, src=0, device=device)
    return shared[0]


class _StopOnSignal:
    """While installed, the checkpoint signal only asks the trainer to stop at the next step boundary."""

    def __init__(self, env: Any, train: types.ModuleType):
        self.train = train
        self.signum = env._usr_sig()
        self.submitit_handler = signal.getsignal(self.signum)
        self.received: int | None = None
        signal.signal(self.signum, self._on_signal)
        # Not restored afterwards: a signal that comes after training ended must not requeue a finished run.

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        self.received = signum
        self.train.request_stop()

    def hand_over(self) -> None:
        """Run submitit's handler for the signal received: checkpoint(), requeue and exit (rank 0)."""
        if self.received is not None and callable(self.submitit_handler):
            self.submitit_handler(self.received, None)


# ---- the job -------------------------------------------------------------------------------------------------------
class RunJob:
    """Train the run in `run_dir` (config.json already written); picklable, resumable, requeueable.

    `trainer` names the module that provides train_run / request_stop / Preempted / init_distributed_from_env
    (tests swap in a stand-in).
    """

    def __init__(self, run_dir: str | Path, *, trainer: str = TRAINER, num_workers: int = 0, progress: bool = False):
        self.run_dir = str(Path(run_dir).absolute())
        self.trainer = trainer
        self.num_workers = num_workers
        self.progress = progress

    def __repr__(self) -> str:
        return f"RunJob({self.run_dir!r})"

    def __call__(self) -> dict:
        from ablations.config import RunConfig

        train = importlib.import_module(self.trainer)
        run_dir = Path(self.run_dir)
        document, problem = store.read_json(run_dir / store.CONFIG)
        if problem or not isinstance(document, dict) or "config" not in document:
            raise ValueError(problem or f"{run_dir / store.CONFIG}: expected {{\"config\": ..., \"meta\": ...}}")
        config = RunConfig.from_dict(document["config"])

        env = job_environment()
        distributed = env is not None and env.num_tasks > 1
        rank = _init_distributed(env, train) if distributed else 0
        try:
            with contextlib.ExitStack() as stack:
                verdict = _claim(run_dir, stack) if rank == 0 else ""
                verdict = _share(verdict, distributed)
                if verdict == "locked":
                    raise store.RunLocked(f"{run_dir} is being worked on by another job")
                if verdict == "done":
                    result, _ = store.read_json(run_dir / store.RESULT)
                    return result
                return self._train(train, config, run_dir, env, rank)
        finally:
            if distributed:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def _train(self, train: types.ModuleType, config: Any, run_dir: Path, env: Any | None, rank: int) -> dict:
        slurm = _on_slurm(env) and rank == 0
        if slurm:
            restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
            record_event(run_dir, env.job_id, "RUNNING", restart=restarts, host=env.hostname)
        on_main_thread = threading.current_thread() is threading.main_thread()  # where signals are handled
        guard = _StopOnSignal(env, train) if env is not None and on_main_thread else None
        try:
            result = train.train_run(config, run_dir, progress=self.progress, num_workers=self.num_workers,
                                     handle_signals=False)
        except train.Preempted:
            if guard is not None:
                guard.hand_over()  # rank 0: checkpoint(), requeue, exit; other ranks return here
            raise
        except Exception as err:
            if slurm:
                record_event(run_dir, env.job_id, "FAILED", reason=f"{type(err).__name__}: {err}"[:500])
            raise
        if slurm:
            record_event(run_dir, env.job_id, "COMPLETED")
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue hook (rank 0, main thread, inside its signal handler; the process exits next).

        The run's whole state is on disk (checkpoint.pt, consistent: see the module docstring), so the
        requeued job is simply a fresh RunJob for the same folder.
        """
        from submitit.helpers import DelayedSubmission

        env = job_environment()
        if _on_slurm(env):
            record_event(Path(self.run_dir), env.job_id, "REQUEUED")
        return DelayedSubmission(RunJob(self.run_dir, trainer=self.trainer, num_workers=self.num_workers,
                                        progress=self.progress))


def _claim(run_dir: Path, stack: contextlib.ExitStack) -> str:
    """Take the run lock for the rest of the job: "run", "done" (nothing to do) or "locked"."""
    try:
        stack.enter_context(store.run_lock(run_dir))
    except store.RunLocked:
        return "locked"
    return "done" if store.run_state(run_dir).state == store.DONE else "run"
