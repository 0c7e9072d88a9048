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
from ablations.spec.metrics import METRICS as REGISTRY  # noqa: E402
from analysis.render import SHORT  # noqa: E402
from analysis.source import Layout  # noqa: E402
from analysis.table import METRICS, Table, build_table, per_seed, select_runs  # noqa: E402

# Okabe & Ito's colour-blind-safe palette: ours blue, the paper vermillion, cells in the order below
OURS, PAPER, BASELINE = "#0072B2", "#D55E00", "#999999"
# Curves of many cells stay apart in grey print and for colour-blind readers: each cell also has its own line
# style and marker. Bands are light, so that overlapping ones leave the lines readable.
CELL_STYLES = ("-", "-.", (0, (8, 2, 2, 2)), (0, (3, 1, 1, 1, 1, 1)), (0, (10, 3)))
FAILED_STYLE = ":"  # a failed run, thin and dotted, ending in x: never one of the cells' styles
CELL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
BAND_ALPHA = 0.12
CELL_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
SATURATED = 99.95  # a percentage metric whose every value is at least this is "saturated" (top-5 at 100 %)
PANEL_COLUMNS = 3


def save(fig: Figure, base: Path) -> list[Path]:
    """base.png (150 dpi) and base.pdf (vector); returns both paths."""
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".png"), base.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def short_protocol(table: Table) -> str:
    p = table.protocol
    text = (f"ours: {p['dataset']}, recipe {p['recipe']}" + (f" with {p['overrides']}" if p.get("overrides") else "")
            + (f", grid {p['grid']}" if p.get("grid") else "")
            + f", {p['epochs']} epochs, {p['img_size']} px, seeds {p['seeds']}, device {p['device']}")
    text += f"; shared runs: {p['reused']}" if p.get("reused") else ""
    return text + ("; ATTENTION INERT (1x1 key maps): its knobs cannot act" if p.get("inert") else "")


def grid(count: int, panel_w: float, panel_h: float = 3.4, cols: int | None = None) -> tuple[Figure, list]:
    """A figure of `count` panels, at most PANEL_COLUMNS a row (never one long strip), or `cols` a row;
    unused panels hidden."""
    cols = max(1, min(cols or PANEL_COLUMNS, count))
    rows = max(1, math.ceil(count / cols))
    fig = Figure(figsize=(panel_w * cols, panel_h * rows + 0.9), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def seed_values(done: pd.DataFrame, cell: str, metric: str) -> dict[int, float]:
    rows = done[done["cell"] == cell] if len(done) else done
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[metric], strict=True) if pd.notna(s) and pd.notna(v)}


def saturated(values: list[float], metric: str) -> bool:
    return REGISTRY[metric].unit == "%" and bool(values) and min(values) >= SATURATED


def facets(table: Table) -> list[tuple[str, list[str]]]:
    """The cells by level of the table's last axis when it has two or more (a --grid): (title, cell labels)
    per level, one row of panels each; else one facet of every cell."""
    labels = list(table.rows["cell"])
    axes = table.layout.axes
    if len(axes) < 2:
        return [("", labels)]
    groups: dict[str, list[str]] = {}
    for label in labels:  # by the cell's level, not a split of its label: a level name may contain " / "
        groups.setdefault(table.levels.get(label, {}).get(axes[-1], label), []).append(label)
    return [(f"{axes[-1]} = {level}", cells) for level, cells in groups.items()]


