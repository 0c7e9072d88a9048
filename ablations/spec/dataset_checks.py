"""Where each dataset lives and whether it is there: checked before a plan is printed, without torch.

The bundled datasets (digits, probe) need no folder; the others are read from data.root, else from the
environment variable REST_DATA_ROOT. The checks list folders and never decode an image, so planning a
sweep with runs left to do stays fast; ablations.training.loaders builds the datasets themselves.
"""
from __future__ import annotations

import os
from pathlib import Path

from ablations.spec.config import ENV_DATA_ROOT, RunConfig

ENV_ROOT = ENV_DATA_ROOT  # REST_DATA_ROOT
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    "cifar10": ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)],
    "cifar100": ["meta", "train", "test"],
}
BUNDLED = ("digits", "probe")  # built from files scikit-learn ships: no folder
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
# training images of the datasets whose size is known: the bundled ones' fixed split (ablations.training.loaders, probe)
# and CIFAR's training batches
TRAIN_IMAGES = {"digits": 1438, "probe": 1438, "cifar10": 50_000, "cifar100": 50_000}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
RA_EPOCH = 256  # data.repeated_aug: an epoch takes the dataset's images in whole multiples of this (DeiT)


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message says where it looked and how to point at it."""


def resolve_data_root(config: RunConfig) -> str | None:
    """The folder the dataset is read from: data.root, else $REST_DATA_ROOT; None for digits/probe (bundled)."""
    if config.data.dataset in BUNDLED:
        return None
    return config.data.root or os.environ.get(ENV_ROOT) or None


def not_found(dataset: str, path: str | Path | None, what: str) -> DatasetError:
    where = f"looked at {path}" if path else "no folder was given"
    return DatasetError(
        f"dataset {dataset!r}: {what} ({where}). Point at it with `--data-root PATH` on the runner, the "
        f"environment variable {ENV_ROOT}=PATH, or data.root in the sweep or recipe."
    )


def require_root(config: RunConfig) -> Path:
    root = resolve_data_root(config)
    dataset = config.data.dataset
    if root is None:
        raise not_found(dataset, None, "data.root is not set and neither is " + ENV_ROOT)
    if Path(root).exists() and not Path(root).is_dir():
        raise not_found(dataset, root, "that is a file, not a folder: give the dataset's folder")
    if not Path(root).is_dir():
        raise not_found(dataset, root, "the folder does not exist")
    return Path(root)


def cifar_dir(config: RunConfig) -> Path:
    """The folder holding CIFAR's python batches: ROOT/cifar-10-batches-py, or ROOT itself if it is that."""
    root, dataset = require_root(config), config.data.dataset
    folder = CIFAR_FOLDERS[dataset]
    base = root if root.name == folder else root / folder
    missing = [name for name in CIFAR_FILES[dataset] if not (base / name).is_file()]
    if missing:
        raise not_found(dataset, base, f"missing {', '.join(missing)} (the python version of {dataset}, "
                                      f"unpacked so that {folder}/ sits in the root)")
    return base


def class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir()) if folder.is_dir() else []


def check_rand_augment(config: RunConfig) -> None:
    """aug.rand_augment is checked by building timm's transform from it (what training will do)."""
    text = config.aug.rand_augment
    if not text:
        return
    if config.data.dataset in BUNDLED:
        raise DatasetError(f"dataset {config.data.dataset!r}: aug.rand_augment is not supported (timm's "
                           "RandAugment works on PIL images); set it to null or use imagefolder / cifar10")
    from timm.data.auto_augment import rand_augment_transform

    try:
        if not text.startswith("rand"):
            raise ValueError("a RandAugment string starts with 'rand', e.g. rand-m9-mstd0.5-inc1")
        rand_augment_transform(text, {"translate_const": 100, "img_mean": (124, 116, 104)})
    except Exception as err:  # timm raises AssertionError / ValueError / KeyError for bad strings
        raise DatasetError(f"aug.rand_augment {text[:80]!r} is not a valid timm RandAugment string "
                           f"({type(err).__name__}: {str(err)[:200]})") from None


