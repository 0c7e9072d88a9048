"""What a table or plot is about: one experiment, from a sweep file (cells, seeds, published numbers) or from
a results folder.

Either input resolves to a `Layout` through ablations.experiment, with the same selection flags as
ablations.run (--recipe, --set, --seeds, --data-root), so a table shows exactly the runs ablations.status
lists for the same flags. With a sweep file, rows come in the sweep's order and the paper's numbers are
known; with a bare results folder, rows and the baseline are read from each run's config.json meta, there
are no published numbers (unless `--sweep` names the file), and a folder holding several experiments is
refused unless the flags pick one.

Bad input raises `InputError` (ablations.spec.errors); `cli()` turns it into one paragraph on stderr and exit
code 2, without a traceback.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ablations import results_root, store
from ablations.cli import command as cli  # noqa: F401 - the analysis commands' wrapper
from ablations.cli import say
from ablations.experiment import (
    HARDWARE_KEYS,
    NO_SELECTION,
    ExperimentKey,
    Member,
    Selection,
    describe_groups,
    describe_others,
    experiments_in,
    plain_value,
    resolve,
    seeds_in,
    select_in_folder,
)
from ablations.spec.errors import InputError
from ablations.spec.metrics import DEFAULT_COLUMNS
from ablations.spec.sweep import parse_cli_grid, with_grid


@dataclass(frozen=True)
class CellSpec:
    label: str
    is_baseline: bool = False
    levels: tuple[tuple[str, str], ...] = ()  # (axis, its level) pairs, in the axes' order (() = not known)


@dataclass(frozen=True)
class Layout:
    """The rows, columns and reference numbers of one table; `cells` empty = take them from the runs."""

    name: str
    results_dir: Path
    paper_table: str | None = None
    cells: tuple[CellSpec, ...] = ()
    axes: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()  # the seeds the sweep asks for; () = unknown
    columns: tuple[str, ...] = DEFAULT_COLUMNS
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    sweep_path: Path | None = None
    run_dirs: tuple[Path, ...] | None = None  # the experiment's run folders (None: every one results_dir lists)
    run_meta: tuple[dict, ...] | None = None  # for each of run_dirs, the sweep's meta for it (cell, seed...)
    experiment: str | None = None  # "recipe quick with train.epochs=1"
    others: str | None = None  # one line naming the other experiments' runs in the same folder
    published_note: str | None = None  # the sweep's note on the paper's numbers, printed under the table
    published_recipe: str | None = None  # the recipe whose protocol the published numbers come from
    output_name: str | None = None  # the experiment's own folder under <results>/reports/ (tables, plots)
    key: ExperimentKey | None = None  # the experiment's recipe and command-line overrides

    @property
    def overrides(self) -> str:
        """The experiment's command-line overrides, "k=v, ..." ("" = the recipe as written)."""
        return overrides_text(self.key) if self.key else ""

    @property
    def protocol_overrides(self) -> str:
        """Those of the overrides that change the training protocol (not where or on what it runs)."""
        return overrides_text(self.key, protocol_only=True) if self.key else ""

    @property
    def source(self) -> str:
        return str(self.sweep_path or self.results_dir)


