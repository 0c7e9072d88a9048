"""ResT model family with the paper's ablation knobs, registered with timm.

After ``import rest``, ``timm.create_model("rest_lite", pos_encoding="gl")`` builds a ResT-Lite with
group-linear positional encoding; see :mod:`rest.model` for every knob.
"""
from rest.complexity import complexity
from rest.model import POS_ENCODINGS, REDUCTIONS, STEMS, VARIANTS, ResT, checkpoint_filter_fn

__all__ = ["ResT", "POS_ENCODINGS", "REDUCTIONS", "STEMS", "VARIANTS", "checkpoint_filter_fn", "complexity"]
