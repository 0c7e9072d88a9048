"""Parameter and multiply-accumulate counts, with torch.utils.flop_counter.

Two MAC counts, because the paper's figures and the true cost differ:

* ``macs_paper``: convolutions and linear layers only. This is the convention of the counter the paper
  used, which does not see the attention matmuls (QK^T and AV). The official code gives 1.459 G for
  ResT-Lite at 224 px; the paper prints 1.4 G (Lite), 1.94 G (Small), 4.26 G (Base), 7.91 G (Large),
  while the official models count 1.459 / 2.000 / 4.486 / 8.131 G: the printed figures are smaller than
  what the released code computes, by 4 to 6 % for Small/Base/Large. We report what the code computes.
* ``macs_total``: ``macs_paper`` plus QK^T and AV.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

# Linear layers reach the dispatcher as (add)mm, convolutions as convolution, attention matmuls as bmm.
CONV_LINEAR_OPS = {aten.convolution, aten.mm, aten.addmm}


def sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # flop_counter registers no formula for the CPU flash kernel; count QK^T and AV like the math path.
    # (flop_counter hands custom formulas the shapes of tensor arguments, not the tensors.)
    b, h, n, d = query_shape
    m, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * n * m * (d + dv)


CUSTOM_FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu_flop}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def complexity(model: nn.Module, img_size: int | tuple[int, int] = 224, in_chans: int = 3) -> dict[str, int]:
    """Return {"params", "macs_paper", "macs_total"} for one image of img_size (int or (H, W))."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FLOPS)
    try:
        with counter:
            model(torch.zeros(1, in_chans, h, w, device=device))
    finally:
        model.train(was_training)
    flops = counter.get_flop_counts()["Global"]
    conv_linear = sum(v for op, v in flops.items() if op in CONV_LINEAR_OPS)
    total = sum(flops.values())
    return {"params": count_params(model), "macs_paper": conv_linear // 2, "macs_total": total // 2}
