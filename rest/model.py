"""ResT: An Efficient Transformer for Visual Recognition (Zhang & Yang, NeurIPS 2021, arXiv:2105.13677).

A re-implementation of the official ResT v1 release that loads its checkpoints with ``strict=True`` and
exposes every design choice the paper ablates as a constructor argument:

    pos_encoding   "pa" (pixel attention, default) | "gl" (x + dwconv(x)) | "le" (learned embedding) | "none"
    reduction      "dwconv" (default) | "avg" | "max" | "none" (keys = all tokens)
    head_conv      the 1x1 conv across heads on the attention logits ("Conv-1"), default True
    head_norm      the InstanceNorm on the attention map ("IN"), default True
    stem           "rest" (default) | "resnet" (7x7 conv + max-pool) | "patch" (4x4 non-overlapping conv)

The paper's plain MSA (its Table 8) is ``reduction="none", head_conv=False, head_norm=False``.

Differences from the official code that do not change its function or its weights:
  * token-grid sizes are read from tensors, so any input of at least 32 px works (square or not);
  * attention without Conv-1/IN runs through ``F.scaled_dot_product_attention``;
  * token <-> map reshapes are views (a (B, N, C) tensor seen as (B, C, H, W) is channels-last), so the
    depth-wise convs never force a copy.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from rest_knobs import POS_ENCODINGS, REDUCTIONS, STEMS, VARIANTS

__all__ = ["ResT", "POS_ENCODINGS", "REDUCTIONS", "STEMS", "VARIANTS", "checkpoint_filter_fn"]



def check_choice(knob: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"ResT knob {knob}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}.")


def check_flag(knob: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"ResT knob {knob}={value!r} is not allowed; it must be True or False.")


def tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) -> (B, C, H, W) as a view: the result is channels-last in memory, which convs accept."""
    return x.transpose(1, 2).unflatten(2, size)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C); a view when x is channels-last, one copy otherwise."""
    return x.flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------------------------------------
# Positional encodings (the paper's Table 5). Each is applied to a (B, C, H, W) map after a patch embedding.
# --------------------------------------------------------------------------------------------------------
class PA(nn.Module):
    """Pixel attention: x * sigmoid(dwconv3x3(x)). The official positional encoding."""

    def __init__(self, dim: int):
        super().__init__()
        self.pa_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x):
        return x * torch.sigmoid(self.pa_conv(x))


class GL(nn.Module):
    """Group-linear encoding: x + dwconv3x3(x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gl_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x):
        return x + self.gl_conv(x)


class LE(nn.Module):
    """A learned embedding of the default input's grid, resized bicubically for other input sizes."""

    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *grid))
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x):
        pos = self.pos_embed
        if pos.shape[-2:] != x.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        return x + pos


def make_pos_encoding(kind: str, dim: int, grid: tuple[int, int]) -> nn.Module | None:
    if kind == "pa":
        return PA(dim)
    if kind == "gl":
        return GL(dim)
    if kind == "le":
        return LE(dim, grid)
    return None


