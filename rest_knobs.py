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
