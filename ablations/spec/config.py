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
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from ablations.spec.errors import InputError, bounded_repr  # noqa: F401 - bounded_repr is part of this API
from rest_knobs import POS_ENCODINGS, REDUCTIONS, STEMS, VARIANTS

DATASETS = ("digits", "probe", "imagefolder", "cifar10", "cifar100")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "constant")
STEP_DECAY_FRACTION = 0.3  # sched.name "step" without sched.decay_epochs: lr x 0.1 every 30 % of the epochs
KEEP_CHECKPOINTS = ("last", "best", "none")
AMP_CHOICES = (True, False, "bfloat16")  # train.amp
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")  # train.compile: the last two generate no code (checks)
LOGGERS = ("tensorboard", "wandb", "none")

ConfigError = InputError  # one error type for every input (ablations.spec.errors)


def knob(default: Any = None, *, factory: Any = None, **rules: Any) -> Any:
    """A dataclass field with its validation rules as metadata, read by `check_field`.

    Rules: choices (allowed values), min / max (inclusive), gt / lt (exclusive), finite (no inf/nan),
    pattern (a regex the whole string must match; pattern_text says it in words).
    identity=False marks a field that does not change what a run computes (where its checkpoints and logs go):
    it is left out of the canonical JSON, so out of the run id, and a run resumes whatever its value.
    """
    if factory is not None:
        return field(default_factory=factory, metadata=rules)
    return field(default=default, metadata=rules)


PROBABILITY = dict(min=0.0, max=1.0)
SEED_LIMIT = 2**32  # numpy's seeds


MODEL_NAME = "|".join([r"(?!rest_)[a-z0-9][a-z0-9_.]{0,99}", *VARIANTS])
REST_KNOBS = ("pos_encoding", "reduction", "head_conv", "head_norm", "stem")  # what only ResT takes


@dataclass(frozen=True)
class ModelConfig:
    # a ResT size, or any other timm model (its existence and input sizes are checked at launch: timm imports
    # torch, and this module does not); a rest_ name that is not a size is a typo, refused here
    name: str = knob("rest_lite", pattern=MODEL_NAME,
                     pattern_text=f"a ResT size ({', '.join(VARIANTS)}) or another timm model's name (e.g. resnet18)")
    pos_encoding: str = knob("pa", choices=POS_ENCODINGS)
    reduction: str = knob("dwconv", choices=REDUCTIONS)
    head_conv: bool = True
    head_norm: bool = True
    stem: str = knob("rest", choices=STEMS)
    drop_path_rate: float = knob(0.0, **PROBABILITY)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = knob("digits", choices=DATASETS)
    root: str | None = None  # folder of the dataset; digits is bundled and needs none
    img_size: int = knob(64, min=32, max=4096)  # training crop / input size; ResT needs >= 32 px
    eval_crop_pct: float = knob(1.0, gt=0.0, max=1.0)  # eval: resize to img_size / eval_crop_pct, center crop
    train_limit: int | None = knob(None, min=1)  # use only the first N training images (smoke tests)
    val_limit: int | None = knob(None, min=1)
    # repeated augmentation (DeiT's RASampler, the official ResT v1 default): each image 3 times per epoch,
    # its copies on different (virtual) devices; an epoch is then len(train) // 256 * 256 samples
    repeated_aug: bool = False


@dataclass(frozen=True)
class AugConfig:
    scale_min: float = knob(0.08, gt=0.0, max=1.0)  # random-resized-crop scale (scale_min, 1.0); 1.0 = resize
    hflip: float = knob(0.5, **PROBABILITY)
    rand_augment: str | None = None  # timm RandAugment string, e.g. "rand-m9-mstd0.5-inc1"
    mixup: float = knob(0.0, min=0.0, finite=True)  # Beta(alpha, alpha); 0 = off
    cutmix: float = knob(0.0, min=0.0, finite=True)
    label_smoothing: float = knob(0.0, min=0.0, lt=1.0)
    reprob: float = knob(0.0, **PROBABILITY)  # random erasing probability


