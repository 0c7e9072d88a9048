"""Attention maps of a trained run (by default the last block of stage 4, as in the paper's figure), on an
image of the run's own validation data by default (a digit for the quick recipe), or on an image file.

The block's attention module (rest.rest.EfficientAttention) is not changed: a forward pre-hook records its
input tokens, and the attention is recomputed from them with the module's own weights (q, kv, the optional
reduction, transform_conv = Conv-1). The figure shows the softmax probabilities, i.e. before the
InstanceNorm (IN): after IN a map is no longer a distribution over keys (it is zero-mean, with negative
entries). Each head's map is the attention every key position receives, averaged over all queries. All maps
of a figure share one colour scale (a perceptual colormap, with its colour bar), and the figure says which
run, stage, block and head each map is. Random weights are only drawn when asked for (--random-weights).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

import rest
from ablations import store
from analysis.source import InputError
from rest.rest import attention_map, instance_norm, map_to_tokens, tokens_to_map

# ----------------------------------------------------------------------------------------------------------
# Model: from a trained run, or random weights
# ----------------------------------------------------------------------------------------------------------
KNOBS = ("pos_encoding", "reduction", "head_conv", "head_norm", "stem")


def model_from_run(run_dir: Path) -> tuple[torch.nn.Module, int, str]:
    """(model with the run's weights, its training input size, a description). Needs config.json and
    checkpoint.pt ({"model": state_dict, ...}); classes and input channels are read off the weights."""
    import timm

    try:
        document = store.read_config(run_dir)
    except InputError as err:
        raise InputError(f"{run_dir}: not a run folder with a readable {store.CONFIG} ({err.describe()}).") from None
    model_cfg, data_cfg = document.config.to_dict()["model"], document.config.to_dict()["data"]
    path = run_dir / store.CHECKPOINT
    if not path.exists() and store.best_weights_path(run_dir).exists():
        path = store.best_weights_path(run_dir)  # train.keep_checkpoints: best (a plain state dict)
    if not path.exists():
        raise InputError(f"{path}: missing; this run has not saved weights (checkpoint.pt or best.pt) yet: train "
                         f"it first.")
    try:  # weights only, never a fallback: a crafted pickle in a shared results folder must not run code
        checkpoint = store.load_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - truncated, corrupt or not plain tensors: say so, no traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise InputError(f"{path}: cannot be loaded as weights ({err.__class__.__name__}: {first[:200]}).") from None
    if isinstance(checkpoint, dict) and path.name == store.BEST_WEIGHTS:
        checkpoint = {"model": checkpoint}
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise InputError(f"{path}: expected a dict with a 'model' state_dict, got "
                         f"{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__}.")
    name = model_cfg.get("name", "rest_lite")
    state = rest.checkpoint_filter_fn(checkpoint["model"], None)
    first_conv = next((k for k in ("stem.conv1.weight", "stem.conv.weight") if k in state), None)
    if "head.weight" not in state or first_conv is None:
        raise InputError(f"{path}: the 'model' state_dict is not a ResT's (no head.weight / stem conv).")
    img_size = int(data_cfg.get("img_size", 224))
    model = timm.create_model(name, num_classes=state["head.weight"].shape[0], in_chans=state[first_conv].shape[1],
                              img_size=img_size, **{k: model_cfg[k] for k in KNOBS if k in model_cfg})
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"{path}: the weights do not fit {name} with the run's knobs: {err}") from None
    meta = document.meta
    first = f"{meta['sweep']} {meta['cell']}" if "sweep" in meta and "cell" in meta else name
    return model.eval(), img_size, f"run {run_dir.name} (first launched as {first}, {path.name})"


def validation_input(run_dir: Path, size: int, index: int = 0) -> tuple[torch.Tensor, np.ndarray, str]:
    """Image `index` of the run's own validation data at `size` px: (model input (1, C, S, S), the same image
    for display (S, S, 3) in [0, 1], a description). The dataset is built as the run built it
    (ablations.training.loaders) with data.img_size = size."""
    from ablations.spec.config import with_overrides
    from ablations.training.loaders import DatasetError, DeviceBatches, build_datasets

    config = with_overrides(store.read_config(run_dir).config, {"data.img_size": size})
    try:
        _, val, _ = build_datasets(config)
    except DatasetError as err:
        raise InputError(f"{run_dir}: the run's validation data cannot be read here ({err}); give --image FILE.") \
            from None
    if not 0 <= index < len(val):
        raise InputError(f"--index {index}: the run's validation set has {len(val)} images.")
    x, label = val[index]
    x = DeviceBatches(config, torch.device("cpu"), torch.contiguous_format)(x.unsqueeze(0), train=False)  # as trained
    shown = x[0].permute(1, 2, 0).float()
    shown = ((shown - shown.min()) / (shown.max() - shown.min()).clamp_min(1e-8)).numpy()
    return x, shown, f"validation image {index} of {config.data.dataset} (label {int(label)})"


def random_model(name: str = "rest_lite", **knobs) -> tuple[torch.nn.Module, str]:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, **knobs).eval(), f"{name}, random weights"


# ----------------------------------------------------------------------------------------------------------
# Image
# ----------------------------------------------------------------------------------------------------------
def load_image(path: Path | None, size: int) -> np.ndarray:
    """An RGB uint8 (size, size, 3) array: resized (shorter side) and center-cropped. Default: scikit-learn's
    bundled sample photo, so the figure needs no download."""
    from PIL import Image

    if path is None:
        from sklearn.datasets import load_sample_image

        image = Image.fromarray(load_sample_image("flower.jpg"))
    else:
        try:  # a regular file (or a link to one): a FIFO is refused, never waited on
            with store.open_file(path, "rb", follow_links=True) as f:
                image = Image.open(f).convert("RGB")
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot be read as an image ({err}).") from None
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return np.array(image.crop((left, top, left + size, top + size)))  # a writable copy, for torch


def to_input(image: np.ndarray, model: torch.nn.Module) -> torch.Tensor:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
    x = (torch.from_numpy(image).permute(2, 0, 1).float().unsqueeze(0) / 255 - mean) / std
    in_chans = model.stem.conv1.in_channels if hasattr(model.stem, "conv1") else model.stem.conv.in_channels
    return x.mean(dim=1, keepdim=True) if in_chans == 1 else x


# ----------------------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------------------
def attention_probs(attn: torch.nn.Module, x: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple]:
    """EfficientAttention's attention for tokens x (B, N, C): softmax probabilities (B, heads, N, M) and the
    key grid (h, w). Mirrors its forward up to the softmax."""
    B, N, _ = x.shape
    h, d = attn.num_heads, attn.head_dim
    q = attn.q(x).view(B, N, h, d).transpose(1, 2)
    key_grid = tuple(size)
    if attn.reduce:
        reduced = attn.sr(tokens_to_map(x, size))
        key_grid = tuple(reduced.shape[-2:])
        x = attn.sr_norm(map_to_tokens(reduced))
    k = attn.kv(x).view(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)[0]
    weight, bias = attn.conv1_weights()  # Conv-1 on the logits, then softmax: the model's own function, without IN
    return attention_map(q, k, attn.scale, weight, bias, head_norm=False), key_grid


def recompute_output(attn: torch.nn.Module, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The module's output from attention_probs (+ IN, @ v, proj): lets a test prove the recomputation exact."""
    probs, _ = attention_probs(attn, x, size)
    if attn.head_norm:
        probs = instance_norm(probs)
    B, N, C = x.shape
    kv_in = attn.sr_norm(map_to_tokens(attn.sr(tokens_to_map(x, size)))) if attn.reduce else x
    v = attn.kv(kv_in).view(B, -1, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)[1]
    return attn.proj((probs @ v).transpose(1, 2).reshape(B, N, C))


