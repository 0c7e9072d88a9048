"""Run folders -> one pandas DataFrame, one row per run. The only module that reads results from disk.

    df, problems = collect("results/pe")        # one row per run; problems: one warning per unreadable file
    curves = collect_curves("results/pe")       # one row per (run, epoch, metric)

Every knob of a run's config is a column of its own ("optim.lr", "model.pos_encoding", ...), so a notebook
can group by any of them. The learning curves are a separate long table, one row per (run, epoch, metric).
`python -m analysis.collect` is the command around them.

Reads config.json, metrics.jsonl, result.json and error.json through ablations.store's safe readers. A
corrupt or truncated file is reported (a warning naming it) and skipped: a run folder without a readable
config.json is left out (its cell is unknown); a bad result.json makes the run "partial"; a bad line of
metrics.jsonl is ignored. Nothing raises on file content.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported where it is used: --help answers without it
    import pandas as pd

from ablations import results_root, store
from ablations.spec.config import allowed_keys
from ablations.spec.metrics import METRICS, from_result
from ablations.spec.sweep import LABEL_SEPARATOR
from analysis.source import InputError

RUN_FILES = (store.CONFIG, store.METRICS, store.RESULT, store.ERROR, store.CHECKPOINT)
LIST_COLUMNS = ("curve_epoch", "curve_top1", "curve_val_loss")
COLUMNS = (
    # identity: where the run sits in its sweep's table
    "sweep", "cell", "baseline", "seed", "recipe", "overrides", "run_id", "levels", "paper_table",
    "origin",  # "<sweep> <cell>" the run was first launched for, when another sweep or cell reuses it
    # what it computes (from config.json)
    "model", "dataset", "img_size", "epochs", "batch_size",
    # how far it got
    "state", "epochs_done", "error", "error_epoch",
    # result.json: accuracies in percent, as the paper prints them
    "top1", "top5", "val_loss", "best_top1", "best_top5", "best_epoch", "ema_top1", "ema_top5",
    "params_m", "gflops", "gflops_total", "img_s", "device", "wall_time_s", "git_commit", "finished_at",
    # metrics.jsonl: the last epoch seen and the whole validation curve (lists, one entry per epoch)
    "last_epoch", "last_top1", *LIST_COLUMNS,
    "problems", "path",
    # every knob of config.json, flattened: "model.pos_encoding", "optim.lr", ...
    *allowed_keys(),
)
CURVE_COLUMNS = ("run_id", "sweep", "cell", "seed", "epoch", "metric", "value")


CONFIG_KEYS = tuple(allowed_keys())


def is_run_dir(path: Path) -> bool:
    with os.scandir(path) as entries:
        return any(e.name in RUN_FILES for e in entries)


def subdirs(path: Path) -> list[Path]:
    with os.scandir(path) as entries:
        return sorted(Path(e.path) for e in entries if e.is_dir() and not e.name.startswith("."))


Member = tuple[Path, dict | None]  # a run folder and the sweep's meta to show it under (None: its own)


def find_runs(target: Path) -> list[Member]:
    """A run folder; a sweep's folder (the runs it lists, each under the sweep's cell); the run store or any
    folder of run folders; or a results root (every run once, under the sweep and cell it was launched for)."""
    target = Path(target)
    if not target.is_dir():
        raise InputError(f"{target}: no such folder. Give a results folder (e.g. results or results/pe) or a "
                         f"single run folder.")
    if is_run_dir(target):
        return [(target, None)]
    children = subdirs(target)
    folders = [c for c in children if is_run_dir(c)]
    if (target / results_root.LEDGER).is_file() or folders:
        listed = results_root.members(target)
        seen = {run_dir for run_dir, _ in listed}  # and a folder of run files without a config.json, reported
        return [*listed, *((c, None) for c in folders if c not in seen)]
    return [(g, None) for c in children for g in subdirs(c) if is_run_dir(g)]


MAX_ORDERED_AXES = 6  # a run without meta.axes: its axes' order is found among at most 6! orders


def ordered_levels(meta: dict) -> dict:
    """The run's level of each axis, in the sweep's axis order: meta.axes keeps it (config.json and runs.jsonl
    keep an object's keys sorted); for a run written before meta.axes, the order whose level names joined make
    its cell label (the sorted order when none does)."""
    levels = meta.get("levels") if isinstance(meta.get("levels"), dict) else {}
    axes = meta.get("axes")
    if isinstance(axes, list) and sorted(map(str, axes)) == sorted(levels):
        return {str(axis): levels[str(axis)] for axis in axes}
    if 1 < len(levels) <= MAX_ORDERED_AXES:
        for order in itertools.permutations(levels):
            if LABEL_SEPARATOR.join(str(levels[axis]) for axis in order) == meta.get("cell"):
                return {axis: levels[axis] for axis in order}
    return levels


def number(value: Any) -> float:
    """A float, or NaN for anything that is not a finite-or-infinite real number (missing, None, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def numbers(values) -> list[float]:
    """number() over many values, inlined: a thousand runs of 300 epochs make this a hot loop."""
    return [float(v) if type(v) in (int, float) else math.nan for v in values]


def read_run(run_dir: Path, curves: bool = True, shown_as: dict | None = None) -> tuple[dict | None, list[str]]:
    """One DataFrame row for a run folder, or None (with the reason) when its config.json is unusable.

    shown_as: the sweep's meta for the run (its cell, seed, recipe...), where another sweep or cell may have
    launched it (its config.json's meta, then named in the "origin" column); None = its own meta.

    curves=False skips metrics.jsonl of finished runs (their curve columns are then None): a table needs
    only result.json, and parsing 300 epochs x 1,000 runs is most of the time (store.run_state does the same).
    """
    document, problem = store.read_json(run_dir / store.CONFIG)
    if problem is not None:  # outputs without a config.json say so (store.identity_problem)
        why = store.identity_problem(run_dir) or problem
        return None, [f"{why}; run folder skipped (its cell and seed are unknown)"]
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        return None, [f"{run_dir / store.CONFIG}: no 'config' mapping; run folder skipped"]
    own = document.get("meta") if isinstance(document.get("meta"), dict) else {}
    meta = shown_as if shown_as is not None else own
    first = (own.get("sweep"), own.get("cell"))
    section = {name: (config.get(name) if isinstance(config.get(name), dict) else {}) for name in
               ("model", "data", "train")}

    state = store.live_run_state(run_dir)
    status = state.state
    skip = status == store.DONE and not curves
    metrics = store.MetricsRead() if skip else store.read_epochs(run_dir / store.METRICS)
    if metrics.impossible and status == store.DONE:  # run_state decides "done" without parsing the rows
        status, state.error = store.CORRUPT, metrics.impossible[0]
    rows, metric_problems = metrics.rows, metrics.problems + metrics.impossible
    problems = list(dict.fromkeys(state.problems + metric_problems))
    # A resumed run may repeat an epoch it had logged before being stopped: the last line for an epoch wins.
    by_epoch = {r["epoch"]: r for r in rows if type(r.get("epoch")) in (int, float)}
    epochs = [by_epoch[e] for e in sorted(by_epoch)]

    row: dict[str, Any] = {
        "sweep": meta.get("sweep", run_dir.parent.name),
        "cell": str(meta.get("cell", "?")),
        "baseline": bool(meta.get("baseline", False)),
        "seed": section["train"].get("seed", meta.get("seed")),
        "recipe": meta.get("recipe", "unknown"),
        "overrides": json.dumps(meta.get("overrides") or {}, sort_keys=True),  # the --set of its launch
        "run_id": run_dir.name,
        "levels": json.dumps(ordered_levels(meta)),
        "paper_table": meta.get("paper_table"),
        "origin": None if not own or first == (meta.get("sweep"), meta.get("cell")) else f"{first[0]} {first[1]}",
        "model": section["model"].get("name"),
        "dataset": section["data"].get("dataset"),
        "img_size": section["data"].get("img_size"),
        "epochs": section["train"].get("epochs"),
        "batch_size": section["train"].get("batch_size"),
        "state": status,
        "epochs_done": state.epochs_done if skip else len(epochs),
        "last_epoch": number(epochs[-1]["epoch"]) if epochs else math.nan,
        "last_top1": number(epochs[-1].get("top1")) if epochs else math.nan,
        "curve_epoch": None if skip else [float(r["epoch"]) for r in epochs],
        "curve_top1": None if skip else numbers(r.get("top1") for r in epochs),
        "curve_val_loss": None if skip else numbers(r.get("val_loss") for r in epochs),
        "path": str(run_dir),
    }
    for key in CONFIG_KEYS:
        section_name, _, name = key.partition(".")
        values = config.get(section_name)
        row[key] = values.get(name) if isinstance(values, dict) else None
    if meta.get("cell") is None:
        problems.append(f"{run_dir / store.CONFIG}: no meta.cell; the run is shown under cell '?'")
    if status == store.CORRUPT:
        row["error"] = state.error
    if status == store.FAILED:
        error = store.read_error(run_dir) or {}
        row["error"] = state.error
        row["error_epoch"] = error.get("epoch")
    if status == store.DONE:
        row.update(result_fields(run_dir))
    row["problems"] = "; ".join(dict.fromkeys(problems))
    return row, problems


def result_fields(run_dir: Path) -> dict[str, Any]:
    """The numbers of a finished run; run_state has already checked that result.json parses."""
    result = store.read_result(run_dir) or {}
    final = result.get("final") if isinstance(result.get("final"), dict) else {}
    best = result.get("best") if isinstance(result.get("best"), dict) else {}
    ema = result.get("final_ema") if isinstance(result.get("final_ema"), dict) else {}  # train.ema runs only
    return {
        **{name: number(from_result(metric, result)) for name, metric in METRICS.items()},  # the table's metrics
        "val_loss": number(final.get("val_loss")),
        "best_top1": number(best.get("top1")),
        "best_top5": number(best.get("top5")),
        "best_epoch": number(best.get("epoch")),
        "ema_top1": number(ema.get("top1")),
        "ema_top5": number(ema.get("top5")),
        "gflops_total": number(result.get("macs_total")) / 1e9,
        "device": result.get("device"),
        "wall_time_s": number(result.get("wall_time_s")),
        "git_commit": result.get("git_commit"),
        "finished_at": result.get("finished_at"),
    }


def given_runs(target: str | Path, run_dirs, metas) -> list[Member]:
    """find_runs(target), or the run folders given (with the sweep's meta for each, if given) that exist."""
    if run_dirs is None:
        return find_runs(Path(target))
    metas = list(metas) if metas is not None else [None] * len(run_dirs)
    return [(Path(d), meta) for d, meta in zip(run_dirs, metas, strict=True) if Path(d).is_dir()]


def collect(target: str | Path, progress: bool | None = None, curves: bool = True,
            run_dirs: tuple[Path, ...] | list[Path] | None = None,
            metas: tuple[dict, ...] | list[dict] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Every run under `target` (or, given `run_dirs`, those of them that exist: one experiment's, each shown
    under its meta in `metas`) as one DataFrame (columns: COLUMNS), and the problems found on the way.

    progress: None = a bar on a terminal only. curves: see read_run.
    """
    from tqdm.auto import tqdm

    members = given_runs(target, run_dirs, metas)
    rows, problems = [], []
    for run_dir, meta in tqdm(members, desc="collect", unit="run", disable=None if progress is None else not progress,
                              leave=False, file=sys.stderr, mininterval=0.5):
        row, found = read_run(run_dir, curves, meta)
        problems += found
        if row is not None:
            rows.append(row)
    return frame(rows), problems


def collect_curves(target: str | Path, run_dirs: tuple[Path, ...] | list[Path] | None = None,
                   metas: tuple[dict, ...] | list[dict] | None = None) -> pd.DataFrame:
    """The learning curves of every run as one long table: run_id, sweep, cell, seed, epoch, metric, value,
    one row per numeric field of each metrics.jsonl line (train_loss, lr, val_loss, top1, top5, ...).

    A resumed run may repeat an epoch: the last line for an epoch wins, as in collect.
    """
    import pandas as pd

    records = []
    for run_dir, shown_as in given_runs(target, run_dirs, metas):
        meta = store.read_meta(run_dir)
        if meta is None:
            continue
        meta = shown_as if shown_as is not None else meta
        read = store.read_epochs(run_dir / store.METRICS)
        if read.impossible:  # a corrupt run (collect says so): none of its rows is a curve
            continue
        rows = read.rows
        by_epoch = {r["epoch"]: r for r in rows if type(r.get("epoch")) in (int, float)}
        ident = (run_dir.name, meta.get("sweep", run_dir.parent.name), str(meta.get("cell", "?")),
                 meta.get("seed"))
        for epoch in sorted(by_epoch):
            for metric, value in by_epoch[epoch].items():
                if metric != "epoch" and type(value) in (int, float):
                    records.append((*ident, int(epoch), metric, float(value)))
    df = pd.DataFrame(records, columns=list(CURVE_COLUMNS))
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    return df


def curves_path(path: Path) -> Path:
    """runs.csv -> runs_curves.csv: where the long curves table goes beside an export."""
    return path.with_name(f"{path.stem}_curves{path.suffix}")


def frame(rows: list[dict]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if df.empty:
        return df
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    return df


def export(df: pd.DataFrame, path: Path) -> None:
    """CSV (list columns as JSON text) or parquet (list columns native; needs pyarrow, a dependency)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"-o {path}: the folder {path.parent} does not exist; create it first or write elsewhere.")
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InputError(f"{path}: writing parquet needs pyarrow, which is not installed here. Install it "
                             f"(pip install pyarrow) or write CSV instead: -o {path.with_suffix('.csv')}") from None
        out = df.copy()
        for column in out.columns:  # config columns mix types (null / number / text): one type per column
            if out[column].dtype == object and column not in LIST_COLUMNS:
                out[column] = out[column].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
        out.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        from analysis.render import spreadsheet_safe  # a level named =HYPERLINK(...) is text, not a formula

        out = spreadsheet_safe(df)
        for column in LIST_COLUMNS:
            out[column] = out[column].map(lambda v: None if v is None else json.dumps(v))
        out.to_csv(path, index=False)
    else:
        raise InputError(f"{path}: unknown output format {path.suffix or '(none)'!r}; use .csv or .parquet.")


def export_curves(curves: pd.DataFrame, path: Path) -> None:
    """The long curves table as .csv or .parquet."""
    path = Path(path)
    if path.suffix == ".parquet":
        curves.to_parquet(path, index=False)
    else:
        curves.to_csv(path, index=False)


def read_export(path: Path) -> pd.DataFrame:
    """Read back an export (CSV list columns are decoded from JSON)."""
    import pandas as pd

    path = Path(path)
    with store.open_file(path, "rb", follow_links=True) as f:  # a regular file: a FIFO is refused, never waited on
        if path.suffix == ".parquet":
            return pd.read_parquet(f)
        df = pd.read_csv(f)
    for column in LIST_COLUMNS:
        df[column] = df[column].map(lambda v: json.loads(v) if isinstance(v, str) else None)
    return df
