"""Sweep files: load, validate, expand into runs.

A sweep file is data that says which paper table it reproduces:

    name: pe                                    # tables go to results/<name>/, runs to results/runs/
    paper_table: "Table 5: positional encoding (ResT-Lite, ImageNet-1k)"
    recipe: quick                               # training protocol, by name (ablations/spec/recipes/)
    model: rest_lite
    overrides: {train.epochs: 4}                # fixed dotted overrides for every run (optional)
    seeds: [0]                                  # every cell is repeated per seed (optional, default [0])
    columns: [top1, top5]                       # what the paper's table shows (optional)
    axes:                                       # several axes combine as a grid
      - name: pos_encoding
        key: model.pos_encoding                 # the key a plain-value level sets
        baseline: PA
        levels:                                 # level name -> value, or -> mapping of dotted overrides
          none: none
          PA: pa
          "w/o Conv-1 & IN": {model.head_conv: false, model.head_norm: false}
    published:                                  # the paper's numbers, by cell label (optional)
      PA: {top1: 72.88, top5: 90.62}
    slurm: {...}                                # cluster resources (optional, see ablations/executors/slurm/)

Everything is checked before anything runs; a problem raises SweepError naming the file and the key.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ablations.results_root import REPORTS, STORE
from ablations.spec.config import RunConfig, check_value, pin_data_root, with_overrides
from ablations.spec.errors import InputError, bounded_repr
from ablations.spec.metrics import DEFAULT_COLUMNS, METRIC_NAMES, value_problem
from ablations.spec.metrics import METRICS as METRIC_REGISTRY
from ablations.spec.recipe import list_recipes
from ablations.spec.yamlio import YamlError, errors_located, load_yaml_strict

TOP_LEVEL_KEYS = {
    "name": "the sweep's name (results/<name>/: its tables and the list of its runs)",
    "paper_table": "which paper table it reproduces",
    "description": "free text",
    "recipe": "the training protocol, by name",
    "model": "the ResT size",
    "overrides": "dotted config keys applied to every run",
    "seeds": "list of seeds",
    "columns": "metrics the table shows",
    "axes": "the ablation axes",
    "published": "the paper's numbers by cell label",
    "published_note": "what a reader must know about the paper's numbers (printed under the table)",
    "published_recipe": "the recipe that matches the protocol of the published numbers (tables warn otherwise)",
    "slurm": "cluster resources",
}
REQUIRED_KEYS = ("name", "paper_table", "recipe", "model", "axes")
AXIS_KEYS = {"name", "key", "baseline", "levels"}
METRICS = METRIC_NAMES  # ablations.spec.metrics
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # fullmatch: "$" would let "pe\n" through
LABEL_SEPARATOR = " / "  # between the level names of a cell's label
MAX_LEVEL_NAME = 64  # axis and level names: a cell's slug is part of its folder's name (255 bytes at most)
MAX_CELL_SLUG = 200


SweepError = InputError  # one error type for every input (ablations.spec.errors)


@dataclass(frozen=True)
class Axis:
    name: str
    baseline: str
    levels: dict[str, dict[str, Any]]  # level name -> dotted overrides


@dataclass(frozen=True)
class Cell:
    label: str  # level names joined by LABEL_SEPARATOR
    levels: dict[str, str]  # axis name -> level name
    overrides: dict[str, Any]
    is_baseline: bool


@dataclass(frozen=True)
class Run:
    run_id: str
    cell: Cell
    seed: int
    config: RunConfig


@dataclass(frozen=True)
class Sweep:
    path: Path
    name: str
    paper_table: str
    recipe: str
    model: str
    description: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    axes: list[Axis] = field(default_factory=list)
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    published_note: str = ""
    published_recipe: str = ""  # the recipe of the paper's protocol for `published`; "" = not said

    @property
    def cells(self) -> list[Cell]:
        cells = []
        for combo in itertools.product(*(axis.levels.items() for axis in self.axes)):
            overrides: dict[str, Any] = {}
            for _, level_overrides in combo:
                overrides.update(level_overrides)
            levels = {axis.name: level for axis, (level, _) in zip(self.axes, combo, strict=True)}
            cells.append(
                Cell(
                    label=LABEL_SEPARATOR.join(levels.values()),
                    levels=levels,
                    overrides=overrides,
                    is_baseline=all(levels[a.name] == a.baseline for a in self.axes),
                )
            )
        return cells

    def meta(self, run: Run, recipe: str) -> dict[str, Any]:
        return {
            "sweep": self.name,
            "paper_table": self.paper_table,
            "cell": run.cell.label,
            "levels": run.cell.levels,
            "axes": list(run.cell.levels),  # their order: config.json keeps a JSON object's keys sorted
            "baseline": run.cell.is_baseline,
            "recipe": recipe,
            "seed": run.seed,
            "run_id": run.run_id,
        }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "cell"


def run_id_for(seed: int, config: RunConfig) -> str:
    """Readable prefix + a hash of what the run computes: the same run always lands in the same folder, whichever
    sweep or cell asks for it (so the prefix names the model and seed, not a cell)."""
    return f"{slug(config.model.name)}-s{seed}-{config.short_hash()}"


# --------------------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------------------
def load_sweep(path: Path | str) -> Sweep:
    """Parse and validate a sweep file (structure, keys, types, knob values); raise InputError naming the file,
    the key and its line."""
    path = Path(path)
    with errors_located(path):
        return _load_sweep(path)


def _load_sweep(path: Path) -> Sweep:
    try:
        raw = load_yaml_strict(path)
    except YamlError as err:
        raise SweepError(path, "<file>", err.message) from None
    if not isinstance(raw, dict):
        raise SweepError(path, "<file>", f"a sweep file is a mapping of keys ({', '.join(REQUIRED_KEYS)}, ...), "
                                         f"got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            allowed = "; ".join(f"{k} ({v})" for k, v in TOP_LEVEL_KEYS.items())
            raise SweepError(path, str(key), f"unknown key; allowed keys are: {allowed}")
    for key in REQUIRED_KEYS:
        if key not in raw:
            raise SweepError(path, key, f"missing; a sweep needs {', '.join(REQUIRED_KEYS)}")

    name = expect(path, "name", raw["name"], str)
    if not NAME_PATTERN.fullmatch(name):
        raise SweepError(path, "name", f"{bounded_repr(name)} must be a folder name: letters, digits, '_', '-', '.'")
    if name in (STORE, REPORTS):
        raise SweepError(path, "name", f"{name!r} is a folder of every sweep's (results/{STORE}/: the runs; "
                                       f"results/{REPORTS}/: reports of several sweeps); name the sweep otherwise")
    model = expect(path, "model", raw["model"], str)
    check_config_value(path, "model", "model.name", model)
    overrides = parse_overrides(path, "overrides", raw.get("overrides", {}))
    seeds = parse_seeds(path, raw.get("seeds", [0]))
    columns = expect(path, "columns", raw.get("columns", list(DEFAULT_COLUMNS)), list)
    for column in columns:
        if column not in METRICS:
            raise SweepError(path, "columns", f"{bounded_repr(column)} is not a metric; allowed: {', '.join(METRICS)}")
    axes = parse_axes(path, raw["axes"])
    sweep = Sweep(
        path=path,
        name=name,
        paper_table=expect(path, "paper_table", raw["paper_table"], str),
        recipe=expect(path, "recipe", raw["recipe"], str),
        model=model,
        description=expect(path, "description", raw.get("description", ""), str),
        overrides=overrides,
        seeds=seeds,
        columns=columns,
        axes=axes,
        slurm=expect(path, "slurm", raw.get("slurm") or {}, dict),
        published_note=expect(path, "published_note", raw.get("published_note", ""), str),
        published_recipe=parse_published_recipe(path, raw.get("published_recipe", "")),
    )
    check_cells(path, sweep)
    published = parse_published(path, raw.get("published") or {}, {c.label for c in sweep.cells})
    check_axis_conflicts(path, sweep)
    return Sweep(**{**sweep.__dict__, "published": published})


def expect(path: Path, key: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SweepError(path, key, f"expected {kind.__name__}, got {type(value).__name__} {bounded_repr(value)}")
    return value


def check_config_value(path: Path, where: str, key: str, value: Any) -> Any:
    try:
        return check_value(key, value)
    except InputError as err:  # "where" names the key already: the message once, not "key: key: ..."
        raise SweepError(path, where, err.message if err.key == where else err.describe()) from None


def parse_overrides(path: Path, where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SweepError(path, where, "expected a mapping of dotted keys (e.g. optim.lr: 0.1), got "
                                      f"{bounded_repr(raw)}")
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or "." not in key:
            raise SweepError(path, f"{where}.{key}", "keys are dotted config keys like model.reduction or optim.lr")
        out[key] = check_config_value(path, f"{where}.{key}", key, value)
    return out


def parse_seeds(path: Path, raw: Any) -> list[int]:
    if not isinstance(raw, list) or not raw:
        raise SweepError(path, "seeds", f"expected a non-empty list of integers, got {bounded_repr(raw)}")
    for seed in raw:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
            raise SweepError(path, "seeds", f"seeds are integers in [0, 2^32), got {bounded_repr(seed)}")
    if len(set(raw)) != len(raw):
        raise SweepError(path, "seeds", f"a seed is listed twice: {raw}")
    return list(raw)


def parse_axes(path: Path, raw: Any) -> list[Axis]:
    if not isinstance(raw, list) or not raw:
        raise SweepError(path, "axes", "expected a non-empty list of axes (name, key, baseline, levels)")
    axes, names = [], set()
    for i, axis in enumerate(raw):
        where = f"axes[{i}]"
        if not isinstance(axis, dict):
            raise SweepError(path, where, f"an axis is a mapping with {', '.join(sorted(AXIS_KEYS))}")
        for key in axis:
            if key not in AXIS_KEYS:
                raise SweepError(path, f"{where}.{key}", f"unknown key; an axis has: {', '.join(sorted(AXIS_KEYS))}")
        for key in ("name", "baseline", "levels"):
            if key not in axis:
                raise SweepError(path, f"{where}.{key}", "missing")
        name = check_name(path, f"{where}.name", expect(path, f"{where}.name", axis["name"], str))
        if name in names:
            raise SweepError(path, f"{where}.name", f"axis name {bounded_repr(name)} is used twice")
        names.add(name)
        levels_raw = axis["levels"]
        if not isinstance(levels_raw, dict) or not levels_raw:
            raise SweepError(path, f"{where}.levels", "expected a non-empty mapping of level name -> value")
        axis_key = axis.get("key")
        if axis_key is not None:
            expect(path, f"{where}.key", axis_key, str)
        levels: dict[str, dict[str, Any]] = {}
        for level, value in levels_raw.items():
            lwhere = f"{where}.levels.{level}"
            if not isinstance(level, str | int | float) or isinstance(level, bool):
                raise SweepError(path, lwhere, "level names are strings")
            level = check_name(path, lwhere, str(level))
            if level in levels:
                raise SweepError(path, lwhere, "duplicate level name")
            twin = next((other for other in levels if slug(other) == slug(level)), None)
            if twin is not None:
                raise SweepError(path, lwhere, f"levels {bounded_repr(twin)} and {bounded_repr(level)} would share the "
                                               f"run folder name {slug(level)!r}: rename one")
            if isinstance(value, dict):
                levels[level] = parse_overrides(path, lwhere, value)
            elif axis_key is None:
                raise SweepError(path, lwhere, f"a plain value ({bounded_repr(value)}) needs the axis to name its key "
                                               f"(e.g. key: model.pos_encoding), or give a mapping of overrides")
            else:
                levels[level] = {axis_key: check_config_value(path, lwhere, axis_key, value)}
        baseline = str(axis["baseline"])
        if baseline not in levels:
            raise SweepError(path, f"{where}.baseline", f"{bounded_repr(baseline)} is not a level; "
                                                        f"levels: {', '.join(levels)}")
        axes.append(Axis(name, baseline, levels))
    return axes


def check_name(path: Path, where: str, name: str) -> str:
    """Axis and level names: short enough for a folder name, printable (no newline or control character)."""
    if not name.strip() or len(name) > MAX_LEVEL_NAME or not name.isprintable():
        raise SweepError(path, where, f"{bounded_repr(name)}: names are 1 to {MAX_LEVEL_NAME} printable characters")
    return name


def check_cells(path: Path, sweep: Sweep) -> None:
    """Two cells never share a label or a folder-name prefix (slug); a slug fits in a folder name."""
    labels: dict[str, Cell] = {}
    slugs: dict[str, Cell] = {}
    for cell in sweep.cells:
        for seen, key in ((labels, cell.label), (slugs, slug(cell.label))):
            if key in seen:
                raise SweepError(path, "axes", f"cells {seen[key].label!r} and {cell.label!r} would share the label or "
                                               f"run folder name {key!r}: rename a level")
            seen[key] = cell
        if len(slug(cell.label)) > MAX_CELL_SLUG:
            raise SweepError(path, "axes", f"cell {bounded_repr(cell.label)}: its folder name would be longer than "
                                           f"{MAX_CELL_SLUG} characters; use shorter level names")


def parse_published(path: Path, raw: Any, labels: set[str]) -> dict[str, dict[str, float]]:
    if not isinstance(raw, dict):
        raise SweepError(path, "published", "expected a mapping of cell label -> {metric: number}")
    out = {}
    for label, values in raw.items():
        where = f"published.{label}"
        if str(label) not in labels:
            raise SweepError(path, where, f"not a cell of this sweep; cells: {', '.join(sorted(labels))}")
        if not isinstance(values, dict):
            raise SweepError(path, where, "expected a mapping of metric -> number")
        for metric, number in values.items():
            if metric not in METRICS:
                raise SweepError(path, f"{where}.{metric}", f"unknown metric; allowed: {', '.join(METRICS)}")
            if not isinstance(number, int | float) or isinstance(number, bool):
                raise SweepError(path, f"{where}.{metric}", f"expected a number, got {bounded_repr(number)}")
            if problem := value_problem(f"the published {metric}", number, METRIC_REGISTRY[metric].high):
                raise SweepError(path, f"{where}.{metric}", problem)
        out[str(label)] = {m: float(v) for m, v in values.items()}
    return out


def check_axis_conflicts(path: Path, sweep: Sweep) -> None:
    owner: dict[str, str] = {}
    for axis in sweep.axes:
        for key in {k for overrides in axis.levels.values() for k in overrides}:
            if key in owner and owner[key] != axis.name:
                raise SweepError(path, f"axes.{axis.name}", f"sets {key}, which axis {owner[key]!r} sets too")
            owner[key] = axis.name


def parse_published_recipe(path: Path, value: Any) -> str:
    """A shipped recipe's name, or "" (not said)."""
    name = expect(path, "published_recipe", value, str)
    if name and name not in list_recipes():
        raise SweepError(path, "published_recipe", f"{bounded_repr(name)} is not a recipe; the recipes are "
                                                   f"{', '.join(list_recipes())}")
    return name


