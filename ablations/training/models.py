"""The model a run trains, from its config: a ResT size with its knobs, or any other timm model.

Every place that builds a run's model (the trainer, the planner's complexity count and speed measurement, the
launch check of input sizes) goes through `create_model`, so they all build the same one.
"""
from __future__ import annotations

from ablations.spec.config import RunConfig
from rest_knobs import VARIANTS

SIZES_TRIED = (32, 48, 64, 96, 112, 128, 160, 192, 224, 256, 288, 320, 384, 448, 512)  # what a refusal offers


def create_model(config: RunConfig, num_classes: int, img_size: int | None = None):
    """timm.create_model for the run: ResT with its knobs and the input size; another model with the input size
    where its constructor takes one (ViT-like models), without where it does not (ResNet, RegNet)."""
    import timm

    import rest  # noqa: F401 - registers the ResT sizes with timm

    m, size = config.model, img_size or config.data.img_size
    if m.name in VARIANTS:
        model = timm.create_model(m.name, pos_encoding=m.pos_encoding, reduction=m.reduction, head_conv=m.head_conv,
                                  head_norm=m.head_norm, stem=m.stem, drop_path_rate=m.drop_path_rate,
                                  num_classes=num_classes, img_size=size)
        model.built_img_size = size
        return model
    drop_path = m.drop_path_rate or None  # None: not passed (timm drops it), for models without drop path (VGG)
    try:
        model = timm.create_model(m.name, num_classes=num_classes, drop_path_rate=drop_path, img_size=size)
    except TypeError as err:
        if "unexpected keyword argument 'img_size'" not in str(err):
            raise
        model = timm.create_model(m.name, num_classes=num_classes, drop_path_rate=drop_path)
        size = None
    model.built_img_size = size  # whether the constructor took the size (result.json's load_with repeats it)
    return model


def size_problem(config: RunConfig, num_classes: int, img_size: int | None = None) -> str | None:
    """Why the run's model cannot take its input size (a forward pass on the meta device: no memory, no
    compute), or None."""
    import torch

    size = img_size or config.data.img_size
    try:
        with torch.device("meta"):
            create_model(config, num_classes, size).eval()(torch.empty(2, 3, size, size))
    except Exception as err:  # any failure of the model at this size
        return f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    return None


def sizes_taken(config: RunConfig, num_classes: int) -> list[int]:
    """The sizes of SIZES_TRIED the run's model takes."""
    return [s for s in SIZES_TRIED if size_problem(config, num_classes, s) is None]
