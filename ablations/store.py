"""Run folders: the single source of truth for a run's state.

    results/runs/<run_id>/   (where a results root keeps its runs: ablations.results_root)
        config.json      the frozen RunConfig (+ "meta": the sweep, cell, levels it was first launched for)
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
(checkpoint or metrics, or a result.json that cannot be read or holds no finite final top-1), new (none of
them), corrupt (config.json no longer hashes to the id in the folder's name: edited or copied by hand; its
results are not trusted and nothing launches it).

Files are opened without following symbolic links (O_NOFOLLOW): a link planted in a shared results folder
(as the lock, the log, metrics.jsonl or a checkpoint) is refused, never written through.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
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
RUN_LEVELS = 2  # a run folder is <results root>/<runs or sweep>/<run id>: neither of those two may be a link
RUN_ID_HASH = re.compile(r"[0-9a-f]{10}")  # the last '-' part of a run folder's name: config.short_hash()


class State(StrEnum):
    """A run's state, in the order commands list them."""

    DONE = "done"
    RUNNING = "running"
    PARTIAL = "partial"
    FAILED = "failed"
    NEW = "new"
    CORRUPT = "corrupt"


STATE_ORDER = tuple(State)
DONE, RUNNING, PARTIAL, FAILED, NEW, CORRUPT = STATE_ORDER


class UnsafeFile(OSError):
    """A run file that is a symbolic link, a directory or another non-regular file where a file belongs."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def open_fd(path: Path | str, flags: int, mode: int = FILE_MODE, *, follow_links: bool = False) -> int:
    """os.open of a regular file, never waiting: UnsafeFile (naming it) for a symbolic link (unless
    `follow_links`: an image of a dataset may be one), a directory, a FIFO, a device or a socket."""
    nofollow = 0 if follow_links else os.O_NOFOLLOW
    try:  # O_NONBLOCK: opening a planted FIFO must not hang, for reading or writing (it is refused below)
        fd = os.open(path, flags | nofollow | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow_links:
            raise UnsafeFile(err.errno, "is a symbolic link; run files are never opened through one "
                                        "(remove it)", str(path)) from None
        if err.errno == errno.EISDIR:
            raise UnsafeFile(err.errno, "is a directory where a file belongs (remove it)", str(path)) from None
        if err.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise UnsafeFile(err.errno, _NOT_REGULAR, str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafeFile(errno.EINVAL, _NOT_REGULAR, str(path))
    return fd  # O_NONBLOCK has no effect on a regular file's reads and writes


_NOT_REGULAR = "is not a regular file (a FIFO, a device or a socket: never opened; remove it)"


def open_file(path: Path | str, mode: str = "rb", *, follow_links: bool = False):
    """open() for run files, without following symbolic links: "rb", "ab" or "a" (text, for the log)."""
    flags = {"rb": os.O_RDONLY, "ab": os.O_WRONLY | os.O_APPEND | os.O_CREAT,
             "a": os.O_WRONLY | os.O_APPEND | os.O_CREAT}[mode]
    return os.fdopen(open_fd(path, flags, follow_links=follow_links), mode)


def read_tail(path: Path | str, limit: int = 1 << 16) -> str:
    """The last `limit` bytes of a log as text (a job's log can be gigabytes; its tail says why it ended)."""
    with open_file(path, "rb", follow_links=True) as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - limit))
        return f.read().decode(errors="replace")


def real_dir(path: Path | str, levels: int) -> Path:
    """Create the folder `path` (with its parents) where none of its last `levels` components may be a symbolic
    link: the folders a results root holds (a sweep's folder, a run's, its tensorboard/ or previous/). A
    planted link would carry a run's files out of the results root: UnsafeFile naming it, nothing written.
    The results root itself may be a link (results -> /scratch/...): that is the user's choice."""
    path = Path(path)
    checked = [path, *path.parents][:levels][::-1]  # outermost first
    checked[0].parent.mkdir(parents=True, exist_ok=True)
    for folder in checked:
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
        mode = os.lstat(folder).st_mode
        if stat.S_ISLNK(mode):
            raise UnsafeFile(errno.ELOOP, LINK_UNDER_ROOT, str(folder))
        if not stat.S_ISDIR(mode):
            raise UnsafeFile(errno.ENOTDIR, "is not a folder (remove it)", str(folder))
    return path