def is_sweep_file(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def load_layout(target: str | Path, sweep: str | Path | None = None, results_root: str | Path = "results",
                columns: tuple[str, ...] | None = None, selection: Selection = NO_SELECTION) -> Layout:
    """The experiment a sweep file (or a results folder `results/<sweep>/`, optionally with its sweep file) and
    the selection flags name."""
    target = Path(target)
    if not target.exists():
        raise InputError(f"{target}: no such file or folder. Give a sweep file (e.g. sweeps/pe.yaml) or a "
                         f"sweep's results folder (e.g. results/pe).")
    if target.is_file():
        if not is_sweep_file(target):
            raise InputError(f"{target}: not a sweep file (expected a .yaml sweep such as sweeps/pe.yaml) and "
                             f"not a results folder.")
        if sweep is not None:
            raise InputError(f"{target} is already a sweep file; --sweep {sweep} is only for a results folder.")
        experiment = read_experiment(target, selection, results_root)
        layout = layout_from_sweep(experiment.sweep, experiment.results_dir)
        layout = Layout(**{**layout.__dict__, "seeds": tuple(experiment.seeds),
                           "run_dirs": tuple(experiment.run_dir(r) for r in experiment.runs),
                           "run_meta": tuple(experiment.meta(r) for r in experiment.runs),
                           "experiment": experiment.key.describe(), "others": describe_others(experiment),
                           "output_name": experiment.key.folder_name(experiment.seeds), "key": experiment.key})
    else:
        check_results_folder(target)
        key, members = select_in_folder(target, selection)
        others = experiments_in(target, exclude={d for d, _ in members})
        base = layout_from_sweep(with_grid(read_sweep(Path(sweep)), parse_cli_grid(selection.grids)), target) \
            if sweep is not None else \
            Layout(name=target.resolve().name, results_dir=target)
        if sweep is not None:
            refuse_foreign_runs(target, sweep, base.name, members)
        seeds = selection.seeds if selection.seeds is not None else seeds_in(members)
        layout = Layout(**{**base.__dict__, "run_dirs": tuple(d for d, _ in members),
                           "run_meta": tuple(meta for _, meta in members), "experiment": key.describe(),
                           "others": f"other runs in {target}/: {describe_groups(others)}" if others else None,
                           "output_name": key.folder_name(seeds), "key": key})
        if selection.seeds is not None:
            layout = Layout(**{**layout.__dict__, "seeds": tuple(selection.seeds)})
    if columns:
        layout = Layout(**{**layout.__dict__, "columns": tuple(columns)})
    return layout


def refuse_foreign_runs(folder: Path, sweep_file: str | Path, sweep_name: str, members: list[Member]) -> None:
    """--sweep names the sweep whose cells and published numbers frame the table: runs the folder lists for
    another sweep would be shown beside numbers they are not about. InputError naming both."""
    foreign = sorted({str(meta.get("sweep")) for _, meta in members if meta.get("sweep") != sweep_name})
    if foreign:
        raise InputError(f"{folder}: its runs are of sweep {', '.join(map(repr, foreign))}, not of {sweep_name!r} "
                         f"({sweep_file}): they would be shown beside another sweep's cells and published numbers. "
                         f"Give --sweep the sweep file of {foreign[0]!r}, or the results folder of {sweep_name!r}.")


def overrides_text(key, protocol_only: bool = False) -> str:
    """An ExperimentKey's overrides as "k=v, ..." (values as given on the command line); with `protocol_only`
    those that change the protocol (HARDWARE_KEYS aside)."""
    return ", ".join(f"{k}={plain_value(v)}" for k, v in key.overrides
                     if not (protocol_only and k in HARDWARE_KEYS))


def output_dir(layout: Layout) -> Path:
    """Where an experiment's tables and plots go by default: a folder of its own, named from its identity
    (recipe, overrides, seeds), so another experiment's outputs are never overwritten."""
    return store.real_dir(layout.results_dir / "reports" / (layout.output_name or "all-runs"), 3)


def read_experiment(path: Path, selection: Selection, results_root: str | Path):
    """ablations.experiment.resolve, with a sweep file's own errors shown as such."""
    read_sweep(path)  # "not a valid sweep file: ..." for a bad file
    return resolve(path, selection, results_root)


def read_sweep(path: Path):
    """ablations.spec.sweep.load_sweep, imported here so the rest of analysis works without the sweep loader."""
    if not path.is_file():
        raise InputError(f"{path}: no such sweep file.")
    from ablations.spec.sweep import load_sweep

    try:
        return load_sweep(path)
    except InputError as err:  # the loader's own errors name the key at fault; show them as they are
        raise InputError(f"{path}: not a valid sweep file: {err}") from None


def layout_from_sweep(sweep, results_dir: Path) -> Layout:
    """`sweep` is an ablations.spec.sweep.Sweep."""
    cells = list(sweep.cells)
    axes = tuple(cells[0].levels) if cells else ()
    return Layout(
        name=sweep.name,
        results_dir=results_dir,
        paper_table=sweep.paper_table,
        published_note=getattr(sweep, "published_note", None) or None,
        published_recipe=getattr(sweep, "published_recipe", None) or None,
        cells=tuple(CellSpec(c.label, bool(c.is_baseline), tuple(c.levels.items())) for c in cells),
        axes=axes,
        seeds=tuple(sweep.seeds),
        columns=tuple(sweep.columns),
        published={k: dict(v) for k, v in sweep.published.items()},
        sweep_path=Path(sweep.path),
    )


def check_results_folder(folder: Path) -> None:
    """A sweep's results folder lists its runs (runs.jsonl) or holds run folders (each with a config.json, the
    earlier layout); say what it is otherwise."""
    if (folder / store.CONFIG).exists():
        raise InputError(f"{folder} is a single run folder; a table needs the sweep's results folder "
                         f"(e.g. results/pe) or its sweep file.")
    if folder.name == results_root.STORE:
        raise InputError(f"{folder} holds the runs of every sweep; a table is about one sweep: give its sweep file "
                         f"or its results folder, e.g. {folder.parent / 'pe'}.")
    if (folder / results_root.LEDGER).is_file():
        return
    with os.scandir(folder) as entries:
        children = [Path(e.path) for e in entries if e.is_dir()]
    if any((child / store.CONFIG).exists() for child in children):
        return
    nested = sorted(c.name for c in children if c.name != results_root.STORE and
                    ((c / results_root.LEDGER).is_file() or any(c.glob(f"*/{store.CONFIG}"))))
    if nested:
        raise InputError(f"{folder} holds several sweeps ({', '.join(nested)}); a table is about one: pass "
                         f"one of them, e.g. {folder / nested[0]}.")
    raise InputError(f"{folder}: no run folders here (no */{store.CONFIG}). Give a sweep file or the results "
                     f"folder of a sweep that has been launched, e.g. results/pe.")


def require_runs(layout: Layout) -> None:
    """InputError when nothing of the experiment exists yet: neither its sweep's folder nor any of its runs (a
    run another sweep launched counts: the table has that row)."""
    if not layout.results_dir.is_dir() and not any(Path(d).is_dir() for d in layout.run_dirs or ()):
        raise InputError(f"{layout.results_dir}: no such folder, and none of the runs of {layout.source} exists "
                         f"yet (launch it first, or pass --results-root).")


def warn(problems: list[str]) -> None:
    for problem in problems:
        say(f"warning: {problem}")


def note(layout: Layout) -> None:
    """Name, on stderr, the experiment shown and the other experiments' runs beside it (one line each)."""
    if layout.experiment:
        say(f"experiment: {layout.experiment} ({len(layout.run_dirs or ())} runs selected)")
    if layout.others:
        say(f"note: {layout.others}")