def last_block_attention(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Run the model on x; return stage 4's last block attention probabilities (heads, N, M) and key grid."""
    return block_attention(model, x, 4, -1)


def block_attention(model: torch.nn.Module, x: torch.Tensor, stage: int, block: int) -> tuple[torch.Tensor, tuple]:
    """Run the model on x; return block `block` of stage `stage` (1-4): attention probabilities (heads, N, M)
    and the key grid."""
    blocks = model.stages()[stage - 1]
    module = blocks[block].attn
    captured = {}

    def hook(_module, args):
        captured["x"], captured["size"] = args[0].detach(), tuple(args[1])

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            model(x)
            probs, grid = attention_probs(module, captured["x"], captured["size"])
    finally:
        handle.remove()
    return probs[0], grid


COLORMAP = "viridis"  # perceptually uniform, colour-blind safe, readable in greyscale


def figure(image: np.ndarray, probs: torch.Tensor, grid: tuple[int, int], title: str, stage: int = 4,
           block: str = "last") -> Figure:
    """The input, the head-averaged map, then one map per head: one colour scale for all, with its bar."""
    per_head = probs.mean(dim=1).view(probs.shape[0], 1, *grid)  # attention received by each key position
    maps = torch.cat([per_head.mean(dim=0, keepdim=True), per_head])
    maps = F.interpolate(maps, size=image.shape[:2], mode="nearest")[:, 0].numpy()  # one square per key
    names = ["mean of heads"] + [f"head {i + 1}" for i in range(probs.shape[0])]
    cols = 5
    rows = -(-(len(names) + 1) // cols)
    fig = Figure(figsize=(2.4 * cols + 0.8, 2.5 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    axes[0].imshow(image, cmap="gray" if image.ndim == 2 else None)
    axes[0].set_title("input", fontsize=9)
    # One scale for every map, from the smallest to the largest value shown; the colour bar marks what a
    # uniform attention (1 / keys) would be, so a flat map reads as such.
    vmin, vmax = float(maps.min()), float(maps.max())
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 1e-6, vmax + 1e-6
    shown = None
    for ax, amap, name in zip(axes[1:], maps, names, strict=False):
        shown = ax.imshow(amap, cmap=COLORMAP, vmin=vmin, vmax=vmax)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    bar = fig.colorbar(shown, ax=list(axes), shrink=0.8, pad=0.02)
    bar.set_label("attention received (mean over queries)", fontsize=8)
    uniform = 1.0 / (grid[0] * grid[1])
    if vmin <= uniform <= vmax:
        bar.ax.axhline(uniform, color="white", lw=1.5)
        bar.ax.text(-0.2, uniform, "uniform", transform=bar.ax.get_yaxis_transform(), fontsize=7, va="center",
                    ha="right")
    fig.suptitle(f"{title}\nstage {stage}, {block}: softmax attention per key position (before IN), "
                 f"{grid[0]}x{grid[1]} keys; one colour scale for all maps", fontsize=10)
    return fig
