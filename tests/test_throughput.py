"""benchmarks.throughput on a CPU at small settings: the three ways of timing the step run and agree on what
they count, timm's train.py gets the run's settings and its log is read right, and the synthetic JPEG folder
looks like ImageNet's to a decoder."""
from __future__ import annotations

import json

from PIL import Image

from ablations.spec.config import RunConfig, with_overrides
from benchmarks import throughput
from benchmarks.synthetic_jpegs import write_folder


def test_the_benchmark_times_the_model_bound_step_and_the_data_path_on_a_cpu(tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert throughput.main(["--synthetic", "3", "--images", "48", "--set", "train.batch_size=8", "--set",
                            "train.device_batch=4", "--set", "data.img_size=48", "--warmup", "1", "--steps", "2",
                            "--workers", "1", "--set", "train.compile=eager", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    figures = json.loads(out.read_text())
    assert figures["compile"] == "eager" and "warm-up updates, compiling included" in text  # as a run trains
    assert figures["split"] == [1, 4, 2] and figures["device"] == "cpu" and figures["timm_img_s"] is None
    assert figures["model_bound_img_s"] > 0 and figures["data_path_img_s"] > 0 and figures["loader_img_s"] > 0
    assert figures["data_path_fraction"] == figures["data_path_img_s"] / figures["model_bound_img_s"]
    assert "(a) model-bound" in text and "(b) harness data path" in text and "% of (a)" in text
    hours = figures["hours_per_seed"]
    assert set(hours) == {*throughput.SWEEPS, "study paper-ablations"}
    assert "study paper-ablations     11 runs" in text, "the study's shared baseline counts once"
    assert hours["study paper-ablations"] < sum(hours[s] for s in ("pe", "reduction", "emsa", "attention", "stem"))


def test_timm_train_gets_the_runs_settings_and_its_log_is_read():
    config = with_overrides(RunConfig(), {"train.batch_size": 512, "train.device_batch": 128, "aug.mixup": 0.8,
                                          "aug.rand_augment": "rand-m9-mstd0.5-inc1", "model.head_norm": False})
    args = throughput.timm_train_args(config, "/data", 1000, 15, 220, 8192, "cuda", "/out", channels_last=True)
    flag = {name: args[i + 1] for i, name in enumerate(args) if name.startswith("--")}
    assert args[args.index("-b") + 1] == "128"
    assert flag["--grad-accum-steps"] == "4" and flag["--mixup"] == "0.8" and flag["--aa"] == "rand-m9-mstd0.5-inc1"
    assert flag["--train-interpolation"] == "bicubic" and flag["--color-jitter"] == "0" and "--amp" in args
    assert "head_norm=False" in args and "--channels-last" in args and flag["--amp-dtype"] == "float16"
    bf16 = throughput.timm_train_args(with_overrides(config, {"train.amp": "bfloat16"}), "/data", 1000, 15, 220, 8192,
                                      "cuda", "/out")
    assert bf16[bf16.index("--amp-dtype") + 1] == "bfloat16"  # timm's train.py then runs without a loss scaler
    assert "--torchcompile" not in args
    compiled = throughput.timm_train_args(with_overrides(config, {"train.compile": "inductor"}), "/data", 1000, 15,
                                          220, 8192, "cuda", "/out")
    assert compiled[compiled.index("--torchcompile") + 1] == "inductor"
    assert int(flag["--epochs"]) * (8192 // 512) >= 220, "enough epochs over the folder for the updates asked"
    log = "\n".join(f"Train: 0 [ {i:>3d}/220 ( 1%)]  Loss: 6.9 (6.9)  Time: {t:.3f}s, 999.00/s  (1.0s, 1.0/s)"
                    for i, t in enumerate([5.0, 5.0, 0.5, 0.25, 0.25]))
    assert throughput.timm_images_per_s(log, warmup=2, steps=3, global_batch=512) == 3 * 512 / 1.0
    assert throughput.timm_images_per_s(log, warmup=2, steps=2, global_batch=512) == 2 * 512 / 0.75


def test_the_synthetic_jpegs_have_imagenets_shapes_and_quality(tmp_path):
    assert write_folder(tmp_path, classes=2, per_class=3, val_per_class=1) == 8
    files = sorted((tmp_path / "train").rglob("*.JPEG"))
    assert len(files) == 6 and len(list((tmp_path / "val").rglob("*.JPEG"))) == 2
    for path in files:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and 333 <= min(image.size) <= 480
        assert 20_000 < path.stat().st_size < 300_000  # ImageNet's training JPEGs: about 110 KB on average


def test_the_loader_profile_times_each_stage_and_says_which_samples_a_reduced_decode_could_serve(tmp_path, capsys):
    from benchmarks import loader

    out = tmp_path / "profile.json"
    assert loader.main(["--synthetic", "2", "--samples", "12", "--set", "data.img_size=64", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    stages = figures["stages_us"]
    assert list(stages) == ["seeding", "read + decode (PIL)", "RandomResizedCropAndInterpolation",
                            "RandomHorizontalFlip", "MaybePILToTensor"]  # paper-ablation's transform, op by op
    assert all(us > 0 for us in stages.values()) and figures["total_us"] == sum(stages.values())
    assert figures["img_s_per_core"] == 1e6 / figures["total_us"] and figures["torchvision_decode_us"] > 0
    # validation resizes the shorter side (333-480 px here) to round(64 / 0.875) = 73: a 1/4 decode always serves
    assert figures["val_images_reducible"] == {"2": 1.0, "4": 1.0, "8": 0.0}
    crops = figures["train_crops_reducible"]
    assert 0 < crops["2"] <= 1 and crops["8"] <= crops["4"] <= crops["2"]  # smaller crops need more pixels
    text = capsys.readouterr().out
    assert "img/s per core" in text and "training crops a reduced-size decode could serve" in text


def test_a_reduced_decode_keeps_the_crops_pixels():
    from benchmarks.loader import reduction

    assert reduction(500, 375, 224) == 1  # ImageNet's common shape at 224 px: no crop of it has 448 px a side
    assert reduction(448, 448, 224) == 2 and reduction(447, 900, 224) == 1
    assert reduction(1792, 1800, 224) == 8 and reduction(4000, 4000, 224) == 8  # a JPEG decoder stops at 1/8
