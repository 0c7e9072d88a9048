"""A Table as Markdown, LaTeX (booktabs) and CSV. Text only: every number is formatted here, once."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from ablations.spec.metrics import METRICS as REGISTRY
from analysis.table import METRICS, Table

SHORT = {name: m.short for name, m in REGISTRY.items()}
DASH = "–"
FIXED = ("params_m", "gflops")  # set by the architecture: the same for every seed, so no "± 0.00"


def has_paper(table: Table) -> bool:
    return any(table.layout.published.get(label) for label in table.rows.get("cell", []))


def fmt(value: float, decimals: int, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"


def headers(table: Table) -> list[str]:
    out = [" / ".join(table.layout.axes) or "cell", "n"]
    for metric in table.columns:
        out.append(METRICS[metric][0])
        if has_paper(table):
            out.append(f"{SHORT[metric]} paper (Δ)")
    out += [f"Δ {SHORT[m]} vs {table.baseline} [95 % CI]" for m in table.compared]
    return out


def n_text(row) -> str:
    others = [f"{row[k]} {word}" for k, word in (("n_failed", "failed"), ("n_running", "running"),
                                                  ("n_partial", "partial"), ("n_missing", "missing")) if row[k]]
    return f"{row['n']}" + (f" ({', '.join(others)})" if others else "")


def ours_text(row, metric: str) -> str:
    """mean ± std; the cell's state in words when nothing finished; n when it differs from the row's."""
    if row["n"] == 0:
        return row["status"]
    n, decimals = row[f"{metric}_n"], METRICS[metric][1]
    if n == 0:
        return "n/a"
    if metric in FIXED:
        text = fmt(row[f"{metric}_mean"], decimals)
    elif n == 1:  # one seed: no spread to show
        return fmt(row[f"{metric}_mean"], decimals) + " (n=1)"
    else:
        text = fmt(row[f"{metric}_mean"], decimals) + " ± " + fmt(row[f"{metric}_std"], decimals)
    return text + (f" (n={n})" if n != row["n"] else "")


def paper_text(row, metric: str) -> str:
    paper, decimals = row[f"{metric}_paper"], METRICS[metric][1]
    if math.isnan(paper):
        return DASH
    diff = row[f"{metric}_vs_paper"]
    if math.isnan(diff) and REGISTRY[metric].device_dependent and row["n"]:
        return fmt(paper, decimals) + " (GPU; no Δ)"
    return fmt(paper, decimals) + ("" if math.isnan(diff) else f" ({fmt(diff, decimals, sign=True)})")


def delta_text(row, metric: str) -> str:
    decimals = METRICS[metric][1]
    delta, method, note = row[f"{metric}_delta"], row[f"{metric}_ci_method"], row[f"{metric}_ci_note"]
    if math.isnan(delta):
        return note
    if method in ("", "none"):
        return f"{fmt(delta, decimals, sign=True)} ({note})"
    text = (f"{fmt(delta, decimals, sign=True)} [{fmt(row[f'{metric}_ci_low'], decimals, sign=True)}, "
            f"{fmt(row[f'{metric}_ci_high'], decimals, sign=True)}]")
    if method == "welch":
        text += " Welch"
    return text + (" n.s." if row[f"{metric}_ci_contains_zero"] else "")


def body(table: Table) -> list[list[str]]:
    lines = []
    for _, row in table.rows.iterrows():
        line = [row["cell"], n_text(row)]
        for metric in table.columns:
            line.append(ours_text(row, metric))
            if has_paper(table):
                line.append(paper_text(row, metric))
        line += [delta_text(row, m) for m in table.compared]
        lines.append(line)
    return lines


def caption(table: Table) -> str:
    p = table.protocol
    text = (f"Ours: recipe {p['recipe']}, dataset {p['dataset']}, {p['epochs']} epochs, {p['img_size']} px, "
            f"model {p['model']}, device {p['device']}, seeds {p['seeds']}.")
    if p.get("overrides"):
        text += f" Overrides of the recipe: {p['overrides']}."
    if p.get("grid"):
        text += f" Grid axes added to the sweep's (--grid): {p['grid']}."
    published, changed = table.layout.published_recipe, table.layout.protocol_overrides
    compare = "compare rankings and differences between rows, not absolute numbers with the paper's."
    if has_paper(table) and p["recipe"] != "n/a":  # n/a: no run yet, nothing to compare
        if not published:
            text += (" The sweep file does not say which recipe matches the published numbers' protocol "
                     f"(published_recipe): {compare}")
        elif p["recipe"] != published:
            text += f" Recipe {p['recipe']} is not {published}, the protocol of the published numbers: {compare}"
        elif changed:
            text += f" Recipe {published} with {changed} is not the protocol of the published numbers: {compare}"
    if p.get("inert"):
        text += (f" WARNING: attention cannot act in these cells (a 1x1 key map: one key per query): {p['inert']};"
                 f" their attention knobs are compared without effect.")
    if p.get("reused"):
        text += f" Runs shared with another table (one config, one run, launched there): {p['reused']}."
    if has_paper(table):
        text += " Paper: the published numbers (the paper's own protocol and hardware)."
    else:
        text += " No published numbers for this table" + ("." if table.layout.sweep_path else
                                                          " (no sweep file given).")
    return text


def legend(table: Table) -> list[str]:
    out = ["Ours: mean ± std over finished seeds; n = finished seeds (other runs in parentheses)."]
    if has_paper(table):
        out.append("Paper (Δ): the published value, and ours minus it.")
        if any(REGISTRY[m].device_dependent for m in table.columns):
            out.append("Throughput: the paper measured it on a GPU; ours is compared with it only where our runs "
                       "ran on a GPU too (otherwise no Δ).")
    if table.compared and table.baseline:
        methods = {m: set(table.rows[f"{m}_ci_method"]) | set(table.rows[f"{m}_ci_note"]) for m in table.compared}
        seen = set().union(*methods.values())
        out.append(f"Δ vs {table.baseline}: row minus baseline with a 95 % t interval, paired on per-seed "
                   f"differences (same seeds in both rows)" + (", or Welch's (marked) when the seeds differ."
                                                               if "welch" in seen else "."))
        out.append("n.s.: the interval contains 0, so these seeds do not establish that the row differs from "
                   "the baseline.")
        if "n=1: no CI" in seen:
            out.append("n=1: no CI: a single seed gives no estimate of seed-to-seed variance, so no interval "
                       "(run more seeds).")
    elif table.compared:
        out.append("No baseline row (no cell is marked as baseline): no differences computed.")
    return out + table.notes


# ----------------------------------------------------------------------------------------------------------
def md_row(cells: list[str]) -> str:
    """A Markdown table row; a "|" inside a cell (an axis or level name) is escaped, never a column break."""
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def to_markdown(table: Table) -> str:
    head = headers(table)
    align = ["---"] + ["---:"] * (len(head) - 1)
    lines = [f"**{table.title}**", "", caption(table), "", md_row(head), "| " + " | ".join(align) + " |"]
    lines += [md_row(line) for line in body(table)]
    lines += [""] + [f"- {note}" for note in legend(table)]
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--", "≥": r"$\geq$"}


def tex(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_safe_note(note: str) -> str:
    """A legend line for a paper: no absolute paths, no exception text (a failure says only where it failed)."""

    failed = re.match(r"(.+? seed \S+: failed(?: at epoch \S+)?):", note)
    if failed:
        return failed.group(1) + " (see the run's error.json)."
    return re.sub(r"(?<![\w.])/(?:[^\s/()]+/)*[^\s/()]*", "<path>", note)


def to_latex(table: Table) -> str:
    """A booktabs table for a paper: needs \\usepackage{booktabs} and \\usepackage{graphicx} (\\resizebox)."""
    head = headers(table)
    spec = "l" + "r" * (len(head) - 1)
    label = "".join(ch if ch.isalnum() else "-" for ch in table.layout.name)
    lines = [
        f"% Generated by python -m analysis.tables from {tex(Path(table.layout.source).name)}.",
        r"% Needs \usepackage{booktabs} (rules) and \usepackage{graphicx} (\resizebox) in the preamble.",
        r"\begin{table}[t]",
        r"  \centering",
        f"  \\caption{{{tex(table.title)}. {tex(caption(table))}}}",
        f"  \\label{{tab:{label}}}",
        r"  \resizebox{\linewidth}{!}{%",
        f"  \\begin{{tabular}}{{{spec}}}",
        r"    \toprule",
        "    " + " & ".join(tex(h) for h in head) + r" \\",
        r"    \midrule",
    ]
    lines += ["    " + " & ".join(tex(cell) for cell in line) + r" \\" for line in body(table)]
    lines += [r"    \bottomrule", r"  \end{tabular}}", r"  \par\smallskip",
              r"  {\footnotesize " + r" \\ ".join(tex(latex_safe_note(n)) for n in legend(table)) + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The numbers unrounded, with what they are (sweep, recipe, dataset, epochs, device) on every row."""
    context = {"sweep": table.layout.name, **{k: v for k, v in table.protocol.items() if k != "seeds"}}
    out = table.rows.copy()
    for i, (key, value) in enumerate(context.items()):
        out.insert(1 + i, key, value)
    return spreadsheet_safe(out).to_csv(index=False)


