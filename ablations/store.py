"""Run folders: the single source of truth for a run's state.

    results/<sweep>/<run_id>/
        config.json      the frozen RunConfig (+ "meta": sweep, cell, levels), written before the job starts
        metrics.jsonl    one JSON object per finished epoch (appended, one line = one complete write)
        checkpoint.pt    latest training state (atomic: temp file + rename)
        result.json      written once, when the run finished successfully
        error.json       written when the run failed: {"reason", "traceback", "epoch"}
        log.txt          the job's log
        best.pt          the best-accuracy weights as a plain state dict (timm loads it: see BEST_WEIGHTS)
        tensorboard/     TensorBoard event files (train.logger tensorboard or wandb)
        slurm.json       the SLURM side of the run: job ids, submission time, a history of job events
        .lock            held (flock) while a job works in the folder
        previous/        earlier outputs set aside by --force, one folder per archive

This module is the only one that reads or writes these files: everything else goes through its functions.

A run's state is derived from these files alone: done (valid result.json), failed (error.json), partial
(checkpoint or metrics, or a result.json that cannot be read), new (none of them).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
ERROR = "error.json"
LOG = "log.txt"
LOCK = ".lock"
SLURM_JSON = "slurm.json"
SLURM_LOCK = ".slurm.lock"
PREVIOUS = "previous"
BEST_WEIGHTS = "best.pt"  # timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))
TENSORBOARD = "tensorboard"
WANDB = "wandb"
OUTPUTS = (METRICS, CHECKPOINT, RESULT, ERROR, LOG, BEST_WEIGHTS, TENSORBOARD, WANDB)  # --force archives them

FILE_MODE = 0o644


class State(StrEnum):
    """A run's state, in the order commands list them."""

    DONE = "done"
    RUNNING = "running"
    PARTIAL = "partial"
    FAILED = "failed"
    NEW = "new"


