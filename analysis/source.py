"""What a table is about: a sweep file (cells, seeds, published numbers) or just a results folder.

Either input resolves to a `Layout`. With a sweep file, rows come in the sweep's order and the paper's
numbers are known; with a bare results folder, rows and the baseline are read from each run's config.json
meta and there are no published numbers (unless `--sweep` names the file).

Bad input raises `InputError`, whose message is one paragraph for the user; `cli()` turns it into that
paragraph on stderr and exit code 2, without a traceback.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ablations import store

DEFAULT_COLUMNS = ("top1", "top5")
EXIT_BAD_INPUT = 2


class InputError(Exception):
    """Bad input (missing folder, not a sweep, mixed recipes...): the message is shown as is, exit code 2."""


@dataclass(frozen=True)
class CellSpec:
    label: str
    is_baseline: bool = False


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

    @property
    def source(self) -> str:
        return str(self.sweep_path or self.results_dir)


def is_sweep_file(path: Path) -> bool:
    return path.suffix.lower() in (".yaml", ".yml")


def load_layout(target: str | Path, sweep: str | Path | None = None, results_root: str | Path = "results",
                columns: tuple[str, ...] | None = None) -> Layout:
    """A sweep file, or a results folder `results/<sweep>/` (optionally with its sweep file)."""
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
        sweep_obj = read_sweep(target)
        layout = layout_from_sweep(sweep_obj, Path(results_root) / sweep_obj.name)
    else:
        check_results_folder(target)
        if sweep is not None:
            layout = layout_from_sweep(read_sweep(Path(sweep)), target)
        else:
            layout = Layout(name=target.resolve().name, results_dir=target)
    if columns:
        layout = Layout(**{**layout.__dict__, "columns": tuple(columns)})
    return layout


def read_sweep(path: Path):
    """ablations.spec.load_sweep, imported here so the rest of analysis works without the sweep loader."""
    if not path.is_file():
        raise InputError(f"{path}: no such sweep file.")
    try:
        from ablations.spec import load_sweep
    except ImportError as err:  # the loader is developed alongside; a results folder still works
        raise InputError(f"{path}: cannot read sweep files here ({err}); pass the sweep's results folder "
                         f"instead, e.g. results/<sweep>.") from None
    try:
        return load_sweep(path)
    except Exception as err:  # the loader's own errors name the key at fault; show them as they are
        raise InputError(f"{path}: not a valid sweep file: {err}") from None


def layout_from_sweep(sweep, results_dir: Path) -> Layout:
    """`sweep` is an ablations.spec.Sweep."""
    cells = list(sweep.cells)
    axes = tuple(cells[0].levels) if cells else ()
    return Layout(
        name=sweep.name,
        results_dir=results_dir,
        paper_table=sweep.paper_table,
        cells=tuple(CellSpec(c.label, bool(c.is_baseline)) for c in cells),
        axes=axes,
        seeds=tuple(sweep.seeds),
        columns=tuple(sweep.columns),
        published={k: dict(v) for k, v in sweep.published.items()},
        sweep_path=Path(sweep.path),
    )


def check_results_folder(folder: Path) -> None:
    """A sweep's results folder holds run folders (each with a config.json); say what it is otherwise."""
    if (folder / store.CONFIG).exists():
        raise InputError(f"{folder} is a single run folder; a table needs the sweep's results folder, "
                         f"{folder.parent}.")
    with os.scandir(folder) as entries:
        children = [Path(e.path) for e in entries if e.is_dir()]
    if any((child / store.CONFIG).exists() for child in children):
        return
    nested = sorted(c.name for c in children if any(c.glob(f"*/{store.CONFIG}")))
    if nested:
        raise InputError(f"{folder} holds several sweeps ({', '.join(nested)}); a table is about one: pass "
                         f"one of them, e.g. {folder / nested[0]}.")
    raise InputError(f"{folder}: no run folders here (no */{store.CONFIG}). Give a sweep file or the results "
                     f"folder of a sweep that has been launched, e.g. results/pe.")


def cli(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
    """Wrap a CLI main: InputError -> its paragraph on stderr and exit code 2, no traceback."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT

    wrapped.__doc__ = main.__doc__
    return wrapped


def warn(problems: list[str]) -> None:
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