@dataclass(frozen=True)
class OptimConfig:
    name: str = knob("adamw", choices=OPTIMIZERS)
    lr: float = knob(1e-3, gt=0.0, finite=True)
    lr_base_batch: int | None = knob(None, min=1)  # if set, the lr used is lr * batch_size / lr_base_batch
    weight_decay: float = knob(0.05, min=0.0, finite=True)
    momentum: float = knob(0.9, min=0.0, lt=1.0)  # SGD only
    clip_grad: float | None = knob(None, gt=0.0, finite=True)


@dataclass(frozen=True)
class SchedConfig:
    name: str = knob("cosine", choices=SCHEDULES)
    warmup_epochs: int = knob(0, min=0)
    warmup_lr: float = knob(1e-6, min=0.0, finite=True)
    min_lr: float = knob(1e-5, min=0.0, finite=True)
    decay_epochs: int | None = knob(None, min=1)  # "step": lr x 0.1 every N epochs (None: 30 % of the epochs)
    per_epoch: bool = False  # the lr changes once per epoch (the official v1 code) instead of every update
    # warmup_lr and min_lr scaled by batch / optim.lr_base_batch like the lr (the official v1 main.py)
    scale_with_batch: bool = False


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = knob(5, min=1)
    batch_size: int = knob(64, min=1)  # the GLOBAL batch of one update: devices x device_batch x accumulation
    devices: int = knob(1, min=1, max=4096)  # processes (GPUs) the run is computed on: its world size
    device_batch: int | None = knob(None, min=1)  # images per device per forward pass (None: batch / devices)
    seed: int = knob(0, min=0, lt=SEED_LIMIT)
    # CUDA autocast (no effect on CPU): true = float16 with a loss scaler, "bfloat16" = bfloat16 without one
    # (timm's --amp-dtype bfloat16; Ampere or newer), false = float32. true and false keep their run ids.
    amp: bool | str = knob(True, choices=AMP_CHOICES)
    # torch.compile's backend for the training step (timm's --torchcompile), null = eager: how the run computes,
    # not what (identity=False: a run may resume with another), the first update's time (compiling) is logged
    compile: str | None = knob(None, choices=COMPILE_BACKENDS, identity=False)
    ema: bool = False
    ema_decay: float = knob(0.9998, gt=0.0, lt=1.0)
    # what a run keeps, not what it computes (identity=False: not in the run id)
    # at the end: last = checkpoint.pt (weights, EMA, counters) + best.pt; best = best.pt only; none = neither
    keep_checkpoints: str = knob("last", choices=KEEP_CHECKPOINTS, identity=False)
    keep_optimizer: bool = knob(False, identity=False)  # keep the optimizer state in the final checkpoint.pt
    logger: str = knob("tensorboard", choices=LOGGERS, identity=False)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "aug": AugConfig,
    "optim": OptimConfig,
    "sched": SchedConfig,
    "train": TrainConfig,
}


