"""A sweep's table as data: one row per cell, ours (mean ± std over seeds) beside the published value.

Every row is compared with the baseline row: the difference with a 95 % confidence interval (paired by seed
when the seeds match, Welch otherwise; see analysis.stats), marked "n.s." when the interval contains 0.
Failed, running and missing cells are rows that say so. analysis.render turns a Table into text;
analysis.figures into plots; analysis.tables is the command.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where it is used: --help answers without it
    import pandas as pd

from ablations import store
from ablations.spec.metrics import COMPARED, PAPER_DEVICE_CLASS, device_class
from ablations.spec.metrics import METRICS as REGISTRY
from analysis.source import CellSpec, InputError, Layout
from analysis.stats import compare, summarize
from rest_knobs import REDUCTIONS, STEMS, VARIANTS, inert_attention

# metric -> (header, decimals), from the one registry. Accuracies are in percent, as result.json and the
# paper give them. Only accuracies vary with the seed (COMPARED): params/FLOPs are fixed by the architecture,
# throughput by the machine.
METRICS = {name: (m.header, m.decimals) for name, m in REGISTRY.items()}
NOT_DONE = (store.FAILED, store.RUNNING, store.PARTIAL, store.NEW)


@dataclass
class Table:
    layout: Layout
    title: str
    protocol: dict[str, str]  # recipe, dataset, epochs, img_size, device, model, seeds: what "ours" means
    baseline: str | None
    rows: pd.DataFrame  # one row per cell; the columns are described in build_rows
    notes: list[str] = field(default_factory=list)  # shown under the table (failures, order, legend)
    problems: list[str] = field(default_factory=list)  # warnings for stderr
    levels: dict[str, dict[str, str]] = field(default_factory=dict)  # cell label -> {axis: its level}

    @property
    def columns(self) -> tuple[str, ...]:
        return self.layout.columns

    @property
    def compared(self) -> tuple[str, ...]:
        return tuple(m for m in self.columns if m in COMPARED)


# ----------------------------------------------------------------------------------------------------------
# Selecting the runs of one table
# ----------------------------------------------------------------------------------------------------------
def select_runs(df: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The runs of this table: the experiment's run folders (all of them when the layout does not say)."""
    if df.empty or layout.run_dirs is None:
        return df
    wanted = {str(p) for p in layout.run_dirs}
    return df[df["path"].isin(wanted)]


def cell_specs(runs: pd.DataFrame, layout: Layout) -> tuple[list[CellSpec], list[str], list[str]]:
    """Rows in table order: the sweep's cells, then cells found only in run folders. (specs, notes, problems)"""
    notes, problems = [], []
    labels_in_runs = list(dict.fromkeys(runs["cell"])) if len(runs) else []
    if layout.cells:
        specs = list(layout.cells)
        known = {c.label for c in specs}
        extra = [label for label in labels_in_runs if label not in known]
        for label in extra:
            specs.append(CellSpec(label, False))
            problems.append(f"{layout.results_dir}: runs of cell {label!r}, which {layout.sweep_path} does not "
                            f"list; shown as an extra row")
        if extra:
            notes.append(f"Rows {', '.join(extra)}: run folders of cells that the sweep file does not list.")
        return specs, notes, problems
    baseline_labels = list(dict.fromkeys(runs.loc[runs["baseline"].astype(bool), "cell"]))
    if len(baseline_labels) > 1:
        problems.append(f"{layout.results_dir}: several cells claim to be the baseline ({', '.join(baseline_labels)}); "
                        f"using {baseline_labels[0]!r}")
    baseline = baseline_labels[0] if baseline_labels else None
    notes.append("Row order: alphabetical (no sweep file given; pass --sweep for the paper's order and numbers).")
    return [CellSpec(label, label == baseline) for label in sorted(labels_in_runs, key=str.casefold)], notes, problems


