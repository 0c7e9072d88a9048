"""The one path that claims, runs and records a run: `RunJob(run_dir)()`.

It is the only code that takes a run folder's lock, decides from the folder (read again once the lock is
held) whether to skip a done or failed run, archives earlier outputs on --force, trains and records. The
same object runs in-process (the local executor, `python -m ablations.train RUN_DIR`), in a worker process
(`--jobs N`), under submitit's LocalExecutor and as a SLURM job or array task, with one task or several
(torch.distributed: rank and world size from `submitit.JobEnvironment`, or from torchrun's environment).
Rank 0 holds the run folder's lock (`store.run_lock`) for the whole run, so no cell is ever trained twice
and local and cluster runs behave the same by construction.

Preemption and time limits. submitit installs its handler for the checkpoint signal (USR2; SLURM sends it
`signal_delay_s` before the time limit, `scancel --signal USR2` sends it by hand) before it calls the job.
That handler runs on the main thread *between two bytecodes of the training step*, calls `checkpoint()`,
requeues the job and exits at once: saving the model from there could write a half-updated optimizer state.
So while it trains, RunJob puts its own handler in front: the signal only asks the trainer to stop
(`request_stop()`); the trainer saves a consistent mid-epoch checkpoint at the next step boundary (all
ranks agree on the step, within 20 updates) and raises `Preempted`; RunJob then hands the signal to
submitit's handler, which calls `checkpoint()` (rank 0 only: it returns a fresh `RunJob` for the same
folder, whose state is all on disk), requeues the job (`scontrol requeue`) and exits. The requeued job
resumes from checkpoint.pt.
A signal that arrives before RunJob's handler is in place (while the job loads) takes submitit's own path:
checkpoint(), requeue, exit, and the run resumes from what is on disk (the per-epoch checkpoint is always
there). One that arrives after training ended only sets the stop flag: a finished run is not requeued.
SIGTERM (scancel, `scontrol requeue`, node loss) is left to submitit, which ignores it: SLURM kills the job
KillWait seconds later and the requeued job resumes from the last checkpoint on disk.

Outside submitit (in-process), SIGINT, SIGTERM and SIGUSR1 likewise only ask the trainer to stop: it saves
a consistent checkpoint and raises `Preempted`, which says which signal it was, so the launcher can exit
with one line (130 for Ctrl-C) and leave every run folder resumable.

slurm.json (in the run folder, see ablations.store) records the SLURM side of the run: the latest job id,
array index, when it was submitted, and a history of (job_id, state) events: SUBMITTED, RUNNING (once per
start, with SLURM's restart count), REQUEUED, COMPLETED, FAILED, CANCELLED.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import signal
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations import store
from ablations.executors.signals import OnSignals
from ablations.spec.config import BUNDLED_DATASETS
from ablations.store import now, read_slurm_record, update_slurm_record  # noqa: F401 - part of this API
from ablations.store import record_slurm_event as record_event

TRAINER = "ablations.training.trainer"

# What RunJob did with a run folder
TRAINED, ALREADY_DONE, FAILED_EARLIER = "trained", "done", "failed earlier"


@dataclass
class Outcome:
    status: str  # TRAINED, ALREADY_DONE or FAILED_EARLIER (left alone: --retry-failed runs it again)
    result: dict | None  # result.json's content for a done run


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


LOCAL_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def stop_training(train: types.ModuleType) -> Callable[[int, bool], None]:
    """A signal handler that asks the trainer to stop at the next step boundary; a second Ctrl-C stops at
    once (the last checkpoint is still on disk)."""

    def handle(signum: int, again: bool) -> None:
        if again and signum == signal.SIGINT:
            raise KeyboardInterrupt
        train.request_stop()

    return handle


def cpu_threads_from_slurm() -> int | None:
    """On CPU, torch's threads = the task's --cpus-per-task (SLURM_CPUS_PER_TASK), per rank: each DDP rank is a
    task with its own CPUs, and torch's default (every core of the node) would oversubscribe them. None (and
    nothing changed) on GPU or outside a task with a CPU count."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if not value.isdigit() or int(value) < 1:
        return None
    import torch

    if torch.cuda.is_available():
        return None
    torch.set_num_threads(int(value))
    return int(value)


