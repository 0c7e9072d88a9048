"""The ResT family: sizes, knobs, weight compatibility with the official release, input sizes, timm surface."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch

import rest
from rest.reference import OfficialResT

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
KNOB_VALUES = [
    *(dict(pos_encoding=v) for v in rest.POS_ENCODINGS),
    *(dict(reduction=v) for v in rest.REDUCTIONS),
    dict(head_conv=False),
    dict(head_norm=False),
    dict(head_conv=False, head_norm=False),
    *(dict(stem=v) for v in rest.STEMS),
    MSA,
]


def knob_id(knobs: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in knobs.items())


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
    model = timm.create_model(variant)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[variant]


def test_plain_msa_parameter_count():
    model = timm.create_model("rest_lite", **MSA)
    assert sum(p.numel() for p in model.parameters()) == 10_484_040


@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_state_dict_matches_reference_layout(variant):
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
    # the same under autograd (the training path does not use the chunked inference MLP)
    with torch.no_grad():
        torch.testing.assert_close(ours.train()(x), official.train()(x), rtol=1e-4, atol=1e-4)


def test_pretrained_file_loads_through_timm(tmp_path):
    torch.manual_seed(0)
    official = OfficialResT()
    path = tmp_path / "rest_lite.pth"
    torch.save({"model": official.state_dict()}, path)  # the official training script wraps it like this
    model = timm.create_model("rest_lite", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    torch.testing.assert_close(model.state_dict()["head.weight"], official.state_dict()["head.weight"])


def test_pretrained_without_a_file_is_an_error_not_random_weights():
    with pytest.raises(ValueError, match="pretrained_cfg_overlay"):
        timm.create_model("rest_lite", pretrained=True)


@pytest.mark.parametrize("knobs", KNOB_VALUES, ids=knob_id)
@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_every_size_and_knob_trains(variant, knobs):
    torch.manual_seed(0)
    model = timm.create_model(variant, num_classes=5, drop_path_rate=0.1, **knobs)
    model.train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
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


@pytest.mark.parametrize("size", [32, 48, 97, 225, 240, (320, 192)], ids=str)
@pytest.mark.parametrize("knobs", [{}, dict(pos_encoding="le"), MSA, dict(reduction="max")], ids=knob_id)
def test_any_input_size_train_and_eval(size, knobs):
    h, w = (size, size) if isinstance(size, int) else size
    model = timm.create_model("rest_lite", num_classes=3, **knobs)
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


def test_chunked_inference_mlp_matches_autograd_path():
    torch.manual_seed(0)
    model = timm.create_model("rest_lite", num_classes=10).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        fast = model(x)
    slow = model(x)  # grad enabled: plain path
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", list(rest.VARIANTS))
def test_macs_match_official_code(variant):
    counts = rest.complexity(timm.create_model(variant), img_size=224)
    paper, total = OFFICIAL_MACS[variant]
    assert counts["params"] == OFFICIAL_PARAMS[variant]
    assert counts["macs_paper"] / 1e9 == pytest.approx(paper, rel=0.005)
    assert counts["macs_total"] / 1e9 == pytest.approx(total, rel=0.005)


def test_macs_of_plain_msa_include_full_attention():
    counts = rest.complexity(timm.create_model("rest_lite", **MSA), img_size=224)
    assert counts["macs_paper"] / 1e9 == pytest.approx(1.595, rel=0.005)  # paper: 1.6 G
    # QK^T and AV over all 3136 stage-1 tokens dominate: far more than EMSA's 1.533 G
    assert counts["macs_total"] > 2.5 * counts["macs_paper"]


def test_features_only_returns_four_maps():
    model = timm.create_model("rest_lite", features_only=True)
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