def per_seed(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One run per seed: a finished one if any (the latest), else the furthest along. Duplicates are reported."""
    problems = []
    rank = {state: i for i, state in enumerate(store.STATE_ORDER)}  # done first, then the furthest along
    ordered = runs.assign(_rank=runs["state"].map(rank).fillna(5)).sort_values(
        ["_rank", "finished_at", "epochs_done"], ascending=[True, False, False], na_position="last")
    for (cell, seed), group in ordered.groupby(["cell", "seed"], sort=False, dropna=False):
        if len(group) > 1:
            problems.append(f"cell {cell!r} seed {seed}: {len(group)} run folders ({', '.join(group['run_id'])}), "
                            f"probably from different overrides; using {group['run_id'].iloc[0]} "
                            f"({group['state'].iloc[0]}, the latest finished or furthest along)")
    return ordered.drop_duplicates(["cell", "seed"]).drop(columns="_rank"), problems


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------
def build_table(df: pd.DataFrame, layout: Layout) -> Table:
    """A pure function of the collected DataFrame and the layout."""
    runs = select_runs(df, layout)
    specs, notes, problems = cell_specs(runs, layout)
    if not specs:
        raise InputError(f"{layout.results_dir}: no run folder there could be read (see the warnings above), and "
                         f"no sweep file lists the cells: nothing to tabulate.")
    runs, duplicates = per_seed(runs) if len(runs) else (runs, [])
    baseline = next((c.label for c in specs if c.is_baseline), None)
    rows = build_rows(runs, specs, layout, baseline)
    levels = {spec.label: dict(spec.levels) or recorded_levels(runs, spec.label) for spec in specs}
    notes += failure_notes(runs)
    if layout.published_note and layout.published:
        notes.append(f"Paper's numbers: {layout.published_note}")
    title = layout.paper_table or first(runs, "paper_table") or f"Sweep {layout.name}"
    if not layout.axes and len(runs):  # no sweep file: the axis names come from the runs' meta.levels
        layout = replace(layout, axes=tuple(json.loads(first(runs, "levels") or "{}")))
    return Table(layout, title, protocol(runs, layout), baseline, rows, notes, problems + duplicates, levels)


def recorded_levels(runs: pd.DataFrame, label: str) -> dict[str, str]:
    """A cell's {axis: level} as its runs' meta recorded them (a row that no sweep file lists)."""
    recorded = first(runs[runs["cell"] == label], "levels") if len(runs) else None
    return {str(axis): str(level) for axis, level in json.loads(recorded).items()} if recorded else {}


def values_by_seed(runs: pd.DataFrame, metric: str) -> dict[int, float]:
    import pandas as pd

    done = runs[runs["state"] == store.DONE]
    return {int(s): float(v) for s, v in zip(done["seed"], done[metric], strict=True) if pd.notna(s)}


def build_rows(runs: pd.DataFrame, specs: list[CellSpec], layout: Layout, baseline: str | None) -> pd.DataFrame:
    """Columns: cell, baseline, n, n_failed, n_running, n_partial, n_missing, seeds, status; per metric m:
    m_mean, m_std, m_n, m_paper, m_vs_paper; per accuracy m: m_delta, m_ci_low, m_ci_high, m_ci_method,
    m_ci_contains_zero, m_ci_note."""
    import pandas as pd

    by_cell = {label: group for label, group in runs.groupby("cell", sort=False)} if len(runs) else {}
    empty = runs.iloc[0:0]
    base_runs = by_cell.get(baseline, empty)
    out = []
    for spec in specs:
        cell_runs = by_cell.get(spec.label, empty)
        row = {"cell": spec.label, "baseline": spec.label == baseline, **counts(cell_runs, layout.seeds)}
        published = layout.published.get(spec.label, {})
        for metric in layout.columns:
            s = summarize(list(values_by_seed(cell_runs, metric).values()))
            paper = published.get(metric, math.nan)
            vs_paper = s.mean - paper
            if REGISTRY[metric].device_dependent and not same_device_class(cell_runs):
                vs_paper = math.nan  # a CPU img/s minus a GPU img/s says nothing
            row |= {f"{metric}_mean": s.mean, f"{metric}_std": s.std, f"{metric}_n": s.n,
                    f"{metric}_paper": paper, f"{metric}_vs_paper": vs_paper}
        for metric in (m for m in layout.columns if m in COMPARED):
            if baseline is None or spec.label == baseline:
                d = None
            else:
                d = compare(values_by_seed(cell_runs, metric), values_by_seed(base_runs, metric))
            row |= {
                f"{metric}_delta": d.delta if d else math.nan,
                f"{metric}_ci_low": d.low if d else math.nan,
                f"{metric}_ci_high": d.high if d else math.nan,
                f"{metric}_ci_method": d.method if d else "",
                f"{metric}_ci_contains_zero": d.contains_zero if d else None,
                f"{metric}_ci_note": (d.note if d else ("baseline" if baseline else "no baseline")),
            }
        out.append(row)
    return pd.DataFrame(out)


def same_device_class(runs: pd.DataFrame) -> bool:
    """Whether every finished run of the cell ran on the paper's device class (a GPU)."""
    done = runs[runs["state"] == store.DONE] if len(runs) else runs
    classes = {device_class(d) for d in done["device"]} if len(done) else set()
    return classes == {PAPER_DEVICE_CLASS}


def counts(runs: pd.DataFrame, expected: tuple[int, ...]) -> dict:
    import pandas as pd

    states = runs["state"].value_counts() if len(runs) else pd.Series(dtype=int)
    seeds = sorted(int(s) for s in runs["seed"].dropna()) if len(runs) else []
    missing = [s for s in expected if s not in seeds]
    c = {
        "n": int(states.get(store.DONE, 0)),
        "n_failed": int(states.get(store.FAILED, 0)),
        "n_running": int(states.get(store.RUNNING, 0)),
        "n_partial": int(states.get(store.PARTIAL, 0) + states.get(store.NEW, 0)),
        "n_missing": len(missing),
        "seeds": " ".join(str(s) for s in seeds),
    }
    c["status"] = status(c)
    return c


def status(c: dict) -> str:
    """The cell's state in one word, for a cell without any finished run."""
    if c["n"]:
        return store.DONE
    for key, word in (("n_running", "running"), ("n_failed", "failed"), ("n_partial", "partial")):
        if c[key]:
            return word
    return "missing"


def failure_notes(runs: pd.DataFrame) -> list[str]:
    failed = runs[runs["state"] == store.FAILED] if len(runs) else runs
    return [f"{r.cell} seed {r.seed}: failed" + (f" at epoch {r.error_epoch:g}" if is_number(r.error_epoch) else "")
            + f": {r.error} ({r.path})" for r in failed.itertuples()]


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def first(runs: pd.DataFrame, column: str):
    values = runs[column].dropna() if len(runs) else []
    return values.iloc[0] if len(values) else None


def protocol(runs: pd.DataFrame, layout: Layout) -> dict[str, str]:
    """What our numbers are: every distinct value found, so a mixed or unusual setting cannot hide."""

    def distinct(column: str, source: pd.DataFrame = runs) -> str:
        values = source[column].dropna().unique().tolist() if len(source) else []
        return ", ".join(str(v) for v in sorted(values, key=str)) or "n/a"

    done = runs[runs["state"] == store.DONE] if len(runs) else runs
    return {
        "recipe": distinct("recipe"),
        "dataset": distinct("dataset"),
        "epochs": distinct("epochs"),
        "img_size": distinct("img_size"),
        "model": distinct("model"),
        "device": distinct("device", done) if len(done) else "n/a (no finished run)",
        "seeds": distinct("seed") if len(runs) else ", ".join(map(str, layout.seeds)) or "n/a",
        "overrides": layout.overrides,
        "grid": "; ".join(f"{k}={','.join(v)}" for k, v in layout.key.grid) if layout.key else "",
        "inert": inert_cells(runs),
        "reused": reused_cells(runs),
    }


def reused_cells(runs: pd.DataFrame) -> str:
    """The cells whose runs another sweep or cell launched (one config, one run): "DWConv = pe PA", ..."""
    if not len(runs) or "origin" not in runs.columns:
        return ""
    shared = runs[runs["origin"].notna()]
    return ", ".join(dict.fromkeys(f"{cell} = {origin}" for cell, origin in zip(shared["cell"], shared["origin"],
                                                                                  strict=True)))


def inert_cells(runs: pd.DataFrame) -> str:
    """The cells whose runs' input size leaves the attention knobs without effect (ablations.run refuses them
    unless --allow-inert-attention), with why; "" when attention is alive in every run."""
    columns = ["cell", "img_size", "model.stem", "model.reduction"]
    if not len(runs) or not set(columns) <= set(runs.columns):
        return ""
    found: dict[str, str] = {}
    # each distinct (cell, size, stem, reduction) once: a table of many seeds does not recompute the maps
    rest_runs = runs[runs["model"].isin(list(VARIANTS))] if "model" in runs.columns else runs  # ResT's knobs only
    for cell, size, stem, reduction in rest_runs[columns].drop_duplicates().itertuples(index=False):
        if not (isinstance(size, int | float) and stem in STEMS and reduction in REDUCTIONS) or math.isnan(size):
            continue
        problems = inert_attention(int(size), stem, reduction)
        if problems and cell not in found:
            found[cell] = f"{cell} ({int(size)} px: {'; '.join(problems)})"
    return ", ".join(found.values())