def parse_cli_sets(items: Iterable[str]) -> dict[str, Any]:
    """--set key=value (value parsed as the sweep file's YAML: 0.1, 1e-4, true, null); checked like the file."""
    import yaml

    from ablations.spec.yamlio import StrictLoader, shape_problem

    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SweepError("--set", item, "expected key=value, e.g. --set optim.lr=0.1")
        try:
            value = text if shape_problem(text) else yaml.load(text, Loader=StrictLoader)  # noqa: S506 - safe loader
        except yaml.YAMLError:
            value = text
        out[key.strip()] = check_config_value(Path("--set"), key.strip(), key.strip(), value)
    return out


def parse_cli_grid(items: Iterable[str]) -> list[Axis]:
    """--grid key=v1,v2,...: one axis per flag, as Hydra's multirun sweeps a key; its levels are named by the
    values as written, each value checked like a --set value; the first value is the axis's baseline."""
    axes: list[Axis] = []
    keys: set[str] = set()
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        names = [v.strip() for v in text.split(",")]
        if not sep or not key or len(names) < 2 or not all(names):
            raise SweepError("--grid", item, "expected key=value,value,... with two values or more, e.g. --grid "
                                             "model.reduction=dwconv,avg")
        if key in keys:
            raise SweepError("--grid", key, "given twice; one --grid per key (its values comma-separated)")
        if len(set(names)) != len(names):
            raise SweepError("--grid", key, f"a value is listed twice: {','.join(names)}")
        keys.add(key)
        levels = {}
        for name in names:
            try:
                value = parse_cli_sets([f"{key}={name}"])[key]
            except InputError as err:
                raise SweepError("--grid", key, err.message) from None
            levels[check_name(Path("--grid"), key, name)] = {key: value}
        axes.append(Axis(key, names[0], levels))
    return axes


