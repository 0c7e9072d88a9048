"""Experiments: which run folders a command is about.

An experiment is a sweep file + a recipe + the command line's `--set` overrides (and `--data-root`) + seeds.
Every command that reads or writes runs (ablations.run / status / cancel, analysis.tables / plots / collect)
takes the same selection flags (`add_selection_flags`) and resolves them here, so they always agree on
which run folders belong to the experiment:

- given a sweep file, the experiment's runs are exactly the runs the sweep expands to (their ids are the
  hashes of their configs), wherever the results root holds them (ablations.results_root: a run another
  sweep launched is reused); no flags = the sweep as written. Other runs the sweep's folder lists belong to
  other experiments and are named in one line (`describe_others`);
- given only a sweep's results folder, the runs it lists are grouped by the experiment recorded for them
  (recipe + overrides); a folder holding several is refused unless the flags pick one.

Runs of one experiment differ only in their cell and seed, so a table or plot never mixes protocols.
Nothing here imports torch: `status` and `--help` answer instantly.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations import results_root, store
from ablations.results_root import RunIndex
from ablations.spec.errors import InputError
from ablations.spec.sweep import Run, Sweep, expand, load_sweep, parse_cli_grid, parse_cli_sets, with_grid

DEFAULT_RESULTS_ROOT = Path("results")


# ---- the flags -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What the selection flags say; None / () = not given."""

    recipe: str | None = None
    sets: tuple[str, ...] = ()
    seeds: tuple[int, ...] | None = None
    data_root: str | None = None
    typed: tuple[tuple[str, Any], ...] = ()  # (dotted key, value) from flags argparse has checked (--logger)
    grids: tuple[str, ...] = ()  # --grid key=v1,v2: axes added to the sweep's

    @property
    def given(self) -> bool:
        return bool(self.recipe or self.sets or self.seeds is not None or self.data_root or self.typed or self.grids)

    def grid(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The --grid axes as (key, level names), checked (a bad key or value raises InputError)."""
        return grid_key(parse_cli_grid(self.grids))

    def overrides(self) -> dict[str, Any]:
        """The dotted overrides the flags make (--set, the typed flags, then --data-root), checked."""
        cli = parse_cli_sets(self.sets)
        cli.update(self.typed)
        if self.data_root:
            cli["data.root"] = self.data_root
        return cli


def grid_key(axes) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """--grid axes (ablations.spec.sweep.Axis) as an experiment's identity knows them: (key, level names)."""
    return tuple((axis.name, tuple(axis.levels)) for axis in axes)


NO_SELECTION = Selection()  # no flags: the sweep as written


def add_sweeps_argument(parser: argparse.ArgumentParser) -> None:
    """The positional SWEEP... of the commands that take several sweeps (run, status, cancel, report)."""
    parser.add_argument("sweeps", nargs="+", type=Path, metavar="SWEEP",
                        help="sweep file(s) or study file(s), e.g. sweeps/pe.yaml or sweeps/paper-ablations.yaml: "
                             "several are one study (each run once)")


def add_selection_flags(parser: argparse.ArgumentParser, *, results_root: bool = True) -> None:
    group = parser.add_argument_group("which runs (the same flags as ablations.run)")
    group.add_argument("--recipe", help="training protocol by name or path (default: the sweep's recipe)")
    group.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="a config override for every run (repeatable), e.g. --set optim.lr=0.1")
    group.add_argument("--seeds", help="comma-separated seeds, replacing the sweep's (e.g. 0,1,2)")
    group.add_argument("--grid", dest="grids", action="append", default=[], metavar="KEY=V1,V2",
                       help="an axis added to the sweep's (repeatable: cells are the product), e.g. --grid "
                            "model.reduction=dwconv,avg")
    group.add_argument("--data-root", help="dataset folder (sets data.root; or set REST_DATA_ROOT)")
    if results_root:
        group.add_argument("--results-root", type=Path, default=DEFAULT_RESULTS_ROOT,
                           help="where sweeps keep their run folders (default: results/)")


def selection_from_args(args: argparse.Namespace) -> Selection:
    seeds = parse_seed_list(args.seeds) if getattr(args, "seeds", None) else None
    return Selection(getattr(args, "recipe", None), tuple(getattr(args, "sets", ()) or ()), seeds,
                     getattr(args, "data_root", None), grids=tuple(getattr(args, "grids", ()) or ()))


