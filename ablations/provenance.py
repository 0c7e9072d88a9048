"""Which code a run ran: the git commit of the checkout and whether it had uncommitted changes.

A local run asks git. A SLURM job runs from a snapshot of the packages (ablations.executors.slurm.snapshot_code),
which has no .git: at submission the checkout's commit and dirty state go into the job script as environment
variables (REST_GIT_COMMIT, REST_GIT_DIRTY) and the job records those. No torch import here.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

ENV_COMMIT, ENV_DIRTY = "REST_GIT_COMMIT", "REST_GIT_DIRTY"


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def git_state(root: Path | None = None) -> dict:
    """{"git_commit": sha or None, "git_dirty": bool or None} of the checkout at `root`."""
    root = Path(root or project_root())

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"git_commit": None, "git_dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit.strip(), "git_dirty": None if status is None else bool(status.strip())}


def provenance_exports(state: dict) -> str:
    """The job-script line that hands `state` (git_state's) to the job."""
    dirty = {True: "1", False: "0", None: ""}[state.get("git_dirty")]
    return f"export {ENV_COMMIT}={shlex.quote(state.get('git_commit') or '')} {ENV_DIRTY}={dirty}"


def code_provenance(root: Path | None = None) -> dict:
    """The provenance of the code this process runs: what the submission handed over, else git."""
    if ENV_COMMIT in os.environ:
        dirty = os.environ.get(ENV_DIRTY, "")
        return {"git_commit": os.environ[ENV_COMMIT] or None, "git_dirty": {"1": True, "0": False}.get(dirty)}
    return git_state(root)
