"""EMSA vs MSA (the paper's Table 8 pair) across input resolutions: inference throughput and peak memory.

Throughput is timed as `python -m benchmarks.model` times inference (time_iterations of rest/complexity.py under
torch.inference_mode), `repeats` times per point: the figure shows the mean with +/- one standard deviation,
the EMSA/MSA ratio beside the paper's (Table 8: 1246 vs 512 img/s at 224 px, on a GPU), and says which device
it ran on. Peak memory is peak_memory_bytes of rest/complexity.py (CUDA: the allocator's peak; CPU: torch.profiler's
allocator events replayed), weights and input included.
"""
from __future__ import annotations

import math
import sys

import pandas as pd
import timm
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from rest.complexity import peak_memory_bytes, time_iterations
from rest_knobs import MSA

CPU_MEMORY = "CPU: torch.profiler allocator events (weights + input + peak activations)"
CUDA_MEMORY = "CUDA: torch.cuda.max_memory_allocated"
MODELS = {"MSA": MSA, "EMSA": {}}  # ResT-Lite's knobs for each side of the paper's Table 8


def measure(sizes: list[int], batch_size: int = 8, warmup: int = 1, iters: int = 3, device: str = "cpu",
            threads: int = 0, progress: bool | None = None, repeats: int = 3) -> pd.DataFrame:
    """One row per (model, resolution): img_size, model, params_m, infer_img_s (mean of `repeats`
    measurements), infer_img_s_std, repeats, peak_mem_mb, memory_method, device, threads."""
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = []
    jobs = [(label, size) for label in MODELS for size in sizes]
    models = {}
    dev = torch.device(device)
    with tqdm(total=len(jobs) * repeats, desc="MSA vs EMSA", unit="measurement", file=sys.stderr,
              disable=None if progress is None else not progress) as bar:
        for label, size in jobs:
            if label not in models:
                models[label] = timm.create_model("rest_lite", **MODELS[label]).to(dev).eval()
            model = models[label]
            x = torch.randn(batch_size, 3, size, size, device=dev)

            def infer(model=model, x=x):
                with torch.inference_mode():
                    model(x)

            speeds = []
            for _ in range(repeats):
                bar.set_postfix_str(f"{label} {size} px")
                speeds.append(batch_size / time_iterations(infer, warmup, iters, dev))
                bar.update()
            speed = pd.Series(speeds)
            rows.append({"model": label, "img_size": size, "batch_size": batch_size, "device": device,
                         "threads": torch.get_num_threads() if device == "cpu" else None,
                         "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                         "infer_img_s": float(speed.mean()),
                         "infer_img_s_std": float(speed.std(ddof=1)) if repeats > 1 else math.nan,
                         "repeats": repeats, "peak_mem_mb": peak_memory_bytes(model, x) / 2**20,
                         "memory_method": CUDA_MEMORY if dev.type == "cuda" else CPU_MEMORY})
    return pd.DataFrame(rows)


PAPER_THROUGHPUT = {"MSA": 512.0, "EMSA": 1246.0}  # paper Table 8, img/s at 224 px on a GPU
PAPER_RATIO = PAPER_THROUGHPUT["EMSA"] / PAPER_THROUGHPUT["MSA"]


def ratios(df: pd.DataFrame) -> pd.DataFrame:
    """EMSA / MSA throughput per resolution, with the standard deviation propagated from both."""
    wide = df.pivot(index="img_size", columns="model", values=["infer_img_s", "infer_img_s_std"])
    emsa, msa = wide["infer_img_s"]["EMSA"], wide["infer_img_s"]["MSA"]
    ratio = emsa / msa
    rel = ((wide["infer_img_s_std"]["EMSA"] / emsa) ** 2 + (wide["infer_img_s_std"]["MSA"] / msa) ** 2) ** 0.5
    return pd.DataFrame({"img_size": ratio.index, "ratio": ratio.to_numpy(), "ratio_std": (ratio * rel).to_numpy()})


def figure(df: pd.DataFrame) -> Figure:
    """Throughput (mean +/- std over repeats), the EMSA/MSA throughput ratio against the paper's, and peak
    memory, against resolution; the title says the device (a CPU is not the paper's GPU)."""
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_speed, ax_ratio, ax_mem = fig.subplots(1, 3)
    colors = {"MSA": "#D55E00", "EMSA": "#0072B2"}  # Okabe-Ito
    for label, group in df.groupby("model", sort=False):
        group = group.sort_values("img_size")
        std = group["infer_img_s_std"].fillna(0.0) if "infer_img_s_std" in group else None
        ax_speed.errorbar(group["img_size"], group["infer_img_s"], yerr=std, marker="o", capsize=4, label=label,
                          color=colors.get(label))
        ax_mem.plot(group["img_size"], group["peak_mem_mb"], marker="o", label=label, color=colors.get(label))
    r = ratios(df)
    ax_ratio.errorbar(r["img_size"], r["ratio"], yerr=r["ratio_std"].fillna(0.0), marker="o", capsize=4,
                      color="black", label="ours: EMSA / MSA")
    ax_ratio.axhline(PAPER_RATIO, color="#D55E00", ls="--",
                     label=f"paper: {PAPER_RATIO:.2f}x (224 px, GPU, Table 8)")
    ax_ratio.axhline(1.0, color="#999999", lw=0.8)
    sizes = sorted(df["img_size"].unique())
    for ax, ylabel in ((ax_speed, "inference throughput (img/s)"), (ax_ratio, "throughput ratio EMSA / MSA"),
                       (ax_mem, "peak memory (MiB)")):
        ax.set_xlabel("input resolution (px)")
        ax.set_xticks(sizes)
        ax.set_ylabel(ylabel)
        if ax is not ax_ratio:
            ax.set_yscale("log")  # MSA's cost grows with the square of the token count: ratios matter here
            for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
                axis(FuncFormatter(lambda v, _: f"{v:g}"))  # 60, 80 rather than 6x10^1
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax_ratio.set_ylim(0, max(PAPER_RATIO, float(r["ratio"].max())) * 1.25)
    first = df.iloc[0]
    repeats = int(first["repeats"]) if "repeats" in df else 1
    ax_speed.set_title(f"batch {first['batch_size']}; mean ± std of {repeats} measurements", fontsize=9)
    ax_ratio.set_title("ratio ± propagated std", fontsize=9)
    ax_mem.set_title(first["memory_method"].replace(" (", "\n("), fontsize=9)
    device = str(first["device"])
    if device.startswith("cpu"):
        threads = first.get("threads") if "threads" in df else None
        plural = "s" if threads and not pd.isna(threads) and int(threads) != 1 else ""
        where = (f"measured on CPU ({int(threads)} thread{plural}), not on a GPU as in the paper: compare the "
                 f"ratio's trend, not the img/s" if threads and not pd.isna(threads) else
                 "measured on CPU, not on a GPU as in the paper")
    else:
        where = f"measured on {device}"
    fig.suptitle(f"MSA vs EMSA (ResT-Lite) across input resolutions — {where}", fontsize=11)
    return fig
