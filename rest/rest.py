"""ResT: An Efficient Transformer for Visual Recognition (Zhang & Yang, NeurIPS 2021, arXiv:2105.13677).

A re-implementation of the official ResT v1 release that loads its checkpoints with ``strict=True`` and
exposes every design choice the paper ablates as a constructor argument:

    pos_encoding   "pa" (pixel attention, default) | "gl" (x + dwconv(x)) | "le" (learned embedding) | "none"
    reduction      "dwconv" (default) | "avg" | "max" | "none" (keys = all tokens)
    head_conv      the 1x1 conv across heads on the attention logits ("Conv-1"), default True
    head_norm      the InstanceNorm on the attention map ("IN"), default True
    stem           "rest" (default) | "resnet" (7x7 conv + max-pool) | "patch" (4x4 non-overlapping conv)

The paper's plain MSA (its Table 8) is ``reduction="none", head_conv=False, head_norm=False``.

The module layout is the official one (``stem``, ``patch_embed_2..4``, ``stage1..4``, ``norm``, ``head``), so
official checkpoints load unchanged; each ``stageS`` is a module (:class:`Stage`, a sequence of blocks
that maps a (B, C, H, W) map to a map), which is what timm's hook features, FX feature extraction, gradient
checkpointing and pruning work on. Everything scripts (``torch.jit.script``) and traces (``torch.fx``).

Differences from the official code that do not change its function or its weights:
  * token-grid sizes are read from tensors, so any input of at least 32 px works (square or not);
  * attention without Conv-1/IN runs through ``F.scaled_dot_product_attention``;
  * Conv-1 (a 1x1 conv over heads) is one batched matmul with the conv's weights;
  * token <-> map reshapes are views (a (B, N, C) tensor seen as (B, C, H, W) is channels-last), so the
    depth-wise convs never force a copy.

Plain PyTorch ops only: the same code runs eager, scripted, FX-traced and compiled, on CPU and GPU. Speed
switches (AMP, channels-last, torch.compile) belong to the caller, as in timm.
"""

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, create_classifier, register_notrace_function, trunc_normal_
from timm.models import build_model_with_cfg, checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch.jit import Final

from rest_knobs import NUM_HEADS, POS_ENCODINGS, REDUCTIONS, SR_RATIOS, STEMS, VARIANTS

__all__ = [
    "ResT", "Stage", "Block", "EfficientAttention", "Mlp", "POS_ENCODINGS", "POOL_TYPES", "REDUCTIONS", "STEMS",
    "VARIANTS", "checkpoint_filter_fn",
]

# timm's global pool types (timm.layers.SelectAdaptivePool2d; "catavgmax" concatenates avg and max, doubling
# the head's input); "" = no pooling, forward_head returns the map
POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax", "fastcatavgmax", "")


def check_choice(knob: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"ResT knob {knob}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}.")


def check_flag(knob: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"ResT knob {knob}={value!r} is not allowed; it must be True or False.")


def tokens_to_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) -> (B, C, H, W) as a view: the result is channels-last in memory, which convs accept."""
    return x.transpose(1, 2).unflatten(2, [size[0], size[1]])


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C); a view when x is channels-last, one copy otherwise."""
    return x.flatten(2).transpose(1, 2)


def instance_norm(attn: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm2d without affine over each head's (N, M) attention map (the paper's "IN").

    A one-element map (a 1x1 token grid attending to one key, e.g. stage 4 of a 32-px input) normalizes to
    zero; torch's InstanceNorm raises on it instead, so that case is handled here (the branch makes this an
    FX leaf). The zeros stay in the autograd graph (with zero gradient), so every parameter still gets a
    gradient: DistributedDataParallel rejects parameters that take no part in the loss. (A layer norm over
    the last two dims is the same function without the branch, but its float rounding differs from
    InstanceNorm's by ~1e-6, which IN's division by a small std amplifies past 1e-4 at the logits.)
    """
    if attn.shape[-1] * attn.shape[-2] == 1:
        return attn * 0.0
    return F.instance_norm(attn, eps=eps)


def resized_pos_embed(pos_embed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The learned embedding at x's grid: itself, or resized bicubically when the input size differs."""
    if pos_embed.shape[-2:] != x.shape[-2:]:
        pos_embed = F.interpolate(pos_embed, size=[x.shape[-2], x.shape[-1]], mode="bicubic", align_corners=False)
    return pos_embed


def attention_map(q: torch.Tensor, k: torch.Tensor, scale: float, mix_weight: torch.Tensor | None,
                  mix_bias: torch.Tensor | None, head_norm: bool) -> torch.Tensor:
    """The (B, h, N, M) attention weights with Conv-1 (`mix_weight`/`mix_bias`: the 1x1 conv over heads, as one
    batched matmul) and IN, computed in float32 whatever autocast says.

    IN divides by the std of a near-uniform map, which amplifies rounding: with the logits in bfloat16,
    ResT-Lite's outputs had a cosine of 0.05-0.30 with float32's at random init (float16: 0.64-0.86), with only
    softmax and IN in float32 0.98-0.99; with the whole map in float32, 0.9996+, as for ResNet. The map is
    small next to the convs and MLPs (M keys after the reduction), so this costs little. Scripted code cannot
    leave autocast (its device must be a constant), so there the map takes autocast's dtype.
    """
    if q.dtype == torch.float16 or q.dtype == torch.bfloat16:  # float64 stays float64
        q, k = q.float(), k.float()
    if torch.jit.is_scripting():  # a compile-time constant: TorchScript never compiles the else branch
        return _attention_map(q, k, scale, mix_weight, mix_bias, head_norm)
    else:
        device = q.device.type
        if not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):  # the meta device
            return _attention_map(q, k, scale, mix_weight, mix_bias, head_norm)
        with torch.autocast(device, enabled=False):
            return _attention_map(q, k, scale, mix_weight, mix_bias, head_norm)


def _attention_map(q: torch.Tensor, k: torch.Tensor, scale: float, mix_weight: torch.Tensor | None,
                   mix_bias: torch.Tensor | None, head_norm: bool) -> torch.Tensor:
    attn = (q * scale) @ k.transpose(-2, -1)
    if mix_weight is not None and mix_bias is not None:
        h = attn.shape[1]
        weight = mix_weight.to(attn.dtype).view(1, h, h).expand(attn.shape[0], h, h)
        attn = torch.baddbmm(mix_bias.to(attn.dtype).view(1, h, 1), weight, attn.flatten(2)).view_as(attn)
    attn = attn.softmax(dim=-1)
    return instance_norm(attn) if head_norm else attn


# Functions with data-dependent control flow are leaves of an FX graph: for timm's FX feature extraction
# (register_notrace_function) and for a plain torch.fx.symbolic_trace (torch.fx.wrap). They still script.
for _fn in (instance_norm, resized_pos_embed, attention_map):
    register_notrace_function(_fn)
torch.fx.wrap("instance_norm")
torch.fx.wrap("attention_map")
torch.fx.wrap("resized_pos_embed")


# --------------------------------------------------------------------------------------------------------
# Positional encodings (the paper's Table 5). Each is applied to a (B, C, H, W) map after a patch embedding.
# --------------------------------------------------------------------------------------------------------
class PA(nn.Module):
    """Pixel attention: x * sigmoid(dwconv3x3(x)). The official positional encoding."""

    def __init__(self, dim: int):
        super().__init__()
        self.pa_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.pa_conv(x))


class GL(nn.Module):
    """Group-linear encoding: x + dwconv3x3(x)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gl_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gl_conv(x)


class LE(nn.Module):
    """A learned embedding of the default input's grid, resized bicubically for other input sizes."""

    def __init__(self, dim: int, grid: tuple[int, int]):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *grid))
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + resized_pos_embed(self.pos_embed, x)


def make_pos_encoding(kind: str, dim: int, grid: tuple[int, int]) -> nn.Module:
    if kind == "pa":
        return PA(dim)
    if kind == "gl":
        return GL(dim)
    if kind == "le":
        return LE(dim, grid)
    return nn.Identity()


# --------------------------------------------------------------------------------------------------------
# Stems and patch embeddings. Each maps a (B, C, H, W) map to a map; `pos` is nn.Identity when off.
# --------------------------------------------------------------------------------------------------------
class RestStem(nn.Module):
    """conv3x3 s2 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3 s2 -> pos. The official stem."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module):
        super().__init__()
        hidden = out_chans // 2
        self.conv1 = nn.Conv2d(in_chans, hidden, 3, stride=2, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=1, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_chans, 3, stride=2, padding=1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.pos = pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        return self.pos(self.conv3(x))


class ResNetStem(nn.Module):
    """7x7 s2 conv -> BN -> ReLU -> 3x3 s2 max-pool -> pos (the ResNet stem of the paper's stem ablation)."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 7, stride=2, padding=3, bias=False)
        self.norm = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.pos = pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos(self.pool(self.act(self.norm(self.conv(x)))))


class PatchStem(nn.Module):
    """Non-overlapping 4x4 conv -> LayerNorm over channels -> pos, as PVT's patch embedding (conv, then
    LayerNorm on the tokens)."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 4, stride=4)
        self.norm = LayerNorm2d(out_chans, eps=1e-5)
        self.pos = pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos(self.norm(self.conv(x)))


STEM_CLASSES = {"rest": RestStem, "resnet": ResNetStem, "patch": PatchStem}


class PatchEmbed(nn.Module):
    """conv3x3 s2 (overlapping) -> BN -> pos, between stages."""

    def __init__(self, in_chans: int, out_chans: int, pos: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(out_chans)
        self.pos = pos

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos(self.norm(self.conv(x)))


# --------------------------------------------------------------------------------------------------------
# Attention and block
# --------------------------------------------------------------------------------------------------------
class EfficientAttention(nn.Module):
    """EMSA: multi-head attention whose keys/values come from a reduced token map.

    reduction != "none" and sr_ratio > 1: the (H, W) map is reduced by a depth-wise conv (or pooling) of
    kernel sr+1, stride sr, then layer-normed, before the kv projection. head_conv mixes the heads' logits
    with a 1x1 conv before the softmax; head_norm instance-normalizes each head's attention map after it.
    Both need at least two heads, as in the official code. The flags are TorchScript constants, and the
    modules they turn off are nn.Identity (no state-dict entries), so each configuration scripts.
    """

    reduce: Final[bool]
    head_conv: Final[bool]
    head_norm: Final[bool]

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
        self.sr = nn.Identity()
        self.sr_norm = nn.Identity()
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
        self.transform_conv = nn.Identity()
        if self.head_conv:
            self.transform_conv = nn.Conv2d(num_heads, num_heads, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens laid out on a `size` grid -> (B, N, C)."""
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q(x).view(B, N, h, d).transpose(1, 2)
        if self.reduce:
            x = self.sr_norm(map_to_tokens(self.sr(tokens_to_map(x, size))))
        kv = self.kv(x)
        k, v = kv.view(B, -1, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.attn_drop if self.training else 0.0

        if not (self.head_conv or self.head_norm):
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)
        else:
            weight, bias = self.conv1_weights()
            attn = attention_map(q, k, self.scale, weight, bias, self.head_norm)  # (B, h, N, M), float32
            if drop > 0.0:
                attn = F.dropout(attn, p=drop)
            out = attn.to(v.dtype) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))

    def conv1_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Conv-1's (h, h, 1, 1) weight and (h,) bias, or (None, None) without it."""
        if not self.head_conv:
            return None, None
        return self.transform_conv.weight, self.transform_conv.bias


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, act_layer: Callable[..., nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


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


class Stage(nn.Sequential):
    """A stage's blocks as one module: (B, C, H, W) map -> map, blocks on its (B, H*W, C) tokens.

    The blocks are its children "0", "1", ..., so the state-dict keys are the official ``stageS.N.*``.
    With ``grad_checkpointing`` each block is recomputed in the backward pass (timm's
    ``set_grad_checkpointing``).
    """

    def __init__(self, blocks: list[Block]):
        super().__init__(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        x = map_to_tokens(x)
        for block in self:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, size)
            else:
                x = block(x, size)
        return tokens_to_map(x, size)


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
        num_heads: tuple[int, ...] = NUM_HEADS,
        sr_ratios: tuple[int, ...] = SR_RATIOS,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,  # MLP and attention-projection dropout, as the official code's drop_rate
        head_drop_rate: float = 0.0,  # dropout before the classifier (what timm's models call drop_rate)
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
        check_choice("global_pool", global_pool, POOL_TYPES)
        check_flag("head_conv", head_conv)
        check_flag("head_norm", head_norm)
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(sr_ratios) == 4):
            raise ValueError("ResT has four stages: embed_dims, depths, num_heads and sr_ratios need 4 values each")

        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.embed_dims = tuple(embed_dims)
        self.depths = tuple(depths)
        self.pos_encoding = pos_encoding
        self.grad_checkpointing = False
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        grids = [(math.ceil(img_size[0] / 2 ** (i + 2)), math.ceil(img_size[1] / 2 ** (i + 2))) for i in range(4)]

        stem_pos = make_pos_encoding(pos_encoding, embed_dims[0], grids[0])
        self.stem = STEM_CLASSES[stem](in_chans, embed_dims[0], stem_pos)
        n_blocks = sum(depths)
        dpr = [drop_path_rate * i / max(1, n_blocks - 1) for i in range(n_blocks)]  # linear over all blocks
        cur = 0
        for i in range(4):
            if i > 0:
                pos = make_pos_encoding(pos_encoding, embed_dims[i], grids[i])
                self.add_module(f"patch_embed_{i + 1}", PatchEmbed(embed_dims[i - 1], embed_dims[i], pos))
            blocks = [
                Block(
                    embed_dims[i], num_heads[i], mlp_ratio, sr_ratios[i], reduction, head_conv, head_norm,
                    qkv_bias, drop_rate, attn_drop_rate, dpr[cur + j], norm_layer,
                )
                for j in range(depths[i])
            ]
            self.add_module(f"stage{i + 1}", Stage(blocks))
            cur += depths[i]

        # LayerNorm over the channels of the final map (the official LayerNorm on stage 4's tokens; same keys)
        self.norm = LayerNorm2d(embed_dims[-1], eps=1e-5)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.global_pool, self.head = create_classifier(self.num_features, num_classes, pool_type=global_pool)
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
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):  # a norm_layer without affine has neither
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- the timm surface ------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if name.endswith("pos_embed")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stage(\d+)" if coarse else [(r"^stage(\d+)\.(\d+)", None), (r"^patch_embed_(\d+)", (0,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages():
            if isinstance(stage, Stage):
                stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        check_choice("global_pool", global_pool, POOL_TYPES)
        device = next(self.parameters()).device
        self.global_pool, self.head = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, device=device
        )
        self.head.train(self.training)

    @torch.jit.ignore
    def patch_embeds(self) -> list[nn.Module]:
        return [self.stem, self.patch_embed_2, self.patch_embed_3, self.patch_embed_4]

    @torch.jit.ignore
    def stages(self) -> list[nn.Module]:
        return [self.stage1, self.stage2, self.stage3, self.stage4]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image -> (B, C, H/32, W/32) normalized feature map."""
        # Channels-last from the first conv on: every later token <-> map reshape is then a view.
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.stage1(self.stem(x))
        x = self.stage2(self.patch_embed_2(x))
        x = self.stage3(self.patch_embed_3(x))
        x = self.stage4(self.patch_embed_4(x))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.jit.ignore
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

        As in timm's hierarchical models, an intermediate is the stage's output; `norm=True` applies the
        final LayerNorm to stage 4's (the only one it is sized for).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"ResT returns intermediates as NCHW only, not {output_fmt!r}")
        take, max_index = feature_take_indices(4, indices)
        intermediates = []
        x = x.contiguous(memory_format=torch.channels_last)
        embeds, stages = self.patch_embeds(), self.stages()
        last = max_index if stop_early else 3
        for i in range(last + 1):
            x = stages[i](embeds[i](x))
            if i in take:
                intermediates.append(self.norm(x) if norm and i == 3 else x)
        if intermediates_only:
            return intermediates
        if last == 3:
            x = self.norm(x)
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages (patch embedding + blocks) after the last requested index, as timm's models do."""
        take, max_index = feature_take_indices(4, indices)
        for i in range(max_index + 1, 4):
            setattr(self, f"patch_embed_{i + 1}", nn.Identity())
            setattr(self, f"stage{i + 1}", nn.Identity())
        prune_end = max_index < 3
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # the final norm is sized for (and only applied to) stage 4
        if prune_end:
            self.num_features = self.head_hidden_size = self.embed_dims[max_index]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take


def checkpoint_filter_fn(state_dict: dict, model: ResT | None = None) -> dict:
    """Accept an official ResT checkpoint as saved by its training script ({"model": ...}) or bare.

    The official key layout is ours (``stageS`` are modules whose children are the blocks ``stageS.N``), so
    apart from unwrapping and DataParallel's ``module.`` prefix nothing is renamed.
    """
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
