"""An experiment's jobs by job name, also those no file recorded: squeue by name, and the run folder of each
job read from submitit's pickle of its task (never unpickled)."""
from __future__ import annotations

import os
import pickletools
import re
from dataclasses import dataclass, field
from pathlib import Path

from ablations import store
from ablations.executors.slurm.queue import ACTIVE_STATES, JOB_STATE, client_output, job_order, valid_job_id
from ablations.executors.slurm.settings import SBATCH_VALUE
from ablations.executors.slurm.submit import SUBMITIT_DIR

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


def jobs_named(store_dir: Path, job_name: str, run_dirs: list[Path] | None = None) -> NamedJobs:
    """The user's pending and running jobs named `job_name` (`squeue --me -r -n`), each with the run folder of
    the sweep it works on (of `run_dirs` only, if given: the others belong to runs not selected), from
    submitit's own file (run_dir_of_job). Nothing read back is trusted: an id must look like SLURM's, a state
    like a state name, the name must be `job_name`; "" from squeue (no SLURM here) finds nothing."""
    store_dir = Path(store_dir).absolute()
    found = NamedJobs(job_name)
    if not re.fullmatch(SBATCH_VALUE["pattern"], job_name):
        return found
    wanted = {Path(d).absolute() for d in run_dirs} if run_dirs is not None else None
    for line in client_output(["squeue", "--me", "-h", "-r", "-n", job_name, "-o", "%i|%T|%j"]).splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != 3:
            continue
        job_id, state, name = parts
        if name != job_name or not valid_job_id(job_id) or not JOB_STATE.fullmatch(state):
            continue
        run_dir = run_dir_of_job(store_dir, job_id)
        if run_dir is None:
            found.unknown[job_id] = state
        elif wanted is None or run_dir in wanted:
            found.by_run.setdefault(run_dir, {})[job_id] = state
    return found


def run_dir_of_job(store_dir: Path, job_id: str) -> Path | None:
    """The run folder that job `job_id` works on, from submitit's pickle of its task
    (<store_dir>/.submitit/<job id>_submitted.pkl, named so by submitit as soon as sbatch answers; it holds
    the RunJob, which names its folder). The pickle is read with pickletools and never unpickled (no code from
    data): the first absolute path in it that is a folder of the results root's (the store's, or a sweep
    folder's of the earlier layout) holding a config.json. None if the pickle is missing, a link, too large or
    names no such folder."""

    store_dir = Path(store_dir).absolute()
    try:
        with os.fdopen(store.open_fd(store_dir / SUBMITIT_DIR / f"{job_id}_submitted.pkl", os.O_RDONLY), "rb") as f:
            data = f.read(MAX_PICKLE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_PICKLE_BYTES:
        return None
    root, real_root = store_dir.parent, store_dir.parent.resolve()
    try:
        for _, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and os.path.isabs(arg) and len(arg) < 4096:
                path = Path(arg)
                inside = root / path.parent.name / path.name
                if path.parent.parent.resolve() == real_root and (inside / store.CONFIG).is_file():
                    return inside
    except Exception:  # not a pickle, or a truncated one: pickletools raises ValueError and others
        return None
    return None
