"""The metrics a sweep's table can show, defined once: name, label, unit, direction, format, and how a
finished run's result.json gives it. Sweep files (columns, published), tables, their renderings, the plots
and analysis.runs all read this registry.
"""
from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def header(self) -> str:
        return f"{self.label} ({self.unit})"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("params_m", "#Params", "#Params", "M", 2, False, False, "params", 1e-6),
    # The paper's "FLOPs" count multiply-adds of convs and linear layers (macs_paper), like its counter.
    Metric("gflops", "FLOPs", "FLOPs", "G", 2, False, False, "macs_paper", 1e-9),
    Metric("img_s", "Throughput", "Throughput", "img/s", 0, True, False, "throughput_img_s", device_dependent=True),
    Metric("top1", "Top-1", "Top-1", "%", 2, True, True, "final.top1"),
    Metric("top5", "Top-5", "Top-5", "%", 2, True, True, "final.top5"),
)}
METRIC_NAMES = tuple(METRICS)
PAPER_DEVICE_CLASS = "gpu"  # the paper's throughputs were measured on a GPU


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
