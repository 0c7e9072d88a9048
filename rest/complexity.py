"""Parameter and multiply-accumulate counts, with torch.utils.flop_counter.

Two MAC counts, because the paper's figures and the true cost differ:

* ``macs_paper``: convolutions and linear layers only. This is the convention of the counter the paper
  used, which does not see the attention matmuls (QK^T and AV); it equals what the official code gives:
  1.459 / 2.000 / 4.486 / 8.131 G for Lite / Small / Base / Large at 224 px. The paper prints 1.4 / 1.94 /
  4.26 / 7.91 G: lower by a constant offset per width (about 0.06 G at stage-1 width 64, Lite and Small;
  about 0.22 G at width 96, Base and Large), not by rounding (1.459 G does not round to 1.4 G). As a share
  of the printed figures: +4.2 %, +3.1 %, +5.3 %, +2.8 %. The parameter counts show the same offsets
  (the code has ~18-20 k more at width 64, ~45 k more at width 96). We report what the code computes.
* ``macs_total``: ``macs_paper`` plus QK^T and AV.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

# Linear layers reach the dispatcher as (add)mm (or, in CPU inference, oneDNN's fused linear), convolutions
# as convolution, attention matmuls as bmm.
CONV_LINEAR_OPS = {aten.convolution, aten.mm, aten.addmm}


def sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # flop_counter registers no formula for the CPU flash kernel; count QK^T and AV like the math path.
    # (flop_counter hands custom formulas the shapes of tensor arguments, not the tensors.)
    b, h, n, d = query_shape
    m, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * n * m * (d + dv)


def onednn_linear_flop(input_shape, *args, out_shape=None, **kwargs) -> int:
    # CPU inference runs linears as oneDNN's fused linear (rest.rest.linear), which flop_counter does not know.
    # One formula serves both overloads (flop_counter keys formulas by op packet): the default one takes
    # (input, weight, bias, ...), the residual-sum one (.binary) takes (input, other, weight, bias, attr); from
    # the output's shape and the input's width the count needs neither.
    return 2 * math.prod(out_shape) * input_shape[-1]


CUSTOM_FLOPS = {aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu_flop}
if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
    CUSTOM_FLOPS[torch.ops.mkldnn._linear_pointwise] = onednn_linear_flop
    CONV_LINEAR_OPS.add(torch.ops.mkldnn._linear_pointwise)


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
