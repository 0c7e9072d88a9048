"""Figures of a sweep, as pure functions of the collected DataFrame: bars per metric, top-1 per epoch.

Figures are built with matplotlib's object API on the Agg backend (no pyplot state, no display needed) and
saved as PNG and PDF by `save`.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; also keeps a stray pyplot import from looking for a display

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ablations import store  # noqa: E402
from ablations.metrics import METRICS as REGISTRY  # noqa: E402
from analysis.render import SHORT  # noqa: E402
from analysis.source import Layout  # noqa: E402
from analysis.tables import METRICS, Table, per_seed, select_runs  # noqa: E402

OURS, PAPER = "#4C72B0", "#C44E52"


def save(fig: Figure, base: Path) -> list[Path]:
    """base.png (150 dpi) and base.pdf; returns both paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def short_protocol(table: Table) -> str:
    p = table.protocol
    return f"ours: recipe {p['recipe']}, {p['dataset']}, {p['epochs']} epochs, {p['img_size']} px, device {p['device']}"


def overlaps(a: list[float], b: list[float]) -> bool:
    return bool(a) and bool(b) and min(a) <= max(b) and min(b) <= max(a)


def bars(table: Table, runs: pd.DataFrame) -> Figure:
    """One panel per metric of the table: our mean (bar) ± std (error bar) and seeds (dots); the paper's value
    as a marker. When our numbers and the paper's do not overlap at all (another protocol or device), the
    paper's go on a right-hand axis of their own, so neither set is squashed flat."""
    metrics = list(table.columns)
    fig = Figure(figsize=(max(4.0, 0.9 * len(table.rows) + 1.5) * len(metrics), 4.2), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    done = runs[runs["state"] == store.DONE] if len(runs) else runs
    labels = list(table.rows["cell"])
    xs = range(len(labels))
    for ax, metric in zip(axes, metrics, strict=True):
        rows = table.rows
        means, stds = rows[f"{metric}_mean"].tolist(), rows[f"{metric}_std"].fillna(0.0).tolist()
        paper = rows[f"{metric}_paper"].tolist()
        ax.bar(xs, [0 if math.isnan(m) else m for m in means], yerr=stds, color=OURS, alpha=0.8, capsize=4,
               label="ours (mean ± std)")
        seeds = [(i, v) for i, label in enumerate(labels)
                 for v in done.loc[done["cell"] == label, metric].dropna()]
        if seeds:
            ax.scatter([i for i, _ in seeds], [v for _, v in seeds], s=10, color="black", zorder=3, label="seeds")
        ours_values = [m for m in means if not math.isnan(m)] + [v for _, v in seeds]
        paper_values = [v for v in paper if not math.isnan(v)]
        paper_ax = ax if overlaps(ours_values, paper_values) or not ours_values else ax.twinx()
        if paper_values:
            paper_ax.scatter([i for i, v in zip(xs, paper, strict=True) if not math.isnan(v)], paper_values,
                             marker="D", color=PAPER, zorder=4,
                             label="paper" + ("" if paper_ax is ax else " (right axis)"))
            if paper_ax is not ax:
                paper_ax.set_ylabel(f"paper {SHORT[metric]}", color=PAPER)
                zoom(paper_ax, paper_values, metric)
        zoom(ax, ours_values + (paper_values if paper_ax is ax else []), metric)
        for i, row in rows.iterrows():  # a cell with nothing finished still has its slot, saying why
            if row["n"] == 0 or row[f"{metric}_n"] == 0:
                ax.annotate(row["status"] if row["n"] == 0 else "n/a", (i, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", rotation=90, color="gray", fontsize=9)
        slanted = max(map(len, labels), default=0) > 6  # long level names ("w/o Conv-1 & IN") would overlap
        ax.set_xticks(list(xs), labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
        ax.set_ylabel(METRICS[metric][0])
        ax.set_title(SHORT[metric])
        handles, names = ax.get_legend_handles_labels()
        if paper_ax is not ax:
            more_handles, more_names = paper_ax.get_legend_handles_labels()
            handles, names = handles + more_handles, names + more_names
        ax.legend(handles, names, fontsize=7, loc="best", framealpha=0.8)
    fig.suptitle(f"{table.title}\n{short_protocol(table)}", fontsize=10)
    return fig


def zoom(ax, values: list[float], metric: str) -> None:
    """Accuracies differ by tenths of a percent: zoom on them. Counts (params, FLOPs, img/s) start at 0."""
    if not values:
        return
    if REGISTRY[metric].unit == "%":
        low, high = min(values), max(values)
        pad = max(0.5, 0.15 * (high - low))
        ax.set_ylim(low - pad, high + pad)
    else:
        ax.set_ylim(0, max(values) * 1.15 or 1.0)


def curves(table: Table, runs: pd.DataFrame) -> Figure:
    """Validation top-1 against epoch, one colour per cell: mean over seeds, min-max band, failed runs dashed."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    for i, row in table.rows.iterrows():
        color = colors(i % 10)
        cell_runs = runs[runs["cell"] == row["cell"]] if len(runs) else runs
        with_curve = [r for r in cell_runs.itertuples() if isinstance(r.curve_top1, list) and r.curve_top1]
        # The mean is over runs that finished or are still going; a failed run is drawn on its own, dashed,
        # so that its early stop does not bend the cell's curve.
        series = [pd.Series(r.curve_top1, index=r.curve_epoch) for r in with_curve if r.state != store.FAILED]
        label = f"{row['cell']} ({row_summary(row)})"
        if series:
            by_epoch = pd.concat(series, axis=1)
            epochs = by_epoch.index.to_numpy()  # the trainer numbers epochs from 1
            ax.plot(epochs, by_epoch.mean(axis=1), color=color, lw=2, label=label)
            if by_epoch.shape[1] > 1:
                ax.fill_between(epochs, by_epoch.min(axis=1), by_epoch.max(axis=1), color=color, alpha=0.2, lw=0)
        else:
            ax.plot([], [], color=color, lw=2, label=label if with_curve else f"{label}: no epochs")
        for r in with_curve:
            if r.state == store.FAILED:
                ax.plot(r.curve_epoch, r.curve_top1, color=color, ls="--", lw=1)
                ax.plot(r.curve_epoch[-1], r.curve_top1[-1], marker="x", color=color, ms=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="cell (runs)", title_fontsize=8)
    ax.set_title(f"{table.title}\n{short_protocol(table)}; mean over seeds, band = min-max, x = failed", fontsize=9)
    return fig


def row_summary(row) -> str:
    parts = [f"{row['n']} done"] + [f"{row[k]} {w}" for k, w in (("n_failed", "failed"), ("n_running", "running"),
                                                               ("n_partial", "partial"), ("n_missing", "missing"))
                                   if row[k]]
    return ", ".join(parts)


def table_figures(df: pd.DataFrame, layout: Layout, out_dir: Path) -> list[Path]:
    """Bars and curves of one experiment, written to out_dir; the same runs as its table."""
    from analysis.tables import build_table

    table = build_table(df, layout)
    runs = select_runs(df, layout)
    if len(runs):
        runs, _ = per_seed(runs)
    paths = save(bars(table, runs), out_dir / "bars")
    paths += save(curves(table, runs), out_dir / "curves")
    return paths

