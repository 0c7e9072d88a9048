"""Sweep files: the shipped sweeps expand as the paper's tables; malformed files exit 2 naming file and key."""
from __future__ import annotations

from pathlib import Path

import pytest

from ablations import run as run_cli
from ablations.spec.config import RunConfig, with_overrides
from ablations.spec.recipe import load_recipe
from ablations.spec.study import sweep_paths
from ablations.spec.sweep import SweepError, expand, load_sweep, parse_cli_sets

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sweep_paths(sorted((ROOT / "sweeps").glob("*.yaml")))  # the study file expands to its sweeps
BAD = sorted((Path(__file__).parent / "data" / "bad_sweeps").glob("*.yaml"))


def expected_text(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} must start with '# expect: <key>'"
    return first.removeprefix("# expect: ")


def test_the_corpus_is_large_enough():
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_malformed_sweep_exits_2_naming_file_and_key(path, tmp_path, capsys):
    results = tmp_path / "results"
    code = run_cli.main([str(path), "--results-root", str(results), "--executor", "local", "--no-eta"])
    err = capsys.readouterr().err
    assert code == 2
    flat = " ".join(err.split())
    assert str(path) in flat
    assert expected_text(path) in flat
    assert "Traceback" not in err
    assert not results.exists(), "nothing may be written for a bad sweep"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweeps_load_and_expand(path):
    sweep = load_sweep(path)
    runs = expand(sweep, load_recipe(sweep.recipe))
    assert len(runs) == len(sweep.cells) * len(sweep.seeds)
    assert len({r.run_id for r in runs}) == len(runs), "every run has its own folder"
    assert sum(c.is_baseline for c in sweep.cells) == 1
    for label in sweep.published:
        assert label in {c.label for c in sweep.cells}


def test_pe_sweep_matches_the_paper_table():
    sweep = load_sweep(ROOT / "sweeps" / "pe.yaml")
    assert [c.label for c in sweep.cells] == ["none", "LE", "GL", "PA"]
    assert sweep.published["PA"] == {"top1": 72.88, "top5": 90.62}
    runs = expand(sweep, load_recipe("quick"))
    assert [r.config.model.pos_encoding for r in runs] == ["none", "le", "gl", "pa"]


def test_two_knob_level_and_grid(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "name: grid\npaper_table: t\nrecipe: quick\nmodel: rest_lite\nseeds: [0, 1, 2]\n"
        "axes:\n"
        "  - name: emsa\n    baseline: origin\n    levels:\n      origin: {}\n"
        "      w/o Conv-1 & IN: {model.head_conv: false, model.head_norm: false}\n"
        "  - name: red\n    key: model.reduction\n    baseline: dw\n    levels: {dw: dwconv, avg: avg}\n"
    )
    sweep = load_sweep(path)
    runs = expand(sweep, load_recipe("quick"))
    assert len(runs) == 2 * 2 * 3
    labels = [c.label for c in sweep.cells]
    assert labels == ["origin / dw", "origin / avg", "w/o Conv-1 & IN / dw", "w/o Conv-1 & IN / avg"]
    both_off = [r for r in runs if r.cell.label == "w/o Conv-1 & IN / avg"]
    assert all(not r.config.model.head_conv and not r.config.model.head_norm for r in both_off)
    assert all(r.config.model.reduction == "avg" for r in both_off)
    assert sorted(r.seed for r in both_off) == [0, 1, 2]
    assert [c.is_baseline for c in sweep.cells] == [True, False, False, False]


def test_run_ids_are_stable_and_change_only_with_the_config():
    sweep = load_sweep(ROOT / "sweeps" / "pe.yaml")
    recipe = load_recipe("quick")
    first = [r.run_id for r in expand(sweep, recipe)]
    assert first == [r.run_id for r in expand(sweep, recipe)]
    changed = expand(sweep, recipe, {"train.epochs": 1})
    assert all(a != b.run_id for a, b in zip(first, changed, strict=True))
    assert first[0].startswith("rest-lite-s0-")  # the model and seed: a run is its config, not a sweep's cell


