"""A results root: where every run lives, and which sweeps use it.

    results/
        runs/<model>-s<seed>-<hash>/     every run, once: its folder is named by its config's hash (ablations.store)
        runs/.submitit/ .code/           SLURM submissions, whichever sweep made them (one submission lock)
        <sweep>/runs.jsonl               the runs the sweep's experiments use: one line per (run, cell, experiment)
        <sweep>/reports/<experiment>/    tables and plots
        <sweep>/<cell>-s<seed>-<hash>/   a run folder of the earlier per-sweep layout: read and resumed in place
        reports/<study>/<experiment>/    a report of several sweeps (analysis.report)

A run is its config: two sweeps whose cells expand to the same config (the ResT-Lite baseline is a row of
five ablation tables) find the same folder, so it is trained once, whichever sweep launches it first or at
the same moment (the run lock and the shared submission lock see to that). config.json's meta records where
the run was first launched (its origin); the sweep's own cell and seed come from the sweep's expansion, or,
for a bare sweep folder, from its runs.jsonl.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ablations import store

STORE = "runs"  # a sweep may not take these names (ablations.spec.sweep)
REPORTS = "reports"  # results/reports/<study>/: reports of several sweeps (analysis.report)
LEDGER = "runs.jsonl"
RUN_FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}-[0-9a-f]{10}")  # <readable prefix>-<config hash>
LEDGER_ENTRY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}/" + RUN_FOLDER.pattern)  # "<folder>/<run folder>"


def store_dir(results_root: Path | str) -> Path:
    return Path(results_root) / STORE


def config_hash(run_folder_name: str) -> str:
    return run_folder_name.rsplit("-", 1)[-1]


def _progress(run_dir: Path) -> tuple:
    """How far a run folder got: done first, then the most epochs; a folder in the store wins a tie."""
    state = store.run_state(run_dir)
    return state.state == store.DONE, state.state != store.CORRUPT, state.epochs_done, run_dir.parent.name == STORE


@dataclass
class RunIndex:
    """The run folders of a results root by config hash: the store's, and those of the earlier layout in the
    sweep folders. Scanned once per command, names only (planning 10,000 runs reads no file here)."""

    root: Path
    by_hash: dict[str, list[str]] = field(default_factory=dict)  # hash -> "<folder>/<run folder>", store first
    links: dict[str, Path] = field(default_factory=dict)  # hash -> a symbolic link named as a run folder (refused)

    @classmethod
    def scan(cls, results_root: Path | str) -> RunIndex:
        root = Path(results_root)
        index = cls(root)
        folders = [STORE, *sorted(name for name in _subfolder_names(root) if name != STORE)]
        for folder in folders:
            for name in _subfolder_names(root / folder):
                if RUN_FOLDER.fullmatch(name):
                    index.by_hash.setdefault(config_hash(name), []).append(f"{folder}/{name}")
            for name in _subfolder_names(root / folder, links=True):
                if RUN_FOLDER.fullmatch(name):
                    index.links.setdefault(config_hash(name), root / folder / name)
        return index

    def exists(self, run_id: str) -> bool:
        """Whether a folder of this run exists (in the store or the earlier layout)."""
        return config_hash(run_id) in self.by_hash

    def locate(self, run_id: str) -> Path:
        """The folder of the run with this id: the one that exists (in the store, or a sweep folder of the
        earlier layout; of several, the one with a config.json that got furthest), else where the store will
        hold it."""
        found = self.by_hash.get(config_hash(run_id))
        if not found:
            return store_dir(self.root) / run_id
        if len(found) == 1:
            return self.root / found[0]
        candidates = [self.root / name for name in found if (self.root / name / store.CONFIG).is_file()]
        return max(candidates, key=_progress) if candidates else self.root / found[0]


def _subfolder_names(folder: Path, links: bool = False) -> list[str]:
    """Names of the folders directly in `folder` (not hidden, not links), or with `links` of its symbolic links;
    [] if it is not a folder."""
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if not e.name.startswith(".")
                    and (e.is_symlink() if links else e.is_dir(follow_symlinks=False))]
    except (FileNotFoundError, NotADirectoryError):
        return []


# ---- which runs a sweep uses -------------------------------------------------------------------------------------
def ledger_name(run_dir: Path) -> str:
    """A run folder as runs.jsonl names it: relative to the results root ("runs/<run id>")."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def record_members(sweep_dir: Path, members: Iterable[tuple[Path, dict]]) -> None:
    """Add (run folder, the sweep's meta for it) pairs to <sweep_dir>/runs.jsonl, those not there yet, in one
    appended write (concurrent launches interleave whole lines)."""
    sweep_dir = Path(sweep_dir)
    known = {(row.get("run"), json.dumps(row.get("meta"), sort_keys=True))
             for row in store.read_metrics(sweep_dir / LEDGER).rows}
    lines = []
    for run_dir, meta in members:
        name = ledger_name(run_dir)
        if (name, json.dumps(meta, sort_keys=True)) not in known:
            known.add((name, json.dumps(meta, sort_keys=True)))
            lines.append(json.dumps({"run": name, "meta": meta}, sort_keys=True, allow_nan=False) + "\n")
    if not lines:
        return
    store.real_dir(sweep_dir, 1)
    if not store.ends_cleanly(sweep_dir / LEDGER):  # a line cut by a crash: end it, or it swallows the next
        lines.insert(0, "\n")
    with store.open_file(sweep_dir / LEDGER, "ab") as f:
        f.write("".join(lines).encode())
        f.flush()
        os.fsync(f.fileno())


def members(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """The run folders a sweep folder's experiments use, each with the sweep's meta for it (cell, seed, recipe,
    overrides): the run folders of the earlier layout inside it, then those runs.jsonl names (a line naming
    anything but "<folder>/<run folder>" in the same results root, or a folder that no longer holds a
    config.json, is skipped). A run used by two experiments of the sweep is listed once for each."""
    sweep_dir = Path(sweep_dir)
    found: dict[tuple[Path, str], dict] = {}
    for run_dir in store.run_dirs_in(sweep_dir):
        meta = store.read_meta(run_dir) or {}
        found[(run_dir, _experiment_of(meta))] = meta
    for row in store.read_metrics(sweep_dir / LEDGER).rows:
        name, meta = row.get("run"), row.get("meta")
        if not isinstance(name, str) or not LEDGER_ENTRY.fullmatch(name) or not isinstance(meta, dict):
            continue
        run_dir = sweep_dir.parent / name
        if not run_dir.parent.is_symlink() and not run_dir.is_symlink() and (run_dir / store.CONFIG).is_file():
            found[(run_dir, _experiment_of(meta))] = meta  # a link could lead out of the results root: not read
    return [(run_dir, meta) for (run_dir, _), meta in found.items()]


def _experiment_of(meta: dict) -> str:
    return json.dumps([meta.get("recipe"), meta.get("overrides"), meta.get("grid"), meta.get("cell"), meta.get("seed")],
                      sort_keys=True)


def origin(run_dir: Path, meta: dict) -> str | None:
    """Where a run used under `meta` (a sweep's cell) was first launched, "<sweep> <cell>", when that is another
    sweep or cell (a reused run); None when it is this one's own, or its config.json cannot be read."""
    first = store.read_meta(run_dir)
    if not first:
        return None
    if (first.get("sweep"), first.get("cell")) == (meta.get("sweep"), meta.get("cell")):
        return None
    return f"{first.get('sweep', '?')} {first.get('cell', '?')}"
