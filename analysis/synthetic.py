"""Synthetic run folders with known numbers, laid out exactly as the trainer writes them (tests, bench).

Writes plain files (no fsync): these folders are throwaway, and the benchmark creates a thousand of them.
"""
from __future__ import annotations

import json
from pathlib import Path

from ablations import results_root, store
from ablations.spec.config import RunConfig, with_overrides


def write_run(
    results_dir: Path,
    cell: str,
    seed: int,
    *,
    top1: float = 70.0,
    top5: float = 90.0,
    state: str = store.DONE,
    recipe: str = "quick",
    baseline: bool = False,
    axis: str = "pos_encoding",
    epochs: int = 5,
    params: int = 10_490_000,
    macs_paper: float = 1.4e9,
    img_s: float = 1000.0,
    device: str = "cpu",
    sweep: str | None = None,
    paper_table: str = "Table (synthetic)",
    overrides: dict | None = None,
    sweep_file: Path | None = None,
    sets: dict | None = None,
    grid: dict[str, list[str]] | None = None,
) -> Path:
    """One run folder. state: done (result.json), failed (error.json at the last epoch), partial (metrics only).

    With `sweep_file`, the run is the one that sweep (with `recipe` and the command-line overrides `sets`)
    expands to for this cell and seed, where a launch puts it: its real config and meta in the results root's
    run store (results_dir is the sweep's folder, results/<sweep>), listed in the sweep's runs.jsonl. Without
    it, a free-standing run folder <results_dir>/<cell>-s<seed>-<hash> with a default config plus `overrides`.
    `grid`: with `sweep_file`, the experiment's --grid axes ({key: [values]}).
    """
    if sweep_file is not None:
        config, run_dir, meta = _experiment_run(Path(results_dir), Path(sweep_file), cell, seed, recipe, sets or {},
                                                grid or {})
        epochs = config.train.epochs
        results_root.record_members(Path(results_dir), [(run_dir, meta)])
    else:
        sweep = sweep or Path(results_dir).name
        config = with_overrides(RunConfig(), {"train.seed": seed, "train.epochs": epochs, **(overrides or {})})
        run_id = f"{cell.lower().replace(' ', '-').replace('/', '')}-s{seed}-{config.short_hash()}"
        meta = {"sweep": sweep, "cell": cell, "levels": {axis: cell}, "baseline": baseline, "recipe": recipe,
                "seed": seed, "run_id": run_id, "paper_table": paper_table}
        run_dir = Path(results_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / store.CONFIG, store.config_document(config, store.read_meta(run_dir) or meta))

    done_epochs = epochs if state == store.DONE else max(1, epochs // 2)
    lines = []
    for epoch in range(1, done_epochs + 1):  # numbered from 1, as ablations.train does
        progress = epoch / epochs  # a curve that rises to the final numbers
        lines.append(json.dumps({"epoch": epoch, "train_loss": 2.0 - progress, "lr": 1e-3, "val_loss": 1.5 - progress,
                                 "top1": top1 * progress, "top5": top5 * progress, "epoch_time_s": 1.0}))
    (run_dir / store.METRICS).write_text("\n".join(lines) + "\n")
    if state == store.DONE:
        write_json(run_dir / store.RESULT, {
            "final": {"top1": top1, "top5": top5, "val_loss": 0.5},
            "best": {"top1": top1, "top5": top5, "epoch": epochs},
            "params": params, "macs_paper": macs_paper, "macs_total": macs_paper * 1.1,
            "throughput_img_s": img_s, "device": device, "wall_time_s": 10.0 * epochs, "epochs": epochs,
            "versions": {"torch": "x"}, "git_commit": "0" * 40, "finished_at": f"2025-01-01T00:00:{seed:02d}",
        })
    elif state == store.FAILED:
        write_json(run_dir / store.ERROR, {"reason": "RuntimeError: out of memory", "traceback": "...",
                                           "epoch": done_epochs})
    return run_dir


def _experiment_run(results_dir: Path, sweep_file: Path, cell: str, seed: int, recipe: str, sets: dict,
                    grid: dict[str, list[str]]):
    from ablations.experiment import Selection, resolve

    flags = tuple(f"{key}={json.dumps(value)}" for key, value in sets.items())
    grids = tuple(f"{key}={','.join(values)}" for key, values in grid.items())
    experiment = resolve(sweep_file, Selection(recipe=recipe, sets=flags, seeds=(seed,), grids=grids),
                         results_dir.parent)
    if experiment.results_dir != results_dir:
        raise ValueError(f"{sweep_file} keeps its runs in {experiment.results_dir}, not {results_dir}")
    run = next((r for r in experiment.runs if r.cell.label == cell), None)
    if run is None:
        raise ValueError(f"{sweep_file} has no cell {cell!r}")
    return run.config, experiment.run_dir(run), experiment.meta(run)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
