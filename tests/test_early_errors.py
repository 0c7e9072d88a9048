"""What a launch would refuse (or fail on) later is refused by the plan: exit 2, one line naming the key and the
fix, nothing written; the dry run refuses it too."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ablations import run as run_cli
from ablations import train as train_cli

ROOT = Path(__file__).resolve().parents[1]
PE = str(ROOT / "sweeps" / "pe.yaml")


@pytest.mark.parametrize("flags, words", [
    (["--workers", "-1"], ["--workers", "-1"]),
    (["--set", "optim.lr=1e308", "--set", "optim.lr_base_batch=1", "--set", "train.batch_size=512"],
     ["optim.lr", "not a finite learning rate"]),
    (["--recipe", "paper-ablation", "--set", "train.epochs=2", "--set", "data.dataset=digits"],
     ["sched.warmup_epochs", "longer than the training", "--set sched.warmup_epochs=1"]),
    (["--set", "train.batch_size=8", "--set", "train.device_batch=256"],
     ["train.batch_size", "--set train.device_batch=8"]),
    (["--set", "train.devices=2", "--set", "train.batch_size=32", "--executor", "local"],
     ["train.devices", "SLURM executor"]),
    (["--set", "data.img_size=20"], ["data.img_size", "must be >= 32"]),
])
def test_the_dry_run_refuses_what_a_launch_would(tmp_path, capsys, flags, words):
    results = tmp_path / "results"
    assert run_cli.main([PE, "--results-root", str(results), "--dry-run", "--no-eta", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(w in err for w in words), err
    assert not results.exists()
    if "data.img_size" in flags[-1]:
        assert err.count("data.img_size") == 1, "the key is named once"


def test_the_wandb_logger_without_wandb_is_refused_by_the_plan(tmp_path, capsys, monkeypatch):
    from ablations import checks

    real = importlib.util.find_spec
    monkeypatch.setattr(checks.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    assert run_cli.main([PE, "--results-root", str(tmp_path / "r"), "--dry-run", "--no-eta", "--logger", "wandb"]) == 2
    err = capsys.readouterr().err
    assert "wandb package is not installed" in err and "--logger tensorboard" in err
    assert not (tmp_path / "r").exists()


def test_train_refuses_negative_workers(tmp_path, capsys):
    assert train_cli.main([str(tmp_path), "--workers", "-1"]) == 2
    assert "--workers" in capsys.readouterr().err


def test_a_class_folder_without_an_image_file_is_found_by_the_dataset_check(tmp_path):
    from ablations.spec.config import RunConfig, with_overrides
    from ablations.spec.dataset_checks import DatasetError, check_dataset

    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / split / name / "0.png")
    (tmp_path / "train" / "bird").mkdir()
    (tmp_path / "val" / "bird").mkdir()
    (tmp_path / "train" / "bird" / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "val" / "bird" / "0.png")
    config = with_overrides(RunConfig(), {"data.dataset": "imagefolder", "data.root": str(tmp_path)})
    with pytest.raises(DatasetError, match=r"train/bird/ holds no image file"):
        check_dataset(config)


def test_collect_into_a_missing_folder_and_a_data_root_that_is_a_file_say_so(tmp_path, capsys):
    from analysis import collect as collect_cli
    from analysis.synthetic import write_run

    write_run(tmp_path / "results" / "pe", "PA", 0, sweep_file=ROOT / "sweeps" / "pe.yaml")
    target = tmp_path / "no" / "such" / "runs.csv"
    assert collect_cli.main([str(tmp_path / "results"), "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the folder {target.parent} does not exist" in err
    a_file = tmp_path / "imagenet.tar"
    a_file.write_text("not a folder")
    assert run_cli.main([PE, "--results-root", str(tmp_path / "r"), "--dry-run", "--no-eta", "--set",
                         "data.dataset=imagefolder", "--data-root", str(a_file)]) == 2
    assert "a file, not a folder" in capsys.readouterr().err


def test_the_slurm_executor_without_a_slurm_client_is_refused_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from ablations.executors.slurm import queue

    monkeypatch.setattr(queue.shutil, "which", lambda name: None)  # a laptop: no sbatch on PATH
    results = tmp_path / "results"
    assert run_cli.main([PE, "--results-root", str(results), "--executor", "slurm", "--no-eta"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no SLURM client" in err and "Traceback" not in err
    assert not results.exists()