def bars(table: Table, runs: pd.DataFrame) -> Figure:
    """One panel per metric, in a grid of at most three a row.

    Accuracies (metrics that vary with the seed), when the sweep has a baseline: each row's difference from
    the baseline, ours as a bar with the table's 95 % confidence interval (paired by seed, or Welch's) and
    the per-seed differences as dots, the paper's difference as a diamond: the same scale for both. Fixed
    quantities (params, FLOPs, img/s): ours and the paper's side by side. A percentage at 100 % for every
    run (top-5 on a small dataset) is said in words, not drawn; the paper's GPU img/s is not drawn beside a
    CPU measurement.
    """
    metrics = list(table.columns)
    rows = facets(table)  # a grid: one row of panels per level of its last axis
    widest = max(len(labels) for _, labels in rows)
    fig, axes = grid(len(metrics) * len(rows), panel_w=min(5.5, max(3.6, 0.7 * widest + 1.8)),
                     cols=len(metrics) if len(rows) > 1 else None)
    done = runs[runs["state"] == store.DONE] if len(runs) else runs
    panels = [(metric, facet, labels) for facet, labels in rows for metric in metrics]
    for ax, (metric, facet, labels) in zip(axes, panels, strict=True):
        ours_values = [v for label in labels for v in seed_values(done, label, metric).values()]
        if saturated(ours_values, metric):
            span = f"{min(ours_values):.1f}" + ("" if min(ours_values) == max(ours_values) else
                                                  f"-{max(ours_values):.1f}")
            ax.text(0.5, 0.5, f"{SHORT[metric]}: saturated\nevery run at {span} %\n(not drawn)", ha="center",
                    va="center",
                    transform=ax.transAxes, fontsize=10, color="dimgray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(SHORT[metric] + (f" ({facet})" if facet else ""))
            continue
        if metric in table.compared and table.baseline:
            delta_panel(ax, table, done, metric, labels)
        else:
            side_by_side_panel(ax, table, done, metric, labels)
        slanted = max(map(len, labels), default=0) > 6  # long level names ("w/o Conv-1 & IN") would overlap
        ticks = [f"{label}\n(baseline)" if label == table.baseline else label for label in labels]
        ax.set_xticks(range(len(labels)), ticks, rotation=30 if slanted else 0, ha="right" if slanted else "center")
        ax.set_xlim(-0.6, len(labels) - 0.4)  # every cell keeps its slot, drawn or not
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(SHORT[metric] + (f" ({facet})" if facet else ""))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.suptitle(f"paper: {table.title}\n{short_protocol(table)}", fontsize=10)
    return fig


def delta_panel(ax, table: Table, done: pd.DataFrame, metric: str, labels: list[str]) -> None:
    rows = table.rows.set_index("cell")
    base_seeds = seed_values(done, table.baseline, metric)
    base_mean = rows.loc[table.baseline, f"{metric}_mean"]
    base_paper = rows.loc[table.baseline, f"{metric}_paper"]
    ax.axhline(0.0, color=BASELINE, lw=1.2, label=f"baseline {table.baseline}")
    drawn_ci = drawn_seed = drawn_paper = False
    for i, label in enumerate(labels):
        row = rows.loc[label]
        if label == table.baseline:
            ax.bar(i, 0.0, color=BASELINE)
        elif not math.isnan(row[f"{metric}_delta"]):
            delta = row[f"{metric}_delta"]
            low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
            has_ci = not (math.isnan(low) or math.isnan(high))
            ax.bar(i, delta, color=OURS, alpha=0.85, label=None if i != first_drawn(rows, labels, metric, table)
                   else "ours: mean Δ")
            if has_ci:
                ax.errorbar(i, delta, yerr=[[delta - low], [high - delta]], color="black", capsize=5, lw=1.2,
                            label=None if drawn_ci else "ours: 95 % CI")
                drawn_ci = True
            else:
                ax.annotate(str(row[f"{metric}_ci_note"]), (i, delta), ha="center", va="bottom", fontsize=7,
                            color="dimgray", xytext=(0, 3), textcoords="offset points")
        else:
            ax.annotate(row["status"] if row["n"] == 0 else "n/a", (i, 0.02), xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", rotation=90, color="gray", fontsize=9)
        cell_seeds = seed_values(done, label, metric)
        deltas = [v - base_seeds[s] if s in base_seeds else v - base_mean for s, v in cell_seeds.items()]
        if label != table.baseline and deltas and not math.isnan(base_mean):
            ax.scatter([i] * len(deltas), deltas, s=14, color="black", zorder=3, label=None if drawn_seed else "seeds")
            drawn_seed = True
        paper = row[f"{metric}_paper"]
        if label != table.baseline and not (math.isnan(paper) or math.isnan(base_paper)):
            ax.scatter(i, paper - base_paper, marker="D", s=40, color=PAPER, zorder=4,
                       label=None if drawn_paper else "paper: Δ")
            drawn_paper = True
    ax.set_ylabel(f"Δ {SHORT[metric]} vs {table.baseline} ({REGISTRY[metric].unit} points)")
    low, high = ax.get_ylim()
    pad = 0.08 * (high - low)
    ax.set_ylim(min(low, -pad), max(high, pad))  # 0 (the baseline) never sits on the frame


def first_drawn(rows, labels, metric, table) -> int | None:
    return next((i for i, label in enumerate(labels)
                 if label != table.baseline and not math.isnan(rows.loc[label, f"{metric}_delta"])), None)


def side_by_side_panel(ax, table: Table, done: pd.DataFrame, metric: str, labels: list[str]) -> None:
    rows = table.rows.set_index("cell")
    width = 0.38
    device_note = None
    for i, label in enumerate(labels):
        row = rows.loc[label]
        mean = row[f"{metric}_mean"]
        edge = "black" if label == table.baseline else None
        if not math.isnan(mean):
            ax.bar(i - width / 2, mean, width, color=OURS, edgecolor=edge, label="ours" if i == 0 else None)
            cell_seeds = list(seed_values(done, label, metric).values())
            if REGISTRY[metric].varies_with_seed and cell_seeds:
                ax.scatter([i - width / 2] * len(cell_seeds), cell_seeds, s=12, color="black", zorder=3)
        paper = row[f"{metric}_paper"]
        comparable = not REGISTRY[metric].device_dependent or not math.isnan(row[f"{metric}_vs_paper"])
        if not math.isnan(paper) and comparable:
            ax.bar(i + width / 2, paper, width, color=PAPER, edgecolor=edge, label="paper" if i == 0 else None)
        elif not math.isnan(paper):
            device_note = "paper's values: GPU, ours: not on a GPU; not compared"
    if device_note:
        ax.text(0.5, 0.98, device_note, transform=ax.transAxes, ha="center", va="top", fontsize=7, color=PAPER)
    ax.set_ylabel(METRICS[metric][0])
    drawn_paper = [] if device_note else rows[f"{metric}_paper"].tolist()
    values = [v for v in rows[f"{metric}_mean"].tolist() + drawn_paper if not math.isnan(v)]
    if values:
        ax.set_ylim(0, max(values) * 1.18)


def curves(table: Table, runs: pd.DataFrame) -> Figure:
    """Validation top-1 and validation loss against epoch, one colour per cell: the mean over seeds with a
    band of ± one standard deviation over seeds (none for one seed); failed runs dotted, ending in x."""
    rows = facets(table)  # a grid: a pair of panels per level of its last axis
    fig, axes = grid(2 * len(rows), panel_w=5.2, panel_h=3.8, cols=2)
    pairs = {label: (axes[2 * k], axes[2 * k + 1], facet) for k, (facet, labels) in enumerate(rows)
             for label in labels}
    for i, row in table.rows.iterrows():
        ax_top1, ax_loss, _ = pairs[row["cell"]]
        color = CELL_COLORS[i % len(CELL_COLORS)]
        style, marker = CELL_STYLES[i % len(CELL_STYLES)], CELL_MARKERS[i % len(CELL_MARKERS)]
        cell_runs = runs[runs["cell"] == row["cell"]] if len(runs) else runs
        label = f"{row['cell']} ({row_summary(row)})"
        for ax, column in ((ax_top1, "curve_top1"), (ax_loss, "curve_val_loss")):
            with_curve = [r for r in cell_runs.itertuples() if isinstance(getattr(r, column), list)
                          and getattr(r, column)]
            # The mean is over runs that finished or are still going; a failed run is drawn on its own, dashed,
            # so that its early stop does not bend the cell's curve.
            series = [pd.Series(getattr(r, column), index=r.curve_epoch) for r in with_curve
                      if r.state != store.FAILED]
            if series:
                by_epoch = pd.concat(series, axis=1)
                epochs = by_epoch.index.to_numpy()  # the trainer numbers epochs from 1
                mean = by_epoch.mean(axis=1)
                ax.plot(epochs, mean, color=color, ls=style, lw=1.8, label=label, marker=marker, ms=4,
                        markevery=max(1, len(epochs) // 8))
                if by_epoch.shape[1] > 1:
                    std = by_epoch.std(axis=1, ddof=1)
                    ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=BAND_ALPHA, lw=0)
            else:
                ax.plot([], [], color=color, ls=style, marker=marker, lw=1.8,
                        label=label if with_curve else f"{label}: no epochs")
            for r in with_curve:
                if r.state == store.FAILED:
                    ax.plot(r.curve_epoch, getattr(r, column), color=color, ls=FAILED_STYLE, lw=0.8, alpha=0.7)
                    ax.plot(r.curve_epoch[-1], getattr(r, column)[-1], marker="x", color=color, ms=8)
    for ax_top1, ax_loss, facet in dict.fromkeys(pairs.values()):
        for ax, ylabel in ((ax_top1, "validation top-1 (%)"), (ax_loss, "validation loss")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if facet:
                ax.set_title(facet, fontsize=9)
        ax_top1.legend(fontsize=7, title="cell (runs)", title_fontsize=7)
    fig.suptitle(f"paper: {table.title}\n{short_protocol(table)}; mean over seeds, band = ± 1 std over seeds, "
                 f"dotted to x = a failed run", fontsize=9)
    return fig


def row_summary(row) -> str:
    parts = [f"{row['n']} done"] + [f"{row[k]} {w}" for k, w in (("n_failed", "failed"), ("n_running", "running"),
                                                               ("n_partial", "partial"), ("n_missing", "missing"))
                                   if row[k]]
    return ", ".join(parts)


def table_figures(df: pd.DataFrame, layout: Layout, out_dir: Path) -> list[Path]:
    """Bars and curves of one experiment, written to out_dir; the same runs as its table."""
    table = build_table(df, layout)
    runs = select_runs(df, layout)
    if len(runs):
        runs, _ = per_seed(runs)
    paths = save(bars(table, runs), out_dir / "bars")
    paths += save(curves(table, runs), out_dir / "curves")
    return paths