LINK_UNDER_ROOT = ("is a symbolic link; nothing under a results root is read or written through one, as it could lead "
                   "out of it. Remove it (and move what it points to into the results root if it belongs there)")


def link_in(path: Path | str, levels: int) -> Path | None:
    """The first (outermost) of the last `levels` components of `path` that is a symbolic link, or None."""
    path = Path(path)
    return next((folder for folder in [path, *path.parents][:levels][::-1] if folder.is_symlink()), None)


def refuse_link(path: Path | str, levels: int) -> None:
    """UnsafeFile naming the first of the last `levels` components of `path` that is a symbolic link, if any."""
    if (link := link_in(path, levels)) is not None:
        raise UnsafeFile(errno.ELOOP, LINK_UNDER_ROOT, str(link))


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[BinaryIO]:
    """A file object for a temp file beside `path`; on success it is fsynced and renamed over `path`.

    Readers never see half a file, and a failure leaves no temp file behind.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_EXCL: no link
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    os.fchmod(fd, FILE_MODE)  # mkstemp creates 0600; run folders are shared with collaborators
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link planted at `path` itself, never its target
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not err.filename:  # disk full: say which file could not be written
            raise write_failure(err, path) from None
        raise


def write_failure(err: OSError, path: Path | str) -> OSError:
    """A write the system refused, naming the file and, for a full disk or a file size limit, what to do."""
    return OSError(err.errno, f"{err.strerror}{WRITE_FAILURES.get(err.errno, '')}", str(path))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as f:
        f.write(data)


def atomic_create_json(path: Path, obj: Any) -> bool:
    """Write `path` whole (temp file + hard link) only if it does not exist; False if it does (nothing written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write((json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if `path` exists, a link planted there included: never written through
        return True
    except FileExistsError:
        return False
    except OSError as err:
        if err.filename:
            raise
        raise write_failure(err, path) from None  # disk full: say which file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Strict JSON (NaN and infinity are refused: they are not JSON, and a reader would choke on them)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """torch.save, atomically. A write the system refuses (a full disk, the file size limit) is raised as the
    OSError naming the file and the cause: torch's own error says only "unexpected pos"."""
    import torch

    with atomic_target(path) as f:
        writer = _RecordingWriter(f)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None  # atomic_target names the file


WRITE_FAILURES = {errno.ENOSPC: " (the disk is full: free space, then launch again to resume)",
                  errno.EDQUOT: " (the disk quota is used up: free space, then launch again to resume)",
                  errno.EFBIG: " (the file size limit, ulimit -f, is lower than the file: raise it, then launch again)"}


class _RecordingWriter:
    """A file's write and flush, keeping the OSError a write raised (torch.save turns it into a RuntimeError)."""

    def __init__(self, f: BinaryIO):
        self.f, self.error = f, None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one line with a single write() call, then fsync. A write the system refuses (a full disk, the file
    size limit) is cut back off and raised naming the file and the cause."""
    line = (json.dumps(obj, sort_keys=True, allow_nan=False) + "\n").encode()
    with open_file(path, "ab") as f:
        start = f.seek(0, os.SEEK_END)
        try:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(f.fileno(), start)  # no half line left for readers
            raise write_failure(err, path) from None


@dataclass
class MetricsRead:
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    impossible: list[str] = field(default_factory=list)  # read_epochs: rows left out for a number that cannot be


def read_epochs(path: Path | str) -> MetricsRead:
    """metrics.jsonl's rows, each checked: a row holding a number that cannot be (NaN, infinity, a negative loss,
    an accuracy over 100) is left out and named in `impossible` (run_state calls such a folder corrupt)."""
    from ablations.spec.metrics import HIGHEST, run_numbers_problem  # torch-free

    read = read_metrics(path)
    rows = []
    for number, row in enumerate(read.rows, start=1):
        if _plain_row_can_be(row, HIGHEST):
            rows.append(row)
        elif problem := run_numbers_problem(row, f"{path} (row {number})"):
            read.impossible.append(problem)
        else:
            rows.append(row)
    read.rows = rows
    return read


def _plain_row_can_be(row: dict, highest: dict[str, float]) -> bool:
    """The common case of run_numbers_problem, inlined (300 epochs x 1,000 runs): a flat row of numbers that can be.
    False sends the row to the full check (nested values, or a number out of range: NaN fails every comparison)."""
    for key, value in row.items():
        kind = type(value)
        if kind is float or kind is int:
            if not 0 <= value <= highest.get(key, _FINITE_MAX):
                return False
        elif kind is not str and kind is not bool and value is not None:
            return False
    return True


_FINITE_MAX = 1.7976931348623157e308  # the largest float: infinity is above it


def read_metrics(path: Path) -> MetricsRead:
    """Every complete line of metrics.jsonl; a truncated or corrupt line is reported, not raised."""
    out = MetricsRead()
    try:
        with open_file(path, "rb") as f:
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
        with open_file(path, "rb") as f:
            return json.loads(f.read()), None
    except FileNotFoundError:
        return None, f"{path}: missing"
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"{path}: not valid JSON ({str(err)[:200]})"
    except OSError as err:  # a link, a directory, no permission
        return None, f"{path}: cannot be read ({err.strerror or err})"


def result_problem(result: Any) -> str | None:
    """What makes a parsed result.json unusable, or None: it must hold "final" with a finite top-1, and every
    final value must be a number (not null, not text); whether the numbers can be is result_impossible's."""
    if not isinstance(result, dict):
        return f"expected a JSON object, got {type(result).__name__}"
    final = result.get("final")
    if not isinstance(final, dict):
        return f"'final' is {type(final).__name__ if final is not None else 'null'}, not an object of metrics"
    if "top1" not in final:
        return "'final' has no top1"
    for key, value in final.items():  # a number that cannot be (NaN, 1e308) is for result_impossible
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"final.{key} is {str(value)[:40]!r}, not a number"
    if "epochs" in result and (isinstance(result["epochs"], bool) or not isinstance(result["epochs"], int)):
        return f"'epochs' is {str(result['epochs'])[:40]!r}, not an integer"
    return None


def identity_problem(run_dir: Path | str) -> str | None:
    """None if the folder's files can be trusted as the run its name says; else what is wrong:
    - config.json must hash to the id at the end of the folder's name (`<model>-s<seed>-<hash>`, or just the hash);
    - its meta (the sweep and cell that launched the run) must match the meta_hash written beside it: a hand edit
      of the meta would move the run to another cell;
    - a folder with outputs (result.json, metrics.jsonl, a checkpoint, error.json) must have a config.json: outputs
      alone cannot be told to belong to this run.
    Folders whose name carries no id, and a folder with no file at all yet, pass."""
    base = os.fspath(run_dir)
    folder_id = os.path.basename(base.rstrip(os.sep)).rsplit("-", 1)[-1]
    if not RUN_ID_HASH.fullmatch(folder_id):
        return None
    path = os.path.join(base, CONFIG)
    document, problem = read_json(path)
    if problem is not None:
        if not problem.endswith(": missing"):
            return problem
        outputs = [name for name in (RESULT, METRICS, CHECKPOINT, ERROR) if os.path.lexists(os.path.join(base, name))]
        return (f"{path}: missing, while the folder holds {', '.join(outputs)}: they cannot be told to belong to "
                f"this run (copied by hand?). Restore config.json or move the folder away") if outputs else None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        return f"{path}: no 'config' mapping"
    if config_digest(config) != folder_id:
        return (f"{path}: its config does not hash to the folder's id {folder_id} (edited or copied by hand?): the "
                f"run's files are not trusted. Restore config.json or move the folder away")
    if META_HASH in document and document[META_HASH] != digest(document.get("meta")):
        return (f"{path}: its meta (the sweep, cell and seed the run was launched for) was edited after the launch "
                f"({META_HASH} does not match): the run's place in its sweep is not trusted. Restore config.json "
                f"or move the folder away")
    return None


META_HASH = "meta_hash"  # config.json: the digest of its meta, so an edited meta is found as an edited config is


def digest(obj: Any) -> str:
    """The first 10 hex digits of the SHA-256 of obj's canonical JSON ("" if it holds NaN or infinity)."""
    try:
        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return ""
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def written_config_hash(run_dir: Path | str) -> str | None:
    """The hash of the config as config.json holds it (the folder's id hashes the same), which a config of an
    earlier schema (a field added since, filled by its default when read) keeps; None if it cannot be read."""
    document, problem = read_json(os.path.join(os.fspath(run_dir), CONFIG))
    config = document.get("config") if problem is None and isinstance(document, dict) else None
    return config_digest(config) if isinstance(config, dict) else None


def config_digest(config: dict) -> str:
    """The run id's hash of a config.json "config" mapping: the same rule as RunConfig.short_hash."""
    from ablations.spec.config import NOT_IDENTITY  # torch-free

    return digest({name: {k: v for k, v in section.items() if k not in NOT_IDENTITY.get(name, ())}
                   if isinstance(section, dict) else section for name, section in config.items()})


@dataclass
class RunState:
    state: State
    epochs_done: int = 0
    problems: list[str] = field(default_factory=list)
    error: str | None = None


def run_state(run_dir: Path) -> RunState:
    """The state of a run folder, from its files alone; never raises on corrupt content.

    Every number read is checked (spec.metrics.run_numbers_problem): a result.json or a metrics.jsonl row with a
    number that cannot be (NaN, infinity, a negative count, an accuracy over 100), or a result.json written for
    another config, makes the folder corrupt; a file that cannot be read whole (cut, not an object) makes it
    partial, and the run resumes. A done run is decided without parsing metrics.jsonl (planning reads thousands
    of folders of 300 epochs; analysis.runs checks its rows where it reads them), and with plain string paths.
    """
    base = os.fspath(run_dir)
    tampered = identity_problem(base)
    if tampered:
        return RunState(CORRUPT, 0, [tampered], tampered)
    result_path, metrics_path = os.path.join(base, RESULT), os.path.join(base, METRICS)
    problems: list[str] = []
    result = None
    if os.path.lexists(result_path):
        result, problem = read_json(result_path)
        problem = problem or (f"{result_path}: {why}; the run is run again" if (why := result_problem(result))
                              else None)
        if problem is not None:
            problems.append(problem)
            result = None
        elif impossible := result_impossible(result, result_path, base):
            return RunState(CORRUPT, 0, [impossible], impossible)
    if result is not None:  # a done run's metrics rows are checked where they are read (read_epochs: curves)
        if ends_cleanly(metrics_path):
            epochs = result.get("epochs")
            return RunState(DONE, epochs if isinstance(epochs, int) else 0)
        problems.append(f"{metrics_path}: ends mid-line (a write was cut off); the run is resumed")
    metrics = read_epochs(metrics_path)
    if metrics.impossible:
        return RunState(CORRUPT, 0, metrics.impossible, metrics.impossible[0])
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


def result_impossible(result: dict, path: str, run_dir: str) -> str | None:
    """Why a readable result.json cannot be trusted, or None: a number that cannot be, or a config hash (written
    since results carry one) that is not the folder's: a result copied from another run."""
    from ablations.spec.metrics import run_numbers_problem  # torch-free

    if problem := run_numbers_problem(result, path):
        return problem
    folder_id = os.path.basename(run_dir.rstrip(os.sep)).rsplit("-", 1)[-1]
    written_for = result.get(RESULT_CONFIG_HASH)
    if written_for is not None and RUN_ID_HASH.fullmatch(folder_id) and written_for != folder_id:
        return (f"{path}: written for the config {str(written_for)[:40]!r}, not this folder's {folder_id} (copied "
                f"from another run?): not trusted. Move it away, or the folder")
    return None


RESULT_CONFIG_HASH = "config_hash"  # result.json: the hash of the config it was computed for


def live_run_state(run_dir: Path) -> RunState:
    """run_state, with an unfinished run whose folder a job holds locked reported as running."""
    state = run_state(run_dir)
    if state.state in (NEW, PARTIAL) and is_locked(run_dir):
        state.state = RUNNING
    return state


def ends_cleanly(path: Path) -> bool:
    """True if the file is absent, empty or ends with a newline."""
    try:
        with open_file(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return True
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except FileNotFoundError:
        return True
    except OSError:
        return False


class RunLocked(RuntimeError):
    pass


LOCK_PATIENCE_S = 1.0  # how long a claim retries before it concludes that another job holds the lock


@contextlib.contextmanager
def run_lock(run_dir: Path, patience_s: float = LOCK_PATIENCE_S) -> Iterator[None]:
    """Hold an exclusive flock on the run folder; raise RunLocked if another job has it.

    flock is released by the kernel when its process dies, so a killed job never leaves a stale lock. A
    status check (`is_locked`) holds a shared lock for microseconds: the claim retries for `patience_s`
    before it concludes that a job holds the folder, so a status check never makes a launch skip a runnable run.
    """
    run_dir = real_dir(run_dir, RUN_LEVELS)
    fd = open_fd(run_dir / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        deadline = time.monotonic() + patience_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RunLocked(f"{run_dir} is being worked on by another job") from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def is_locked(run_dir: Path) -> bool:
    """Whether a job holds the run folder's lock: a momentary *shared* lock check (see run_lock); False for a
    lock file that cannot be opened (a link or a directory: run_lock refuses it when a job claims the run)."""
    try:
        fd = open_fd(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
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

    config: Any  # ablations.spec.config.RunConfig
    meta: dict


def read_config(run_dir: Path) -> RunDocument:
    """Parse and check a run folder's config.json; InputError naming the file and what is wrong."""
    from ablations.spec.config import RunConfig
    from ablations.spec.errors import InputError

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
    """Write config.json unless it already says exactly this; return whether it was written.

    A run folder is shared by every sweep whose cell expands to its config: the meta of the launch that made
    it (its origin) is kept; only the keys outside the run's identity (train.logger...) take the new values."""
    run_dir = real_dir(run_dir, RUN_LEVELS)
    existing, problem = read_json(run_dir / CONFIG)
    if existing is None and problem.endswith(": missing"):  # the first launch: two at once keep one origin
        if atomic_create_json(run_dir / CONFIG, config_document(config, meta)):
            return True
        existing, problem = read_json(run_dir / CONFIG)  # another launch made it a moment ago
    if problem is None and isinstance(existing, dict) and isinstance(existing.get("meta"), dict):
        meta = existing["meta"]
    document = config_document(config, meta)
    if problem is None and existing == document:
        return False
    atomic_write_json(run_dir / CONFIG, document)
    return True


def config_document(config: Any, meta: dict) -> dict:
    """config.json's content: the config, the meta, and the meta's digest (identity_problem checks it)."""
    return {"config": config.to_dict(), "meta": meta, META_HASH: digest(meta)}


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
    run_dir = real_dir(run_dir, RUN_LEVELS)
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
    """result.json if it is usable (see result_problem) and can be trusted (result_impossible), else None."""
    path = Path(run_dir) / RESULT
    result, problem = read_json(path)
    if problem is not None or result_problem(result) is not None:
        return None
    return None if result_impossible(result, str(path), os.fspath(run_dir)) else result


WORKER_TRACEBACK = "Original Traceback (most recent call last):"  # torch's re-raise of a data-loading worker's error
QUALIFIED_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )")  # "pkg.module." of "pkg.module.E: ..."


def failure_reason(err: BaseException) -> str:
    """The one line error.json, status and the launcher's summary give as a failure's reason: the exception and
    its message, whitespace folded. An error raised in a data-loading worker (a corrupt or empty image, a
    decompression bomb) reaches the training process as a message holding the worker's whole traceback: its
    last line is the reason (the full traceback stays in error.json's traceback)."""
    text = str(err)
    if WORKER_TRACEBACK in text:
        last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), text)
        return f"{QUALIFIED_EXCEPTION.sub('', last)} (in a data-loading worker)"[:2000]
    text = " ".join(text.split())
    return f"{type(err).__name__}: {text}"[:2000] if text else type(err).__name__


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

    with open_file(path, "rb") as f:  # a regular file, never a link or a FIFO (which would block forever)
        return torch.load(f, map_location=map_location, weights_only=True)


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
    """The run's tensorboard/ folder, created (never through a link)."""
    return real_dir(Path(run_dir) / TENSORBOARD, RUN_LEVELS + 1)


def wandb_dir(run_dir: Path) -> Path:
    return real_dir(Path(run_dir) / WANDB, RUN_LEVELS + 1)


def set_aside(path: Path) -> Path:
    """Rename an unreadable file to <name>.corrupt (kept for a post-mortem) and return the new path."""
    target = Path(path).with_name(Path(path).name + ".corrupt")
    os.replace(path, target)
    return target


def log_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOG


def open_log(run_dir: Path):
    """log.txt for appending (text), never through a symbolic link."""
    return open_file(log_path(run_dir), "a")


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
    real_dir(target, RUN_LEVELS + 2)  # a planted previous/ link would carry the run's outputs elsewhere
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
    fd = open_fd(run_dir / SLURM_LOCK, os.O_RDWR | os.O_CREAT)
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
