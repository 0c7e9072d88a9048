"""Run folders: the single source of truth for a run's state.

    results/<sweep>/<run_id>/
        config.json      the frozen RunConfig (+ "meta": sweep, cell, levels), written before the job starts
        metrics.jsonl    one JSON object per finished epoch (appended, one line = one complete write)
        checkpoint.pt    latest training state (atomic: temp file + rename)
        result.json      written once, when the run finished successfully
        error.json       written when the run failed: {"reason", "traceback", "epoch"}
        log.txt          the job's log
        .lock            held (flock) while a job works in the folder

A run's state is derived from these files alone: done (valid result.json), failed (error.json), partial
(checkpoint or metrics, or a result.json that cannot be read), new (none of them).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
ERROR = "error.json"
LOG = "log.txt"
LOCK = ".lock"

FILE_MODE = 0o644

DONE, FAILED, PARTIAL, NEW, RUNNING = "done", "failed", "partial", "new", "running"


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
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    import torch

    with atomic_target(path) as f:
        torch.save(obj, f)


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one line with a single write() call, then fsync."""
    line = (json.dumps(obj, sort_keys=True) + "\n").encode()
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
    state: str
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
