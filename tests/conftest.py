"""Shared fixtures: a real single-node SLURM cluster, tiny run folders, and a stand-in trainer.

The stand-in trainer (module `conftest`, the functions below) has `ablations.train`'s interface — train_run,
request_stop, Preempted, RunFailed, init_distributed_from_env — and its run-folder contract (metrics.jsonl row
per epoch from 1, checkpoint.pt, result.json, error.json; resume cuts metrics to the checkpoint), but trains
nothing: each step sleeps. So the job and SLURM tests can stop, requeue and resume runs at chosen moments in
seconds. Its knobs are in config.json's "meta.standin": steps (per epoch), step_s, fail. It appends one line
per start to standin.jsonl (pid, rank, world, where it resumed, which `ablations` it imported).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ablations import store

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config) -> None:
    """The planner's cache (ablations.plan.PlanCache) goes to a throwaway folder, never the user's ~/.cache."""
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="rest-ablations-test-cache-")
TINY = {"data": {"img_size": 33, "train_limit": 64, "val_limit": 32}, "train": {"batch_size": 16, "epochs": 1}}
PACKAGES_FAILED = 3  # start.sh's exit status when apt-get cannot install the Debian packages


# ---- SLURM -------------------------------------------------------------------------------------------------------
def _slurm_answers() -> bool:
    if not shutil.which("sinfo"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in out.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM cluster that answers: the running one, or one started by scripts/slurm/start.sh (stopped after).

    Fails when it cannot be started; outside CI (no $CI) it skips if the Debian packages cannot be installed.
    """
    if _slurm_answers():
        yield
        return
    in_ci = bool(os.environ.get("CI"))
    if os.geteuid() != 0 or not (shutil.which("apt-get") or shutil.which("slurmctld")):
        if in_ci:
            pytest.fail("SLURM is not running and cannot be installed here (needs root and apt-get)")
        pytest.skip("SLURM is not running and its Debian packages cannot be installed here (needs root, apt-get)")
    proc = subprocess.run(["bash", str(ROOT / "scripts/slurm/start.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode == PACKAGES_FAILED and not in_ci:
        pytest.skip(f"the Slurm Debian packages cannot be installed: {proc.stderr[-500:]}")
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm/start.sh failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    yield
    subprocess.run(["bash", str(ROOT / "scripts/slurm/stop.sh")], capture_output=True, timeout=120)


# ---- a browser engine ---------------------------------------------------------------------------------------------
BROWSER = "chromium-headless-shell"  # Debian's headless Chromium: a real browser engine from the package registry


@pytest.fixture(scope="session")
def browser() -> str:
    """The path of a headless Chromium: on PATH, or installed with apt-get (root). Fails under CI when it cannot
    be had; elsewhere skips (no root or no apt-get)."""
    found = shutil.which(BROWSER)
    if found:
        return found
    in_ci = bool(os.environ.get("CI"))
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "install", "-y", "-q", BROWSER], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", BROWSER]):
            subprocess.run(command, capture_output=True, timeout=900, env=env)
            if shutil.which(BROWSER):
                return shutil.which(BROWSER)
    if in_ci:
        pytest.fail(f"{BROWSER} is not installed and apt-get could not install it")
    pytest.skip(f"{BROWSER} is not installed here and cannot be (needs root and apt-get)")


@pytest.fixture
def sweep_dir(tmp_path):
    """An empty sweep folder; any SLURM job still pending or running in it is cancelled afterwards."""
    path = tmp_path / "sweep"
    path.mkdir()
    yield path
    if shutil.which("scancel"):
        from ablations.executors import slurm

        slurm.cancel(path)


# ---- run folders -------------------------------------------------------------------------------------------------
@pytest.fixture
def make_run() -> Callable[..., Path]:
    """make_run(sweep_dir, seed=0, standin=None, overrides=None) -> a tiny run's folder, holding config.json.

    `standin` (the stand-in trainer's knobs) goes to meta.standin; `overrides` are dotted config keys.
    """
    from ablations.spec.config import RunConfig, flatten, with_overrides

    def make(sweep_dir: Path, seed: int = 0, standin: dict | None = None, overrides: dict | None = None) -> Path:
        config = with_overrides(RunConfig(), {**flatten(TINY), "train.seed": seed, **(overrides or {})})
        run_dir = Path(sweep_dir) / config.short_hash()
        run_dir.mkdir(parents=True)
        meta = {"sweep": Path(sweep_dir).name, "cell": f"seed{seed}", "run_id": run_dir.name}
        if standin is not None:
            meta["standin"] = standin
        store.atomic_write_json(run_dir / store.CONFIG, {"config": config.to_dict(), "meta": meta})
        return run_dir

    return make


@pytest.fixture
def standin_trainer(monkeypatch) -> str:
    """The module name of the stand-in trainer, importable by job processes (tests/ on their PYTHONPATH)."""
    tests = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p))
    return "conftest"


