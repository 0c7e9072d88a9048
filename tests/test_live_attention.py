"""No result from a model that cannot use its knobs: the input sizes at which ResT's attention is alive.

At a 1x1 key map softmax gives the one key weight 1, Conv-1 has nothing to mix and IN outputs 0, so the
attention knobs compare nothing. rest_knobs predicts the key maps from the input size alone; these tests hold
that prediction to forward hooks on the real modules, refuse such runs in the plan, and check every shipped
recipe x sweep.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import timm
import torch

import rest
from ablations import run as run_cli
from ablations.experiment import Selection, resolve
from ablations.spec.recipe import list_recipes
from ablations.spec.study import sweep_paths
from rest_knobs import VARIANTS, inert_attention, key_grids, smallest_live_size, token_grids

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sweep_paths(sorted((ROOT / "sweeps").glob("*.yaml")))  # the study file expands to its sweeps


@functools.lru_cache(maxsize=32)
def built(name: str, knobs: tuple) -> torch.nn.Module:
    # One block per stage: whether a stage's attention can act depends on its maps, not on its depth.
    torch.manual_seed(0)
    return timm.create_model(name, depths=(1, 1, 1, 1), num_classes=10, **dict(knobs)).eval()


def observe(model: torch.nn.Module, img_size: int) -> list[dict]:
    """Per stage: tokens and keys each attention saw, and how much its output varies across tokens."""
    seen = []
    hooks = []
    for stage in model.stages():
        attn = stage[0].attn
        record = {}
        hooks.append(attn.q.register_forward_hook(lambda m, a, o, r=record: r.__setitem__("tokens", a[0].shape[1])))
        hooks.append(attn.kv.register_forward_hook(lambda m, a, o, r=record: r.__setitem__("keys", a[0].shape[1])))
        hooks.append(attn.register_forward_hook(
            lambda m, a, o, r=record: r.__setitem__("spread", (o - o.mean(dim=1, keepdim=True)).abs().max().item())))
        seen.append(record)
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, img_size, img_size))
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("stem", rest.STEMS)
@pytest.mark.parametrize("reduction", ["dwconv", "max", "none"])
def test_predicted_maps_are_the_models_and_inert_means_dead(stem, reduction):
    """token_grids / key_grids are the sizes the attention modules see; where inert_attention says a stage has
    one key, its attention output is the same for every token (dead), and elsewhere it varies."""
    model = built("rest_lite", (("stem", stem), ("reduction", reduction)))
    for size in (32, 33, 40, 48, 64, 97):
        seen = observe(model, size)
        assert [s["tokens"] for s in seen] == [t * t for t in token_grids(size, stem)], size
        assert [s["keys"] for s in seen] == [k * k for k in key_grids(size, stem, reduction)], size
        dead = [s["spread"] < 1e-6 for s in seen]
        assert dead == [k == 1 for k in key_grids(size, stem, reduction)], (size, seen)
        assert bool(inert_attention(size, stem, reduction)) == any(dead)
    live = smallest_live_size(stem, reduction)
    assert not inert_attention(live, stem, reduction) and inert_attention(live - 1, stem, reduction)


def shipped_models() -> dict[tuple, str]:
    """(model name, knobs, input size) of every run of every shipped sweep under every shipped recipe -> where
    it came from."""
    found = {}
    for recipe in list_recipes():
        for sweep in SWEEPS:
            experiment = resolve(sweep, Selection(recipe=recipe, sets=("data.root=/nonexistent",)), "/nonexistent")
            for run in experiment.runs:
                model = dict(run.config.to_dict()["model"])
                name = model.pop("name")
                if name not in VARIANTS:  # another timm model (sweeps/main.yaml): no ResT attention to check
                    continue
                model.pop("drop_path_rate")
                found.setdefault((name, tuple(sorted(model.items())), run.config.data.img_size),
                                 f"{sweep.name} cell {run.cell.label} under recipe {recipe}")
    return found


SHIPPED = shipped_models()


@pytest.mark.parametrize("key", list(SHIPPED), ids=[SHIPPED[k] + f" ({k[2]} px)" for k in SHIPPED])
def test_every_shipped_recipe_and_sweep_trains_models_whose_attention_is_alive(key):
    name, knobs, img_size = key
    seen = observe(built(name, knobs), img_size)
    assert all(s["spread"] > 1e-6 for s in seen), f"{SHIPPED[key]}: {seen}"


def test_the_plan_refuses_inert_attention_in_one_line_unless_allowed(tmp_path, capsys):
    args = [str(ROOT / "sweeps" / "pe.yaml"), "--set", "data.img_size=32", "--results-root", str(tmp_path / "r"),
            "--dry-run", "--no-eta"]
    assert run_cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "cell 'none' (and 3 more cells): at 32 px, 1x1 key map in stages 1, 2, 3, 4" in err
    assert "alive in every stage of every cell from 33 px (--set data.img_size=33)" in err
    assert "--allow-inert-attention" in err
    assert not (tmp_path / "r").exists()
    assert run_cli.main([*args, "--allow-inert-attention"]) == 0
    out = capsys.readouterr().out
    assert "WARNING (--allow-inert-attention): cell 'PA': at 32 px, 1x1 key map in stages 1, 2, 3, 4" in out
    assert run_cli.main([str(ROOT / "sweeps" / "pe.yaml"), "--set", "data.img_size=33", "--results-root",
                         str(tmp_path / "r"), "--dry-run", "--no-eta"]) == 0
    assert "WARNING" not in capsys.readouterr().out
    # the size it suggests is one at which every cell is alive (the patch stem needs 36 px, the others 33)
    assert run_cli.main([str(ROOT / "sweeps" / "stem.yaml"), "--set", "data.img_size=33", "--results-root",
                         str(tmp_path / "r"), "--dry-run", "--no-eta"]) == 2
    assert "cell 'patch stem': at 33 px" in capsys.readouterr().err
    assert run_cli.main([str(ROOT / "sweeps" / "stem.yaml"), "--set", "data.img_size=32", "--results-root",
                         str(tmp_path / "r"), "--dry-run", "--no-eta"]) == 2
    assert "from 36 px (--set data.img_size=36)" in capsys.readouterr().err
    assert run_cli.main([str(ROOT / "sweeps" / "stem.yaml"), "--set", "data.img_size=36", "--results-root",
                         str(tmp_path / "r"), "--dry-run", "--no-eta"]) == 0