SECTION_NAMES = {cls: name for name, cls in SECTIONS.items()}
# section -> its fields that do not change what a run computes (knob(..., identity=False))
NOT_IDENTITY: dict[str, frozenset[str]] = {
    name: frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("identity") is False)
    for name, cls in SECTIONS.items()
}


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        self.batch_split()  # the global batch splits into devices x device batch x accumulation steps
        if self.model.name not in VARIANTS:  # another timm model: ResT's knobs cannot reach it
            defaults = ModelConfig()
            for knob_name in REST_KNOBS:
                value = getattr(self.model, knob_name)
                if value != getattr(defaults, knob_name):
                    raise InputError(f"model.{knob_name}", f"{value!r} is a ResT knob, and {self.model.name} is not "
                                                           f"a ResT model ({', '.join(VARIANTS)}): it cannot act there")

    def check_schedule(self) -> None:
        """What a launch refuses in a run's schedule (not when a stored config is read back: a run launched
        before a check existed still resumes): an lr that is not finite after the linear scaling rule, a
        warm-up longer than the training."""
        if not math.isfinite(self.lr):
            raise InputError("optim.lr", f"{self.optim.lr:g} x {self.train.batch_size} / {self.optim.lr_base_batch} = "
                                         f"{self.lr:g} after the linear scaling rule: not a finite learning rate")
        if self.sched.warmup_epochs > self.train.epochs:
            raise InputError("sched.warmup_epochs", f"a warm-up of {self.sched.warmup_epochs} epochs is longer than "
                                                    f"the training ({self.train.epochs} epochs): the schedule would "
                                                    f"never leave it; use --set sched.warmup_epochs="
                                                    f"{min(self.sched.warmup_epochs, self.train.epochs // 2)}")

    def batch_split(self) -> tuple[int, int, int]:
        """(devices, per-device batch, accumulation steps) of the global batch train.batch_size; InputError if
        it does not split evenly."""
        t = self.train
        device_batch = t.device_batch
        if device_batch is None:
            if t.batch_size % t.devices:
                raise InputError("train.batch_size", f"the global batch {t.batch_size} does not split over "
                                                     f"train.devices={t.devices} devices")
            device_batch = t.batch_size // t.devices
        if t.batch_size % (t.devices * device_batch):
            fix = (f"--set train.device_batch={t.batch_size // t.devices} (or a divisor of it)"
                   if t.batch_size % t.devices == 0 else f"a train.batch_size that is a multiple of {t.devices}")
            raise InputError("train.batch_size", f"the global batch {t.batch_size} is not a multiple of "
                                                 f"train.devices x train.device_batch = {t.devices} x {device_batch}: "
                                                 f"use {fix}")
        return t.devices, device_batch, t.batch_size // (t.devices * device_batch)

    @property
    def accum_steps(self) -> int:
        return self.batch_split()[2]

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
        return self.optim.lr * self.batch_scale

    @property
    def batch_scale(self) -> float:
        """batch / optim.lr_base_batch (the linear scaling rule), or 1 without a base batch."""
        return self.train.batch_size / self.optim.lr_base_batch if self.optim.lr_base_batch else 1.0

    @property
    def warmup_lr(self) -> float:
        return self.sched.warmup_lr * (self.batch_scale if self.sched.scale_with_batch else 1.0)

    @property
    def min_lr(self) -> float:
        return self.sched.min_lr * (self.batch_scale if self.sched.scale_with_batch else 1.0)

    @property
    def step_decay_epochs(self) -> int:
        """sched.name "step": the lr is multiplied by 0.1 every this many epochs (30 % of them by default:
        30/60/90 of 100)."""
        return self.sched.decay_epochs or max(1, round(STEP_DECAY_FRACTION * self.train.epochs))

    def identity_dict(self) -> dict[str, dict[str, Any]]:
        """to_dict() without the identity=False fields: what the run computes (its id, its checkpoint's check)."""
        return {name: {k: v for k, v in section.items() if k not in NOT_IDENTITY.get(name, ())}
                for name, section in self.to_dict().items()}

    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """Rebuild from `to_dict()` output (config.json), checking every key and value."""
        if not isinstance(data, dict):
            raise InputError("<config>", "expected a mapping of sections")
        return with_overrides(cls(), flatten(data))


@functools.lru_cache(maxsize=4096)
def section_json(section: Any) -> str:
    skip = NOT_IDENTITY.get(SECTION_NAMES[type(section)], ())
    return json.dumps({k: v for k, v in vars(section).items() if k not in skip}, sort_keys=True,
                      separators=(",", ":"))


def flatten(nested: dict, prefix: str = "") -> dict[str, Any]:
    """{"model": {"stem": "rest"}} -> {"model.stem": "rest"}; dotted keys pass through unchanged."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and "." not in str(key) and not prefix:
            if key not in SECTIONS:
                raise InputError(full, f"unknown section; allowed: {', '.join(SECTIONS)}")
            flat.update(flatten(value, prefix=f"{full}."))
        else:
            flat[full] = value
    return flat


def allowed_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, dict]]:
    """name -> (type hint, rules) of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], dict(f.metadata)) for f in dataclasses.fields(cls)}


