"""EMSA vs MSA (the paper's Table 8 pair) across input resolutions: inference throughput and peak memory.

Throughput comes from rest.benchmark (its models, its timing protocol). Peak memory:
  * CUDA: torch.cuda.max_memory_allocated, as rest.benchmark reports it (weights + input + activations);
  * CPU: torch has no allocator statistics, so one extra forward pass runs under torch.profiler with
    profile_memory=True; its allocator events ([memory], +bytes on alloc, -bytes on free) are replayed in time
    order and the highest running total is the activations' peak, to which the weights and input are added.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from rest import benchmark

CPU_MEMORY = "CPU: torch.profiler allocator events (weights + input + peak activations)"
CUDA_MEMORY = "CUDA: torch.cuda.max_memory_allocated"


def specs() -> list[benchmark.Spec]:
    """MSA and EMSA exactly as `python -m rest.benchmark --msa-vs-emsa` defines them."""
    return benchmark.specs_from_args(argparse.Namespace(models=[], msa_vs_emsa=True, reference=False))


@contextlib.contextmanager
def quiet_stderr():
    """Silence the C++ profiler's start/stop chatter on fd 2 (it is not an error, and would look like one)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_bytes(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Peak bytes held during one inference forward on CPU (see the module docstring); NaN if unavailable."""
    from torch.profiler import ProfilerActivity, profile

    model.eval()
    with quiet_stderr(), torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(x)
    try:
        events = prof.profiler.kineto_results.events()  # the raw allocator events (the summaries merge them)
        allocations = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    except AttributeError:  # a torch without this interface: say "unavailable" rather than guess
        return math.nan
    live = peak = 0
    for _, nbytes in allocations:
        live += nbytes
        peak = max(peak, live)
    static = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers(), x))
    return float(peak + static)


def measure(sizes: list[int], batch_size: int = 8, warmup: int = 1, iters: int = 3, device: str = "cpu",
            threads: int = 0, progress: bool | None = None) -> pd.DataFrame:
    """One row per (model, resolution): img_size, model, params_m, infer_img_s, peak_mem_mb, memory_method."""
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    jobs = [(spec, size) for spec in specs() for size in sizes]
    models = {}
    for spec, size in tqdm(jobs, desc="benchmark", unit="size", disable=None if progress is None else not progress,
                           file=sys.stderr):
        if spec.label not in models:
            models[spec.label] = benchmark.build(spec)
        model = models[spec.label]
        args = argparse.Namespace(device=device, channels_last=False, img_size=(size, size), batch_size=batch_size,
                                  amp=False, no_infer=False, train=False, warmup=warmup, iters=iters)
        row = benchmark.benchmark_model(model, args)
        if "peak_mem_mb" in row:
            method = CUDA_MEMORY
        else:
            x = torch.randn(batch_size, 3, size, size)
            row["peak_mem_mb"] = cpu_peak_bytes(model.cpu(), x) / 2**20
            method = CPU_MEMORY
        rows.append({"model": spec.label, "img_size": size, "batch_size": batch_size, "device": device,
                     "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                     "infer_img_s": row["infer_img_s"], "peak_mem_mb": row["peak_mem_mb"], "memory_method": method})
    return pd.DataFrame(rows)


def figure(df: pd.DataFrame) -> Figure:
    """Throughput and peak memory against resolution, one line per attention type."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_speed, ax_mem = fig.subplots(1, 2)
    for label, group in df.groupby("model", sort=False):
        group = group.sort_values("img_size")
        ax_speed.plot(group["img_size"], group["infer_img_s"], marker="o", label=label)
        ax_mem.plot(group["img_size"], group["peak_mem_mb"], marker="o", label=label)
    sizes = sorted(df["img_size"].unique())
    for ax, ylabel in ((ax_speed, "inference throughput (img/s)"), (ax_mem, "peak memory (MiB)")):
        ax.set_xlabel("input resolution (px)")
        ax.set_xticks(sizes)
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")  # MSA's cost grows with the square of the token count: ratios matter here
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda v, _: f"{v:g}"))  # 60, 80 rather than 6x10^1
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    first = df.iloc[0]
    ax_speed.set_title(f"batch {first['batch_size']}, device {first['device']}", fontsize=9)
    ax_mem.set_title(first["memory_method"].replace(" (", "\n("), fontsize=9)
    fig.suptitle("MSA vs EMSA (ResT-Lite) across input resolutions", fontsize=11)
    return fig
