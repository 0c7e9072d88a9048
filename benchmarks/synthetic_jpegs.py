"""python -m benchmarks.synthetic_jpegs OUT --classes N --per-class M [--val-per-class K] — an ImageNet-like JPEG
folder (OUT/train/<class>/*.JPEG, OUT/val/<class>/*.JPEG) for timing the data path without ImageNet.

What decoding and augmentation cost depends on: ImageNet's training JPEGs are mostly 500 x 375 or 375 x 500,
about 110 KB at quality 90 or so with 4:2:0 chroma. Each image here has such a size (drawn from ImageNet-like
shapes), natural-image statistics that JPEG compresses about as much (smooth blobs plus fine texture, not
white noise, which would be 3x larger; about 80 KB here), and quality 90. The content is random: for timing.
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((500, 375), (375, 500), (500, 333), (500, 400), (333, 500), (640, 480))  # (width, height), common first
WEIGHTS = (0.45, 0.2, 0.15, 0.08, 0.07, 0.05)
QUALITY = 90


def synthetic_image(rng: np.random.Generator) -> Image.Image:
    width, height = SIZES[rng.choice(len(SIZES), p=WEIGHTS)]
    coarse = rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)  # smooth regions, as in photos
    texture = rng.normal(0, 12, (height, width, 3))  # fine detail, which is what JPEG spends its bytes on
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + texture, 0, 255).astype(np.uint8))


def write_folder(out: Path, classes: int, per_class: int, val_per_class: int, seed: int = 0,
                 processes: int | None = None) -> int:
    """Write the folder, one class per task over `processes` (default: the CPUs); returns the number of images.
    Existing images are kept (a rerun adds what is missing)."""
    tasks = [(out / split / f"n{c:08d}", split, c, count, seed)
             for split, count in (("train", per_class), ("val", val_per_class)) for c in range(classes)]
    if (processes or os.cpu_count() or 1) == 1 or len(tasks) == 1:
        return sum(map(_write_class, tasks))
    with ProcessPoolExecutor(processes) as pool:
        return sum(pool.map(_write_class, tasks))


def _write_class(task: tuple[Path, str, int, int, int]) -> int:
    folder, split, c, count, seed = task
    rng = np.random.default_rng([seed, c, split == "val"])  # the same images whatever the number of processes
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = folder / f"{split}_{c}_{i}.JPEG"
        image = synthetic_image(rng)
        if not path.exists():
            image.save(path, quality=QUALITY)
    return count


def add_recipe_and_folder_arguments(p: argparse.ArgumentParser) -> None:
    """--recipe, --set and the images (--data-root DIR or --synthetic CLASSES) of a benchmark of the data path."""
    p.add_argument("--recipe", default="paper-ablation")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", type=Path, help="an ImageFolder (train/<class>/*, val/<class>/*)")
    source.add_argument("--synthetic", type=int, metavar="CLASSES", help="an ImageNet-like JPEG folder of CLASSES")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_jpegs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--val-per-class", type=int, default=10)
    args = p.parse_args(argv)
    n = write_folder(args.out, args.classes, args.per_class, args.val_per_class)
    print(f"{args.out}: {n} JPEGs ({args.classes} classes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
