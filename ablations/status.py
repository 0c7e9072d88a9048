"""python -m ablations.status SWEEP.yaml [SWEEP.yaml ...] — the state of every run of an experiment, from its run
folders (of several sweeps, or a study file's, one table each).

Takes the same selection flags as ablations.run (--recipe, --set, --seeds, --data-root): they decide which
runs the experiment holds. Run folders beside them that belong to other experiments are named in one line.
A run submitted to SLURM shows its job's state; the experiment's jobs are also found by their job name
(squeue), so an array whose ids no file recorded (the submitting process died right after sbatch) is shown,
each job on its run, or as "unrecorded job N of this experiment" where its run cannot be told.
A run first launched by another sweep (or cell) with the same config is shown with where it came from.
Exit code 0 when no selected run failed, 1 when one did, 2 for bad input.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

from ablations import store
from ablations.cli import EXIT_FAILED, EXIT_OK, command
from ablations.experiment import (
    add_selection_flags,
    add_sweeps_argument,
    describe_others,
    launch_job_name,
    resolve,
    selection_from_args,
)
from ablations.plan import Plan, PlannedRun, distinct_runs, make_plan
from ablations.results_root import origin
from ablations.spec.study import sweep_paths

FAILED_STATES = {"failed", "cancelled", "corrupt"}


def describe(planned: PlannedRun, cluster: dict, meta: dict) -> dict:
    """One run's row: cell, seed, state (from SLURM where it was submitted), epochs, run id, detail, and where
    the run was first launched when that was another sweep or cell (`meta`: this sweep's meta for it)."""
    state = planned.state
    on_cluster = cluster.get(planned.run_dir.name)
    metrics = store.read_epochs(planned.run_dir / store.METRICS).rows if state.state != store.NEW else []
    last = metrics[-1] if metrics else {}
    detail, job_id, shown = "", None, str(state.state)
    if state.state == store.DONE:
        final = (store.read_result(planned.run_dir) or {}).get("final") or {}
        detail = f"top1 {_number(final.get('top1'))}  top5 {_number(final.get('top5'))}"
    elif last:
        detail = f"epoch {last.get('epoch')}  top1 {_number(last.get('top1'))}"
    if state.state == store.CORRUPT:  # never trusted, whatever SLURM says
        detail = f"error: {state.error}"
    elif on_cluster is not None and on_cluster.state != "new":
        shown = on_cluster.state  # pending / running / requeued / done / failed / cancelled, from SLURM + folder
        job_id = on_cluster.job_id
        detail = f"job {on_cluster.job_id}  {detail}".strip()
        if on_cluster.state == "cancelled" and state.state != store.FAILED:  # the job's log says nothing of why
            detail = f"{detail}  cancelled: launching again " + ("resumes it from its checkpoint" if
                                                                  (planned.run_dir / store.CHECKPOINT).exists()
                                                                  else "starts it")
        elif on_cluster.state in FAILED_STATES and on_cluster.error:
            detail = f"{detail}  error: {on_cluster.error.strip().splitlines()[-1]}"
    elif state.state == store.FAILED:
        detail = f"{detail}  error: {state.error}".strip()
    reused = origin(planned.run_dir, meta) if state.state != store.NEW else None
    if reused:
        detail = f"{detail}  (reused: {reused})".strip()
    return dict(cell=planned.run.cell.label, seed=planned.run.seed, state=shown, epochs=state.epochs_done,
                run_id=planned.run_dir.name, job_id=job_id, detail=detail, origin=reused)


def _number(value) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) and not isinstance(value, bool) else "?"


def cluster_view(plan: Plan, job_name: str) -> tuple[dict, dict[str, str]]:
    """(run id -> ablations.executors.slurm.RunStatus for the runs submitted to SLURM, {job id: state} of the
    experiment's live jobs whose run cannot be told). A run counts as submitted with a slurm.json, or with a live
    job of the experiment's job name that no file recorded (the submission died before writing its ids)."""
    from ablations.executors import slurm

    submitted = [p.run_dir.absolute() for p in plan.runs if (p.run_dir / store.SLURM_JSON).is_file()]
    store_dir = plan.experiment.store_dir
    if not submitted and not (store_dir / slurm.SUBMITIT_DIR).is_dir():  # never submitted: no squeue
        return {}, {}
    launched = [p.run_dir for p in plan.runs if p.run_dir.is_dir()]
    named = slurm.jobs_named(store_dir, job_name, launched)
    dirs = [*submitted, *(d for d in named.by_run if d not in set(submitted))]
    rows = {s.run_id: s for s in slurm.status(store_dir, dirs, named)} if dirs else {}
    return rows, {j: state for j, state in sorted(named.unknown.items()) if state in slurm.ACTIVE_STATES}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ablations.status", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweeps_argument(p)
    add_selection_flags(p)
    p.add_argument("--json", action="store_true", help="print the runs as JSON (one object) instead of a table")
    return p


def format_table(plan: Plan, rows: list[dict]) -> str:
    header = ["cell", "seed", "state", "epochs", "run id", ""]
    cells = [header] + [[r["cell"], str(r["seed"]), r["state"], str(r["epochs"]), r["run_id"], r["detail"]]
                        for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"{plan.experiment.describe()}: runs in {plan.experiment.store_dir}/"]
    for i, row in enumerate(cells):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    counts = Counter(r["state"] for r in rows)  # as shown: a run SLURM cancelled counts as cancelled, not new
    order = [*map(str, store.STATE_ORDER), "pending", "requeued", "cancelled"]
    lines.append("  " + ", ".join(f"{counts[state]} {state}" for state in sorted(
        counts, key=lambda state: order.index(state) if state in order else len(order))))
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selection = selection_from_args(args)
    plans = [make_plan(resolve(path, selection, args.results_root)) for path in sweep_paths(args.sweeps)]
    reports, texts = [], []
    for plan in plans:
        cluster, unrecorded = cluster_view(plan, launch_job_name([p.experiment for p in plans]))
        rows = [describe(p, cluster, plan.meta(p.run)) for p in plan.runs]
        others = describe_others(plan.experiment)
        unknown = [dict(job_id=j, state=state.lower()) for j, state in unrecorded.items()]
        reports.append(dict(sweep=plan.sweep.name, recipe=plan.recipe, overrides=plan.experiment.overrides,
                            results=str(plan.results_dir), runs=rows, unrecorded_jobs=unknown, others=others,
                            problems=plan.problems))
        lines = [format_table(plan, rows)]
        lines += [f"  unrecorded job {job['job_id']} of this experiment ({job['state']}): no file names its run"
                  for job in unknown]
        lines += [f"  note: {others}"] if others else []
        lines += [f"  warning: {problem}" for problem in plan.problems]
        texts.append("\n".join(lines))
    if len(plans) > 1:
        distinct = {launch.planned.run_dir for launch in distinct_runs(plans)}
        texts.append(f"{len(plans)} sweeps, {sum(len(p.runs) for p in plans)} runs of which {len(distinct)} distinct")
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else {"sweeps": reports}, indent=2))
    else:
        print("\n\n".join(texts))
    failed = any(r["state"] in FAILED_STATES for report in reports for r in report["runs"])
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
