"""python -m ablations.status SWEEP.yaml — every run's state, from the run folders.

Takes the same --recipe/--seeds/--set/--data-root flags as ablations.run (they decide the run ids).
Runs found on disk that this plan does not contain (other recipes or overrides) are listed too.
"""
from __future__ import annotations

import sys

from ablations import store
from ablations.run import EXIT_OK, EXIT_USAGE, UsageError, build_parser, load_plan, paragraph
from ablations.spec import SweepError


def describe(planned, cluster: dict) -> list[str]:
    state = planned.state
    on_cluster = cluster.get(planned.run.run_id)
    metrics = store.read_metrics(planned.run_dir / store.METRICS).rows
    last = metrics[-1] if metrics else {}
    detail = ""
    if state.state == store.DONE:
        result, _ = store.read_json(planned.run_dir / store.RESULT)
        final = result.get("final", {})
        detail = f"top1 {final.get('top1', float('nan')):.2f}  top5 {final.get('top5', float('nan')):.2f}"
    elif last:
        detail = f"epoch {last.get('epoch')}  top1 {last.get('top1', float('nan')):.2f}"
    shown = state.state
    if on_cluster is not None and on_cluster.state != "new":
        shown = on_cluster.state  # pending / running / requeued / done / failed / cancelled, from SLURM + folder
        detail = f"job {on_cluster.job_id}  {detail}".strip()
        if on_cluster.state in ("failed", "cancelled") and on_cluster.error:
            detail = f"{detail}  error: {on_cluster.error.strip().splitlines()[-1]}"
    elif state.state == store.FAILED:
        detail = f"{detail}  error: {state.error}".strip()
    return [planned.run.cell.label, str(planned.run.seed), shown, str(state.epochs_done), planned.run.run_id,
            detail]


def cluster_view(results_dir) -> dict:
    """run id -> ablations.slurm.RunStatus, for sweeps that were submitted to SLURM."""
    if not any(results_dir.glob("*/slurm.json")):
        return {}
    from ablations import slurm

    return {s.run_id: s for s in slurm.status(results_dir)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m ablations.status"
    parser.description = __doc__
    args = parser.parse_args(argv)
    try:
        plan = load_plan(args)
    except (SweepError, UsageError) as err:
        print(paragraph(f"error: {err}"), file=sys.stderr)
        return EXIT_USAGE
    cluster = cluster_view(plan.results_dir)
    rows = [["cell", "seed", "state", "epochs", "run id", ""]] + [describe(p, cluster) for p in plan.runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"sweep {plan.sweep.name} ({plan.recipe} recipe): {plan.results_dir}/")
    for i, row in enumerate(rows):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))
    counts = plan.counts()
    print("  " + ", ".join(f"{counts[s]} {s}" for s in ("done", "running", "partial", "failed", "new") if counts[s]))
    planned_ids = {p.run.run_id for p in plan.runs}
    on_disk = {p.parent.name for p in plan.results_dir.glob(f"*/{store.CONFIG}")}
    others = sorted(on_disk - planned_ids)
    if others:
        print(f"  {len(others)} other run folder(s) here belong to other recipes/overrides: {', '.join(others[:5])}"
              + (" ..." if len(others) > 5 else ""))
    for problem in plan.problems:
        print(f"  warning: {problem}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

