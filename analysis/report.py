"""python -m analysis.report SWEEP.yaml|STUDY.yaml [...] — one folder to attach as supplementary material.

    python -m analysis.report sweeps/paper-ablations.yaml           # every ablation table of the study
    python -m analysis.report sweeps/pe.yaml sweeps/reduction.yaml --seeds 0,1,2
    python -m analysis.report sweeps/paper-ablations.yaml -o supplementary/

Takes the selection flags of ablations.run (the same runs status and tables show). Writes, into
<results>/reports/<study>/<recipe+overrides_seeds>/ (or -o):

    <sweep>/table.{md,tex,csv}, table_long.csv    every table (LaTeX ready to \\input)
    <sweep>/bars.{png,pdf}, curves.{png,pdf}       every figure
    report.md, report.html                         the whole report; the HTML embeds its images (one file,
                                                   readable offline)

Per table: ours beside the paper's numbers with 95 % CIs against the baseline and their significance, the
protocol and every deviation from the published one, provenance (code commit, library versions, devices,
seeds, dates), and a paragraph on what the numbers do and do not show.
"""
from __future__ import annotations

import argparse
import base64
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ablations import store
from ablations.cli import OUTPUT_FLAGS, say
from ablations.experiment import add_selection_flags, add_sweeps_argument, resolve, selection_from_args
from ablations.results_root import REPORTS
from ablations.spec.study import study_name, sweep_paths
from analysis.source import InputError, cli, load_layout, warn


# ---- the report as blocks: one model, rendered to Markdown and to HTML ------------------------------------------
@dataclass(frozen=True)
class Block:
    kind: str  # h1, h2, h3, p, ul, table, img, pre
    text: str = ""
    items: tuple = ()  # ul: items; table: (header, *rows)
    path: Path | None = None  # img: the file, relative to the report's folder


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "table":
            header, *rows = b.items
            cells = lambda row: "| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"  # noqa: E731
            rule = "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |"  # numbers right
            out.append("\n".join([cells(header), rule,
                                  *map(cells, rows)]))
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path.as_posix()})")
        elif b.kind == "pre":
            out.append("```\n" + b.text + "\n```")
    return "\n\n".join(out) + "\n"