@pytest.fixture
def wait_until() -> Callable[..., object]:
    """wait_until(predicate, timeout, what): poll until predicate() is truthy (returned), fail after timeout."""

    def wait(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    return wait


def standin_starts(run_dir: Path) -> list[dict]:
    return store.read_metrics(Path(run_dir) / "standin.jsonl").rows


# ---- the stand-in trainer ----------------------------------------------------------------------------------------
class Preempted(Exception):
    pass


class RunFailed(RuntimeError):
    pass


_STOP = threading.Event()


def request_stop() -> None:
    _STOP.set()


def init_distributed_from_env() -> bool:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="env://")
    return True


def train_run(config, run_dir: Path, *, progress: bool = True, num_workers: int = 0) -> dict:
    import torch.distributed as dist

    import ablations

    _STOP.clear()
    run_dir = Path(run_dir)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    knobs = json.loads((run_dir / store.CONFIG).read_text())["meta"].get("standin", {})
    steps, step_s = knobs.get("steps", 4), knobs.get("step_s", 0.2)
    ckpt = json.loads((run_dir / store.CHECKPOINT).read_text()) if (run_dir / store.CHECKPOINT).exists() else {}
    epoch, step = ckpt.get("epoch", 0), ckpt.get("step", 0)  # the next step to run, as in ablations.train
    store.append_jsonl(run_dir / "standin.jsonl", dict(pid=os.getpid(), rank=rank, world=world, epoch=epoch,
                                                       step=step, ablations=ablations.__file__))
    if rank == 0:
        (run_dir / store.ERROR).unlink(missing_ok=True)
        kept = [r for r in store.read_metrics(run_dir / store.METRICS).rows if r["epoch"] <= epoch]
        store.atomic_write_bytes(run_dir / store.METRICS, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def save(epoch: int, step: int) -> None:
        if rank == 0:
            store.atomic_write_json(run_dir / store.CHECKPOINT, {"epoch": epoch, "step": step})
        if world > 1:
            dist.barrier()

    while epoch < config.train.epochs:
        while step < steps:
            if _STOP.is_set():
                save(epoch, step)
                raise Preempted(f"stopped at epoch {epoch + 1} step {step}")
            time.sleep(step_s)
            step += 1
        if knobs.get("fail"):
            reason = f"stand-in failure at epoch {epoch + 1}"
            if rank == 0:
                store.atomic_write_json(run_dir / store.ERROR, {"reason": reason, "traceback": "", "epoch": epoch + 1})
            raise RunFailed(reason)
        if rank == 0:
            store.append_jsonl(run_dir / store.METRICS, {"epoch": epoch + 1, "pid": os.getpid(), "world": world})
        epoch, step = epoch + 1, 0
        save(epoch, step)
    result = {"final": {"top1": 0.0}, "epochs": epoch, "world": world}
    if rank == 0:
        store.atomic_write_json(run_dir / store.RESULT, result)
    return result