STATE_ORDER = tuple(State)
DONE, RUNNING, PARTIAL, FAILED, NEW = STATE_ORDER


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[BinaryIO]:
    """A file object for a temp file beside `path`; on success it is fsynced and renamed over `path`.

    Readers never see half a file, and a failure leaves no temp file behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)  # mkstemp creates 0600; run folders are shared with collaborators
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Strict JSON (NaN and infinity are refused: they are not JSON, and a reader would choke on them)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    with atomic_target(path) as f:
        torch.save(obj, f)


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one line with a single write() call, then fsync."""
    line = (json.dumps(obj, sort_keys=True, allow_nan=False) + "\n").encode()
    with open(path, "ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class MetricsRead:
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def read_metrics(path: Path) -> MetricsRead:
    """Every complete line of metrics.jsonl; a truncated or corrupt line is reported, not raised."""
    out = MetricsRead()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return out
    except OSError as err:
        out.problems.append(f"{path}: cannot be read ({err})")
        return out
    # Fast path: the whole file as one JSON array is ~10x faster than line by line (aggregating 1,000
    # folders of 300 epochs); any defect falls through to the line-by-line pass, which names each bad line.
    try:
        rows = json.loads(b"[" + b",".join(line for line in data.split(b"\n") if line.strip()) + b"]")
        if all(isinstance(r, dict) for r in rows):
            out.rows = rows
            return out
    except (ValueError, UnicodeDecodeError):
        pass
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not an object")
            out.rows.append(row)
        except ValueError as err:
            out.problems.append(f"{path}: line {number} is not valid JSON ({err}); ignored")
    return out


def read_json(path: Path | str) -> tuple[Any, str | None]:
    """(object, None) or (None, problem) for a missing, truncated or corrupt JSON file."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read()), None
    except FileNotFoundError:
        return None, f"{path}: missing"
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"{path}: not valid JSON ({err})"


@dataclass
class RunState:
    state: State
    epochs_done: int = 0
    problems: list[str] = field(default_factory=list)
    error: str | None = None


def run_state(run_dir: Path) -> RunState:
    """The state of a run folder, from its files alone; never raises on corrupt content.

    A done run is decided from result.json and the last byte of metrics.jsonl (every append ends with a
    newline, so a file that does not was cut mid-write): planning reads thousands of folders, so this
    uses plain string paths.
    """
    base = os.fspath(run_dir)
    result_path, metrics_path = os.path.join(base, RESULT), os.path.join(base, METRICS)
    problems: list[str] = []
    if os.path.exists(result_path):
        result, problem = read_json(result_path)
        if problem is None and isinstance(result, dict) and "final" in result:
            if ends_cleanly(metrics_path):
                epochs = result.get("epochs")
                return RunState(DONE, epochs if isinstance(epochs, int) else 0)
            problems.append(f"{metrics_path}: ends mid-line (a write was cut off); the run is resumed")
        else:
            problems.append(problem or f"{result_path}: no 'final' entry")
    metrics = read_metrics(metrics_path)
    problems += metrics.problems
    epochs = len(metrics.rows)
    if problems:  # an unreadable result.json or cut metrics: not done; it resumes from its checkpoint
        return RunState(PARTIAL, epochs, problems)
    error_path = os.path.join(base, ERROR)
    if os.path.exists(error_path):
        error, problem = read_json(error_path)
        reason = error.get("reason") if isinstance(error, dict) else None
        return RunState(FAILED, epochs, [problem] if problem else [], reason or "unknown error")
    if epochs or os.path.exists(os.path.join(base, CHECKPOINT)):
        return RunState(PARTIAL, epochs)
    return RunState(NEW, epochs)


def live_run_state(run_dir: Path) -> RunState:
    """run_state, with an unfinished run whose folder a job holds locked reported as running."""
    state = run_state(run_dir)
    if state.state in (NEW, PARTIAL) and is_locked(run_dir):
        state.state = RUNNING
    return state


def ends_cleanly(path: Path) -> bool:
    """True if the file is absent, empty or ends with a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True


class RunLocked(RuntimeError):
    pass


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking flock on the run folder; raise RunLocked if another job has it.

    flock is released by the kernel when its process dies, so a killed job never leaves a stale lock.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{run_dir} is being worked on by another job") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def is_locked(run_dir: Path) -> bool:
    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# ---- config.json -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunDocument:
    """config.json: the frozen config and where the run sits in its experiment (sweep, cell, seed...)."""

    config: Any  # ablations.config.RunConfig
    meta: dict


def read_config(run_dir: Path) -> RunDocument:
    """Parse and check a run folder's config.json; InputError naming the file and what is wrong."""
    from ablations.config import RunConfig
    from ablations.errors import InputError

    path = Path(run_dir) / CONFIG
    document, problem = read_json(path)
    if problem is not None:
        raise InputError(path, "<file>", problem.removeprefix(f"{path}: "))
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise InputError(path, "config", 'expected {"config": ..., "meta": ...}')
    meta = document.get("meta")
    try:
        config = RunConfig.from_dict(document["config"])
    except InputError as err:
        raise InputError(path, f"config.{err.key}" if err.key else "config", err.message) from None
    return RunDocument(config, meta if isinstance(meta, dict) else {})


def read_meta(run_dir: Path) -> dict | None:
    """config.json's meta without checking the config (fast: listing thousands of folders); None if unreadable."""
    document, problem = read_json(Path(run_dir) / CONFIG)
    if problem is not None or not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        return None
    meta = document.get("meta")
    return meta if isinstance(meta, dict) else {}


def write_config(run_dir: Path, config: Any, meta: dict) -> bool:
    """Write config.json unless it already says exactly this; return whether it was written."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    document = {"config": config.to_dict(), "meta": meta}
    existing, problem = read_json(run_dir / CONFIG)
    if problem is None and existing == document:
        return False
    atomic_write_json(run_dir / CONFIG, document)
    return True


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def run_dirs_in(folder: Path) -> list[Path]:
    """The run folders (with a config.json) directly under `folder`, sorted; [] if there is no such folder."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(Path(e.path) for e in entries
                  if e.is_dir() and not e.name.startswith(".") and os.path.isfile(os.path.join(e.path, CONFIG)))