STYLE = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #bbb;padding:.25rem .5rem}
td{text-align:right}td:first-child{text-align:left}img{max-width:100%}pre{background:#f4f4f4;padding:.5rem}"""


def to_html(blocks: list[Block], folder: Path, title: str) -> str:
    """One self-contained page: the images are embedded as data: URIs, nothing is fetched."""
    e = html.escape
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(str(item))}</li>" for item in b.items) + "</ul>")
        elif b.kind == "table":
            header, *rows = b.items
            out.append("<table><thead><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in header) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
                       + "</tbody></table>")
        elif b.kind == "img":
            data = base64.b64encode((folder / b.path).read_bytes()).decode()
            out.append(f'<figure><img alt="{e(b.text, quote=True)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{e(b.text)}</figcaption></figure>")
        elif b.kind == "pre":
            out.append(f"<pre>{e(b.text)}</pre>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


# ---- one table's section ---------------------------------------------------------------------------------------
@dataclass
class Section:
    layout: object  # analysis.source.Layout
    table: object  # analysis.table.Table
    runs: object  # pandas.DataFrame of the experiment's runs
    experiment: object  # ablations.experiment.Experiment


def reading(table) -> str:
    """What the numbers do and do not show, from the table itself: seeds, significance, the paper's order, the
    protocol."""
    rows, metric = table.rows, next(iter(table.compared), None)
    n = [int(v) for v in rows["n"]]
    parts: list[str] = []
    missing = [c for c, k in zip(rows["cell"], n, strict=True) if k == 0]
    if missing:
        parts.append(f"No finished run for {', '.join(missing)}: those rows show nothing yet.")
    separated = []  # rows whose interval excludes 0
    if metric and table.baseline:
        header = metric.replace("top", "top-")
        others = [r for r in rows.itertuples() if r.cell != table.baseline]
        verdict = {r.cell: getattr(r, f"{metric}_ci_contains_zero") for r in others}
        separated = [r for r in others if verdict[r.cell] is False]
        within = [r.cell for r in others if verdict[r.cell] is True]
        untested = [r.cell for r in others if verdict[r.cell] is None and r.cell not in missing]
        if separated:
            parts.append(f"Against {table.baseline}, {header} differs beyond seed-to-seed noise for: " + ", ".join(
                f"{r.cell} ({getattr(r, f'{metric}_delta'):+.2f}, 95 % CI [{getattr(r, f'{metric}_ci_low'):+.2f}, "
                f"{getattr(r, f'{metric}_ci_high'):+.2f}])" for r in separated) + ".")
        if within:
            parts.append(f"The 95 % interval of {', '.join(within)} against {table.baseline} contains 0: these seeds "
                         "do not separate " + ("it" if len(within) == 1 else "them") + " from the baseline.")
        if untested:
            them = "it" if len(untested) == 1 else "them"
            parts.append(f"No interval for {', '.join(untested)} (one seed, or seeds other than the baseline's): "
                         f"nothing is established about {them}; run more seeds (--seeds 0,1,2).")
    ours = rows[[f"{metric}_mean", f"{metric}_paper", "cell"]].dropna() if metric else rows.iloc[0:0]
    if len(ours) >= 2:
        by_paper = list(ours.sort_values(f"{metric}_paper", ascending=False)["cell"])
        by_ours = list(ours.sort_values(f"{metric}_mean", ascending=False, kind="stable")["cell"])
        order = "holds in our means" if by_paper == by_ours else f"does not hold in our means ({' > '.join(by_ours)})"
        compared = {r.cell for r in separated} & set(ours["cell"])  # the rows the order is about, baseline aside
        noise = "" if len(compared) == len(set(ours["cell"]) - {table.baseline}) else \
            ", but differences within seed noise (or without an interval) leave the order unestablished"
        parts.append(f"The paper's order of the rows ({' > '.join(by_paper)}) {order}{noise}.")
    published, recipe = table.layout.published_recipe, table.protocol["recipe"]
    if published and recipe != published:
        parts.append(f"These runs use recipe {recipe}, not {published} (the protocol of the published numbers): "
                     "absolute numbers are not comparable with the paper's, and a knob's effect at this scale need "
                     "not be its effect on ImageNet.")
    elif table.layout.protocol_overrides:
        parts.append(f"The recipe is the paper's, with {table.layout.protocol_overrides}: not its exact protocol.")
    return " ".join(parts)


def table_blocks(section: Section, folder: Path, figures: list[Path]) -> list[Block]:
    from analysis.render import body, caption, headers, legend

    table, layout = section.table, section.layout
    blocks = [Block("h2", f"{table.title} (sweep {layout.name})"), Block("p", caption(table)),
              Block("table", items=(headers(table), *body(table))), Block("ul", items=tuple(legend(table)))]
    blocks += [Block("img", f"{layout.name}: {p.stem}", path=p.relative_to(folder)) for p in figures
               if p.suffix == ".png"]
    blocks += [Block("h3", "What the numbers show"), Block("p", reading(table))]
    return blocks


# ---- the whole report --------------------------------------------------------------------------------------------
def protocol_blocks(sections: list[Section]) -> list[Block]:
    from ablations.plan import make_plan
    from ablations.plan_text import protocol_lines, recipe_deviations

    first = sections[0].experiment
    lines = [line.strip() for line in protocol_lines(first.runs[0].config)]
    config = first.runs[0].config
    items = [f"recipe {first.recipe.name}: {config.data.dataset} at {config.data.img_size} px, "
             f"{config.train.epochs} epochs", *lines]
    deviations = []
    for s in sections:
        recipe = s.experiment.recipe.name
        if recipe != first.recipe.name:  # the protocol above is the first table's: say where another applies
            items.append(f"{s.layout.name}: recipe {recipe} (the sweep file's), not {first.recipe.name}")
        if s.layout.published_recipe and s.layout.published_recipe != recipe:
            deviations.append(f"{s.layout.name}: the published numbers come from recipe {s.layout.published_recipe}, "
                              f"these runs from {recipe}")
        changed = recipe_deviations(make_plan(s.experiment))
        if changed:
            deviations.append(f"{s.layout.name}: command-line overrides of the recipe: {changed}")
        if s.table.protocol.get("inert"):
            deviations.append(f"{s.layout.name}: attention cannot act in {s.table.protocol['inert']}")
    return [Block("h2", "Protocol"), Block("ul", items=tuple(items)), Block("h3", "Deviations from the published "
            "protocol"), Block("ul", items=tuple(deviations) or ("none",))]


def provenance_blocks(sections: list[Section]) -> list[Block]:
    commits, dirty, versions, devices, seeds, dates = set(), False, {}, set(), set(), []
    seen = set()
    for s in sections:
        done = s.runs[s.runs["state"] == store.DONE] if len(s.runs) else s.runs
        for path in done["path"] if len(done) else []:
            if path in seen:
                continue
            seen.add(path)
            result = store.read_result(Path(path)) or {}
            commits.add(str(result.get("git_commit")))
            dirty |= bool(result.get("git_dirty"))
            for name, version in (result.get("versions") or {}).items():
                versions.setdefault(name, set()).add(str(version))
            devices.add(str(result.get("device")))
            if isinstance(result.get("finished_at"), str):
                dates.append(result["finished_at"])
        seeds |= {int(x) for x in done["seed"].dropna()} if len(done) else set()
    items = [f"runs: {len(seen)} finished run folders (a run several tables share counted once)",
             f"code: git commit {', '.join(sorted(commits)) or 'n/a'}"
             + (" (with uncommitted changes in some runs)" if dirty else ""),
             "libraries: " + ("; ".join(f"{k} {', '.join(sorted(v))}" for k, v in sorted(versions.items())) or "n/a"),
             f"devices: {', '.join(sorted(devices)) or 'n/a'}",
             f"seeds: {', '.join(map(str, sorted(seeds))) or 'n/a'}",
             f"finished: {min(dates)} to {max(dates)}" if dates else "finished: n/a",
             f"report written {datetime.now(UTC).isoformat(timespec='seconds')} by python -m analysis.report"]
    return [Block("h2", "Provenance"), Block("ul", items=tuple(items))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sweeps_argument(p)
    add_selection_flags(p)
    p.add_argument(*OUTPUT_FLAGS, type=Path, help="the report's folder (default: <results>/reports/<study>/"
                                                  "<recipe+overrides_seeds>/)")
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.figures import table_figures  # pandas, matplotlib: not for --help
    from analysis.render import write_table
    from analysis.runs import collect
    from analysis.table import build_table

    selection = selection_from_args(args)
    paths = sweep_paths(args.sweeps)
    name = study_name(args.sweeps, paths)
    sections = []
    for path in paths:
        layout = load_layout(path, results_root=args.results_root, selection=selection)
        runs, problems = collect(layout.results_dir, run_dirs=layout.run_dirs, metas=layout.run_meta)
        warn(problems)
        table = build_table(runs, layout)
        warn(table.problems)
        sections.append(Section(layout, table, runs, resolve(path, selection, args.results_root)))
    if not any(len(s.runs) for s in sections):
        raise InputError(f"{', '.join(map(str, args.sweeps))}: no run of these sweeps is in {args.results_root}/ "
                         "with these flags: launch them first (python -m ablations.run ...), or pass the flags they "
                         "were launched with.")
    first = sections[0].experiment
    default = Path(args.results_root) / REPORTS / name / first.key.folder_name(first.seeds)
    folder = args.output or store.real_dir(default, 3)  # never through a link planted under the results root
    blocks = [Block("h1", f"Report: {name}"),
              Block("p", f"{len(sections)} table{'s' if len(sections) > 1 else ''} "
                         f"({', '.join(s.layout.name for s in sections)}); {first.key.describe()}; "
                         f"seeds {', '.join(map(str, first.seeds))}.")]
    blocks += protocol_blocks(sections) + provenance_blocks(sections)
    for section in sections:
        out = folder / section.layout.name
        write_table(section.table, out)
        figures = table_figures(section.runs, section.layout, out) if len(section.runs) else []
        blocks += table_blocks(section, folder, figures)
    store.atomic_write_bytes(folder / "report.md", to_markdown(blocks).encode())
    store.atomic_write_bytes(folder / "report.html", to_html(blocks, folder, f"Report: {name}").encode())
    say(f"wrote {folder}/report.md, report.html and the tables and figures of "
        f"{', '.join(s.layout.name for s in sections)}")
    print(folder / "report.html")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