def to_long_csv(table: Table) -> str:
    """The table in long (tidy) form: one row per cell x metric, for pandas / seaborn.

    Columns: sweep, recipe, dataset, epochs, img_size, model, device, cell, baseline, metric, label, unit,
    n, mean, std, paper, vs_paper, delta, ci_low, ci_high, ci_method.
    """
    context = {"sweep": table.layout.name, **{k: v for k, v in table.protocol.items() if k != "seeds"}}
    out = []
    for _, row in table.rows.iterrows():
        for metric in table.columns:
            m = REGISTRY[metric]
            compared = metric in table.compared
            out.append({**context, "cell": row["cell"], "baseline": bool(row["baseline"]), "metric": metric,
                        "label": m.label, "unit": m.unit, "n": int(row[f"{metric}_n"]),
                        "mean": row[f"{metric}_mean"], "std": row[f"{metric}_std"],
                        "paper": row[f"{metric}_paper"], "vs_paper": row[f"{metric}_vs_paper"],
                        "delta": row[f"{metric}_delta"] if compared else math.nan,
                        "ci_low": row[f"{metric}_ci_low"] if compared else math.nan,
                        "ci_high": row[f"{metric}_ci_high"] if compared else math.nan,
                        "ci_method": row[f"{metric}_ci_method"] if compared else ""})
    return spreadsheet_safe(pd.DataFrame(out)).to_csv(index=False)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with every text cell that a spreadsheet would run as a formula (a level named
    =HYPERLINK(...)) prefixed with an apostrophe, as spreadsheets expect; numbers are left as they are."""
    out = df.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(lambda v: "'" + v if formula_like(v) else v)
    return out


def formula_like(value) -> bool:
    """Text a spreadsheet would evaluate: starts as a formula and is not a plain number ("-5" stays "-5")."""
    if not isinstance(value, str) or not value.startswith(FORMULA_START):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def write_table(table: Table, out_dir: Path) -> list[Path]:
    """table.md, table.tex, table.csv and table_long.csv of one table into out_dir (each written atomically)."""
    from ablations.store import atomic_write_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, render in (("table.md", to_markdown), ("table.tex", to_latex), ("table.csv", to_csv),
                         ("table_long.csv", to_long_csv)):
        path = out_dir / name
        atomic_write_bytes(path, render(table).encode())
        paths.append(path)
    return paths