def parse_seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise InputError("--seeds", f"{text!r}: expected comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0 or max(seeds) >= 2**32:
        raise InputError("--seeds", f"{text!r}: expected distinct integers in [0, 2^32), e.g. --seeds 0,1,2")
    return tuple(seeds)


# keys that say what hardware runs the protocol, not what the protocol is
HARDWARE_KEYS = frozenset({"train.devices", "data.root", "train.logger", "train.keep_checkpoints"})


def plain_value(text: str) -> str:
    """An override's JSON as a person writes it on the command line: strings without their quotes."""
    value = json.loads(text)
    return value if isinstance(value, str) else text


# ---- what identifies an experiment in a run folder -------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class ExperimentKey:
    """The recipe and command-line overrides a run was launched with (its config.json meta)."""

    recipe: str
    overrides: tuple[tuple[str, str], ...] = ()  # sorted (dotted key, JSON value)
    grid: tuple[tuple[str, tuple[str, ...]], ...] = ()  # --grid axes: (key, level names), in order

    @classmethod
    def of(cls, recipe: str, overrides: dict[str, Any], grid=()) -> ExperimentKey:
        """Keys outside the run id (train.logger, train.keep_checkpoints...) do not make another experiment."""
        from ablations.spec.config import NOT_IDENTITY

        def in_identity(key: str) -> bool:
            section, _, name = key.partition(".")
            return name not in NOT_IDENTITY.get(section, ())

        kept = {k: v for k, v in overrides.items() if in_identity(k)}
        return cls(recipe, tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in kept.items())),
                   tuple((str(k), tuple(map(str, names))) for k, names in grid))

    @classmethod
    def from_meta(cls, meta: dict) -> ExperimentKey:
        overrides, grid = meta.get("overrides"), meta.get("grid")
        # [[key, [names]], ...] in the launch's order (a JSON object would come back sorted: another grid)
        grid = [tuple(pair) for pair in grid if isinstance(pair, list) and len(pair) == 2
                and isinstance(pair[1], list)] if isinstance(grid, list) else []
        return cls.of(str(meta.get("recipe", "unknown")), overrides if isinstance(overrides, dict) else {}, grid)

    def grid_flags(self) -> list[str]:
        return [f"--grid {key}={','.join(names)}" for key, names in self.grid]

    def describe(self) -> str:
        sets = ", ".join(f"{k}={plain_value(v)}" for k, v in self.overrides)
        grid = "; ".join(f"grid {key}={','.join(names)}" for key, names in self.grid)
        return f"recipe {self.recipe}" + (f" with {sets}" if sets else "") + (f"; {grid}" if grid else "")

    def flags(self) -> str:
        """The selection flags that pick this experiment."""
        return " ".join([f"--recipe {self.recipe}", *(f"--set {k}={v}" for k, v in self.overrides),
                         *self.grid_flags()])

    def folder_name(self, seeds: Iterable[int]) -> str:
        """The name of the folder that holds this experiment's tables and plots for these seeds: the recipe,
        every override and the seeds, readable, and with overrides a hash of their exact values (so two
        experiments never share a folder, whatever characters their values hold); cut when long."""
        readable = "+".join([self.recipe, *(f"{k}={plain_value(v)}" for k, v in self.overrides),
                             *(f"grid-{k}={','.join(names)}" for k, names in self.grid)])
        readable = re.sub(r"[^A-Za-z0-9_.,=+-]", "~", readable)[:90]
        seeds = "_seeds-" + "-".join(map(str, sorted(seeds)))
        if not self.overrides and not self.grid:
            return readable + seeds
        exact = json.dumps([self.recipe, list(self.overrides)] + ([list(self.grid)] if self.grid else []))
        return f"{readable}~{hashlib.sha256(exact.encode()).hexdigest()[:8]}{seeds}"