# --------------------------------------------------------------------------------------------------------
# Stems and patch embeddings
# --------------------------------------------------------------------------------------------------------
class RestStem(nn.Module):
    """conv3x3 s2 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 s2 -> pos. The official stem."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module | None):
        super().__init__()
        hidden = out_chans // 2
        self.conv1 = nn.Conv2d(in_chans, hidden, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=1, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_chans, 3, stride=2, padding=1, bias=False)
        self.act = nn.ReLU(inplace=True)
        if pos is not None:
            self.pos = pos

    def forward(self, x):
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        x = self.conv3(x)
        return self.pos(x) if hasattr(self, "pos") else x


class ResNetStem(nn.Module):
    """7x7 s2 conv -> BN -> ReLU -> 3x3 s2 max-pool -> pos (the ResNet stem of the paper's stem ablation)."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module | None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 7, stride=2, padding=3, bias=False)
        self.norm = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        if pos is not None:
            self.pos = pos

    def forward(self, x):
        x = self.pool(self.act(self.norm(self.conv(x))))
        return self.pos(x) if hasattr(self, "pos") else x


class PatchStem(nn.Module):
    """Non-overlapping 4x4 conv -> BN -> pos, as the patch embedding of PVT."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module | None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 4, stride=4)
        self.norm = nn.BatchNorm2d(out_chans)
        if pos is not None:
            self.pos = pos

    def forward(self, x):
        x = self.norm(self.conv(x))
        return self.pos(x) if hasattr(self, "pos") else x


STEM_CLASSES = {"rest": RestStem, "resnet": ResNetStem, "patch": PatchStem}


class PatchEmbed(nn.Module):
    """conv3x3 s2 (overlapping) -> BN -> pos, between stages."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module | None):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chans)
        if pos is not None:
            self.pos = pos

    def forward(self, x):
        x = self.norm(self.conv(x))
        return self.pos(x) if hasattr(self, "pos") else x


# --------------------------------------------------------------------------------------------------------
# Attention and block
# --------------------------------------------------------------------------------------------------------
class EfficientAttention(nn.Module):
    """EMSA: multi-head attention whose keys/values come from a reduced token map.

    reduction != "none" and sr_ratio > 1: the (H, W) map is reduced by a depth-wise conv (or pooling) of
    kernel sr+1, stride sr, then layer-normed, before the kv projection. head_conv mixes the heads' logits
    with a 1x1 conv before the softmax; head_norm instance-normalizes each head's attention map after it.
    Both need at least two heads, as in the official code.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        reduction: str = "dwconv",
        head_conv: bool = True,
        head_norm: bool = True,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} is not divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

        self.reduce = reduction != "none" and sr_ratio > 1
        if self.reduce:
            kernel, stride, padding = sr_ratio + 1, sr_ratio, sr_ratio // 2
            if reduction == "dwconv":
                self.sr = nn.Conv2d(dim, dim, kernel, stride=stride, padding=padding, groups=dim)
            elif reduction == "avg":
                self.sr = nn.AvgPool2d(kernel, stride=stride, padding=padding, count_include_pad=False)
            else:
                self.sr = nn.MaxPool2d(kernel, stride=stride, padding=padding)
            self.sr_norm = nn.LayerNorm(dim)
        self.head_conv = head_conv and num_heads > 1
        self.head_norm = head_norm and num_heads > 1
        if self.head_conv:
            self.transform_conv = nn.Conv2d(num_heads, num_heads, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q(x).view(B, N, h, d).transpose(1, 2)
        if self.reduce:
            x = self.sr_norm(map_to_tokens(self.sr(tokens_to_map(x, size))))
        kv = self.kv(x).view(B, -1, 2, h, d).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        drop = self.attn_drop if self.training else 0.0

        if not (self.head_conv or self.head_norm):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, h, N, M)
            if self.head_conv:
                # A 1x1 conv over heads is a (h x h) matrix applied at every (n, m): one batched matmul.
                w = self.transform_conv.weight.view(h, h)
                attn = (w @ attn.flatten(2)).view_as(attn) + self.transform_conv.bias.view(1, h, 1, 1)
            attn = attn.softmax(dim=-1)
            if self.head_norm:
                attn = instance_norm(attn)
            if drop:
                attn = F.dropout(attn, p=drop)
            out = attn @ v
        x = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


def instance_norm(attn: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm2d without affine over each head's (N, M) map.

    A one-element map (a 1x1 token grid attending to one key, e.g. stage 4 of a 32-px input) normalizes to
    zero; torch's InstanceNorm raises on it instead, so that case is handled here.
    """
    if attn.shape[-1] * attn.shape[-2] == 1:
        # zeros that stay in the autograd graph (with zero gradient), so every parameter still gets a
        # gradient: DistributedDataParallel rejects parameters that take no part in the loss
        return attn * 0.0
    return F.instance_norm(attn, eps=eps)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, with a faster path for inference.

    Without autograd, the hidden activations are computed a few thousand rows at a time into one output
    buffer: a stage-1 hidden tensor of a 224-px batch is ~100 MB, and allocating, first-touching and
    streaming it through memory costs more than the matmuls (3x on a 2-core CPU). Results are identical.
    GPUs (caching allocator, fused kernels) and autocast take the plain path.
    """

    CHUNK_ELEMENTS = 1 << 20  # hidden activations per chunk: 4 MB in fp32, cache-friendly

    def __init__(self, dim: int, hidden: int, act_layer: Callable[..., nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = (
            torch.is_grad_enabled()
            or (self.training and self.drop1.p > 0)
            or not isinstance(self.act, nn.GELU)
            or x.device.type != "cpu"
            or torch.is_autocast_enabled("cpu")
        )
        if plain:
            return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
        return self.chunked_inference(x)

    def chunked_inference(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = rows.new_empty(rows.shape[0], self.fc2.out_features)
        w1, w2 = self.fc1.weight.t(), self.fc2.weight.t()
        step = max(1, self.CHUNK_ELEMENTS // self.fc1.out_features)
        approximate = self.act.approximate
        for i in range(0, rows.shape[0], step):
            hidden = torch.addmm(self.fc1.bias, rows[i : i + step], w1)
            hidden = torch.ops.aten.gelu_(hidden, approximate=approximate)
            torch.addmm(self.fc2.bias, hidden, w2, out=out[i : i + step])
        return out.view(*x.shape[:-1], -1)


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        reduction: str = "dwconv",
        head_conv: bool = True,
        head_norm: bool = True,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        act_layer: Callable[..., nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = EfficientAttention(
            dim, num_heads, sr_ratio, reduction, head_conv, head_norm, qkv_bias, attn_drop, proj_drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------
class ResT(nn.Module):
    """ResT v1. Module names follow the official release so its checkpoints load with strict=True."""

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        depths: tuple[int, ...] = (2, 2, 2, 2),
        num_heads: tuple[int, ...] = (1, 2, 4, 8),
        sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        pos_encoding: str = "pa",
        reduction: str = "dwconv",
        head_conv: bool = True,
        head_norm: bool = True,
        stem: str = "rest",
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        check_choice("pos_encoding", pos_encoding, POS_ENCODINGS)
        check_choice("reduction", reduction, REDUCTIONS)
        check_choice("stem", stem, STEMS)
        check_choice("global_pool", global_pool, ("avg", ""))
        check_flag("head_conv", head_conv)
        check_flag("head_norm", head_norm)
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(sr_ratios) == 4):
            raise ValueError("ResT has four stages: embed_dims, depths, num_heads and sr_ratios need 4 values each")

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)
        self.pos_encoding = pos_encoding
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        grids = [(math.ceil(img_size[0] / 2 ** (i + 2)), math.ceil(img_size[1] / 2 ** (i + 2))) for i in range(4)]

        stem_pos = make_pos_encoding(pos_encoding, embed_dims[0], grids[0])
        self.stem = STEM_CLASSES[stem](in_chans, embed_dims[0], stem_pos)
        for i in range(1, 4):
            pos = make_pos_encoding(pos_encoding, embed_dims[i], grids[i])
            self.add_module(f"patch_embed_{i + 1}", PatchEmbed(embed_dims[i - 1], embed_dims[i], pos))

        n_blocks = sum(depths)
        dpr = [drop_path_rate * i / max(1, n_blocks - 1) for i in range(n_blocks)]  # linear over all blocks
        cur = 0
        for i in range(4):
            blocks = [
                Block(
                    embed_dims[i], num_heads[i], mlp_ratio, sr_ratios[i], reduction, head_conv, head_norm,
                    qkv_bias, proj_drop_rate, attn_drop_rate, dpr[cur + j], norm_layer,
                )
                for j in range(depths[i])
            ]
            self.add_module(f"stage{i + 1}", nn.ModuleList(blocks))
            cur += depths[i]

        self.norm = norm_layer(embed_dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            dict(num_chs=embed_dims[i], reduction=2 ** (i + 2), module=f"stage{i + 1}") for i in range(4)
        ]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            trunc_normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ---- the timm surface ------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if name.endswith("pos_embed")}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            check_choice("global_pool", global_pool, ("avg", ""))
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def patch_embeds(self) -> list[nn.Module]:
        return [self.stem, self.patch_embed_2, self.patch_embed_3, self.patch_embed_4]

    def stages(self) -> list[nn.ModuleList]:
        return [self.stage1, self.stage2, self.stage3, self.stage4]

    def run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage i (0-based) on a (B, C, H, W) map: patch embedding, then its blocks on tokens."""
        x = self.patch_embeds()[i](x)
        size = x.shape[-2:]
        x = map_to_tokens(x)
        for block in self.stages()[i]:
            x = block(x, size)
        if i == 3:
            x = self.norm(x)
        return tokens_to_map(x, size)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image -> (B, C, H/32, W/32) normalized feature map."""
        # Channels-last from the first conv on: every later token <-> map reshape is then a view.
        x = x.contiguous(memory_format=torch.channels_last)
        for i in range(4):
            x = self.run_stage(i, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs as (B, C, H, W) maps, for detection and segmentation backbones (timm's API).

        The final LayerNorm belongs to stage 4's output in the official model, so norm is always applied
        there; `norm` is accepted for API compatibility.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"ResT returns intermediates as NCHW only, not {output_fmt!r}")
        take, max_index = feature_take_indices(4, indices)
        intermediates = []
        x = x.contiguous(memory_format=torch.channels_last)
        for i in range(max_index + 1 if stop_early else 4):
            x = self.run_stage(i, x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take, _ = feature_take_indices(4, indices)
        if prune_head:
            self.reset_classifier(0, "")
        return take


def checkpoint_filter_fn(state_dict: dict, model: ResT) -> dict:
    """Accept an official ResT checkpoint as saved by its training script ({"model": ...}) or bare."""
    for key in ("model", "state_dict", "model_ema"):
        if key in state_dict and isinstance(state_dict[key], dict):
            state_dict = state_dict[key]
            break
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


# --------------------------------------------------------------------------------------------------------
# Registered sizes (paper Table 1)
# --------------------------------------------------------------------------------------------------------


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2105.13677",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in VARIANTS})


def _create_rest(variant: str, pretrained: bool = False, **kwargs) -> ResT:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not overlay.get("file"):
        # No weights can be fetched from a hub here; refuse rather than silently return random weights.
        raise ValueError(
            f"{variant}: pretrained=True needs the official checkpoint on disk, e.g. "
            f"timm.create_model('{variant}', pretrained=True, pretrained_cfg_overlay=dict(file='/path/{variant}.pth'))"
        )
    if kwargs.get("stem", "rest") != "rest":
        kwargs.setdefault("pretrained_cfg_overlay", {})
        kwargs["pretrained_cfg_overlay"] = {**overlay, "first_conv": "stem.conv"}
    return build_model_with_cfg(
        ResT,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
        **dict(VARIANTS[variant], **kwargs),
    )


@register_model
def rest_lite(pretrained: bool = False, **kwargs) -> ResT:
    return _create_rest("rest_lite", pretrained, **kwargs)


@register_model
def rest_small(pretrained: bool = False, **kwargs) -> ResT:
    return _create_rest("rest_small", pretrained, **kwargs)


@register_model
def rest_base(pretrained: bool = False, **kwargs) -> ResT:
    return _create_rest("rest_base", pretrained, **kwargs)


@register_model
def rest_large(pretrained: bool = False, **kwargs) -> ResT:
    return _create_rest("rest_large", pretrained, **kwargs)
