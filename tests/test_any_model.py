"""Any timm architecture as a cell: ResT beside other families, trained, tabulated and plotted alike; ResT's
knobs refused on a model that is not ResT; a model timm does not know, or a size a model cannot take,
refused by the plan."""
from __future__ import annotations

from pathlib import Path

import pytest

from ablations import run as run_cli
from ablations import store
from ablations.results_root import members
from analysis import plots as plots_cli
from analysis import tables as tables_cli

ROOT = Path(__file__).resolve().parents[1]
LIMITS = ["--set", "data.train_limit=48", "--set", "data.val_limit=32", "--set", "train.batch_size=16",
          "--set", "train.epochs=1"]
SMALL = ["--set", "data.img_size=48", *LIMITS]


def sweep(tmp_path: Path, levels: str, extra: str = "") -> Path:
    path = tmp_path / "families.yaml"
    path.write_text("name: families\npaper_table: t\nrecipe: quick\nmodel: rest_lite\nseeds: [0]\n"
                    "columns: [params_m, gflops, img_s, top1]\n" + extra +
                    "axes:\n  - name: model\n    key: model.name\n    baseline: ResT-Lite\n"
                    f"    levels: {levels}\n")
    return path


def test_rest_beside_two_other_timm_families_trains_tables_and_plots(tmp_path, capsys):
    path = sweep(tmp_path, "{ResT-Lite: rest_lite, ResNet-18: resnet18, DeiT-Ti: deit_tiny_patch16_224}")
    results = tmp_path / "results"
    flags = [str(path), "--results-root", str(results), *SMALL]
    assert run_cli.main([*flags, "--executor", "local", "--no-eta", "--no-progress"]) == 0, capsys.readouterr()
    assert "3 run(s) finished, 0 failed" in capsys.readouterr().out
    for run_dir, meta in members(results / "families"):
        result = store.read_result(run_dir)
        assert result["params"] > 0 and result["macs_paper"] > 0 and result["final"]["top1"] >= 0, meta["cell"]
    assert tables_cli.main(flags) == 0
    rows = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| model") and "---" not in line}
    assert set(rows) == {"ResT-Lite", "ResNet-18", "DeiT-Ti"}
    assert rows["ResNet-18"].split("|")[3].strip().startswith("11.1")  # params (M) of ResNet-18 with 10 classes
    assert plots_cli.main(["table", *flags]) == 0


@pytest.mark.parametrize("levels, extra, size, words", [
    ("{ResT-Lite: rest_lite, ResNet-18: resnet18}", "overrides: {model.reduction: avg}\n", 48,
     ["model.reduction", "ResT knob", "resnet18"]),
    ("{ResT-Lite: rest_lite, X: not_a_model_name}", "", 48, ["not_a_model_name", "timm"]),
    ("{ResT-Lite: rest_lite, LeViT: levit_128s}", "", 40, ["levit_128s", "cannot take 40 px", "sizes it takes"]),
    ("{ResT-Lite: rest_lite, Huge: rest_huge}", "", 48, ["rest_huge", "ResT size"]),
])
def test_a_model_that_cannot_run_the_cell_is_refused_by_the_plan(tmp_path, capsys, levels, extra, size, words):
    path = sweep(tmp_path, levels, extra)
    assert run_cli.main([str(path), "--results-root", str(tmp_path / "r"), *LIMITS, "--set", f"data.img_size={size}",
                         "--dry-run", "--no-eta", "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(w in err for w in words), err
    assert not (tmp_path / "r").exists()


def test_a_model_without_drop_path_builds_and_the_factory_says_whether_it_took_the_size():
    import torch

    from ablations.spec.config import RunConfig, with_overrides
    from ablations.training.models import create_model

    with torch.device("meta"):
        vgg = create_model(with_overrides(RunConfig(), {"model.name": "vgg11", "data.img_size": 48}), 10)
        deit = create_model(with_overrides(RunConfig(), {"model.name": "deit_tiny_patch16_224",
                                                         "data.img_size": 48}), 10)
    assert vgg.built_img_size is None and deit.built_img_size == 48