# ---- the job -------------------------------------------------------------------------------------------------------
class RunJob:
    """Claim, skip, archive, train and record the run in `run_dir` (config.json already written); picklable,
    resumable, requeueable.

    force: run it again even if done or failed (earlier outputs go to previous/, under the lock).
    retry_failed: run a failed run again (resuming its checkpoint).
    `trainer` names the module that provides train_run / request_stop / Preempted / init_distributed_from_env
    (tests swap in a stand-in).
    """

    def __init__(self, run_dir: str | Path, *, force: bool = False, retry_failed: bool = False,
                 trainer: str = TRAINER, num_workers: int | None = None, progress: bool = False):
        self.run_dir = str(Path(run_dir).absolute())
        self.force = force
        self.retry_failed = retry_failed
        self.trainer = trainer
        self.num_workers = num_workers
        self.progress = progress

    def __repr__(self) -> str:
        return f"RunJob({self.run_dir!r})"

    def __call__(self) -> dict | None:
        """submitit's entry point: the run's result (None for a failed run left alone)."""
        return self.run().result

    def run(self) -> Outcome:
        train = importlib.import_module(self.trainer)
        run_dir = Path(self.run_dir)
        config = store.read_config(run_dir).config  # InputError: nothing is claimed for a bad config

        env = job_environment()
        if env is not None and env.num_tasks > 1:
            distributed, rank = True, _init_distributed(env, train)
        else:
            # torchrun (python -m torch.distributed.run -m ablations.train RUN_DIR)
            distributed = env is None and int(os.environ.get("WORLD_SIZE", "1")) > 1 and \
                bool(train.init_distributed_from_env())
            rank = _rank() if distributed else 0
        try:
            with contextlib.ExitStack() as stack:
                verdict = self._claim(run_dir, stack) if rank == 0 else ""
                verdict = _share(verdict, distributed)
                if verdict == "locked":
                    raise store.RunLocked(f"{run_dir} is being worked on by another job")
                if verdict == ALREADY_DONE:
                    return Outcome(ALREADY_DONE, store.read_result(run_dir))
                if verdict == FAILED_EARLIER:
                    return Outcome(FAILED_EARLIER, None)
                return Outcome(TRAINED, self._train(train, config, run_dir, env, rank))
        finally:
            if distributed:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def _claim(self, run_dir: Path, stack: contextlib.ExitStack) -> str:
        """Take the run lock for the rest of the job, then decide from the folder: train, or leave it."""
        try:
            stack.enter_context(store.run_lock(run_dir))
        except store.RunLocked:
            return "locked"
        state = store.run_state(run_dir)  # again, now that nobody else can change it
        if state.state == store.CORRUPT:
            from ablations.spec.errors import InputError

            raise InputError(run_dir / store.CONFIG, "config", state.error)
        state = state.state
        if state == store.DONE and not self.force:
            return ALREADY_DONE
        if state == store.FAILED and not (self.retry_failed or self.force):
            return FAILED_EARLIER
        if self.force and state in (store.DONE, store.FAILED):
            store.archive_previous(run_dir)
        return TRAINED

    def _train(self, train: types.ModuleType, config: Any, run_dir: Path, env: Any | None, rank: int) -> dict:
        slurm = _on_slurm(env) and rank == 0
        if _on_slurm(env):
            cpu_threads_from_slurm()
        if slurm:
            restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
            record_event(run_dir, env.job_id, "RUNNING", restart=restarts, host=env.hostname)
        if env is not None:  # submitit's checkpoint signal; its own handler is passed the signal afterwards
            stop = OnSignals((env._usr_sig(),), stop_training(train), restore=False)  # a finished run stays done
        else:
            stop = OnSignals(LOCAL_STOP_SIGNALS, stop_training(train))
        try:
            with stop:
                workers = workers_for(config, self.num_workers)
                result = train.train_run(config, run_dir, progress=self.progress, num_workers=workers)
        except train.Preempted as err:
            if env is not None:
                stop.pass_on()  # rank 0: checkpoint(), requeue, exit; other ranks return here
            elif stop.received is not None:
                err.signal = stop.received  # the launcher says which signal stopped the sweep
            raise
        except Exception as err:
            if slurm:
                record_event(run_dir, env.job_id, "FAILED", reason=store.failure_reason(err)[:500])
            raise
        if slurm:
            record_event(run_dir, env.job_id, "COMPLETED")
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's requeue hook (rank 0, main thread, inside its signal handler; the process exits next).

        The run's whole state is on disk (checkpoint.pt, consistent: see the module docstring), so the
        requeued job is simply a fresh RunJob for the same folder; --force was honoured when this job
        started, so the requeued one resumes instead of archiving its own progress.
        """
        from submitit.helpers import DelayedSubmission

        env = job_environment()
        if _on_slurm(env):
            record_event(Path(self.run_dir), env.job_id, "REQUEUED")
        return DelayedSubmission(RunJob(self.run_dir, retry_failed=self.retry_failed, trainer=self.trainer,
                                        num_workers=self.num_workers, progress=self.progress))


JOB_CPUS = "REST_JOB_CPUS"  # set by the local launcher's --jobs workers: their share of the cores
MAX_DEFAULT_WORKERS = 8


def job_cpus(environ: dict[str, str] | None = None) -> int:
    """The CPU cores this job may use: SLURM's --cpus-per-task, else the local launcher's share (--jobs N),
    else the cores this process may run on."""
    environ = os.environ if environ is None else environ
    for name in ("SLURM_CPUS_PER_TASK", JOB_CPUS):
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(environ: dict[str, str] | None = None) -> int:
    """Data-loading worker processes by default for datasets read from files: the job's cores but one (which
    trains), at most 8. The bundled in-memory digits load in the training process (0 workers)."""
    return max(0, min(MAX_DEFAULT_WORKERS, job_cpus(environ) - 1))


def workers_for(config: Any, requested: int | None, environ: dict[str, str] | None = None) -> int:
    """The data-loading workers of a run: as requested, else default_workers() for datasets read from files;
    an in-memory dataset (digits) gains nothing from loader processes (0)."""
    if requested is not None:
        return requested
    return 0 if config.data.dataset in BUNDLED_DATASETS else default_workers(environ)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank()