def check_field(cls: type, name: str, value: Any, key: str | None = None, source: str | None = None) -> Any:
    """`value` checked against field `name` of dataclass `cls` (type, then the rules in its metadata) and
    converted to the field's type (int -> float only); InputError(source, key, ...) otherwise.

    The one checker of the harness: run configs, recipes, sweep files, --set and SLURM settings all use it.
    """
    key = key or name
    fields = _fields(cls)
    if name not in fields:
        raise InputError(source, key, f"unknown key; allowed: {', '.join(fields)}")
    hint, rules = fields[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise InputError(source, key, "must not be null")
    converted = _convert(value, [t for t in options if t is not type(None)])
    if converted is _INVALID:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in options)
        raise InputError(source, key, f"expected {names}, got {type(value).__name__} {bounded_repr(value)}")
    problem = rule_problem(converted, rules)
    if problem:
        raise InputError(source, key, problem)
    return converted


def rule_problem(value: Any, rules: dict) -> str | None:
    """What is wrong with `value` under `rules` (see `knob`), or None."""
    if "choices" in rules and value not in rules["choices"]:
        allowed = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in rules["choices"])  # YAML's
        return f"{bounded_repr(value)} is not allowed; choose one of: {allowed}"
    if "pattern" in rules and isinstance(value, str) and not re.fullmatch(rules["pattern"], value):
        return f"{bounded_repr(value)} is not allowed: {rules.get('pattern_text', 'see ' + rules['pattern'])}"
    bounded = rules.keys() & {"min", "gt", "max", "lt"}
    if isinstance(value, float) and (bounded or rules.get("finite")) and not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if (("min" in rules and value < rules["min"]) or ("gt" in rules and value <= rules["gt"])
            or ("max" in rules and value > rules["max"]) or ("lt" in rules and value >= rules["lt"])):
        return f"must be {_range_text(rules)}, got {value!r}"
    return None


def _range_text(rules: dict) -> str:
    if rules.get("min") == 0.0 and rules.get("max") == 1.0:
        return "within [0, 1]"
    if rules.get("gt") == 0 and len(rules.keys() - {"finite"}) == 1:
        return "positive"
    if rules.get("min") == 1 and len(rules.keys() - {"finite"}) == 1:
        return "positive"
    parts = [f"{sign} {rules[rule]:g}" for rule, sign in (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
             if rule in rules]
    return " and ".join(parts)


def field_type(key: str) -> Any:
    section, _, name = key.partition(".")
    if section not in SECTIONS:
        raise InputError(key, f"unknown section {section!r}; keys start with one of: {', '.join(SECTIONS)}")
    fields = _fields(SECTIONS[section])
    if name not in fields:
        raise InputError(key, f"unknown key; {section}.* allows: {', '.join(fields)}")
    return fields[name][0]


def check_value(key: str, value: Any, source: str | None = None) -> Any:
    """`value` for the dotted run-config key `key`, checked and converted; InputError otherwise."""
    field_type(key)  # unknown section or key
    section, _, name = key.partition(".")
    return check_field(SECTIONS[section], name, value, key=key, source=source)


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


ENV_DATA_ROOT = "REST_DATA_ROOT"
BUNDLED_DATASETS = ("digits",)  # need no folder: a data.root given to them changes nothing


def pin_data_root(config: RunConfig, environ: dict[str, str] | None = None) -> RunConfig:
    """The config with the dataset folder it will read written into data.root, so that it is in the run id.

    data.root, else $REST_DATA_ROOT, made absolute (the same folder gives the same id from any directory);
    None for a bundled dataset (digits), which ignores it: --data-root does not change a digits run's id.
    """

    environ = os.environ if environ is None else environ
    if config.data.dataset in BUNDLED_DATASETS:
        root = None
    else:
        root = config.data.root or environ.get(ENV_DATA_ROOT) or None
        root = os.path.abspath(os.path.expanduser(root)) if root else None
    if root == config.data.root:
        return config
    return dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
