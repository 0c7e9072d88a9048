"""One frozen, fully resolved configuration per run, hashed to a stable run id.

A run config has six sections (model, data, aug, optim, sched, train). Everything a sweep, a recipe or the
command line changes is a dotted key into it ("model.pos_encoding", "optim.lr"), type-checked against the
field it names. The canonical JSON of the config (sorted keys, no whitespace) is what the run computes, so
its hash names the run folder: the same run always lands in the same folder.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import rest

DATASETS = ("digits", "probe", "imagefolder", "cifar10", "cifar100")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")


class ConfigError(ValueError):
    """A bad key or value; `key` is the dotted key at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ModelConfig:
    name: str = "rest_lite"
    pos_encoding: str = "pa"
    reduction: str = "dwconv"
    head_conv: bool = True
    head_norm: bool = True
    stem: str = "rest"
    drop_path_rate: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    root: str | None = None  # folder of the dataset; digits is bundled and needs none
    img_size: int = 64  # training crop / input size
    eval_crop_pct: float = 1.0  # eval: resize to img_size / eval_crop_pct, then center crop img_size
    train_limit: int | None = None  # use only the first N training images (smoke tests)
    val_limit: int | None = None


@dataclass(frozen=True)
class AugConfig:
    scale_min: float = 0.08  # random-resized-crop scale range (scale_min, 1.0); 1.0 = plain resize
    hflip: float = 0.5
    rand_augment: str | None = None  # timm RandAugment string, e.g. "rand-m9-mstd0.5-inc1"
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    reprob: float = 0.0  # random erasing probability


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    lr_base_batch: int | None = None  # if set, the lr used is lr * batch_size / lr_base_batch
    weight_decay: float = 0.05
    momentum: float = 0.9  # SGD only
    clip_grad: float | None = None


@dataclass(frozen=True)
class SchedConfig:
    name: str = "cosine"
    warmup_epochs: int = 0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    seed: int = 0
    amp: bool = True  # float16 autocast, on CUDA only
    ema: bool = False
    ema_decay: float = 0.9998


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "aug": AugConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "train": TrainConfig,
}
CHOICES: dict[str, tuple] = {
    "model.name": tuple(rest.VARIANTS),
    "model.pos_encoding": rest.POS_ENCODINGS,
    "model.reduction": rest.REDUCTIONS,
    "model.stem": rest.STEMS,
    "data.dataset": DATASETS,
    "optim.name": OPTIMIZERS,
    "sched.name": SCHEDULES,
}
POSITIVE = {"data.img_size", "train.epochs", "train.batch_size", "optim.lr_base_batch", "data.train_limit",
            "data.val_limit"}
PROBABILITIES = {"aug.hflip", "aug.reprob", "model.drop_path_rate", "aug.label_smoothing"}


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        # Sections hold scalars only, so a shallow copy of each is the full conversion (and much faster
        # than dataclasses.asdict, which matters when planning 10,000 runs).
        return {name: dict(vars(getattr(self, name))) for name in SECTIONS}

    def canonical_json(self) -> str:
        """json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")), built from cached sections.

        Runs of a sweep share most section objects (overrides replace only the sections they touch), so
        each section is encoded once; this is most of the cost of planning 10,000 runs.
        """
        parts = (f'"{name}":{section_json(getattr(self, name))}' for name in sorted(SECTIONS))
        return "{" + ",".join(parts) + "}"

    def short_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:10]

    def get(self, key: str) -> Any:
        section, name = key.split(".", 1)
        return getattr(getattr(self, section), name)

    @property
    def lr(self) -> float:
        """The learning rate actually used (after the linear batch-size scaling rule, if any)."""
        if self.optim.lr_base_batch:
            return self.optim.lr * self.train.batch_size / self.optim.lr_base_batch
        return self.optim.lr

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Rebuild from `to_dict()` output (config.json), checking every key and value."""
        if not isinstance(data, dict):
            raise ConfigError("<config>", "expected a mapping of sections")
        return with_overrides(cls(), flatten(data))


@functools.lru_cache(maxsize=4096)
def section_json(section: Any) -> str:
    return json.dumps(vars(section), sort_keys=True, separators=(",", ":"))


def flatten(nested: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"stem": "rest"}} -> {"model.stem": "rest"}; dotted keys pass through unchanged."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and "." not in str(key) and not prefix:
            if key not in SECTIONS:
                raise ConfigError(full, f"unknown section; allowed: {', '.join(SECTIONS)}")
            flat.update(flatten(value, prefix=f"{full}."))
        else:
            flat[full] = value
    return flat


def allowed_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


@functools.cache
def field_type(key: str) -> Any:
    section, _, name = key.partition(".")
    if section not in SECTIONS:
        raise ConfigError(key, f"unknown section {section!r}; keys start with one of: {', '.join(SECTIONS)}")
    hints = typing.get_type_hints(SECTIONS[section])
    if name not in hints:
        names = ", ".join(f.name for f in dataclasses.fields(SECTIONS[section]))
        raise ConfigError(key, f"unknown key; {section}.* allows: {names}")
    return hints[name]


def check_value(key: str, value: Any) -> Any:
    """Return `value` converted to the field's type (int -> float only), or raise ConfigError."""
    hint = field_type(key)
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(key, "must not be null")
    converted = _convert(value, [t for t in options if t is not type(None)])
    if converted is _INVALID:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in options)
        raise ConfigError(key, f"expected {names}, got {type(value).__name__} {value!r}")
    if key in CHOICES and converted not in CHOICES[key]:
        raise ConfigError(key, f"{converted!r} is not allowed; choose one of: {', '.join(map(str, CHOICES[key]))}")
    if key in POSITIVE and converted <= 0:
        raise ConfigError(key, f"must be positive, got {converted!r}")
    if key in PROBABILITIES and not 0.0 <= converted <= 1.0:
        raise ConfigError(key, f"must be within [0, 1], got {converted!r}")
    if key == "data.img_size" and converted < 32:
        raise ConfigError(key, f"ResT needs inputs of at least 32 px, got {converted}")
    return converted


_INVALID = object()


def _convert(value: Any, types_: list[type]) -> Any:
    for t in types_:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, str):
            return value
    return _INVALID


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A new RunConfig with dotted-key overrides applied; every key and value is checked."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        checked = check_value(key, value)  # raises on an unknown section or key first
        section, _, name = key.partition(".")
        changes.setdefault(section, {})[name] = checked
    sections = {section: dataclasses.replace(getattr(config, section), **values) for section, values in changes.items()}
    return dataclasses.replace(config, **sections)
