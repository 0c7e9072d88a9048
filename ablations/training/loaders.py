"""Datasets and loaders for a run: bundled digits, an ImageFolder root, or CIFAR from local files.

    digits       scikit-learn's 1,797 8x8 handwritten digits (shipped with scikit-learn): a fixed stratified
                 80/20 split (seed 0, whatever the run seed), upsampled once to data.img_size, 3 channels.
                 Augmentation is tensor ops only: random-resized crop, flip, random erasing.
    probe        3x3 mosaics of those digits, labelled by the centre one: a task that needs absolute
                 position (ablations.training.probe_dataset, docs/probe.md); the same split, upsampling and
                 augmentation.
    imagefolder  data.root/train/<class>/* and data.root/val/<class>/* (ImageNet-1k, Imagenette), with
                 timm's create_transform (RandAugment, bicubic, eval crop_pct) ending in uint8 tensors;
                 normalisation and random erasing happen on the device (DeviceBatches), as with timm's prefetcher.
    cifar10/100  torchvision's CIFAR from local files under data.root, as imagefolder; never downloaded.

A dataset that needs a folder takes it from data.root, else from the environment variable REST_DATA_ROOT.

Exact resume: the training loader yields batches of (epoch, index) keys; each sample's augmentation is
drawn from RNGs seeded by (run seed, epoch, index), so a sample looks the same whichever worker loads it
and whether or not the run was interrupted. The epoch's order is a (seed, epoch)-seeded permutation dealt
to the run's devices x accumulation steps like DistributedSampler's (EpochSampler), and a resumed epoch
skips the updates already done.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ablations.spec.config import RunConfig
from ablations.spec.dataset_checks import (  # noqa: F401 - the checks are part of this module's interface too
    BUNDLED,
    CIFAR_FILES,
    CIFAR_FOLDERS,
    ENV_ROOT,
    NUM_CLASSES,
    DatasetError,
    check_dataset,
    check_rand_augment,
    cifar_dir,
    class_dirs,
    not_found,
    require_root,
    resolve_data_root,
    samples_per_device,
)
from ablations.store import open_file

SPLIT_SEED = 0  # the fixed split / subset order, independent of the run seed


# --------------------------------------------------------------------------------------------------------
# digits: in memory, tensor augmentation
# --------------------------------------------------------------------------------------------------------
class DigitsDataset(Dataset):
    """(N, 1, S, S) normalized images and labels; `augment` is applied per sample (3 channels out)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment=None):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        x = self.images[index]
        if self.augment is not None:
            x = self.augment(x.clone())  # random erasing writes in place
        return x.expand(3, -1, -1), self.labels[index]


def _digits_augment(config: RunConfig):
    from timm.data.random_erasing import RandomErasing
    from torchvision.transforms import v2

    aug, size = config.aug, config.data.img_size
    ops = []
    if aug.scale_min < 1.0:
        ops.append(v2.RandomResizedCrop(size, scale=(aug.scale_min, 1.0), antialias=True))
    if aug.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.reprob > 0:
        ops.append(RandomErasing(aug.reprob, mode="pixel", device="cpu"))
    return v2.Compose(ops) if ops else None


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ((1797, 8, 8) float pixels in 0..16, (1797,) int labels).

    Read straight from the CSV that scikit-learn ships (what load_digits reads): importing scikit-learn
    costs seconds per run, longer than the rest of the data pipeline.
    """
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():  # a future layout: take the slow, public way
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    with gzip.open(path) as f:
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: `val_fraction` of each class to val, both in a seeded shuffled order."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * val_fraction)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(val))


def _digits(config: RunConfig) -> tuple[Dataset, Dataset]:
    check_rand_augment(config)
    images, labels = load_digits_arrays()
    train_idx, val_idx = stratified_split(labels, 0.2, SPLIT_SEED)
    return _bundled(config, images, labels, train_idx, val_idx)


def _probe(config: RunConfig) -> tuple[Dataset, Dataset]:
    from ablations.training.probe_dataset import probe_arrays

    check_rand_augment(config)
    images, labels = load_digits_arrays()
    train_idx, val_idx = stratified_split(labels, 0.2, SPLIT_SEED)
    train_x, train_y, val_x, val_y = probe_arrays(images, labels, train_idx, val_idx)
    images, labels = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    n = len(train_y)
    return _bundled(config, images, labels, np.arange(n), np.arange(n, len(labels)))


def _bundled(config: RunConfig, images: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
             val_idx: np.ndarray) -> tuple[Dataset, Dataset]:
    """Pixels in 0..16 upsampled to data.img_size, normalized by the training images' mean and std."""
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, h, w) in [0, 1]
    y = torch.tensor(labels, dtype=torch.long)
    size = config.data.img_size
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    train_idx, val_idx = torch.as_tensor(train_idx), torch.as_tensor(val_idx)
    train = DigitsDataset(x[train_idx], y[train_idx], _digits_augment(config))
    val = DigitsDataset(x[val_idx], y[val_idx])
    return train, val


