"""Where each dataset lives and whether it is there: checked before a plan is printed, without torch.

The bundled datasets (digits, probe) need no folder; the others are read from data.root, else from the
environment variable REST_DATA_ROOT. The checks list folders and never decode an image, so planning a
sweep with runs left to do stays fast; ablations.data builds the datasets themselves.
"""
from __future__ import annotations

import os
from pathlib import Path

from ablations.config import ENV_DATA_ROOT, RunConfig

ENV_ROOT = ENV_DATA_ROOT  # REST_DATA_ROOT
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    "cifar10": ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)],
    "cifar100": ["meta", "train", "test"],
}
BUNDLED = ("digits", "probe")  # built from files scikit-learn ships: no folder
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


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
        for name in classes:  # one directory entry each: still cheap for 1,000 classes
            with os.scandir(root / split / name) as entries:
                if not any(e.is_file() for e in entries):
                    raise DatasetError(f"dataset 'imagefolder' at {root}: class folder {split}/{name}/ holds no "
                                       "image file")
    if class_dirs(root / "train") != class_dirs(root / "val"):
        raise DatasetError(f"dataset 'imagefolder' at {root}: train/ and val/ have different class folders")
