"""ResT's ablation knobs and sizes as plain data, importable without torch or timm.

The model (:mod:`rest`) validates its constructor arguments against these names, and the harness
(:mod:`ablations`) validates sweep files and ``--set`` values against the same names without paying for a
torch import: ``python -m ablations.status --help`` must answer instantly.

Why a module of its own, not ``rest/knobs.py``: ``import rest.knobs`` runs ``rest/__init__.py`` first, and
``import rest`` must register the models with timm (``timm.create_model("rest_lite")`` after ``import rest``),
which imports timm and torch. timm's registry is filled by ``@register_model`` when the model module is
imported; it has no lazy registration that a PEP 562 ``__getattr__`` could defer to, so a torch-free
``rest`` package would leave ``timm.create_model`` without the models.
"""
from __future__ import annotations

POS_ENCODINGS = ("pa", "gl", "le", "none")  # pixel-attention, group-linear, learned embedding, none
REDUCTIONS = ("dwconv", "avg", "max", "none")  # key/value spatial reduction; "none" = plain MSA
STEMS = ("rest", "resnet", "patch")
MSA = dict(reduction="none", head_conv=False, head_norm=False)  # the paper's plain MSA (Table 8) as knobs

# Registered sizes (paper Table 1)
VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "rest_lite": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 2, 2)),
    "rest_small": dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2)),
    "rest_base": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2)),
    "rest_large": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2)),
}
NUM_HEADS = (1, 2, 4, 8)  # attention heads per stage, every size
SR_RATIOS = (8, 4, 2, 1)  # key/value reduction per stage: kernel sr + 1, stride sr, padding sr // 2


# ---- the token and key maps a ResT computes on, from the input size alone ----------------------------------------
def _conv(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def token_grids(img_size: int, stem: str = "rest") -> list[int]:
    """The side of each stage's token map for a square input (the convolutions' arithmetic of rest/rest.py)."""
    if stem == "rest":  # conv3x3 s2, conv3x3, conv3x3 s2
        side = _conv(_conv(_conv(img_size, 3, 2, 1), 3, 1, 1), 3, 2, 1)
    elif stem == "resnet":  # conv7x7 s2, max-pool 3x3 s2
        side = _conv(_conv(img_size, 7, 2, 3), 3, 2, 1)
    else:  # patch: conv4x4 s4
        side = _conv(img_size, 4, 4, 0)
    sides = [side]
    for _ in range(3):  # patch embeddings: conv3x3 s2
        sides.append(_conv(sides[-1], 3, 2, 1))
    return sides


def key_grids(img_size: int, stem: str = "rest", reduction: str = "dwconv") -> list[int]:
    """The side of each stage's key/value map: the token map, reduced where the stage reduces (pools and the
    depth-wise conv share kernel, stride and padding)."""
    return [_conv(side, sr + 1, sr, sr // 2) if reduction != "none" and sr > 1 else side
            for side, sr in zip(token_grids(img_size, stem), SR_RATIOS, strict=True)]


def inert_attention(img_size: int, stem: str = "rest", reduction: str = "dwconv") -> list[str]:
    """Why attention cannot act at this input size (empty: alive in every stage).

    A 1x1 key map leaves every query one key: softmax gives it weight 1, Conv-1 has nothing to mix and IN of
    a one-element map is 0, so the stage's attention outputs nothing (with IN) or the same value for every
    token. (A reduction never leaves a larger map as it is: its stride is the reduction ratio.)"""
    one_key = [str(stage) for stage, keys in enumerate(key_grids(img_size, stem, reduction), 1) if keys <= 1]
    return [f"1x1 key map in stage{'s' if len(one_key) > 1 else ''} {', '.join(one_key)}"] if one_key else []


def smallest_live_size(stem: str = "rest", reduction: str = "dwconv") -> int:
    """The smallest square input at which attention is alive in every stage (no inert_attention)."""
    return next(n for n in range(32, 4097) if not inert_attention(n, stem, reduction))