# ---- an experiment from a sweep file ---------------------------------------------------------------------------------
@dataclass
class Experiment:
    sweep: Sweep
    recipe: Any  # ablations.spec.recipe.Recipe
    overrides: dict[str, Any]  # from the command line
    seeds: list[int]
    runs: list[Run]
    results_dir: Path  # results/<sweep>/: the experiment's tables and the list of the runs it uses
    index: RunIndex  # where the results root holds each run (results/runs/, or a folder of the earlier layout)
    key: ExperimentKey = field(init=False)

    grid: tuple[tuple[str, tuple[str, ...]], ...] = ()  # the --grid axes (key, level names)

    def __post_init__(self) -> None:
        self.key = ExperimentKey.of(self.recipe.name, self.overrides, self.grid)

    @property
    def store_dir(self) -> Path:
        """results/runs/: where new runs go and SLURM submissions are made from, for every sweep."""
        return results_root.store_dir(self.index.root)

    def run_dir(self, run: Run) -> Path:
        return self.index.locate(run.run_id)

    def meta(self, run: Run) -> dict[str, Any]:
        """config.json's meta: where the run sits in its sweep, and the experiment it belongs to."""
        meta = {**self.sweep.meta(run, self.recipe.name), "overrides": dict(self.overrides)}
        return {**meta, "grid": [[key, list(names)] for key, names in self.grid]} if self.grid else meta

    def describe(self) -> str:
        return f"sweep {self.sweep.name}, {self.key.describe()}"

    def job_name(self) -> str:
        """The SLURM job name of the experiment's jobs: the sweep's name and a hash of what sets the experiment
        apart from every other (its results folder, recipe and identity overrides; not its seeds, which the
        runs of one experiment differ by). status and cancel find the experiment's jobs by it (squeue -n) even
        where no file recorded their ids: a submission that died between sbatch and writing them."""
        identity = json.dumps([str(self.results_dir.resolve()), self.key.recipe, list(self.key.overrides)]
                              + ([list(self.key.grid)] if self.key.grid else []))
        return f"{self.sweep.name}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


def launch_job_name(experiments: list[Experiment]) -> str:
    """The SLURM job name of a launch: its experiment's; for several sweeps (a study), one name for the study,
    which status and cancel given the same sweeps look for too (a job no file recorded is found by it)."""
    if len(experiments) == 1:
        return experiments[0].job_name()
    names = json.dumps([experiment.job_name() for experiment in experiments])
    return f"study-{hashlib.sha256(names.encode()).hexdigest()[:10]}"


def resolve(sweep_path: Path | str, selection: Selection = NO_SELECTION,
            root: Path | str = DEFAULT_RESULTS_ROOT) -> Experiment:
    """The experiment the sweep file and flags name; InputError for anything wrong (nothing is written)."""
    from ablations.spec.recipe import load_recipe

    sweep = load_sweep(sweep_path)
    try:
        recipe = load_recipe(selection.recipe or sweep.recipe)
    except InputError as err:
        if selection.recipe:
            raise InputError("--recipe", err.describe()) from None
        raise InputError(sweep.path, "recipe", err.describe()) from None
    overrides = selection.overrides()
    grid = parse_cli_grid(selection.grids)
    if clash := sorted({axis.name for axis in grid} & set(overrides)):
        raise InputError("--grid", clash[0], "--set gives it one value and --grid several: keep one of them")
    sweep = with_grid(sweep, grid)
    seeds = list(selection.seeds) if selection.seeds is not None else list(sweep.seeds)
    runs = expand(sweep, recipe, overrides, seeds)
    experiment = Experiment(sweep, recipe, overrides, seeds, runs, Path(root) / sweep.name, RunIndex.scan(root),
                            grid_key(grid))
    refuse_links(experiment)
    return experiment


def refuse_links(experiment: Experiment) -> None:
    """A symbolic link where the experiment's folders are (results/runs, its .submitit/ and .code/, results/<sweep>,
    its reports/, or a folder named as one of its runs) would carry runs out of the results root, or run code from
    elsewhere: InputError naming it, before anything is read or written. The results root itself may be a link.
    Links inside the run folders a launch will write are refused by checks.check_run_folders."""
    store_dir = experiment.store_dir
    folders = [store_dir, store_dir / ".submitit", store_dir / ".code", experiment.results_dir,
               experiment.results_dir / "reports"]
    hashes = (results_root.config_hash(run.run_id) for run in experiment.runs)
    link = next((folder for folder in folders if folder.is_symlink()), None) or \
        next((experiment.index.links[h] for h in hashes if h in experiment.index.links), None)
    if link is not None:
        raise InputError(link, "<folder>", store.LINK_UNDER_ROOT)




