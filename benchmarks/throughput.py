"""python -m benchmarks.throughput --recipe paper-ablation [--data-root DIR | --synthetic CLASSES] — the harness's
own training step at a recipe's settings, timed three ways:

    (a) model-bound: the step on one update's batches already on the device (the ceiling of the data path);
    (b) the harness's whole data path: its ImageFolder loader (the recipe's augmentation, its workers) and step;
    (c) timm's train.py on the same data, model, batch, precision and augmentation (--timm-train PATH: timm's
        repository holds it; it runs with `import rest` first), from its per-update log lines.

Also: the loader alone (images/s, per worker), (b) as a fraction of (a), (b) over (c), the GPU memory of the
step, and the device-hours each shipped sweep (and the paper-ablations study, shared runs once) would take
under the recipe at (b)'s speed, carried over to other models by their MACs as the planner does.

--synthetic N writes an ImageNet-like JPEG folder of N classes (benchmarks.synthetic_jpegs) into a temporary
folder: the loader then cycles over it (its files stay in the page cache, as ImageNet's often do on a node).
On a CPU the command runs too, at small settings (--set train.batch_size=8 --set data.img_size=64 ...).
Figures and commands: BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ablations.experiment import Selection, resolve
from ablations.plan import PlanCache, Speed, complexity_of, distinct_runs, estimate, make_plan
from ablations.spec.config import RunConfig
from ablations.spec.recipe import load_recipe
from ablations.spec.recipe import resolve as recipe_config
from ablations.spec.study import sweep_paths
from ablations.spec.sweep import parse_cli_sets
from ablations.training.trainer import Trainer, in_groups
from benchmarks.synthetic_jpegs import add_recipe_and_folder_arguments, write_folder

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN_IMAGES = 1_281_167
SWEEPS = ("pe", "reduction", "emsa", "attention", "stem", "variants")
STUDY = ROOT / "sweeps" / "paper-ablations.yaml"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(loader, sampler):
    """The loader's micro-batches, epoch after epoch (a small folder is cycled over)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def time_loader(trainer: Trainer, warmup: int, steps: int) -> float:
    """Images/s of the training loader alone (decoding, augmentation, collation, workers), over `steps` updates."""
    batches = forever(trainer.train_loader, trainer.train_loader.sampler)
    for _ in range(warmup * trainer.accum):
        next(batches)
    start, images = time.perf_counter(), 0
    for _ in range(steps * trainer.accum):
        images += len(next(batches)[0])
    return images / (time.perf_counter() - start)


def time_model_bound(trainer: Trainer, model: torch.nn.Module, warmup: int, steps: int) -> float:
    """(a) Images/s of the harness's step on one update's micro-batches already on the device."""
    update = next(in_groups(forever(trainer.train_loader, trainer.train_loader.sampler), trainer.accum))
    on_device = [(x.to(trainer.device), y.to(trainer.device)) for x, y in update]
    images = sum(len(x) for x, _ in on_device)
    tic = time.perf_counter()
    for step in range(warmup):
        trainer.train_step(model, 0, step, on_device)
    sync(trainer.device)
    if trainer.config.train.compile:
        print(f"  (a)'s {warmup} warm-up updates, compiling included: {time.perf_counter() - tic:.1f} s", flush=True)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        trainer.train_step(model, 0, step, on_device)
    sync(trainer.device)
    return steps * images / (time.perf_counter() - start)


def time_data_path(trainer: Trainer, model: torch.nn.Module, warmup: int, steps: int) -> float:
    """(b) Images/s of the harness's training as it runs: loader, host-to-device copies and step."""
    updates = in_groups(forever(trainer.train_loader, trainer.train_loader.sampler), trainer.accum)
    images, start = 0, 0.0
    for step, micro_batches in enumerate(updates):
        if step == warmup:
            sync(trainer.device)
            start = time.perf_counter()
        if step == warmup + steps:
            break
        trainer.train_step(model, 0, step, micro_batches)
        if step >= warmup:
            images += sum(len(x) for x, _ in micro_batches)
    sync(trainer.device)
    return images / (time.perf_counter() - start)


# ---- timm's train.py --------------------------------------------------------------------------------------------
TIMM_RUNNER = ("import runpy, sys; import rest; path = sys.argv[1]; sys.argv = [path, *sys.argv[2:]]; "
               "runpy.run_path(path, run_name='__main__')")
TIMM_UPDATE = re.compile(r"Train: \d+ \[\s*\d+/\d+.*?Time: ([\d.]+)s,")


