"""Planning: a validated sweep -> runs with their folder state, complexity and a cost estimate.

Nothing here writes to disk: `python -m ablations.run --dry-run` is this module alone.
"""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations import store
from ablations.config import RunConfig
from ablations.spec import Run, Sweep

STATE_ORDER = (store.DONE, store.RUNNING, store.PARTIAL, store.FAILED, store.NEW)


@dataclass
class PlannedRun:
    run: Run
    run_dir: Path
    state: store.RunState


@dataclass
class Plan:
    sweep: Sweep
    recipe: str
    results_dir: Path
    runs: list[PlannedRun]
    problems: list[str] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(p.state.state for p in self.runs)

    def pending(self, retry_failed: bool = False, force: bool = False) -> list[PlannedRun]:
        """The runs a launch should work on: new and partial, plus failed/done when asked."""
        wanted = {store.NEW, store.PARTIAL}
        if retry_failed or force:
            wanted.add(store.FAILED)
        if force:
            wanted.add(store.DONE)
        return [p for p in self.runs if p.state.state in wanted]


def make_plan(sweep: Sweep, recipe: str, runs: list[Run], results_root: Path) -> Plan:
    results_dir = Path(results_root) / sweep.name
    planned, problems = [], []
    existing = {p.name for p in results_dir.iterdir()} if results_dir.is_dir() else set()
    for run in runs:
        run_dir = results_dir / run.run_id
        if run.run_id in existing:
            state = store.live_run_state(run_dir)
        else:
            state = store.RunState(store.NEW)
        problems += state.problems
        planned.append(PlannedRun(run, run_dir, state))
    return Plan(sweep, recipe, results_dir, planned, problems)


# --------------------------------------------------------------------------------------------------------
# Complexity and cost
# --------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def dataset_sizes(config: RunConfig) -> tuple[int, int]:
    """(training images, classes) of a run's dataset."""
    from ablations.data import build_datasets

    train, _, num_classes = build_datasets(config)
    return len(train), num_classes



@functools.lru_cache(maxsize=256)
def model_complexity(model_items: tuple, img_size: int, num_classes: int) -> dict[str, int]:
    """params / macs of a model config, computed on the meta device (no weights are allocated)."""
    import timm
    import torch

    import rest

    knobs = dict(model_items)
    name = knobs.pop("name")
    with torch.device("meta"):
        model = timm.create_model(name, num_classes=num_classes, **knobs)
    return rest.complexity(model, img_size)


def complexity_of(config: RunConfig, num_classes: int) -> dict[str, int]:
    return model_complexity(tuple(sorted(config.to_dict()["model"].items())), config.data.img_size, num_classes)


@functools.lru_cache(maxsize=32)
def measure_train_speed(model_items: tuple, img_size: int, num_classes: int, batch_size: int) -> float:
    """Training images/s of one model on this machine: a few forward/backward/step iterations."""
    import timm
    import torch

    from rest.benchmark import time_iterations

    knobs = dict(model_items)
    name = knobs.pop("name")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = timm.create_model(name, num_classes=num_classes, **knobs).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return batch_size / time_iterations(step, warmup=1, iters=3, device=device)


@dataclass
class CellCost:
    params: int
    macs_paper: int
    macs_total: int
    image_epochs: int  # training images x epochs, over the cell's pending seeds
    eta_s: float


def estimate(config: RunConfig, num_classes: int, train_images: int, seeds_pending: int, reference: dict) -> CellCost:
    """Cost of a cell: image-epochs x MACs; time = that / (the reference model's measured speed x MACs ratio).

    Training costs about 3x the forward MACs (forward + backward); evaluation is ignored (it is a small
    fraction with the shipped recipes).
    """
    counts = complexity_of(config, num_classes)
    image_epochs = train_images * config.train.epochs * seeds_pending
    macs_per_s = reference["img_per_s"] * reference["macs_total"]
    eta = image_epochs * counts["macs_total"] / macs_per_s if macs_per_s else float("nan")
    return CellCost(counts["params"], counts["macs_paper"], counts["macs_total"], image_epochs, eta)


def reference_speed(config: RunConfig, num_classes: int) -> dict[str, Any]:
    counts = complexity_of(config, num_classes)
    items = tuple(sorted(config.to_dict()["model"].items()))
    speed = measure_train_speed(items, config.data.img_size, num_classes, min(config.train.batch_size, 32))
    return {"img_per_s": speed, "macs_total": counts["macs_total"], "model": config.model.name}


def format_duration(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds / 86400:.1f} days"