# ---- the other experiments in a results folder -----------------------------------------------------------------------
Member = tuple[Path, dict]  # a run folder, with the sweep's meta for it (cell, seed, recipe, overrides)


def experiments_in(results_dir: Path, exclude: set[Path] = frozenset()) -> dict[ExperimentKey, list[Member]]:
    """The runs a sweep folder's experiments use (except the run folders in `exclude`), grouped by experiment."""
    groups: dict[ExperimentKey, list[Member]] = defaultdict(list)
    for run_dir, meta in results_root.members(results_dir):
        if run_dir not in exclude:
            groups[ExperimentKey.from_meta(meta)].append((run_dir, meta))
    return dict(sorted(groups.items()))


MAX_GROUPS_NAMED = 3  # "other runs here" names a few experiments, then counts the rest


def seeds_in(members: list[Member]) -> list[int]:
    return sorted({seed for _, meta in members if isinstance(seed := meta.get("seed"), int)})


def describe_groups(groups: dict[ExperimentKey, list[Member]], same: ExperimentKey | None = None) -> str:
    parts = []
    for key, dirs in list(groups.items())[:MAX_GROUPS_NAMED]:
        what = ("not in the sweep as written (an earlier version of the file, or other seeds)" if key == same
                else key.describe())
        parts.append(f"{len(dirs)} run{'s' if len(dirs) != 1 else ''} {what}")
    rest = list(groups.values())[MAX_GROUPS_NAMED:]
    if rest:
        runs = sum(map(len, rest))
        parts.append(f"and {runs} run{'s' if runs != 1 else ''} of {len(rest)} more "
                     f"experiment{'s' if len(rest) > 1 else ''}")
    return "; ".join(parts)


def describe_others(experiment: Experiment) -> str | None:
    """One line naming the run folders beside the experiment's that belong to other experiments (or to other
    seeds of this one), with the flags that select the first of them, or None."""
    others = experiments_in(experiment.results_dir, exclude={experiment.run_dir(r) for r in experiment.runs})
    if not others:
        return None
    key, dirs = next(iter(others.items()))
    seeds = seeds_in(dirs)
    if key == experiment.key:  # the same experiment, other seeds: the flags that add them
        seeds = sorted(set(seeds) | set(experiment.seeds))
    # --seeds unless they are the ones a command without it selects (the sweep's)
    hint = key.flags() + (f" --seeds {','.join(map(str, seeds))}" if seeds and seeds != sorted(experiment.sweep.seeds)
                          else "")
    return (f"other runs in {experiment.results_dir}/: {describe_groups(others, experiment.key)} "
            f"(select them with the flags they were launched with, e.g. {hint})")


def select_in_folder(results_dir: Path, selection: Selection) -> tuple[ExperimentKey, list[Member]]:
    """The one experiment of a bare results folder that the flags pick; InputError when it is ambiguous."""
    groups = experiments_in(results_dir)
    if not groups:
        raise InputError(results_dir, "<folder>", f"no runs here (no */config.json, no {results_root.LEDGER})")
    if selection.given:
        wanted = selection.overrides() if (selection.sets or selection.data_root or selection.typed) else {}
        grid = selection.grid()
        matching = {k: v for k, v in groups.items()
                    if (selection.recipe is None or k.recipe == Path(selection.recipe).stem)
                    and k == ExperimentKey.of(k.recipe, wanted, grid)}
    else:
        matching = groups
    if len(matching) == 1:
        key, dirs = next(iter(matching.items()))
        if selection.seeds is not None:
            dirs = [(d, meta) for d, meta in dirs if meta.get("seed") in selection.seeds]
        return key, dirs
    listing = "; ".join(f"{key.describe()} ({len(dirs)} runs, pick with {key.flags()})" for key, dirs in groups.items())
    if not matching:
        raise InputError(results_dir, "<folder>", f"no runs match the flags given; the folder holds: {listing}")
    recipes = Counter(k.recipe for k in matching)
    kind = "training recipes" if len(recipes) > 1 else "experiments"
    raise InputError(results_dir, "<folder>",
                     f"refusing to mix {kind} in one table: the run folders hold {len(matching)} experiments: "
                     f"{listing}. Numbers from different protocols are not comparable; pick one, or give the "
                     f"sweep file with the flags it was launched with.")
