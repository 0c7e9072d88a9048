"""Every ablation knob reaches the model that is trained.

For each value of each knob, a tiny run goes through the training code (`ablations.train.train_run`: 16
images, 1 epoch, 33 px: the smallest input at which attention is alive in every stage) and its saved weights
(checkpoint.pt) are checked against
`timm.create_model(name, **knobs)` for that value (with the run's num_classes and img_size, which the
trainer passes too; LE's embedding is sized by img_size):

  * the names and shapes of the saved tensors are exactly those of that model;
  * they differ from those of every other value of the knob where the architecture differs (PA's gate
    conv, GL's conv, LE's embedding, the reduction conv and norm, Conv-1, the stems);
  * the saved weights, evaluated by that model, give back the validation loss the run recorded; where
    two values share every parameter (IN on/off, avg/max pooling), the same weights evaluated by the other
    value's model give a different loss and different logits.

A harness that dropped a knob on the way to the model would train the default architecture: the first two
checks catch that wherever the knob owns parameters, the third where it does not.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

import rest  # noqa: F401  (registers the ResT models with timm)
from ablations.spec.config import RunConfig, with_overrides
from ablations.train import train_run
from ablations.training.loaders import build_loaders

TINY = {"data.dataset": "digits", "data.img_size": 33, "data.train_limit": 16, "data.val_limit": 16,
        "train.epochs": 1, "train.batch_size": 8, "aug.scale_min": 1.0, "aug.hflip": 0.0}
DEFAULTS = {"pos_encoding": "pa", "reduction": "dwconv", "head_conv": True, "head_norm": True, "stem": "rest"}
VALUES = {
    "pos_encoding": ["pa", "gl", "le", "none"],
    "reduction": ["dwconv", "avg", "max", "none"],
    "head_conv": [True, False],
    "head_norm": [True, False],
    "stem": ["rest", "resnet", "patch"],
}
# values of one knob whose models have the same tensors: only their outputs can tell them apart
SHARED = {("reduction", "avg", "max"), ("head_norm", True, False)}
# a tensor-name fragment only the models with that value have
OWNS = {("pos_encoding", "pa"): "pos.pa_conv", ("pos_encoding", "gl"): "pos.gl_conv",
        ("pos_encoding", "le"): "pos.pos_embed", ("reduction", "dwconv"): "attn.sr.weight",
        ("head_conv", True): "attn.transform_conv"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def knobs_of(knob: str, value) -> dict:
    return {**DEFAULTS, knob: value}


def config_of(knobs: dict) -> RunConfig:
    return with_overrides(RunConfig(), {**TINY, **{f"model.{k}": v for k, v in knobs.items()}})


def model_of(config: RunConfig, knobs: dict, num_classes: int) -> torch.nn.Module:
    return timm.create_model(config.model.name, **knobs, num_classes=num_classes, img_size=config.data.img_size)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """(knob, value) -> (config, saved weights, the run's last metrics row); one run per distinct config."""
    root = tmp_path_factory.mktemp("knobs")
    done: dict[str, tuple] = {}
    out = {}
    for knob, values in VALUES.items():
        for value in values:
            config = config_of(knobs_of(knob, value))
            key = config.short_hash()
            if key not in done:
                run_dir = root / key
                train_run(config, run_dir, progress=False)
                weights = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
                row = json.loads(Path(run_dir / "metrics.jsonl").read_text().splitlines()[-1])
                done[key] = (config, weights, row)
            out[knob, value] = done[key]
    return out


@torch.inference_mode()
def evaluate(model: torch.nn.Module, config: RunConfig) -> tuple[float, torch.Tensor]:
    """(mean validation cross-entropy, logits), as the trainer computes its val_loss."""
    _, val, _ = build_loaders(config)
    model.eval()
    loss, count, logits = 0.0, 0, []
    for x, y in val:
        out = model(x)
        loss += torch.nn.functional.cross_entropy(out.float(), y, reduction="sum").item()
        count += len(y)
        logits.append(out)
    return loss / count, torch.cat(logits)


def shapes(state: dict) -> dict[str, tuple]:
    return {name: tuple(t.shape) for name, t in state.items()}


CASES = [(knob, value) for knob, values in VALUES.items() for value in values]


@pytest.mark.parametrize(("knob", "value"), CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_saved_weights_are_the_knobs_model(runs, knob, value):
    config, weights, row = runs[knob, value]
    assert config.get(f"model.{knob}") == value
    model = model_of(config, knobs_of(knob, value), num_classes=10)
    assert shapes(weights) == shapes(model.state_dict())
    for (owner, owned), fragment in OWNS.items():
        if owner == knob:
            has = any(fragment in name for name in weights)
            assert has == (owned == value), f"{knob}={value!r}: {fragment} {'missing' if owned == value else 'present'}"
    model.load_state_dict(weights, strict=True)
    loss, _ = evaluate(model, config)
    assert loss == pytest.approx(row["val_loss"], rel=1e-5, abs=1e-6)


PAIRS = [(knob, a, b) for knob, values in VALUES.items() for i, a in enumerate(values) for b in values[i + 1:]]


@pytest.mark.parametrize(("knob", "a", "b"), PAIRS, ids=[f"{k}:{a}-{b}" for k, a, b in PAIRS])
def test_values_differ_in_weights_or_outputs(runs, knob, a, b):
    config_a, weights_a, row_a = runs[knob, a]
    if (knob, a, b) not in SHARED:
        assert shapes(weights_a) != shapes(runs[knob, b][1]), f"{knob}: {a!r} and {b!r} have the same tensors"
        return
    # same tensors: the weights trained with `a`, run by the model of `b`, must compute something else
    assert shapes(weights_a) == shapes(runs[knob, b][1])
    other = model_of(config_a, knobs_of(knob, b), num_classes=10)
    other.load_state_dict(weights_a, strict=True)
    own = model_of(config_a, knobs_of(knob, a), num_classes=10)
    own.load_state_dict(weights_a, strict=True)
    loss_own, logits_own = evaluate(own, config_a)
    loss_other, logits_other = evaluate(other, config_a)
    assert loss_own == pytest.approx(row_a["val_loss"], rel=1e-5, abs=1e-6)
    assert loss_other != pytest.approx(row_a["val_loss"], rel=1e-4)
    assert (logits_own - logits_other).abs().max() > 1e-3
