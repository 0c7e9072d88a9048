"""Planning: an experiment -> its runs with their folder state, and what the runs left will cost.

Nothing here writes into a run folder: `python -m ablations.run --dry-run` is this module alone. The cost
of a cell (params, MACs, image-epochs, ETA) is computed only when something is left to run, at the run's
own input size, and remembered per (model, knobs, size) in the user's cache folder
($XDG_CACHE_HOME/rest-ablations/plan.json, by default ~/.cache/...): planning a sweep whose models were seen
before imports neither torch nor timm, and --dry-run still writes nothing under results/.

The ETA comes from measured speeds first: the training img/s that finished runs of the same model and
image size recorded on this machine (result.json: train_img_s, host) in the results root. Only
when there are none does the planner time a few training steps itself (a speed measurement, said so on screen, with
its spread over repeats).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ablations import store
from ablations.experiment import Experiment
from ablations.spec.config import RunConfig
from ablations.spec.sweep import Run

CACHE_ENV = "XDG_CACHE_HOME"


@dataclass
class PlannedRun:
    run: Run
    run_dir: Path
    state: store.RunState


@dataclass
class Plan:
    experiment: Experiment
    runs: list[PlannedRun]
    problems: list[str] = field(default_factory=list)

    @property
    def sweep(self):
        return self.experiment.sweep

    @property
    def recipe(self) -> str:
        return self.experiment.recipe.name

    @property
    def results_dir(self) -> Path:
        return self.experiment.results_dir

    def meta(self, run: Run) -> dict[str, Any]:
        return self.experiment.meta(run)

    def counts(self) -> Counter:
        return Counter(p.state.state for p in self.runs)

    def pending(self, retry_failed: bool = False, force: bool = False) -> list[PlannedRun]:
        """The runs a launch should work on: new and partial, plus failed/done when asked."""
        wanted = pending_states(retry_failed, force)
        return [p for p in self.runs if p.state.state in wanted]


@dataclass(frozen=True)
class Launch:
    """A run to work on, with the plan (sweep) that lists it first: several sweeps may list one run."""

    plan: Plan
    planned: PlannedRun


def distinct_runs(plans: list[Plan]) -> list[Launch]:
    """Every run of the plans once (by run folder), in plan order: what a study trains."""
    seen: set[Path] = set()
    out = []
    for plan in plans:
        for planned in plan.runs:
            if planned.run_dir not in seen:
                seen.add(planned.run_dir)
                out.append(Launch(plan, planned))
    return out


def pending_states(retry_failed: bool = False, force: bool = False) -> set[store.State]:
    wanted = {store.NEW, store.PARTIAL}
    if retry_failed or force:
        wanted.add(store.FAILED)
    if force:
        wanted.add(store.DONE)
    return wanted


def make_plan(experiment: Experiment) -> Plan:
    planned, problems = [], []
    for run in experiment.runs:
        run_dir = experiment.run_dir(run)
        state = store.live_run_state(run_dir) if experiment.index.exists(run.run_id) else store.RunState(store.NEW)
        problems += state.problems
        planned.append(PlannedRun(run, run_dir, state))
    return Plan(experiment, planned, problems)


# --------------------------------------------------------------------------------------------------------
# The cache: facts about models and datasets that do not change between launches
# --------------------------------------------------------------------------------------------------------
def default_cache_path() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rest-ablations" / "plan.json"


class PlanCache:
    """A JSON file of computed facts (complexity per model, sizes per dataset, recorded speeds per host), read
    once, written if changed. Facts only: deleting it costs a slower plan, never a wrong one."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        data, problem = store.read_json(self.path)
        self.data: dict[str, dict] = data if problem is None and isinstance(data, dict) else {}
        self.changed = False

    def get(self, section: str, key: Any, compute) -> Any:
        text = json.dumps(key, sort_keys=True)
        entries = self.data.setdefault(section, {})
        if text not in entries:
            entries[text] = compute()
            self.changed = True
        return entries[text]

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            store.atomic_write_json(self.path, self.data)
        except OSError:  # a read-only home: plans stay correct, only slower
            pass
        self.changed = False


def dataset_key(config: RunConfig) -> dict:
    d = config.data
    return dict(dataset=d.dataset, root=d.root, train_limit=d.train_limit, val_limit=d.val_limit)


def dataset_sizes(config: RunConfig, cache: PlanCache) -> tuple[int, int]:
    """(training images, classes) of a run's dataset."""

    def compute() -> list[int]:
        from ablations.training.loaders import build_datasets

        train, _, num_classes = build_datasets(config)
        return [len(train), num_classes]

    train_images, num_classes = cache.get("datasets", dataset_key(config), compute)
    return train_images, num_classes