# ---- what a run writes ---------------------------------------------------------------------------------------------
def start_attempt(run_dir: Path) -> None:
    """A job is about to train here: an old failure no longer stands; a save cut short by a kill is removed."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR).unlink(missing_ok=True)
    for tmp in run_dir.glob(f".{CHECKPOINT}.*.tmp"):
        tmp.unlink(missing_ok=True)


def append_metrics(run_dir: Path, row: dict) -> None:
    append_jsonl(Path(run_dir) / METRICS, row)


def rewrite_metrics(run_dir: Path, rows: list[dict]) -> None:
    atomic_write_bytes(Path(run_dir) / METRICS,
                       "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows).encode())


def write_result(run_dir: Path, result: dict) -> None:
    atomic_write_json(Path(run_dir) / RESULT, result)


def read_result(run_dir: Path) -> dict | None:
    result, problem = read_json(Path(run_dir) / RESULT)
    return result if problem is None and isinstance(result, dict) else None


def write_error(run_dir: Path, reason: str, traceback_text: str, epoch: int) -> None:
    atomic_write_json(Path(run_dir) / ERROR, dict(reason=reason, traceback=traceback_text, epoch=epoch))


def read_error(run_dir: Path) -> dict | None:
    error, problem = read_json(Path(run_dir) / ERROR)
    return error if problem is None and isinstance(error, dict) else None


def save_checkpoint(run_dir: Path, state: dict) -> None:
    atomic_torch_save(Path(run_dir) / CHECKPOINT, state)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True: a checkpoint is data, and a crafted pickle must not run code."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)


def save_best_weights(run_dir: Path, state_dict: dict) -> None:
    """best.pt: the model's weights only (a plain state dict, no optimizer), atomically replaced."""
    atomic_torch_save(Path(run_dir) / BEST_WEIGHTS, state_dict)


def best_weights_path(run_dir: Path) -> Path:
    return Path(run_dir) / BEST_WEIGHTS


def remove_output(run_dir: Path, name: str) -> None:
    """Delete one output file of a run (train.keep_checkpoints); nothing if it is not there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(run_dir) / name)


def tensorboard_dir(run_dir: Path) -> Path:
    return Path(run_dir) / TENSORBOARD


def wandb_dir(run_dir: Path) -> Path:
    return Path(run_dir) / WANDB


def set_aside(path: Path) -> Path:
    """Rename an unreadable file to <name>.corrupt (kept for a post-mortem) and return the new path."""
    target = Path(path).with_name(Path(path).name + ".corrupt")
    os.replace(path, target)
    return target


def log_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOG


def archive_previous(run_dir: Path) -> Path | None:
    """--force: move the run's earlier outputs to previous/<timestamp>/ (nothing is deleted).

    Called with the run lock held (by the job that is about to run it again).
    """
    run_dir = Path(run_dir)
    outputs = [run_dir / name for name in OUTPUTS if (run_dir / name).exists()]
    if not outputs:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir / PREVIOUS / stamp
    n = 1
    while target.exists():  # two archives within a second
        target, n = run_dir / PREVIOUS / f"{stamp}-{n}", n + 1
    target.mkdir(parents=True)
    for path in outputs:
        shutil.move(str(path), target / path.name)
    return target


# ---- slurm.json ----------------------------------------------------------------------------------------------------
def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_slurm_record(run_dir: Path) -> dict | None:
    """The run's slurm.json, or None if it has none (or an unreadable one)."""
    record, problem = read_json(Path(run_dir) / SLURM_JSON)
    return record if problem is None and isinstance(record, dict) else None


def update_slurm_record(run_dir: Path, change: Callable[[dict], None]) -> dict:
    """Read slurm.json, apply `change` to it in place, write it back atomically; serialized by a flock of its own
    (the run lock is held by the job for the whole run)."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / SLURM_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        record = read_slurm_record(run_dir) or {"history": []}
        change(record)
        atomic_write_json(run_dir / SLURM_JSON, record)
        return record
    finally:
        os.close(fd)  # releases the flock


def record_slurm_event(run_dir: Path, job_id: str, state: str, **extra: Any) -> None:
    event = {"job_id": job_id, "state": state, "at": now(), **extra}
    update_slurm_record(run_dir, lambda record: record.setdefault("history", []).append(event))