# --------------------------------------------------------------------------------------------------------
# image files: ImageFolder / CIFAR with timm transforms
# --------------------------------------------------------------------------------------------------------
def image_transforms(config: RunConfig):
    """(train, val) transforms of image files: timm's create_transform at the recipe's settings, ending in uint8
    (C, H, W) tensors, as timm's prefetcher takes them: batches go to the device as bytes, a quarter of float32's
    copy, and are normalised there, where random erasing (aug.reprob) follows (DeviceBatches)."""
    from timm.data import create_transform

    aug, size = config.aug, config.data.img_size
    train = create_transform(
        size, is_training=True, scale=(aug.scale_min, 1.0), hflip=aug.hflip, color_jitter=None,
        auto_augment=aug.rand_augment, interpolation="bicubic", re_prob=0.0, use_prefetcher=True,
    )
    val = create_transform(size, is_training=False, interpolation="bicubic", crop_pct=config.data.eval_crop_pct,
                           use_prefetcher=True)
    return with_zero_bit_posterize(train), val


class DeviceBatches:
    """What a batch of image-file samples still needs on the device: uint8 -> float, normalised with timm's
    ImageNet mean and std (the transforms' own, before), the memory layout, and for training random erasing in
    timm's pixel mode, drawn from the generators the trainer seeds for each micro-batch. A float batch (the
    bundled digits, augmented in the loader) only moves."""

    def __init__(self, config: RunConfig, device: torch.device, memory_format: torch.memory_format):
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        from timm.data.random_erasing import RandomErasing

        self.device, self.memory_format = device, memory_format
        self.mean = torch.tensor([255 * m for m in IMAGENET_DEFAULT_MEAN], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([255 * s for s in IMAGENET_DEFAULT_STD], device=device).view(1, 3, 1, 1)
        reprob = config.aug.reprob
        self.erasing = RandomErasing(reprob, mode="pixel", device=device.type) if reprob > 0 else None

    def __call__(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.float().sub_(self.mean).div_(self.std)
            if train and self.erasing is not None:
                x = self.erasing(x)
        return x.contiguous(memory_format=self.memory_format)


def posterize_keeping(img, bits_to_keep: int, **_):
    """timm's posterize, also for 0 bits kept: a black image, as Pillow gave before version 13 (which refuses
    bits < 1). timm's RandAugment asks for 0 bits at full magnitude ("PosterizeIncreasing", e.g. the official
    recipe's rand-m9-mstd0.5-inc1 once the magnitude noise reaches 10), about once in a thousand images."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def with_zero_bit_posterize(transform):
    """The transform with every posterize op of its (Rand/Auto)Augment policies as posterize_keeping: the same
    augmentation, whichever Pillow is installed."""
    from timm.data.auto_augment import AugmentOp, posterize

    pending = [transform]
    while pending:
        item = pending.pop()
        if isinstance(item, AugmentOp):
            if item.aug_fn is posterize:
                item.aug_fn = posterize_keeping
        elif isinstance(item, list | tuple):
            pending.extend(item)
        else:  # Compose.transforms, RandAugment.ops, AutoAugment.policy (a list of lists of ops)
            pending.extend(getattr(item, name) for name in ("transforms", "ops", "policy") if hasattr(item, name))
    return transform


def load_image(path: str):
    """An RGB image; DatasetError naming the file for a corrupt or truncated one (PIL's own message may not)."""
    from PIL import Image, UnidentifiedImageError

    try:  # a regular file (a link to one is fine): a FIFO would block the worker forever
        with open_file(path, "rb", follow_links=True) as f:
            image = Image.open(f)
            image.load()  # decoded here, inside the handler; an RGB image (most JPEGs) is kept, not copied by
            return image if image.mode == "RGB" else image.convert("RGB")  # convert("RGB"): 6 % of a decode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL: UnidentifiedImageError,
        # "image file is truncated", an image of more pixels than Image.MAX_IMAGE_PIXELS x 2
        why = ("not an image file PIL can identify: empty, cut short or another format" if
               isinstance(err, UnidentifiedImageError) else f"{type(err).__name__}: {str(err)[:200]}")
        raise DatasetError(f"{path}: not a readable image ({why})") from None


def _imagefolder(config: RunConfig) -> tuple[Dataset, Dataset]:
    from torchvision.datasets import ImageFolder

    check_dataset(config)
    root = require_root(config)
    train_tf, val_tf = image_transforms(config)
    try:
        return (ImageFolder(str(root / "train"), train_tf, loader=load_image),
                ImageFolder(str(root / "val"), val_tf, loader=load_image))
    except (FileNotFoundError, RuntimeError) as err:  # e.g. class folders without images
        raise DatasetError(f"dataset 'imagefolder' at {root}: {err}") from None


def _cifar(config: RunConfig) -> tuple[Dataset, Dataset]:
    from torchvision.datasets import CIFAR10, CIFAR100

    base = cifar_dir(config)
    cls = CIFAR10 if config.data.dataset == "cifar10" else CIFAR100
    train_tf, val_tf = image_transforms(config)
    try:
        return (cls(str(base.parent), train=True, transform=train_tf, download=False),
                cls(str(base.parent), train=False, transform=val_tf, download=False))
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise not_found(config.data.dataset, base, f"the files are unreadable or corrupt ({err})") from None


def _limit(ds: Dataset, limit: int | None, shuffle: bool) -> Dataset:
    """The first `limit` samples; in a fixed shuffled order when the dataset is sorted by class."""
    if limit is None or limit >= len(ds):
        return ds
    if shuffle:
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(SPLIT_SEED))[:limit]
    else:
        order = torch.arange(limit)
    return Subset(ds, order.tolist())


def build_datasets(config: RunConfig) -> tuple[Dataset, Dataset, int]:
    """(train, val, num_classes); samples are (3 x img_size x img_size tensor, int label): float for the bundled
    datasets, uint8 for image files (DeviceBatches finishes them on the device)."""
    dataset = config.data.dataset
    if dataset == "digits":
        train, val = _digits(config)
        num_classes = NUM_CLASSES[dataset]
    elif dataset == "probe":
        from ablations.training import probe_dataset as probe

        train, val = _probe(config)
        num_classes = probe.NUM_CLASSES
    elif dataset in CIFAR_FOLDERS:
        train, val = _cifar(config)
        num_classes = NUM_CLASSES[dataset]
    else:
        train, val = _imagefolder(config)
        num_classes = len(train.classes)
    # digits and probe are already in a shuffled order; files are sorted by class, so shuffle first
    shuffle = dataset not in BUNDLED
    return _limit(train, config.data.train_limit, shuffle), _limit(val, config.data.val_limit, shuffle), num_classes


# --------------------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------------------
def mix_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (Python's hash() of ints would collide and is not mixed)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def seed_everything(seed: int) -> None:
    """torch (every device), numpy and random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def seed_host(seed: int) -> None:
    """torch's CPU generator, numpy and random: what a sample's augmentation draws from. torch.manual_seed also
    seeds every accelerator's generator (about 160 us a call here, against 8): per sample, in every loader
    worker, that was a CPU core's work in the data path of a GPU run, for the same samples."""
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class SeededSamples(Dataset):
    """Index with (epoch, i): seeds torch, numpy and random from (seed, epoch, i), then returns ds[i]."""

    def __init__(self, ds: Dataset, seed: int):
        self.ds, self.seed = ds, seed

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        seed_host(mix_seed(self.seed, epoch, index))
        return self.ds[index]


class EpochSampler(Sampler):
    """This device's micro-batches of the epoch's (seed, epoch)-seeded permutation, as (epoch, index) keys.

    One update takes the global batch as V = world_size x accum micro-batches of `micro_batch` samples:
    micro-batch j of this rank is "virtual device" j * world_size + rank, which takes its share of the
    permutation exactly as DistributedSampler(num_replicas=V, drop_last=True) would. So a run that
    accumulates gradients over fewer devices sees the same samples, in the same micro-batches, as one on V
    devices. repeated=True is DeiT's RASampler (the official ResT v1 default): every index 3 times in a row,
    dealt round-robin to the V virtual devices, and len(dataset) // 256 * 256 samples per epoch in all.

    `set_epoch(epoch, skip)` starts the next pass `skip` updates in: a resumed epoch picks up where it was.
    Iteration yields, for each update, this rank's accum micro-batches one after the other.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, *, accum: int = 1,
                 micro_batch: int = 1, repeated: bool = False):
        self.n, self.seed, self.rank, self.world, self.accum = n, seed, rank, world_size, accum
        self.micro_batch, self.repeated = micro_batch, repeated
        self.virtual = world_size * accum
        self.steps = self.share() // micro_batch
        self.epoch, self.skip = 0, 0

    def share(self) -> int:
        """Samples per virtual device and epoch (the dataset check before a launch counts the same way)."""
        return samples_per_device(self.n, self.virtual, self.repeated)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices_of(self, virtual_rank: int) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # DistributedSampler's permutation
        order = torch.randperm(self.n, generator=g).tolist()
        if self.repeated:
            order = [i for i in order for _ in range(3)]
            total = -(-len(order) // self.virtual) * self.virtual
            order += order[: total - len(order)]
        else:
            order = order[: self.n // self.virtual * self.virtual]
        return order[virtual_rank::self.virtual][: self.share()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        parts = [self.indices_of(j * self.world + self.rank) for j in range(self.accum)]
        b = self.micro_batch
        for step in range(self.skip, self.steps):
            for part in parts:
                for index in part[step * b:(step + 1) * b]:
                    yield self.epoch, index

    def __len__(self) -> int:
        return max(0, self.steps - self.skip) * self.accum * self.micro_batch


def build_loaders(config: RunConfig, *, distributed: bool = False,
                  num_workers: int = 0) -> tuple[DataLoader, DataLoader, int]:
    """(train_loader, val_loader, num_classes).

    train.batch_size is the global batch of one update: each of the train.devices ranks loads train.accum_steps
    micro-batches of train.device_batch per update (config.batch_split()); the train loader yields them in
    that order and drops the last partial update; its sampler is an EpochSampler (call set_epoch).
    The val loader gives rank r the samples r, r + world, ... in order, nothing padded or repeated.
    """
    rank, world = 0, 1
    if distributed:
        import torch.distributed as dist

        rank, world = dist.get_rank(), dist.get_world_size()
    devices, batch, accum = config.batch_split()
    if world != devices:
        raise ValueError(f"this run is configured for train.devices={devices} processes but runs on {world}; "
                         f"launch it with {devices} tasks (e.g. --tasks-per-node {devices}) or set train.devices")
    train_ds, val_ds, num_classes = build_datasets(config)
    sampler = EpochSampler(len(train_ds), config.train.seed, rank, world, accum=accum, micro_batch=batch,
                           repeated=config.data.repeated_aug)
    if sampler.steps < 1:
        raise ValueError(f"{len(train_ds)} training images are fewer than one global batch of "
                         f"{config.train.batch_size} ({world * accum} x {batch})")
    # pinned host memory for non-blocking copies to a GPU; workers kept from epoch to epoch (forking them again
    # for every training and validation pass cost their start-up, dataset and transforms, twice an epoch)
    common = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)
    train = DataLoader(SeededSamples(train_ds, config.train.seed), batch_size=batch, drop_last=True,
                       sampler=sampler, **common)
    val_part = Subset(val_ds, range(rank, len(val_ds), world)) if world > 1 else val_ds
    val = DataLoader(val_part, batch_size=batch, shuffle=False, **common)
    return train, val, num_classes
