"""ResT model family with the paper's ablation knobs, registered with timm.

After ``import rest``, ``timm.create_model("rest_lite", pos_encoding="gl")`` builds a ResT-Lite with
group-linear positional encoding; see :mod:`rest.rest` for every knob. timm lists the models under module
``rest`` (``timm.list_models(module="rest")``).
"""
from rest.complexity import complexity
from rest.rest import POOL_TYPES, POS_ENCODINGS, REDUCTIONS, STEMS, VARIANTS, ResT, checkpoint_filter_fn

__all__ = [
    "ResT", "POOL_TYPES", "POS_ENCODINGS", "REDUCTIONS", "STEMS", "VARIANTS", "checkpoint_filter_fn", "complexity",
]
