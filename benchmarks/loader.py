"""python -m benchmarks.loader --recipe paper-ablation [--data-root DIR | --synthetic CLASSES] — where a loader
worker's time goes: the recipe's training samples of image files, stage by stage, in this one process.

    seeding          the per-sample reseeding of SeededSamples (exact resume)
    read + decode    load_image: the file read and decoded by PIL, converted to RGB
    <each op>        the recipe's training transform (timm's create_transform), op by op

It reports the mean microseconds per sample of each stage (a mean: throughput is what it sets), its share,
and the images/s one CPU core sustains (a
DataLoader worker adds collation and the copy to the main process: compare `benchmarks.throughput`'s "loader
alone" per worker). Beside them, two ways to decode less, measured on the same samples:
    torchvision decode_jpeg   torchvision.io's libjpeg-turbo decode to a tensor (the CPU twin of the GPU decoder);
    reduced-size decoding     how many of the recipe's random-resized crops a JPEG could be decoded at 1/2, 1/4
                              or 1/8 of its size for (PIL's draft mode) and still give img_size pixels on both
                              sides of the crop, the augmentation unchanged; and the same for validation's resize.
Figures and commands: BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from ablations.spec.recipe import load_recipe
from ablations.spec.recipe import resolve as recipe_config
from ablations.spec.sweep import parse_cli_sets
from ablations.training.loaders import image_transforms, load_image, mix_seed, seed_host
from benchmarks.synthetic_jpegs import add_recipe_and_folder_arguments, write_folder

DRAFT_SCALES = (8, 4, 2)  # the reductions a JPEG decoder offers (PIL's Image.draft: 1/2, 1/4, 1/8)


def image_files(root: Path, limit: int) -> list[Path]:
    """Up to `limit` training images of an ImageFolder root, spread over its classes (sorted, then strided)."""
    files = sorted(path for path in (root / "train").glob("*/*") if path.is_file())
    if not files:
        raise SystemExit(f"error: {root / 'train'}: no image files in its class folders")
    stride = max(1, len(files) // limit)
    return files[::stride][:limit]


def reduction(width: int, height: int, size: int) -> int:
    """The largest JPEG decoding reduction (1, 2, 4, 8) that keeps a width x height region at least `size`
    pixels on both sides."""
    return next((k for k in DRAFT_SCALES if min(width, height) // k >= size), 1)


def profile(config, files: list[Path], samples: int) -> dict:
    """Per-stage microseconds of `samples` training samples (cycling over `files`), decoded and transformed as
    a loader worker does, plus the decoding alternatives."""
    from torchvision.io import decode_jpeg, read_file

    train_tf, _ = image_transforms(config)
    ops = list(train_tf.transforms)
    names = ["seeding", "read + decode (PIL)", *(type(op).__name__ for op in ops)]
    times: dict[str, list[float]] = {name: [] for name in names}
    decode_tv: list[float] = []
    crops, shorter_sides = [], []
    seed, size = config.train.seed, config.data.img_size
    crop_op = next((op for op in ops if hasattr(op, "get_params") and hasattr(op, "scale")), None)
    for i in range(samples):
        path = files[i % len(files)]
        tic = time.perf_counter()
        seed_host(mix_seed(seed, 0, i))
        toc = time.perf_counter()
        times["seeding"].append(toc - tic)
        x = load_image(str(path))
        tic, toc = toc, time.perf_counter()
        times["read + decode (PIL)"].append(toc - tic)
        image = x
        for name, op in zip(names[2:], ops, strict=True):
            x = op(x)
            tic, toc = toc, time.perf_counter()
            times[name].append(toc - tic)
        tic = time.perf_counter()
        try:
            decode_jpeg(read_file(str(path)))
            decode_tv.append(time.perf_counter() - tic)
        except RuntimeError:  # not a JPEG (ImageNet has a few PNG and CMYK files named .JPEG): PIL's alone
            pass
        if crop_op is not None:  # the crop this sample drew, drawn again from the same seed
            seed_host(mix_seed(seed, 0, i))
            _, _, h, w = crop_op.get_params(image, crop_op.scale, crop_op.ratio)
            crops.append(reduction(w, h, size))
        shorter_sides.append(min(image.size))
    micro = {name: 1e6 * statistics.fmean(values) for name, values in times.items()}
    total = sum(micro.values())
    eval_resize = round(size / config.data.eval_crop_pct)  # validation resizes the shorter side to this
    return dict(
        samples=samples, img_size=size, stages_us=micro, total_us=total, img_s_per_core=1e6 / total,
        torchvision_decode_us=1e6 * statistics.fmean(decode_tv) if decode_tv else None,
        train_crops_reducible={k: sum(r >= k for r in crops) / len(crops) for k in (2, 4, 8)} if crops else {},
        val_images_reducible={k: sum(s // k >= eval_resize for s in shorter_sides) / samples for k in (2, 4, 8)},
    )


def report(figures: dict, recipe: str) -> str:
    lines = [f"{recipe}: one training sample at {figures['img_size']} px, mean of {figures['samples']} "
             f"(microseconds, one process)"]
    for name, us in figures["stages_us"].items():
        lines.append(f"  {name:<36} {us:9.0f} us {100 * us / figures['total_us']:5.1f} %")
    lines.append(f"  {'total':<36} {figures['total_us']:9.0f} us = {figures['img_s_per_core']:.0f} img/s per core")
    tv = figures["torchvision_decode_us"]
    lines.append(f"decoding alternatives: torchvision decode_jpeg {f'{tv:.0f} us' if tv else '(no JPEG file)'} "
                 f"(PIL: {figures['stages_us']['read + decode (PIL)']:.0f} us)")
    for what, key in (("training crops", "train_crops_reducible"), ("validation images", "val_images_reducible")):
        if figures[key]:
            shares = ", ".join(f"1/{k}: {100 * share:.1f} %" for k, share in figures[key].items())
            lines.append(f"  {what} a reduced-size decode could serve, augmentation unchanged: {shares}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_and_folder_arguments(p)
    p.add_argument("--samples", type=int, default=500, help="samples timed (the folder is cycled over)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be >= 1")
    overrides = {**parse_cli_sets(args.sets), "data.dataset": "imagefolder"}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root
        if root is None:
            root = Path(tmp) / "jpegs"
            write_folder(root, args.synthetic, -(-min(args.samples, 200) // args.synthetic), 1)
        config = recipe_config(load_recipe(args.recipe), {**overrides, "data.root": str(root.resolve())})
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (for TorchCodec's), on each call
            warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
            figures = profile(config, image_files(root, args.samples), args.samples)
    print(report(figures, args.recipe))
    if args.json:
        args.json.write_text(json.dumps({"recipe": args.recipe, "overrides": args.sets, **figures}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
