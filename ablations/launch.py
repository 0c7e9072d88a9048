"""Launching a plan: write each pending run's config.json, then run the runs (locally or on SLURM).

The local executor runs the runs one after another in this process. Each run is trained under its
folder's lock, and its state is read again once the lock is held: two launches of the same sweep never
run a cell twice, and a run finished by the other launch meanwhile is skipped.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ablations import store
from ablations.plan import Plan, PlannedRun

log = logging.getLogger("ablations")


def config_document(plan: Plan, planned: PlannedRun) -> dict:
    return {"config": planned.run.config.to_dict(), "meta": plan.sweep.meta(planned.run, plan.recipe)}


def write_configs(plan: Plan, runs: list[PlannedRun]) -> None:
    """config.json for every run to launch. An existing one must describe the same run (same hash)."""
    for planned in runs:
        planned.run_dir.mkdir(parents=True, exist_ok=True)
        path = planned.run_dir / store.CONFIG
        document = config_document(plan, planned)
        if path.exists():
            existing, problem = store.read_json(path)
            if problem is None and existing.get("config") == document["config"]:
                if existing.get("meta") == document["meta"]:
                    continue
        store.atomic_write_json(path, document)


def archive_previous(run_dir: Path) -> Path | None:
    """--force: move the run's earlier outputs to previous/<timestamp>/ (nothing is deleted)."""
    outputs = [run_dir / n for n in (store.METRICS, store.CHECKPOINT, store.RESULT, store.ERROR, store.LOG)]
    outputs = [p for p in outputs if p.exists()]
    if not outputs:
        return None
    target = run_dir / "previous" / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for path in outputs:
        shutil.move(str(path), target / path.name)
    return target


@dataclass
class LaunchReport:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # run id -> why (done meanwhile, locked)


def run_local(plan: Plan, runs: list[PlannedRun], *, force: bool = False, retry_failed: bool = False,
              progress: bool = True, num_workers: int = 0) -> LaunchReport:
    """Train `runs` one after another in this process; a failing run does not stop the others."""
    from tqdm.auto import tqdm

    from ablations.train import Preempted, train_run

    report = LaunchReport()
    bar = tqdm(runs, desc=f"sweep {plan.sweep.name}", unit="run", disable=not progress, position=0)
    for planned in bar:
        run_id = planned.run.run_id
        bar.set_postfix_str(planned.run.cell.label)
        try:
            with store.run_lock(planned.run_dir):
                state = store.run_state(planned.run_dir)  # again, now that nobody else can change it
                if state.state == store.DONE and not force:
                    report.skipped[run_id] = "finished by another launch"
                    continue
                if state.state == store.FAILED and not (retry_failed or force):
                    report.skipped[run_id] = "failed in another launch (use --retry-failed)"
                    continue
                if force and planned.state.state in (store.DONE, store.FAILED):
                    archive_previous(planned.run_dir)
                config = planned.run.config
                train_run(config, planned.run_dir, progress=progress, num_workers=num_workers, handle_signals=True)
                report.done.append(run_id)
        except store.RunLocked:
            report.skipped[run_id] = "running in another launch"
        except Preempted:
            report.skipped[run_id] = "stopped by a signal; checkpoint saved, relaunch to resume"
            log.warning("%s: stopped by a signal; relaunch the sweep to resume it", run_id)
            break
        except Exception as err:  # the run wrote error.json itself; the sweep goes on
            reason = read_error_reason(planned.run_dir) or f"{type(err).__name__}: {err}"
            report.failed[run_id] = reason
            log.error("%s failed: %s", run_id, reason)
    return report


def read_error_reason(run_dir: Path) -> str | None:
    error, problem = store.read_json(run_dir / store.ERROR)
    return error.get("reason") if problem is None and isinstance(error, dict) else None
