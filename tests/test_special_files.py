"""A sweep, study or recipe file that is not a regular file, or that never ends, is refused at once (exit 2,
one line naming it), never waited on or read whole."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command in a process of its own, bounded in time: a hang fails the test, it does not block it."""
    return subprocess.run([sys.executable, "-m", "ablations.run", *args, "--dry-run", "--no-eta"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def special_file(kind: str, tmp_path: Path) -> Path:
    if kind == "fifo":
        path = tmp_path / "sweep.yaml"
        os.mkfifo(path)  # nobody writes: opening it for reading blocks, reading it waits forever
        return path
    if kind == "endless":
        return Path("/dev/zero")
    if kind == "huge":
        path = tmp_path / "sweep.yaml"
        path.write_bytes(b"# " + b"x" * 3_000_000 + b"\n")
        return path
    path = tmp_path / "sweeps.yaml"
    path.mkdir()
    return path


@pytest.mark.parametrize("kind, words", [("fifo", "not a regular file"), ("endless", "not a regular file"),
                                         ("huge", "too large"), ("folder", "is a folder")])
@pytest.mark.parametrize("as_what", ["sweep", "recipe"])
def test_a_special_or_endless_file_is_refused_at_once(tmp_path, kind, words, as_what):
    path = special_file(kind, tmp_path)
    args = [str(path)] if as_what == "sweep" else [str(ROOT / "sweeps" / "pe.yaml"), "--recipe", str(path)]
    proc = run(*args, "--results-root", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(path) in proc.stderr and words in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_fifo_listed_in_a_study_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pe.yaml")
    (tmp_path / "study.yaml").write_text("study: s\nsweeps: [pe.yaml]\n")
    proc = run(str(tmp_path / "study.yaml"), "--results-root", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr
