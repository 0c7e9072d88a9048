"""The ResT family: sizes, knobs, weight compatibility with the official release, input sizes, timm surface.

Knob coverage. The knobs are pos_encoding (4 values) x reduction (4) x head_conv (2) x head_norm (2) x stem
(3): 192 combinations, too many to script and trace whole models on a 2-core machine. Where knobs meet inside
one module (reduction x head_conv x head_norm in the attention, pos_encoding x stem in the stem) every
combination is tested at module level; whole-model tests run over CONFIGS, 16 combinations in which every
pair of values of any two knobs occurs (a covering array; `test_configs_cover_every_pair_of_knob_values`
checks it), each on one of the four sizes in turn. Depth does not change what these tests check, so the
model-level ones use each size's widths with shortened stages (`small_model`); full depths are covered by
the parameter, layout, equivalence and full-size tests.
"""
from __future__ import annotations

import copy
import functools
import itertools
import re
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.fx
from timm.models import create_feature_extractor
from timm.models._features import FeatureGetterNet, FeatureHookNet
from timm.models._features_fx import FeatureGraphNet, get_graph_node_names

import rest
from benchmarks.official_rest import OfficialResT
from rest.rest import STEM_CLASSES, EfficientAttention, make_pos_encoding

REFERENCE = Path(__file__).parent / "data" / "official_rest_state_dict.txt"
OFFICIAL_PARAMS = {"rest_lite": 10_508_300, "rest_small": 13_679_708, "rest_base": 30_327_052, "rest_large": 51_676_156}
# (macs_paper, macs_total) of the official code at 224 px, in GMACs.
OFFICIAL_MACS = {
    "rest_lite": (1.459, 1.533),
    "rest_small": (2.000, 2.093),
    "rest_base": (4.486, 4.626),
    "rest_large": (8.131, 8.360),
}
MSA = dict(reduction="none", head_conv=False, head_norm=False)


KNOB_SPACE = {
    "pos_encoding": rest.POS_ENCODINGS,
    "reduction": rest.REDUCTIONS,
    "head_conv": (True, False),
    "head_norm": (True, False),
    "stem": rest.STEMS,
}


def covering_configs() -> list[tuple[str, dict]]:
    """16 knob combinations covering every pair of values of any two knobs, each with a size (in turn)."""
    names = list(rest.VARIANTS)
    configs = []
    for a, b in itertools.product(range(4), range(4)):
        index = dict(pos_encoding=a, reduction=b, head_conv=(b + a // 2) % 2, head_norm=(a + b // 2) % 2,
                     stem=(a + b) % 3)
        knobs = {k: KNOB_SPACE[k][i] for k, i in index.items()}
        configs.append((names[(a + b) % 4], knobs))
    return configs


CONFIGS = covering_configs()


def knob_id(knobs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in knobs.items())


def config_id(config: tuple[str, dict]) -> str:
    variant, knobs = config
    return f"{variant}:{knob_id(knobs)}"


@functools.lru_cache(maxsize=64)
def _built(variant: str, depths: tuple, kwargs: tuple) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(variant, depths=depths, **dict(kwargs))


def small_model(variant: str, depths=(1, 1, 2, 1), **kwargs) -> torch.nn.Module:
    """`variant`'s widths, heads and reductions with shortened stages (stage 3 keeps two blocks).

    A fresh copy of a cached build (the same arguments give the same weights): creating and initializing
    the wide sizes costs more than the tests that use them.
    """
    return copy.deepcopy(_built(variant, tuple(depths), tuple(sorted(kwargs.items()))))


def parametrize_configs(test):
    return pytest.mark.parametrize("variant,knobs", CONFIGS, ids=[config_id(c) for c in CONFIGS])(test)


def script(model: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.compile
        warnings.filterwarnings("ignore", "The TorchScript type system doesn't support instance-level")  # fx code
        return torch.jit.script(model)


def reference_layout(variant: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official checkpoint of `variant`, from the reference file.

    The file lists rest_lite and rest_base with 'stageS.N' for every block; Small and Large share their
    widths with Lite and Base and differ in depth only.
    """
    section = {"rest_lite": "rest_lite", "rest_small": "rest_lite", "rest_base": "rest_base", "rest_large": "rest_base"}
    depths = rest.VARIANTS[variant]["depths"]
    layout, current = {}, None
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            continue
        if not line.strip() or line.startswith("#") or current != section[variant]:
            continue
        key, shape_text = line.split(" ", 1)
        shape = tuple(int(s) for s in re.findall(r"\d+", shape_text))
        match = re.match(r"stage(\d)\.N\.(.*)", key)
        if match:
            stage = int(match.group(1))
            for n in range(depths[stage - 1]):
                layout[f"stage{stage}.{n}.{match.group(2)}"] = shape
        else:
            layout[key] = shape
    return layout


@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_parameter_counts_equal_official(variant):
    with torch.device("meta"):  # shapes only: no memory, no initialization time
        model = timm.create_model(variant)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[variant]


def test_plain_msa_parameter_count():
    model = timm.create_model("rest_lite", **MSA)
    assert sum(p.numel() for p in model.parameters()) == 10_484_040


@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_state_dict_matches_reference_layout(variant):
    with torch.device("meta"):
        model = timm.create_model(variant)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == reference_layout(variant)


def test_reference_layout_parser_sees_every_section():
    per_block = 20  # entries of one block with reduction and Conv-1 (stages 2 and 3)
    assert len(reference_layout("rest_small")) - len(reference_layout("rest_lite")) == 4 * per_block
    assert len(reference_layout("rest_large")) - len(reference_layout("rest_base")) == 12 * per_block
    assert reference_layout("rest_lite")["head.weight"] == (1000, 512)


def test_official_weights_load_strict_and_give_the_same_outputs():
    torch.manual_seed(0)
    official = OfficialResT().eval()
    ours = timm.create_model("rest_lite").eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected, got = official(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(ours.train()(x), official.train()(x), rtol=1e-4, atol=1e-4)


def test_pretrained_file_loads_through_timm(tmp_path):
    torch.manual_seed(0)
    official = OfficialResT().eval()
    path = tmp_path / "rest_lite.pth"
    torch.save({"model": official.state_dict()}, path)  # the official training script wraps it like this
    through_timm = timm.create_model("rest_lite", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    by_hand = timm.create_model("rest_lite")  # the filter, then a strict load
    by_hand.load_state_dict(rest.checkpoint_filter_fn(torch.load(path, weights_only=True), by_hand), strict=True)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.inference_mode():
        expected = official.double()(x)
        for model in (through_timm, by_hand):
            assert model.state_dict().keys() == official.state_dict().keys()
            torch.testing.assert_close(model.double().eval()(x), expected, rtol=1e-9, atol=1e-9)


def test_float64_outputs_and_training_gradients_equal_official():
    """The same function as the official code: in float64 (where random-init attention maps, nearly uniform,
    do not amplify float32 rounding through IN's division by a tiny std) outputs agree to ~1e-12 and one
    training step's gradients parameter by parameter."""
    torch.manual_seed(0)
    official = OfficialResT().double()
    ours = timm.create_model("rest_lite").double()
    ours.load_state_dict(official.state_dict(), strict=True)
    x, target = torch.randn(2, 3, 64, 64, dtype=torch.float64), torch.tensor([1, 2])
    with torch.inference_mode():
        torch.testing.assert_close(ours.eval()(x), official.eval()(x), rtol=1e-9, atol=1e-9)
    for model in (official, ours):
        torch.nn.functional.cross_entropy(model.train()(x), target).backward()
    theirs = dict(official.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-7, atol=1e-12, msg=name)


def test_pretrained_without_a_file_is_an_error_not_random_weights():
    with pytest.raises(ValueError, match="pretrained_cfg_overlay"):
        timm.create_model("rest_lite", pretrained=True)


@parametrize_configs
def test_every_config_trains(variant, knobs):
    model = small_model(variant, num_classes=5, drop_path_rate=0.2, **knobs).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "knob,value",
    [("pos_encoding", "sine"), ("reduction", "conv"), ("stem", "vit"), ("head_conv", "yes"), ("head_norm", 1)],
)
def test_bad_knob_values_raise(knob, value):
    with pytest.raises(ValueError, match=knob):
        timm.create_model("rest_lite", **{knob: value})


@pytest.mark.parametrize("size", [32, 48, 97, 225, (320, 192)], ids=str)
@pytest.mark.parametrize("knobs", [{}, dict(pos_encoding="le"), MSA, dict(reduction="max")], ids=knob_id)
def test_any_input_size_train_and_eval(size, knobs):
    h, w = (size, size) if isinstance(size, int) else size
    model = small_model("rest_lite", depths=(1, 1, 1, 1), num_classes=3, **knobs)
    x = torch.randn(2, 3, h, w)
    model.train()
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    # every parameter takes part in the loss, even where a 1x1 token grid makes attention trivial
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.inference_mode():
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_macs_match_official_code(variant):
    with torch.device("meta"):  # shapes suffice (the plain-MSA count below runs on real tensors)
        counts = rest.complexity(timm.create_model(variant), img_size=224)
    paper, total = OFFICIAL_MACS[variant]
    assert counts["params"] == OFFICIAL_PARAMS[variant]
    assert round(counts["macs_paper"] / 1e9, 3) == paper
    assert round(counts["macs_total"] / 1e9, 3) == total


def conv1_macs(variant: str, img_size: int) -> int:
    """Conv-1's MACs per image, from the paper's arithmetic: in every block of a stage with h > 1 heads, an
    (h x h) mix at each of the N x M (query, key) pairs; M from the reduction (kernel sr+1, stride sr, padding
    sr // 2)."""
    cfg = rest.VARIANTS[variant]
    macs = 0
    for stage, (depth, heads, sr) in enumerate(zip(cfg["depths"], (1, 2, 4, 8), (8, 4, 2, 1), strict=True)):
        side = img_size // 2 ** (stage + 2)
        keys = (side + 2 * (sr // 2) - (sr + 1)) // sr + 1 if sr > 1 else side
        if heads > 1:
            macs += depth * heads * heads * side**2 * keys**2
    return macs


@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_conv1_off_lowers_paper_macs_by_exactly_conv1(variant):
    with torch.device("meta"):
        on = rest.complexity(timm.create_model(variant), img_size=224)
        off = rest.complexity(timm.create_model(variant, head_conv=False), img_size=224)
    assert on["macs_paper"] - off["macs_paper"] == conv1_macs(variant, 224) > 0
    assert on["params"] > off["params"]


def test_macs_of_plain_msa_include_full_attention():
    counts = rest.complexity(timm.create_model("rest_lite", **MSA), img_size=224)
    assert counts["macs_paper"] / 1e9 == pytest.approx(1.595, rel=0.005)  # paper: 1.6 G
    # QK^T and AV over all 3136 stage-1 tokens dominate: far more than EMSA's 1.533 G
    assert counts["macs_total"] > 2.5 * counts["macs_paper"]


@pytest.mark.parametrize("feature_cls", ["getter", "hook", "fx"])
def test_features_only_returns_four_maps(feature_cls):
    model = timm.create_model("rest_lite", features_only=True, feature_cls=feature_cls)
    channels = model.feature_info.channels()
    assert channels == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    features = model(torch.randn(2, 3, 128, 96))
    assert len(features) == 4
    for feature, c, r in zip(features, channels, [4, 8, 16, 32], strict=True):
        assert feature.shape == (2, c, 128 // r, 96 // r)


def test_features_only_with_out_indices():
    model = timm.create_model("rest_small", features_only=True, out_indices=(1, 3))
    features = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == [128, 512]


def test_timm_surface():
    model = timm.create_model("rest_base", pos_encoding="le")
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert cfg["first_conv"] == "stem.conv1" and cfg["classifier"] == "head"
    assert model.default_cfg is model.pretrained_cfg
    assert model.num_features == 768
    assert model.no_weight_decay() == {"stem.pos.pos_embed"} | {f"patch_embed_{i}.pos.pos_embed" for i in (2, 3, 4)}
    model.reset_classifier(7)
    x = torch.randn(1, 3, 64, 64)
    features = model.forward_features(x)
    assert features.shape == (1, 768, 2, 2)
    assert model.forward_head(features).shape == (1, 7)
    assert model.forward_head(features, pre_logits=True).shape == (1, 768)
    assert timm.models.get_pretrained_cfg_value("rest_lite", "mean") == timm.data.IMAGENET_DEFAULT_MEAN
    assert timm.list_models("rest_*") == ["rest_base", "rest_large", "rest_lite", "rest_small"]
    assert model.group_matcher()["stem"] == r"^stem"


def test_le_embedding_is_resized_for_other_inputs():
    model = timm.create_model("rest_lite", pos_encoding="le", num_classes=2)
    assert model.stem.pos.pos_embed.shape == (1, 64, 56, 56)
    assert model(torch.randn(1, 3, 96, 64)).shape == (1, 2)


def test_drop_path_rises_linearly():
    model = timm.create_model("rest_small", drop_path_rate=0.3)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in model.stages() for b in s]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    steps = [b - a for a, b in zip(rates, rates[1:], strict=False)]
    assert max(steps) == pytest.approx(min(steps))


# ---- the timm tooling surface: TorchScript, FX, checkpointing, features, pooling, listing, pruning --------
def test_configs_cover_every_pair_of_knob_values():
    for k1, k2 in itertools.combinations(KNOB_SPACE, 2):
        seen = {(knobs[k1], knobs[k2]) for _, knobs in CONFIGS}
        assert seen == set(itertools.product(KNOB_SPACE[k1], KNOB_SPACE[k2])), (k1, k2)
    assert {variant for variant, _ in CONFIGS} == set(rest.VARIANTS)


@pytest.mark.parametrize("reduction", rest.REDUCTIONS)
@pytest.mark.parametrize("head_conv", [True, False])
@pytest.mark.parametrize("head_norm", [True, False])
@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_attention_every_knob_combination_scripts_and_traces(reduction, head_conv, head_norm, sr_ratio):
    torch.manual_seed(0)
    attn = EfficientAttention(32, 2, sr_ratio, reduction, head_conv, head_norm).eval()
    x, size = torch.randn(2, 6 * 4, 32), (6, 4)
    expected = attn(x, size)
    torch.testing.assert_close(script(attn)(x, size), expected, rtol=1e-5, atol=1e-6)
    traced = torch.fx.symbolic_trace(attn)
    torch.testing.assert_close(traced(x, size), expected, rtol=1e-5, atol=1e-6)
    # the knob-off modules are parameter-free, so only the enabled ones have state-dict entries
    keys = {k.split(".")[0] for k in attn.state_dict()}
    assert ("sr" in keys) == (sr_ratio > 1 and reduction == "dwconv")
    assert ("sr_norm" in keys) == (sr_ratio > 1 and reduction != "none")
    assert ("transform_conv" in keys) == head_conv


@pytest.mark.parametrize("stem", rest.STEMS)
@pytest.mark.parametrize("pos_encoding", rest.POS_ENCODINGS)
def test_stem_every_knob_combination_scripts_and_traces(stem, pos_encoding):
    torch.manual_seed(0)
    module = STEM_CLASSES[stem](3, 16, make_pos_encoding(pos_encoding, 16, (8, 8))).eval()
    x = torch.randn(2, 3, 40, 24)  # not the LE grid: the resize path runs
    expected = module(x)
    torch.testing.assert_close(script(module)(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.fx.symbolic_trace(module)(x), expected, rtol=1e-5, atol=1e-6)


@parametrize_configs
def test_script_matches_eager(variant, knobs):
    model = small_model(variant, num_classes=5, **knobs).eval()
    scripted = script(model)
    for size in ((2, 3, 32, 32), (2, 3, 48, 80)):
        x = torch.randn(size)
        with torch.no_grad(), torch.jit.optimized_execution(False):
            torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)


@parametrize_configs
def test_fx_trace_forward_backward_and_script(variant, knobs):
    model = small_model(variant, num_classes=5, **knobs)
    x = torch.randn(2, 3, 48, 48)
    # backward: the same gradients through the traced graph as through the model (train mode)
    model.train()
    traced = torch.fx.symbolic_trace(model)
    model(x).square().mean().backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    traced(x).square().mean().backward()
    for name, p in traced.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, eager[name], rtol=1e-4, atol=1e-6, msg=name)
    # forward (eval), and the traced graph scripts
    model.eval()
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
        with torch.jit.optimized_execution(False):
            torch.testing.assert_close(script(traced)(x), expected, rtol=1e-5, atol=1e-5)


@parametrize_configs
def test_feature_extraction_hook_fx_getter_agree(variant, knobs):
    """The four stage maps, the same from forward_intermediates, features_only (hook, fx, getter) and
    timm's create_feature_extractor, forward and backward."""
    model = small_model(variant, num_classes=5, **knobs).eval()
    x = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        expected = model.forward_intermediates(x, intermediates_only=True)
    dims = [model.feature_info[i]["num_chs"] for i in range(4)]
    grids = [(-(-48 // r), -(-32 // r)) for r in (4, 8, 16, 32)]  # ceil: padded stride-2 convs
    assert [tuple(f.shape) for f in expected] == [(2, c, *g) for c, g in zip(dims, grids, strict=True)]
    extractors = {  # what timm.create_model(..., features_only=True, feature_cls=...) builds around the model
        "hook": FeatureHookNet(copy.deepcopy(model), out_indices=(0, 1, 2, 3), no_rewrite=True),
        "fx": FeatureGraphNet(copy.deepcopy(model), out_indices=(0, 1, 2, 3)),
        "getter": FeatureGetterNet(copy.deepcopy(model), out_indices=(0, 1, 2, 3)),
    }
    for name, extractor in extractors.items():
        with torch.no_grad():
            got = extractor.eval()(x)
        assert len(got) == 4, name
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5, msg=name)
    nodes = {f"stage{i}": f"stage{i}" for i in range(1, 5)}
    graph = create_feature_extractor(model.train(), return_nodes=nodes)
    out = graph(x)
    assert [o.shape[1] for o in out.values()] == dims
    sum(o.mean() for o in out.values()).backward()
    assert model.stage4[0].mlp.fc2.weight.grad is not None


@parametrize_configs
def test_grad_checkpointing_gives_the_same_gradients(variant, knobs):
    x, target = torch.randn(2, 3, 48, 48), torch.tensor([1, 3])
    grads = []
    for enable in (False, True):
        model = small_model(variant, num_classes=5, drop_path_rate=0.2, **knobs).train()
        model.set_grad_checkpointing(enable)
        assert all(s.grad_checkpointing == enable for s in model.stages())
        torch.manual_seed(1)  # the same drop-path draws (checkpointing replays the RNG state)
        torch.nn.functional.cross_entropy(model(x), target).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_grad_checkpointing_recomputes_blocks():
    """Checkpointing is really on: each block runs again in the backward pass."""
    model = small_model("rest_lite", num_classes=5).train()
    calls = []
    model.stage2[0].register_forward_pre_hook(lambda *_: calls.append(1))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert len(calls) == 1
    model.set_grad_checkpointing(True)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert len(calls) == 3  # the forward, then the recomputation during backward


@pytest.mark.parametrize("pool", rest.POOL_TYPES, ids=lambda p: p or "none")
def test_global_pool_types(pool):
    model = small_model("rest_lite", depths=(1, 1, 1, 1), num_classes=3, global_pool=pool).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x)
        if pool:
            pooled = {
                "avg": features.mean((2, 3)), "max": features.amax((2, 3)),
                "avgmax": 0.5 * (features.mean((2, 3)) + features.amax((2, 3))),
                "catavgmax": torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1),
            }[pool.removeprefix("fast") or "avg"]
            torch.testing.assert_close(model.forward_head(features, pre_logits=True), pooled)
            logits = model(x)
            torch.testing.assert_close(logits, model.head(pooled))
            assert logits.shape == (2, 3)
    # reset_classifier(n, pool) switches both; pool "" with no classes returns the map
    model.reset_classifier(0, "")
    assert model(x).shape == features.shape
    model.reset_classifier(7, pool or "avg")
    assert model(x).shape == (2, 7) and model.global_pool.pool_type == (pool or "avg")
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(7, "median")


def test_models_are_listed_under_module_rest():
    assert timm.list_models(module="rest") == ["rest_base", "rest_large", "rest_lite", "rest_small"]
    assert "rest" in timm.list_modules()
    assert timm.list_models(module="model") == []
    assert rest.ResT.__module__ == "rest.rest"


@pytest.mark.parametrize("indices", [[0], [1], [0, 2], [3], 2, [-2]], ids=str)
def test_prune_intermediate_layers(indices):
    model = small_model("rest_small", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=indices, intermediates_only=True)
    n_before = sum(p.numel() for p in model.parameters())
    take = model.prune_intermediate_layers(indices)
    last = max(take)
    kept = {name.split(".")[0] for name in model.state_dict()}
    assert {f"stage{i + 1}" for i in range(last + 1)} <= kept
    pruned = {f"stage{i + 1}" for i in range(last + 1, 4)} | {f"patch_embed_{i + 1}" for i in range(last + 1, 4)}
    assert not kept & pruned
    assert "head" not in kept and (last == 3) == ("norm" in kept)
    assert sum(p.numel() for p in model.parameters()) < n_before
    assert model.num_features == model.feature_info[last]["num_chs"]
    with torch.no_grad():
        got = model.forward_intermediates(x, indices=take, intermediates_only=True)
        assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in expected]
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e)
        assert model(x).shape == (2, model.num_features, 64 // 2 ** (last + 2), 64 // 2 ** (last + 2))
    script(model)  # a pruned model still scripts


@pytest.mark.parametrize("variant", ["rest_large"])  # the deepest; the others' widths are in CONFIGS
def test_every_size_at_full_depth_scripts_traces_and_gives_hook_features(variant):
    torch.manual_seed(0)
    model = timm.create_model(variant, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with torch.jit.optimized_execution(False):
            torch.testing.assert_close(script(model)(x), model(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x), rtol=1e-5, atol=1e-5)
    hooks = timm.create_model(variant, features_only=True, feature_cls="hook")
    assert [m for m in hooks.feature_info.module_name()] == ["stage1", "stage2", "stage3", "stage4"]
    assert [f.shape[1] for f in hooks(x)] == list(rest.VARIANTS[variant]["embed_dims"])


# ---- CUDA only (scripts/gpu_check.sh runs these with `-k cuda`; without a GPU they are reported as skipped) -----
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run scripts/gpu_check.sh)")


@needs_cuda
def test_cuda_eval_matches_official():
    """On the GPU, as on the CPU: in float64 the same function as the official code; in float32 (TF32 off) as
    close to the float64 truth as the official code itself is. Two float32 codes differ from each other by up to
    ~2e-4 here (random-init attention maps amplify rounding through IN's division by a tiny std, and cuDNN
    picks kernels per layout): what must hold is that ours is not the less accurate one."""
    torch.manual_seed(0)
    official = OfficialResT().cuda().eval()
    ours = timm.create_model("rest_lite").cuda().eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(4, 3, 224, 224, device="cuda")
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here
    try:
        with torch.inference_mode():
            ours32, official32 = ours(x), official(x)
            truth = official.double()(x.double())
            torch.testing.assert_close(ours.double()(x.double()), truth, rtol=1e-9, atol=1e-9)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
    ours_error = (ours32.double() - truth).abs().max().item()
    official_error = (official32.double() - truth).abs().max().item()
    assert ours_error <= 1.5 * official_error + 1e-6, (ours_error, official_error)
    torch.testing.assert_close(ours32, official32, rtol=1e-3, atol=1e-3)


@needs_cuda
def test_cuda_amp_training_step():
    """float16 autocast + GradScaler + AdamW: a finite loss near the fp32 one, finite gradients, weights move."""
    torch.manual_seed(0)
    model = timm.create_model("rest_lite", num_classes=10, drop_path_rate=0.1).cuda().train()
    x, target = torch.randn(8, 3, 64, 64, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    before = model.head.weight.detach().clone()
    torch.manual_seed(1)
    with torch.no_grad():
        fp32_loss = torch.nn.functional.cross_entropy(model(x), target)
    torch.manual_seed(1)
    with torch.autocast("cuda", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(fp32_loss.item(), rel=2e-2)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    scaler.step(optimizer)
    scaler.update()
    assert not torch.equal(model.head.weight, before)


@needs_cuda
def test_cuda_nccl_process_group_with_one_gpu(tmp_path):
    """DistributedDataParallel over NCCL with world size 1: the all-reduced gradients are the local ones."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    assert dist.is_nccl_available()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = timm.create_model("rest_lite", num_classes=10).cuda().train()
        reference = copy.deepcopy(model)
        ddp = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
        x, target = torch.randn(4, 3, 64, 64, device="cuda"), torch.randint(0, 10, (4,), device="cuda")
        torch.nn.functional.cross_entropy(ddp(x), target).backward()
        torch.nn.functional.cross_entropy(reference(x), target).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
        total = torch.ones(1, device="cuda")
        dist.all_reduce(total)
        assert total.item() == 1.0
    finally:
        dist.destroy_process_group()


# ---- what the dropout and stem arguments mean --------------------------------------------------------------------
def test_drop_rate_is_the_official_mlp_and_projection_dropout_and_head_drop_rate_the_classifiers():
    model = small_model("rest_lite", drop_rate=0.1, head_drop_rate=0.3, attn_drop_rate=0.2)
    blocks = [block for stage in (model.stage1, model.stage2, model.stage3, model.stage4) for block in stage]
    for block in blocks:
        assert (block.mlp.drop1.p, block.mlp.drop2.p, block.attn.proj_drop.p) == (0.1, 0.1, 0.1)
        assert block.attn.attn_drop == 0.2
    assert model.head_drop.p == 0.3
    plain = small_model("rest_lite")
    assert plain.head_drop.p == 0.0 and blocks[0].mlp.drop1.p != plain.stage1[0].mlp.drop1.p


def test_patch_stem_normalizes_with_layernorm_like_pvt():
    from timm.layers import LayerNorm2d

    model = small_model("rest_lite", stem="patch")
    assert isinstance(model.stem.norm, LayerNorm2d)
    assert not any(k.startswith("stem.norm.running") for k in model.state_dict())  # no BatchNorm statistics
    x = torch.randn(2, 3, 64, 64)
    features = model.stem.norm(model.stem.conv(x))
    assert torch.allclose(features.mean(dim=1), torch.zeros(2, 16, 16), atol=1e-5)  # per-position over channels


@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_timm_model_forward_fx_equals_eager_exactly(variant):
    """timm's test_model_forward_fx: a traced graph's output equals the eager model's, bit for bit."""
    torch.manual_seed(0)
    model = small_model(variant).eval()
    _, eval_nodes = get_graph_node_names(model)
    graph = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])  # timm's leaf modules and wraps
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        expected = model(x)
        (got,) = graph(x).values()
    assert torch.equal(got, expected)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_compiles_as_one_graph_in_eval_and_training(mode):
    """torch.compile(fullgraph=True) captures the whole model, eval under no_grad as in training (AOTAutograd
    traces the backward too); outputs and gradients equal eager within float tolerance."""
    torch.manual_seed(0)
    model = small_model("rest_lite", depths=(1, 1, 1, 1), num_classes=5, pos_encoding="le")
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    if mode == "eval":
        model.eval()
        with torch.no_grad():
            # AOTAutograd decomposes the norms: float32 sums in another order (1e-4 relative, as for the gradients)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
        return
    model.train()
    model(x).square().mean().backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    compiled(x).square().mean().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager[name], rtol=1e-4, atol=1e-6, msg=name)


def test_export_and_jit_trace_match_eager():
    torch.manual_seed(0)
    model = small_model("rest_lite", num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-4, atol=1e-4)


def test_norm_layer_without_affine_builds_and_runs():
    """A norm_layer without weight and bias (timm models accept any norm_layer) initializes and runs."""
    torch.manual_seed(0)
    norm = functools.partial(torch.nn.LayerNorm, elementwise_affine=False)
    model = timm.create_model("rest_lite", depths=[1, 1, 1, 1], num_classes=5, norm_layer=norm).eval()
    assert model.stage1[0].norm1.weight is None and model.stage1[0].norm1.bias is None
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.isfinite(model(x)).all()
    model.train()(x).sum().backward()


# ---- reduced precision computes the same model -------------------------------------------------------------------
ONE_KNOB_AT_A_TIME = [dict(pos_encoding=v) for v in rest.POS_ENCODINGS] + [dict(reduction=v) for v in rest.REDUCTIONS] \
    + [dict(head_conv=False), dict(head_norm=False), dict(head_conv=False, head_norm=False)] \
    + [dict(stem=v) for v in rest.STEMS if v != "rest"]


def autocast_agreement(model: torch.nn.Module, x: torch.Tensor, device: str, dtype: torch.dtype) -> tuple[float, bool]:
    """(lowest cosine of the autocast logits with the float32 ones over the batch, whether every sample whose
    float32 top-1 leads by more than 0.05 keeps it: a closer race at random init is a coin toss for any rounding)."""
    with torch.no_grad():
        reference = model(x)
        with torch.autocast(device, dtype=dtype):
            reduced = model(x).float()
    cosine = torch.nn.functional.cosine_similarity(reference, reduced).min().item()
    top2 = reference.topk(2, dim=1).values
    decided = top2[:, 0] - top2[:, 1] > 0.05
    return cosine, bool(((reference.argmax(1) == reduced.argmax(1)) | ~decided).all())


# IN without Conv-1 (in no shipped sweep) amplifies the rounding of the whole network at random init: rounding only
# the weights to bfloat16 and computing in float32 already gives a cosine of 0.995-0.9997 (0.9999 with Conv-1),
# and bfloat16 autocast 0.966-0.993 at 96 px (0.992-0.998 at 224 px) with the attention itself in float32.
LOWEST_COSINE = {"head_conv=False": 0.95}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("knobs", ONE_KNOB_AT_A_TIME, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_autocast_computes_the_float32_model(knobs, dtype):
    """IN divides by the std of a near-uniform map: with the attention logits in bfloat16 the outputs had a cosine
    of 0.05-0.30 with float32's (float16: 0.64-0.86). The map is computed in float32 (rest.rest.attention_map)."""
    torch.manual_seed(0)
    model = timm.create_model("rest_lite", num_classes=10, **knobs).eval()
    cosine, same_top1 = autocast_agreement(model, torch.randn(4, 3, 96, 96), "cpu", dtype)
    name = ",".join(f"{a}={b}" for a, b in knobs.items())
    assert cosine >= LOWEST_COSINE.get(name, 0.99) and same_top1, (cosine, same_top1)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_autocast_computes_the_float32_model(dtype):
    torch.manual_seed(0)
    model = timm.create_model("rest_lite", num_classes=10).cuda().eval()
    tf32, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, False
    try:
        cosine, same_top1 = autocast_agreement(model, torch.randn(8, 3, 224, 224, device="cuda"), "cuda", dtype)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert cosine >= 0.99 and same_top1, (cosine, same_top1)