def test_config_hash_is_canonical():
    a = with_overrides(RunConfig(), {"optim.lr": 0.1, "model.stem": "patch"})
    b = with_overrides(RunConfig(), {"model.stem": "patch", "optim.lr": 0.1})
    assert a.short_hash() == b.short_hash()
    assert RunConfig.from_dict(a.to_dict()) == a
    assert with_overrides(a, {"optim.lr": 0.2}).short_hash() != a.short_hash()


def test_cli_sets_are_validated():
    assert parse_cli_sets(["optim.lr=0.5", "train.epochs=2", "model.head_norm=false"]) == {
        "optim.lr": 0.5, "train.epochs": 2, "model.head_norm": False}
    with pytest.raises(SweepError, match="model.pos_encoding"):
        parse_cli_sets(["model.pos_encoding=sine"])
    with pytest.raises(SweepError, match="optim.lrr"):
        parse_cli_sets(["optim.lrr=1"])
    with pytest.raises(SweepError, match="key=value"):
        parse_cli_sets(["optim.lr"])


def test_bad_set_on_the_command_line_exits_2(tmp_path, capsys):
    code = run_cli.main([str(ROOT / "sweeps" / "pe.yaml"), "--set", "model.reduction=conv",
                         "--results-root", str(tmp_path / "r"), "--no-eta"])
    assert code == 2
    assert "model.reduction" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_bad_seeds_flag_exits_2(tmp_path, capsys):
    code = run_cli.main([str(ROOT / "sweeps" / "pe.yaml"), "--seeds", "0,x", "--results-root", str(tmp_path)])
    assert code == 2
    assert "--seeds" in capsys.readouterr().err


def test_cli_sets_read_numbers_as_sweep_files_do():
    assert parse_cli_sets(["optim.lr=1e-4", "optim.weight_decay=5e-2"]) == {
        "optim.lr": 1e-4, "optim.weight_decay": 0.05}
    with pytest.raises(SweepError, match="optim.lr"):
        parse_cli_sets(["optim.lr=.nan"])


def test_loading_a_hostile_file_is_bounded_in_time(tmp_path):
    import time

    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 12)]
    bomb.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(SweepError, match="expands to more than"):
        load_sweep(bomb)
    assert time.monotonic() - started < 5


# ---- what is in a run's identity ---------------------------------------------------------------------------------
def _ids(recipe: str, cli: dict | None = None) -> list[str]:
    return [r.run_id for r in expand(load_sweep(ROOT / "sweeps" / "pe.yaml"), load_recipe(recipe), cli or {}, [0])]


def test_dataset_root_from_the_environment_is_in_the_run_id(monkeypatch, tmp_path):
    monkeypatch.setenv("REST_DATA_ROOT", str(tmp_path / "two-classes"))
    two = _ids("paper-ablation")
    monkeypatch.setenv("REST_DATA_ROOT", str(tmp_path / "three-classes"))
    three = _ids("paper-ablation")
    assert not set(two) & set(three)
    # the same folder given on the command line is the same run
    monkeypatch.delenv("REST_DATA_ROOT")
    assert _ids("paper-ablation", {"data.root": str(tmp_path / "three-classes")}) == three
    runs = expand(load_sweep(ROOT / "sweeps" / "pe.yaml"), load_recipe("paper-ablation"),
                  {"data.root": str(tmp_path / "three-classes")}, [0])
    assert runs[0].config.data.root == str(tmp_path / "three-classes")


def test_a_data_root_does_not_change_a_digits_run(monkeypatch, tmp_path):
    monkeypatch.delenv("REST_DATA_ROOT", raising=False)
    plain = _ids("quick")
    assert _ids("quick", {"data.root": str(tmp_path)}) == plain
    monkeypatch.setenv("REST_DATA_ROOT", str(tmp_path))
    assert _ids("quick") == plain


def test_devices_and_device_batch_are_in_the_run_id_logging_is_not():
    plain = _ids("quick")
    assert not set(plain) & set(_ids("quick", {"train.devices": 2}))  # 2-process DDP: another computation
    assert not set(plain) & set(_ids("quick", {"train.device_batch": 16}))  # accumulation: another computation
    assert _ids("quick", {"train.logger": "none", "train.keep_checkpoints": "best"}) == plain
