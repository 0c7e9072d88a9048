"""What a model costs: parameters, multiply-accumulates (torch.utils.flop_counter), time per iteration and
peak memory. The trainer, the planner and the benchmarks all measure with these.

Two MAC counts, because the paper's figures and the true cost differ:

* ``macs_paper``: convolutions and linear layers, Conv-1 (the 1x1 conv across heads) included. This is the
  convention of the counter the paper used, which does not see the attention matmuls (QK^T and AV); it
  equals what the official code gives: 1.459 / 2.000 / 4.486 / 8.131 G for Lite / Small / Base / Large at
  224 px. The paper prints 1.4 / 1.94 / 4.26 / 7.91 G: lower by a constant offset per width (about 0.06 G at
  stage-1 width 64, about 0.22 G at width 96), not by rounding. We report what the code computes.
* ``macs_total``: ``macs_paper`` plus QK^T and AV.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

# Linear layers reach the dispatcher as (add)mm, convolutions as convolution, Conv-1 as baddbmm (ResT runs it
# as one batched matmul over heads); the attention matmuls as bmm.
CONV_LINEAR_OPS = {aten.convolution, aten.mm, aten.addmm, aten.baddbmm}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def complexity(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> dict[str, int]:
    """Return {"params", "macs_paper", "macs_total"} for one image of img_size (int or (H, W))."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        # The math backend of scaled_dot_product_attention is plain matmuls, which the counter knows.
        with sdpa_kernel(SDPBackend.MATH), counter:
            model(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        model.train(was_training)
    flops = counter.get_flop_counts()["Global"]
    conv_linear = sum(v for op, v in flops.items() if op in CONV_LINEAR_OPS)
    total = sum(flops.values())
    return {"params": count_params(model), "macs_paper": conv_linear // 2, "macs_total": total // 2}


def time_iterations(step: Callable[[], None], warmup: int, iters: int, device: torch.device) -> float:
    """Seconds per iteration over `iters` timed runs after `warmup` untimed ones (CUDA synchronized)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return (time.perf_counter() - start) / iters


@contextlib.contextmanager
def _quiet_stderr():
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


def peak_memory_bytes(model: nn.Module, x: torch.Tensor) -> float:
    """Peak bytes held during one inference forward of `model` on `x`, weights and input included.

    CUDA: the allocator's peak (torch.cuda.max_memory_allocated). CPU: torch keeps no allocator statistics, so
    the forward runs under torch.profiler with profile_memory=True; its allocator events (+bytes on alloc,
    -bytes on free) replayed in time order give the activations' peak, to which the weights and input are
    added. NaN where this torch's profiler does not expose the events.
    """
    model.eval()
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
        with torch.inference_mode():
            model(x)
        return float(torch.cuda.max_memory_allocated(x.device))
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), torch.inference_mode():
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