def timm_train_args(config: RunConfig, data_root: Path, num_classes: int, workers: int, updates: int,
                    train_images: int, device: str, output: Path, channels_last: bool = False) -> list[str]:
    """train.py's flags for the run the config describes: model, batch split, memory layout, precision,
    augmentation, as many epochs over the folder as `updates` updates take (--epoch-repeats acts on iterable
    datasets only), every update logged."""
    _, device_batch, accum = config.batch_split()
    aug = config.aug
    epochs = -(-updates // max(1, train_images // config.train.batch_size))
    args = ["--data-dir", str(data_root), "--model", config.model.name, "--num-classes", str(num_classes),
            "--img-size", str(config.data.img_size), "-b", str(device_batch), "--grad-accum-steps", str(accum),
            "--epochs", str(epochs), "--warmup-epochs", "0", "--checkpoint-hist", "1",
            "--workers", str(workers), "--log-interval", "1", "--device", device, "--output", str(output),
            "--opt", config.optim.name, "--lr", str(config.lr), "--weight-decay", str(config.optim.weight_decay),
            "--scale", str(aug.scale_min), "1.0", "--hflip", str(aug.hflip), "--color-jitter", "0",
            "--train-interpolation", "bicubic", "--reprob", str(aug.reprob), "--remode", "pixel",
            "--smoothing", str(aug.label_smoothing), "--mixup", str(aug.mixup), "--cutmix", str(aug.cutmix),
            "--pin-mem", "--seed", str(config.train.seed)]
    if aug.rand_augment:
        args += ["--aa", aug.rand_augment]
    if config.train.amp is not False and device == "cuda":
        args += ["--amp", "--amp-dtype", "bfloat16" if config.train.amp == "bfloat16" else "float16"]
    if channels_last:
        args += ["--channels-last"]
    if config.train.compile:
        args += ["--torchcompile", config.train.compile]
    if config.model.name.startswith("rest_"):  # the ResT knobs, as timm.create_model keyword arguments
        m = config.model
        args += ["--model-kwargs", f"pos_encoding={m.pos_encoding}", f"reduction={m.reduction}",
                 f"head_conv={m.head_conv}", f"head_norm={m.head_norm}", f"stem={m.stem}"]
    return args


def timm_images_per_s(log: str, warmup: int, steps: int, global_batch: int) -> float | None:
    """Images/s of `steps` updates after the first `warmup` in train.py's log (--log-interval 1: every update's
    time, data wait included, over all its epochs)."""
    times = [float(t) for t in TIMM_UPDATE.findall(log)][warmup:warmup + steps]
    return len(times) * global_batch / sum(times) if times and sum(times) > 0 else None


def time_timm(train_py: Path, config: RunConfig, data_root: Path, num_classes: int, workers: int, warmup: int,
              steps: int, train_images: int, device: str, timeout_s: float,
              channels_last: bool) -> tuple[float | None, str]:
    """(c): timm's train.py in a process of its own, bounded in time; (None, why) when it gives no figure."""
    with tempfile.TemporaryDirectory() as out:
        args = timm_train_args(config, data_root, num_classes, workers, warmup + steps, train_images, device,
                               Path(out), channels_last)
        try:
            proc = subprocess.run([sys.executable, "-c", TIMM_RUNNER, str(train_py), *args], capture_output=True,
                                  text=True, timeout=timeout_s, cwd=out, env={**os.environ, "PYTHONPATH": str(ROOT)})
        except subprocess.TimeoutExpired as err:
            log = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
            speed = timm_images_per_s(log, warmup, steps, config.train.batch_size)
            return speed, f"timm's train.py was stopped after {timeout_s:.0f} s"
    log = proc.stdout + proc.stderr
    return timm_images_per_s(log, warmup, steps, config.train.batch_size), log[-3000:]


# ---- what the figures mean for the shipped sweeps ------------------------------------------------------------------
def sweep_hours(recipe: str, speed: Speed, cache: PlanCache, train_images: int) -> list[tuple[str, int, float]]:
    """(sweep, distinct runs, device-hours of one seed) under the recipe at `speed`, and the study's total."""
    rows, plans = [], []
    with tempfile.TemporaryDirectory() as results:  # one results root: the sweeps' shared runs are one run
        experiments = [resolve(ROOT / "sweeps" / f"{name}.yaml", Selection(recipe=recipe, seeds=(0,)), results)
                       for name in SWEEPS]
    for name, experiment in zip(SWEEPS, experiments, strict=True):
        plan = make_plan(experiment)
        seconds = sum(estimate(p.run.config, 1000, train_images, 1, speed, cache).eta_s for p in plan.runs)
        rows.append((name, len(plan.runs), seconds / 3600))
        if ROOT / "sweeps" / f"{name}.yaml" in [Path(p) for p in sweep_paths([STUDY])]:
            plans.append(plan)
    launches = distinct_runs(plans)
    seconds = sum(estimate(launch.planned.run.config, 1000, train_images, 1, speed, cache).eta_s for launch in launches)
    rows.append((f"study {STUDY.stem}", len(launches), seconds / 3600))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_and_folder_arguments(p)
    p.add_argument("--images", type=int, default=None, help="--synthetic: training images (default: 2 updates)")
    p.add_argument("--warmup", type=int, default=20, help="updates before timing")
    p.add_argument("--steps", type=int, default=200, help="updates timed")
    p.add_argument("--workers", type=int, default=None, help="data-loading workers (default: the job's CPUs - 1)")
    p.add_argument("--timm-train", type=Path, help="timm's train.py, for (c)")
    p.add_argument("--timm-timeout", type=float, default=600.0)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    from ablations.executors.job import default_workers

    workers = default_workers() if args.workers is None else args.workers
    overrides = parse_cli_sets(args.sets)
    config = recipe_config(load_recipe(args.recipe), {**overrides, "data.dataset": "imagefolder"})
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root
        if root is None:
            images = args.images or 2 * config.train.batch_size
            per_class = -(-images // args.synthetic)
            root = Path(tmp) / "jpegs"
            write_folder(root, args.synthetic, per_class, max(1, per_class // 10))
        config = recipe_config(load_recipe(args.recipe), {**overrides, "data.dataset": "imagefolder",
                                                          "data.root": str(root.resolve())})
        trainer = Trainer(config, Path(tmp) / "run", progress=False, num_workers=workers)
        train_images = len(trainer.train_loader.dataset)
        device = trainer.device
        loader = time_loader(trainer, args.warmup, args.steps)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = trainer.compiled(trainer.model)  # train.compile's backend, as a run trains
        bound = time_model_bound(trainer, model, args.warmup, args.steps)
        memory = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        full = time_data_path(trainer, model, args.warmup, args.steps)
        precision = str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp else None  # autocast's dtype
        print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, {config.model.name} "
              f"at {config.data.img_size} px, batch {config.train.batch_size} (devices x per pass x accumulation: "
              f"{config.batch_split()}), AMP {precision or 'off'}, {workers} loader workers, "
              f"{args.steps} updates timed", flush=True)
        print(f"  loader alone          {loader:9.1f} img/s ({loader / max(1, workers):.1f} per worker)")
        print(f"  (a) model-bound       {bound:9.1f} img/s")
        print(f"  (b) harness data path {full:9.1f} img/s = {100 * full / bound:.0f} % of (a)", flush=True)
        timm_speed, timm_log = (None, "")
        if args.timm_train:
            timm_speed, timm_log = time_timm(args.timm_train, config, root, trainer.num_classes, workers, args.warmup,
                                             args.steps, train_images, device.type, args.timm_timeout,
                                             trainer.memory_format == torch.channels_last)
    cache = PlanCache()
    macs = complexity_of(config, 1000, cache)["macs_total"]
    speed = Speed(full, macs, config.model.name, "measured")
    hours = sweep_hours(args.recipe, speed, cache, IMAGENET_TRAIN_IMAGES)
    figures = dict(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        torch=torch.__version__, recipe=args.recipe, overrides=args.sets, workers=workers,
        batch=config.train.batch_size, split=list(config.batch_split()), img_size=config.data.img_size,
        amp=precision, compile=config.train.compile, loader_img_s=loader,
        loader_img_s_per_worker=loader / max(1, workers),
        model_bound_img_s=bound, data_path_img_s=full, data_path_fraction=full / bound,
        timm_img_s=timm_speed, over_timm=full / timm_speed if timm_speed else None, gpu_memory_gb=memory / 2**30
        if memory is not None else None, hours_per_seed={name: round(h, 1) for name, _, h in hours},
    )
    if args.timm_train:
        print(f"  (c) timm train.py     {timm_speed:9.1f} img/s; (b) / (c) = {full / timm_speed:.2f}" if timm_speed
              else f"  (c) timm train.py: no update times in its log:\n{timm_log}")
    if memory is not None:
        print(f"  GPU memory of the step: {figures['gpu_memory_gb']:.1f} GB")
    print(f"device-hours per seed under {args.recipe} at (b)'s speed (ImageNet-1k, {IMAGENET_TRAIN_IMAGES:,} "
          f"images; other models by their MACs):")
    for name, runs, h in hours:
        print(f"  {name:<24} {runs:3d} runs {h:10.1f} h")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if statistics.fmean([bound, full]) > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