def with_grid(sweep: Sweep, grid: list[Axis]) -> Sweep:
    """The sweep with the command line's grid axes after its own: cells are the product, labelled from every
    axis's level. A key that the sweep's axes set is refused (the sweep varies it already). The paper's numbers
    belong to the sweep's own cells, so a grid's table shows none."""
    if not grid:
        return sweep
    owners = {key: axis.name for axis in sweep.axes for overrides in axis.levels.values() for key in overrides}
    for axis in grid:
        if axis.name in owners:
            raise SweepError("--grid", axis.name, f"axis {owners[axis.name]!r} of {sweep.path} varies it already")
    extended = replace(sweep, axes=[*sweep.axes, *grid], published={}, published_note="")
    check_cells(Path("--grid"), extended)
    return extended


# --------------------------------------------------------------------------------------------------------
# Expansion
# --------------------------------------------------------------------------------------------------------
def expand(
    sweep: Sweep, recipe, cli_overrides: dict[str, Any] | None = None, seeds: list[int] | None = None
) -> list[Run]:
    """Every cell x seed as a Run with its frozen config: recipe -> per-model -> sweep -> level -> CLI -> seed.

    `recipe` is an ablations.spec.recipe.Recipe. The base config is resolved once per model size; each run then
    only applies its own overrides.
    """
    cli_overrides = cli_overrides or {}
    runs, bases = [], {}
    for cell in sweep.cells:
        overrides = {"model.name": sweep.model, **sweep.overrides, **cell.overrides, **cli_overrides}
        model = overrides["model.name"]
        if model not in bases:
            bases[model] = with_overrides(RunConfig(), {**recipe.overrides, **recipe.per_model.get(model, {})})
        try:
            cell_config = pin_data_root(with_overrides(bases[model], overrides))
        except InputError as err:
            raise SweepError(sweep.path, f"cell {bounded_repr(cell.label)}", err.describe()) from None
        for seed in seeds if seeds is not None else sweep.seeds:
            config = with_overrides(cell_config, {"train.seed": seed})
            runs.append(Run(run_id_for(seed, config), cell, seed, config))
    seen: dict[str, Run] = {}
    for run in runs:  # two cells that compute the same thing would be one run shown twice
        if run.run_id in seen and seen[run.run_id].cell.label != run.cell.label:
            raise SweepError(sweep.path, "axes", f"cells {seen[run.run_id].cell.label!r} and {run.cell.label!r} are "
                                                 "the same run (their configs differ only in keys that do not change "
                                                 "what a run computes, or not at all): drop one of the levels")
        seen[run.run_id] = run
    return runs
