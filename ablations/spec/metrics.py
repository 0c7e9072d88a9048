"""The metrics a sweep's table can show, defined once: name, label, unit, direction, format, and how a
finished run's result.json gives it. Sweep files (columns, published), tables, their renderings, the plots
and analysis.runs all read this registry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ablations.spec.errors import bounded_repr


@dataclass(frozen=True)
class Metric:
    name: str  # the key in sweep files (columns, published) and the DataFrame column
    label: str  # as the paper's table heads it
    short: str  # a short header (LaTeX, narrow columns)
    unit: str
    decimals: int
    higher_is_better: bool
    varies_with_seed: bool  # accuracies do; params/FLOPs are fixed by the architecture, img/s by the machine
    result_key: str  # where result.json keeps it ("final.top1", "params"...)
    scale: float = 1.0  # result.json value x scale = the value shown (params -> millions...)
    device_dependent: bool = False  # a speed: comparable with the paper's only on the paper's device class
    high: float = math.inf  # the largest value shown that can be (an accuracy: 100); the smallest is 0

    @property
    def header(self) -> str:
        return f"{self.label} ({self.unit})"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("params_m", "#Params", "#Params", "M", 2, False, False, "params", 1e-6),
    # The paper's "FLOPs" count multiply-adds of convs and linear layers (macs_paper), like its counter.
    Metric("gflops", "FLOPs", "FLOPs", "G", 2, False, False, "macs_paper", 1e-9),
    Metric("img_s", "Throughput", "Throughput", "img/s", 0, True, False, "throughput_img_s", device_dependent=True),
    Metric("top1", "Top-1", "Top-1", "%", 2, True, True, "final.top1", high=100.0),
    Metric("top5", "Top-5", "Top-5", "%", 2, True, True, "final.top5", high=100.0),
)}
METRIC_NAMES = tuple(METRICS)
PAPER_DEVICE_CLASS = "gpu"  # the paper's throughputs were measured on a GPU


def value_problem(where: str, value: float, high: float = math.inf) -> str | None:
    """Why a number cannot be, or None: it must be finite and in [0, high]."""
    try:
        if math.isfinite(float(value)) and 0 <= value <= high:
            return None
    except OverflowError:  # an integer of 400 digits
        pass
    return f"{where} is {bounded_repr(value, 40)}, which cannot be: expected a finite number from 0 to {high:g}"


# Every number a run writes (result.json, metrics.jsonl) is finite and >= 0; an accuracy (a key named like a
# percentage metric: final.top1, best.top5, a metrics.jsonl row's top1...) is at most 100.
HIGHEST = {name: metric.high for name, metric in METRICS.items() if metric.result_key.startswith("final.")}


def run_numbers_problem(document: object, where: str) -> str | None:
    """The first number in a run file's parsed JSON (result.json, a metrics.jsonl row) that cannot be, named by
    its key ("<where>: final.top1 is 1e+308, which cannot be..."); None if every number can be."""
    stack: list[tuple[str, object]] = [("", document)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            problem = value_problem(key, value, HIGHEST.get(key.rsplit(".", 1)[-1], math.inf))
            if problem:
                return f"{where}: {problem}"
    return None


def device_class(device: object) -> str | None:
    """"gpu" or "cpu" from a result.json device text ("cuda (NVIDIA A100...)", "cpu (2 threads)"); None if unknown."""
    if not isinstance(device, str) or not device:
        return None
    return "gpu" if device.startswith(("cuda", "gpu")) else "cpu" if device.startswith("cpu") else None
DEFAULT_COLUMNS = ("top1", "top5")
COMPARED = tuple(name for name, m in METRICS.items() if m.varies_with_seed)


def from_result(metric: Metric, result: dict) -> float | None:
    """The metric's value in a result.json mapping, scaled for display; None if absent or not a number."""
    value: object = result
    for part in metric.result_key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) * metric.scale