@functools.cache
def counting_code() -> str:
    """A digest of the model and counting code (rest/rest.py, rest/complexity.py, the model factory, read as
    files: no torch) and of timm's version (its models are counted too), part of every cached complexity's
    key, so counts cached by other code are computed again, never shown."""
    import rest_knobs

    root = Path(rest_knobs.__file__).parent
    digest = hashlib.sha256()
    for path in (root / "rest" / "rest.py", root / "rest" / "complexity.py", root / "ablations/training/models.py"):
        digest.update(path.read_bytes() if path.is_file() else b"")
    try:
        digest.update(importlib.metadata.version("timm").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    return digest.hexdigest()[:12]


def model_key(config: RunConfig, num_classes: int) -> dict:
    return dict(config.to_dict()["model"], img_size=config.data.img_size, num_classes=num_classes,
                code=counting_code())


def complexity_of(config: RunConfig, num_classes: int, cache: PlanCache) -> dict[str, int]:
    """params / MACs of the model a run trains, at its own input size (computed on the meta device)."""

    def compute() -> dict[str, int]:
        import torch

        import rest
        from ablations.training.models import create_model

        with torch.device("meta"):
            model = create_model(config, num_classes)
        return rest.complexity(model, config.data.img_size)

    return cache.get("complexity", model_key(config, num_classes), compute)


# --------------------------------------------------------------------------------------------------------
# Speed and cost
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Speed:
    img_per_s: float
    macs_total: int  # of the model the speed was measured on
    model: str
    source: str  # "recorded" (finished runs here), "recorded-gpu" (finished GPU runs) or "measured"
    spread: float = 0.0  # measured: relative spread (max - min) / median over repeats
    runs: int = 0  # recorded: how many finished runs the median is of
    recorded: RecordedSpeeds | None = None  # recorded: which runs, their range and age

    def describe(self) -> str:
        if self.source == "measured":
            return (f"at {self.img_per_s:.0f} training img/s from a speed measurement of {self.model} on this "
                    f"machine (spread {100 * self.spread:.0f} % over repeats; finished runs replace it)")
        gpu = self.source == "recorded-gpu"
        text = (f"at {self.img_per_s:.0f} training img/s recorded by {self.runs} finished {'GPU ' if gpu else ''}"
                f"run(s) of {self.model}" + ("" if gpu else " on this machine"))
        notes = [self.recorded.describe() if self.recorded else "",
                 "SLURM runs: no measurement on this login node" if gpu else ""]
        return text + "".join(f" ({note})" for note in notes if note)


RECENT_RUNS = 8  # a recorded speed is the median of this many most recent finished runs at most...
STALE_DAYS = 30.0  # ...finished within this many days of the newest (older ones ran other code, other load)


@dataclass(frozen=True)
class RecordedSpeeds:
    """The finished runs a recorded speed is the median of: the most recent, none stale."""

    used: int
    total: int
    low: float
    high: float
    newest_age_s: float | None  # None: finished at an unknown time
    oldest_age_s: float | None

    def describe(self) -> str:
        parts = [f"{self.low:.0f}-{self.high:.0f} img/s" if round(self.high) > round(self.low) else ""]
        if self.used < self.total:
            parts.append(f"the {self.used} most recent of {self.total}")
        if self.newest_age_s is not None and self.oldest_age_s is not None:
            newest, oldest = format_age(self.newest_age_s), format_age(self.oldest_age_s)
            parts.append(f"finished {newest} ago" if newest == oldest else f"finished {newest} to {oldest} ago")
        return "; ".join(part for part in parts if part)


def recent_median(entries: list[tuple[float, str | None]], now: float | None = None) -> tuple[float, RecordedSpeeds]:
    """The median of the recorded speeds (img/s, finished_at ISO time) that an ETA should trust: the RECENT_RUNS
    most recent, finished within STALE_DAYS of the newest. A median: a run slowed by a loaded machine, or one so
    short its speed is mostly start-up, does not decide it."""
    now = time.time() if now is None else now
    timed = sorted(((speed, finished_epoch(at)) for speed, at in entries), key=lambda e: e[1] or 0.0)
    newest = timed[-1][1]
    fresh = [e for e in timed if newest is None or e[1] is None or e[1] >= newest - STALE_DAYS * 86400]
    used = fresh[-RECENT_RUNS:]
    speeds = [speed for speed, _ in used]
    ages = [now - at for _, at in used if at is not None]
    return statistics.median(speeds), RecordedSpeeds(len(used), len(entries), min(speeds), max(speeds),
                                                     min(ages) if ages else None, max(ages) if ages else None)


def finished_epoch(at: object) -> float | None:
    """result.json's finished_at (ISO 8601) as seconds since the epoch; None if absent or not a time."""
    try:
        return datetime.fromisoformat(at).timestamp() if isinstance(at, str) else None
    except ValueError:
        return None


def format_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return "<1 min"


def model_and_size(run_dir: Path) -> tuple[str | None, int | None]:
    """(model.name, data.img_size) of a run folder's config.json, read without validating it; Nones if absent."""
    document, _ = store.read_json(run_dir / store.CONFIG)
    config = document.get("config") if isinstance(document, dict) else None
    sections = [config.get(name) if isinstance(config, dict) else None for name in ("model", "data")]
    model, data = (section if isinstance(section, dict) else {} for section in sections)
    return model.get("name"), data.get("img_size")


def finished_here(plan: Plan) -> list[Path]:
    """The run folders whose recorded speeds an ETA may use: the store's and the sweep folder's (earlier layout)."""
    return [*store.run_dirs_in(plan.experiment.store_dir), *store.run_dirs_in(plan.results_dir)]


def recorded_speed(plan: Plan, config: RunConfig, num_classes: int, cache: PlanCache) -> Speed | None:
    """The training speed recorded on this host by finished runs of the same model and image size, in this
    results root (any sweep or experiment) and remembered in the cache from earlier plans: recent_median."""
    host = platform.node()
    key = json.dumps(dict(host=host, model=config.model.name, img_size=config.data.img_size), sort_keys=True)
    cache.data.setdefault("speeds", {})
    seen: set[str] = set(cache.data.setdefault("speeds_read", []))
    for speeds in cache.data["speeds"].values():  # a cache from before speeds kept their time: read those again
        for name in [name for name, value in speeds.items() if not isinstance(value, list)]:
            del speeds[name]
            seen.discard(name)
    for run_dir in finished_here(plan):
        if run_dir.name in seen:
            continue
        result = store.read_result(run_dir)
        if result is None or "final" not in result:
            continue  # not finished (yet): look again next time
        seen.add(run_dir.name)
        model_name, img_size = model_and_size(run_dir)
        speed = result.get("train_img_s")
        if result.get("host") == host and isinstance(speed, int | float) and speed > 0:
            run_key = json.dumps(dict(host=host, model=model_name, img_size=img_size),
                                 sort_keys=True)
            cache.data["speeds"].setdefault(run_key, {})[run_dir.name] = [float(speed), result.get("finished_at")]
    cache.data["speeds_read"] = sorted(seen)
    cache.changed = True
    known = cache.data["speeds"].get(key, {})
    entries = [(float(v[0]), v[1]) for v in known.values()]
    if not entries:
        return None
    median, recorded = recent_median(entries)
    macs = complexity_of(config, num_classes, cache)["macs_total"]
    return Speed(median, macs, config.model.name, "recorded", runs=recorded.used, recorded=recorded)


def recorded_gpu_speed(plan: Plan, config: RunConfig, num_classes: int, cache: PlanCache) -> Speed | None:
    """For SLURM runs: the training speed of finished GPU runs (any host) of the same model and image size in
    this results root (recent_median); None (no ETA) if there are none. Never a measurement on the login node."""
    entries = []
    for run_dir in finished_here(plan):
        result = store.read_result(run_dir)
        if result is None or not str(result.get("device", "")).startswith("cuda"):
            continue
        model_name, img_size = model_and_size(run_dir)
        speed = result.get("train_img_s")
        if (model_name, img_size) == (config.model.name, config.data.img_size) and \
                isinstance(speed, int | float) and not isinstance(speed, bool) and speed > 0:
            entries.append((float(speed), result.get("finished_at")))
    if not entries:
        return None
    median, recorded = recent_median(entries)
    macs = complexity_of(config, num_classes, cache)["macs_total"]
    return Speed(median, macs, config.model.name, "recorded-gpu", runs=recorded.used, recorded=recorded)


def measure_speed(config: RunConfig, num_classes: int, cache: PlanCache, repeats: int = 3) -> Speed:
    """Training images/s of one model on this machine: a few forward/backward/step iterations, repeated."""
    import torch

    from ablations.training.models import create_model
    from rest.complexity import time_iterations

    name = config.model.name
    batch = min(config.train.batch_size, 32)
    size = config.data.img_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_model(config, num_classes).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    speeds = [batch / time_iterations(step, warmup=1 if i == 0 else 0, iters=2, device=device) for i in range(repeats)]
    median = statistics.median(speeds)
    macs = complexity_of(config, num_classes, cache)["macs_total"]
    return Speed(median, macs, name, "measured", spread=(max(speeds) - min(speeds)) / median)


@dataclass
class CellCost:
    params: int
    macs_paper: int
    macs_total: int
    image_epochs: int  # training images x epochs, over the cell's pending seeds
    eta_s: float


def estimate(config: RunConfig, num_classes: int, train_images: int, seeds_pending: int, speed: Speed | None,
             cache: PlanCache) -> CellCost:
    """Cost of a cell: image-epochs x MACs; time = that / (the measured speed x the MACs ratio of the models).

    Training costs about 3x the forward MACs (forward + backward) for every model alike, so the ratio of
    MACs carries one model's measured speed over to another; evaluation is ignored (a small fraction with
    the shipped recipes).
    """
    counts = complexity_of(config, num_classes, cache)
    image_epochs = train_images * config.train.epochs * seeds_pending
    macs_per_s = speed.img_per_s * speed.macs_total if speed else 0.0
    eta = image_epochs * counts["macs_total"] / macs_per_s if macs_per_s else float("nan")
    return CellCost(counts["params"], counts["macs_paper"], counts["macs_total"], image_epochs, eta)


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