def check_dataset(config: RunConfig) -> None:
    """Raise DatasetError if the dataset cannot be found; cheap (lists folders, decodes no image)."""
    dataset = config.data.dataset
    check_rand_augment(config)
    if dataset in BUNDLED:
        return
    if dataset in CIFAR_FOLDERS:
        cifar_dir(config)
        return
    root = require_root(config)
    for split in ("train", "val"):
        classes = class_dirs(root / split)
        if not classes:
            raise not_found(dataset, root / split, f"no class folders in {split}/ (expected {split}/<class>/<image>, "
                                                  "the ImageNet / Imagenette layout)")
        for name in classes:  # stops at the first image of each: still cheap for 1,000 classes
            if not has_image(root / split / name):
                raise DatasetError(f"dataset 'imagefolder' at {root}: class folder {split}/{name}/ holds no image "
                                   f"file (none with an extension ImageFolder reads: {', '.join(IMAGE_EXTENSIONS)})")
    if class_dirs(root / "train") != class_dirs(root / "val"):
        raise DatasetError(f"dataset 'imagefolder' at {root}: train/ and val/ have different class folders")


def samples_per_device(n: int, virtual_devices: int, repeated: bool) -> int:
    """Training samples each virtual device (devices x accumulation steps) takes per epoch from `n` images:
    n // V, or with data.repeated_aug (DeiT's RASampler) n // 256 * 256 // V, falling back to n // V under
    that. ablations.training.loaders.EpochSampler deals its epochs by this; an epoch has
    samples_per_device // device batch updates (the last partial batch is dropped)."""
    if repeated:
        selected = n // RA_EPOCH * RA_EPOCH // virtual_devices
        return selected or n // virtual_devices  # a dataset under 256 images: one pass of its copies
    return n // virtual_devices


def updates_per_epoch(config: RunConfig, n: int) -> int:
    """The optimizer updates of one epoch of `config` over `n` training images; 0 when fewer images than one
    global batch train.batch_size are used per epoch."""
    devices, device_batch, accum = config.batch_split()
    return samples_per_device(n, devices * accum, config.data.repeated_aug) // device_batch


def enough_images(config: RunConfig) -> int:
    """A count of training images past which `config` has at least one update per epoch (whatever the split of
    the batch): counting a dataset's images can stop there."""
    return -(-config.train.batch_size // RA_EPOCH) * RA_EPOCH


def train_images(config: RunConfig, at_most: int | None = None) -> int:
    """The training images a run of `config` draws its epochs from: its dataset's training split, cut to
    data.train_limit. The bundled datasets and CIFAR have known sizes; an ImageFolder's are the files with an
    image extension under train/<class>/ (what torchvision lists), counted up to `at_most` only (listing
    ImageNet's 1.28 million files would be slow; the count is then `at_most`). Imports no torch and decodes no
    image; check_dataset first."""
    dataset, limit = config.data.dataset, config.data.train_limit
    if dataset in TRAIN_IMAGES:
        n = TRAIN_IMAGES[dataset]
    else:
        caps = [x for x in (at_most, limit) if x is not None]
        n = count_images(require_root(config) / "train", min(caps) if caps else None)
    return min(n, limit) if limit is not None else n


def has_image(class_folder: Path) -> bool:
    """Whether a class folder holds a file ImageFolder would load (an image extension; subfolders included)."""
    for _, _, files in os.walk(class_folder, followlinks=True):
        if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
            return True
    return False


def count_images(folder: Path, at_most: int | None = None) -> int:
    """Files with an image extension in the class folders of `folder`, subfolders included (torchvision's
    ImageFolder walks them, following links); stops counting at `at_most`."""
    n = 0
    for name in class_dirs(folder):
        for _, _, files in os.walk(folder / name, followlinks=True):
            n += sum(f.lower().endswith(IMAGE_EXTENSIONS) for f in files)
            if at_most is not None and n >= at_most:
                return at_most
    return n
