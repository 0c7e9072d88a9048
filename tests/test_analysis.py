"""analysis: run folders -> DataFrame -> tables (numbers, statistics, refusals, corrupt files, CLI)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from ablations.experiment import NO_SELECTION, ExperimentKey, Selection
from ablations.results_root import members
from analysis import collect as collect_command
from analysis import tables
from analysis.render import to_csv, to_latex, to_markdown
from analysis.runs import COLUMNS, CURVE_COLUMNS, collect, export, read_export
from analysis.source import InputError, load_layout
from analysis.stats import compare, summarize
from analysis.synthetic import write_run
from analysis.table import Table, build_table

SWEEP = """\
name: pe
paper_table: "Table 5: positional encoding (ResT-Lite, ImageNet-1k)"
recipe: quick
model: rest_lite
overrides: {train.epochs: 5}
seeds: [0, 1, 2]
columns: [top1, top5]
axes:
  - name: pos_encoding
    key: model.pos_encoding
    baseline: PA
    levels: {none: none, LE: le, GL: gl, PA: pa}
published_recipe: paper-ablation
published:
  none: {top1: 71.54, top5: 89.82}
  LE: {top1: 71.98, top5: 90.32}
  GL: {top1: 72.04, top5: 90.41}
  PA: {top1: 72.88, top5: 90.62}
"""
# Known numbers: top-1 per seed 0, 1, 2. GL has one seed finished and one failed; "none" only failed.
LE = [72.0, 73.0, 71.5]
PA = [73.0, 73.5, 72.9]
LE5 = [90.0, 90.4, 90.2]
PA5 = [90.6, 90.7, 90.5]


def runs_of(sweep_dir: Path, cell: str) -> list[Path]:
    """The run folders a sweep folder lists for a cell, by seed."""
    return [d for d, meta in sorted(members(sweep_dir), key=lambda m: m[1]["seed"]) if meta["cell"] == cell]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    path = tmp_path / "pe.yaml"
    path.write_text(SWEEP)
    results = tmp_path / "results" / "pe"
    for seed in range(3):
        write_run(results, "LE", seed, top1=LE[seed], top5=LE5[seed], sweep_file=path)
        write_run(results, "PA", seed, top1=PA[seed], top5=PA5[seed], sweep_file=path)
    write_run(results, "GL", 0, top1=72.1, top5=90.3, sweep_file=path)
    write_run(results, "GL", 1, state="failed", sweep_file=path)
    write_run(results, "none", 0, state="failed", sweep_file=path)
    return path


def table_for(sweep: Path, selection: Selection = NO_SELECTION) -> Table:
    layout = load_layout(sweep, results_root=sweep.parent / "results", selection=selection)
    df, problems = collect(layout.results_dir)
    assert problems == []
    return build_table(df, layout)


def row(table: Table, cell: str) -> pd.Series:
    return table.rows.set_index("cell").loc[cell]


def sample_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


# ----------------------------------------------------------------------------------------------------------
# Cells, paper column, statistics
# ----------------------------------------------------------------------------------------------------------
def test_every_cell_mean_std_n_and_paper_difference(sweep):
    table = table_for(sweep)
    assert list(table.rows["cell"]) == ["none", "LE", "GL", "PA"]  # the sweep's order
    assert table.baseline == "PA"
    for cell, top1, top5, paper1, paper5 in (("LE", LE, LE5, 71.98, 90.32), ("PA", PA, PA5, 72.88, 90.62)):
        r = row(table, cell)
        assert r["n"] == 3 and r["top1_n"] == 3 and r["top5_n"] == 3
        assert r["top1_mean"] == pytest.approx(sum(top1) / 3)
        assert r["top1_std"] == pytest.approx(sample_std(top1))
        assert r["top5_mean"] == pytest.approx(sum(top5) / 3)
        assert r["top5_std"] == pytest.approx(sample_std(top5))
        assert r["top1_paper"] == paper1 and r["top5_paper"] == paper5
        assert r["top1_vs_paper"] == pytest.approx(sum(top1) / 3 - paper1)
        assert r["top5_vs_paper"] == pytest.approx(sum(top5) / 3 - paper5)
    gl = row(table, "GL")
    assert (gl["n"], gl["n_failed"], gl["n_missing"], gl["top1_mean"]) == (1, 1, 1, 72.1)
    assert math.isnan(gl["top1_std"])
    assert gl["top1_vs_paper"] == pytest.approx(72.1 - 72.04)


def test_paired_interval_matches_hand_computation(sweep):
    table = table_for(sweep)
    le = row(table, "LE")
    # per-seed differences LE - PA: -1.0, -0.5, -1.4; mean -0.96667, sd 0.450925, se 0.260342,
    # t(0.975, df=2) = 4.302653 -> half width 1.120160
    assert le["top1_ci_method"] == "paired"
    assert le["top1_delta"] == pytest.approx(-0.966667, abs=1e-5)
    assert le["top1_ci_low"] == pytest.approx(-2.086826, abs=1e-5)
    assert le["top1_ci_high"] == pytest.approx(0.153493, abs=1e-5)
    assert le["top1_ci_contains_zero"]  # the interval reaches above 0: not established
    # top-5: differences -0.6, -0.3, -0.3 -> mean -0.4, sd 0.173205, half width 4.302653 * 0.1 = 0.430265
    assert le["top5_ci_low"] == pytest.approx(-0.830265, abs=1e-5)
    assert le["top5_ci_high"] == pytest.approx(0.030265, abs=1e-5)
    md = to_markdown(table)
    assert "| LE | 3 | 72.17 ± 0.76 | 71.98 (+0.19) |" in md
    assert "-0.97 [-2.09, +0.15] n.s." in md
    assert row(table, "PA")["top1_ci_note"] == "baseline"


def test_single_seed_has_no_interval(sweep):
    table = table_for(sweep)
    gl = row(table, "GL")
    assert gl["top1_ci_method"] == "none" and gl["top1_ci_note"] == "n=1: no CI"
    assert gl["top1_delta"] == pytest.approx(72.1 - sum(PA) / 3)
    assert "(n=1: no CI)" in to_markdown(table)


def test_welch_when_seeds_differ():
    from scipy import stats

    d = compare({0: 1.0, 1: 2.0}, {2: 0.0, 3: 0.5, 4: 1.0})
    va, vb = 0.5 / 2, 0.25 / 3
    dof = (va + vb) ** 2 / (va**2 / 1 + vb**2 / 2)
    half = stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    assert d.method == "welch" and d.delta == pytest.approx(1.0)
    assert (d.low, d.high) == pytest.approx((1.0 - half, 1.0 + half))
    assert d.contains_zero


def test_summary_and_exact_differences():
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)
    s = summarize([1.0, 2.0, 3.0, math.nan])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    d = compare({0: 2.0, 1: 3.0}, {0: 1.0, 1: 2.0})  # same difference for every seed: a zero-width interval
    assert (d.delta, d.low, d.high, d.contains_zero) == (1.0, 1.0, 1.0, False)
    assert compare({}, {0: 1.0}).note == "no finished runs"


# ----------------------------------------------------------------------------------------------------------
# Failed and missing cells, caption, outputs
# ----------------------------------------------------------------------------------------------------------
def test_failed_and_missing_cells_are_rows_that_say_so(sweep, tmp_path):
    table = table_for(sweep)
    none = row(table, "none")
    assert (none["n"], none["n_failed"], none["n_missing"], none["status"]) == (0, 1, 2, "failed")
    md = to_markdown(table)
    assert "| none | 0 (1 failed, 2 missing) | failed | 71.54 |" in md
    assert "none seed 0: failed at epoch 2: RuntimeError: out of memory" in md
    # a cell of the sweep without any run folder
    for child in runs_of(tmp_path / "results" / "pe", "none"):
        for f in child.iterdir():
            f.unlink()
        child.rmdir()
    table = table_for(sweep)
    assert row(table, "none")["status"] == "missing"
    assert "| none | 0 (3 missing) | missing |" in to_markdown(table)


def test_caption_names_recipe_dataset_epochs_device(sweep):
    table = table_for(sweep)
    for text in (to_markdown(table), to_latex(table)):
        assert "recipe quick" in text and "dataset digits" in text and "5 epochs" in text
        assert "device cpu" in text and "Recipe quick is not paper-ablation, the protocol of the published" in text
    csv = pd.read_csv(pd.io.common.StringIO(to_csv(table)))
    assert set(csv["recipe"]) == {"quick"} and set(csv["device"]) == {"cpu"} and len(csv) == 4


@pytest.mark.parametrize("recipe, warned", [("paper", True), ("paper-ablation", False), ("quick", True)])
def test_caption_warns_whenever_the_recipe_is_not_the_published_numbers_one(tmp_path, recipe, warned):
    """A 300-epoch `paper` table beside 100-epoch ablation numbers says so; only the sweep's published_recipe
    is compared without a word."""
    path = tmp_path / "pe.yaml"
    path.write_text(SWEEP)
    for cell in ("LE", "PA"):
        write_run(tmp_path / "results" / "pe", cell, 0, recipe=recipe, sweep_file=path,
                  sets={"data.root": str(tmp_path)})
    layout = load_layout(path, results_root=tmp_path / "results",
                         selection=Selection(recipe=recipe, sets=(f"data.root={tmp_path}",)))
    text = to_markdown(build_table(collect(layout.results_dir)[0], layout))
    assert f"Ours: recipe {recipe}, " in text
    assert (f"Recipe {recipe} is not paper-ablation, the protocol of the published numbers" in text) == warned
    assert "WARNING: attention cannot act" not in text


def test_caption_warns_when_overrides_change_the_published_protocol_and_not_before_any_run(tmp_path):
    path = tmp_path / "pe.yaml"
    path.write_text(SWEEP)
    flags = (f"data.root={tmp_path}", "train.epochs=1")
    selection = Selection(recipe="paper-ablation", sets=flags)
    layout = load_layout(path, results_root=tmp_path / "results", selection=selection)
    empty = to_markdown(build_table(collect(tmp_path)[0], layout))
    assert "recipe n/a" in empty and "is not" not in empty  # no run yet: nothing compared
    write_run(tmp_path / "results" / "pe", "PA", 0, recipe="paper-ablation", sweep_file=path,
              sets={"data.root": str(tmp_path), "train.epochs": 1})
    layout = load_layout(path, results_root=tmp_path / "results", selection=selection)
    text = " ".join(to_markdown(build_table(collect(layout.results_dir)[0], layout)).split())
    # data.root says where the data is, not what the protocol is; the epochs do change it
    assert "Recipe paper-ablation with train.epochs=1 is not the protocol of the published numbers" in text
    assert f"Overrides of the recipe: data.root={tmp_path}, train.epochs=1." in text  # no JSON quotes


def test_caption_says_when_attention_could_not_act(tmp_path):
    """Runs made with --allow-inert-attention (32 px: 1x1 key maps) are marked in the caption, cell by cell."""
    path = tmp_path / "pe.yaml"
    path.write_text(SWEEP)
    for cell in ("LE", "PA"):
        write_run(tmp_path / "results" / "pe", cell, 0, sweep_file=path, sets={"data.img_size": 32})
    layout = load_layout(path, results_root=tmp_path / "results",
                         selection=Selection(sets=("data.img_size=32",)))
    text = " ".join(to_markdown(build_table(collect(layout.results_dir)[0], layout)).split())
    assert "WARNING: attention cannot act in these cells (a 1x1 key map: one key per query):" in text
    assert "LE (32 px: 1x1 key map in stages 1, 2, 3, 4)" in text and "PA (32 px:" in text


def test_cli_writes_markdown_latex_csv(sweep, capsys):
    assert tables.main([str(sweep), "--results-root", str(sweep.parent / "results")]) == 0
    out_dir = sweep.parent / "results" / "pe" / "reports" / "quick_seeds-0-1-2"  # the experiment's own folder
    md = (out_dir / "table.md").read_text()
    assert md == capsys.readouterr().out
    tex = (out_dir / "table.tex").read_text()
    assert all(k in tex for k in (r"\toprule", r"\midrule", r"\bottomrule", r"$\pm$", r"\caption{"))
    csv = pd.read_csv(out_dir / "table.csv")
    assert list(csv["cell"]) == ["none", "LE", "GL", "PA"]
    assert csv.set_index("cell").loc["LE", "top1_ci_low"] == pytest.approx(-2.086826, abs=1e-5)


def test_each_experiment_writes_to_a_folder_of_its_own_and_says_what_it_is(sweep, capsys):
    """Another experiment's table never overwrites this one's, and its caption names what differs."""
    results = sweep.parent / "results"
    for seed in (0, 1):
        write_run(results / "pe", "PA", seed, sweep_file=sweep, sets={"optim.lr": 0.001, "train.epochs": 1})
    assert tables.main([str(sweep), "--results-root", str(results)]) == 0
    assert tables.main([str(sweep), "--results-root", str(results), "--set", "optim.lr=0.001",
                        "--set", "train.epochs=1", "--seeds", "0,1"]) == 0
    assert tables.main([str(sweep), "--results-root", str(results), "--seeds", "0"]) == 0
    capsys.readouterr()
    reports = results / "pe" / "reports"
    names = sorted(p.name for p in reports.iterdir())
    assert names[1:] == ["quick_seeds-0", "quick_seeds-0-1-2"]
    assert re.fullmatch(r"quick\+optim\.lr=0\.001\+train\.epochs=1~[0-9a-f]{8}_seeds-0-1", names[0])
    three = (reports / "quick_seeds-0-1-2" / "table.md").read_text()
    other = " ".join((reports / names[0] / "table.md").read_text().split())
    assert "| PA | 3 |" in three and "Overrides" not in three
    assert "Overrides of the recipe: optim.lr=0.001, train.epochs=1." in other and "seeds 0, 1" in other
    # names that cannot be folder names are kept apart by a hash
    long = [ExperimentKey.of("quick", {"data.root": f"/data/{name}", "optim.lr": 0.1}).folder_name([0])
            for name in ("a" * 90, "a" * 90 + "b")]
    assert long[0] != long[1] and all("/" not in n and len(n) <= 120 for n in long)
    avg = ExperimentKey.of("quick", {"model.reduction": "avg"}).folder_name([1, 0])
    assert avg.startswith("quick+model.reduction=avg~") and avg.endswith("_seeds-0-1")
    # values that read alike are told apart by the hash of their exact values
    alike = [ExperimentKey.of("quick", {"aug.rand_augment": "rand-m9+model.stem=patch"}),
             ExperimentKey.of("quick", {"aug.rand_augment": "rand-m9", "model.stem": "patch"}),
             ExperimentKey.of("quick", {"aug.rand_augment": None}),
             ExperimentKey.of("quick", {"aug.rand_augment": "null"})]
    assert len({key.folder_name([0]) for key in alike}) == 4


def test_results_folder_without_sweep(sweep):
    layout = load_layout(sweep.parent / "results" / "pe")
    df, _ = collect(layout.results_dir)
    table = build_table(df, layout)
    assert list(table.rows["cell"]) == ["GL", "LE", "none", "PA"]  # alphabetical, said in a note
    assert table.baseline == "PA" and table.layout.axes == ("pos_encoding",)
    md = to_markdown(table)
    assert "paper (Δ)" not in md and "no sweep file given" in md and "Row order: alphabetical" in md
    with_sweep = load_layout(sweep.parent / "results" / "pe", sweep=sweep)
    assert with_sweep.published["PA"]["top1"] == 72.88


def test_columns_of_the_main_table(tmp_path):
    results = tmp_path / "variants"
    write_run(results, "Lite", 0, params=10_490_000, macs_paper=1.4e9, img_s=500.0, baseline=True, axis="model")
    write_run(results, "Lite", 1, params=10_490_000, macs_paper=1.4e9, img_s=520.0, baseline=True, axis="model")
    layout = load_layout(results, columns=("params_m", "gflops", "img_s", "top1", "top5"))
    table = build_table(collect(results)[0], layout)
    lite = row(table, "Lite")
    assert (lite["params_m_mean"], lite["gflops_mean"], lite["img_s_mean"], lite["img_s_std"]) == (
        pytest.approx(10.49), pytest.approx(1.4), 510.0, pytest.approx(sample_std([500.0, 520.0])))
    md = to_markdown(table)
    assert "#Params (M)" in md and "FLOPs (G)" in md and "Throughput (img/s)" in md and "510 ± 14" in md


# ----------------------------------------------------------------------------------------------------------
# Refusals and bad input
# ----------------------------------------------------------------------------------------------------------
def test_mixing_recipes_is_refused(sweep, capsys):
    results = sweep.parent / "results" / "pe"
    write_run(results, "PA", 0, recipe="paper-ablation", top1=72.5, sweep_file=sweep)
    # a bare results folder holding two experiments: refused, both listed, one paragraph, exit 2
    with pytest.raises(InputError, match="refusing to mix"):
        load_layout(results)
    assert tables.main([str(results)]) == 2
    err = capsys.readouterr().err
    assert "recipe quick (9 runs" in err and "recipe paper-ablation (1 runs" in err and str(results) in err
    assert "--recipe paper-ablation" in err and "--recipe quick" in err and "Traceback" not in err
    assert err.count("\n") == 1  # one paragraph
    # the sweep file as written selects its own recipe's runs, and names the other experiment in one line
    assert tables.main([str(sweep), "--results-root", str(sweep.parent / "results")]) == 0
    captured = capsys.readouterr()
    assert "| PA | 3 |" in captured.out
    assert "note: other runs in" in captured.err and "1 run recipe paper-ablation" in captured.err
    assert "e.g. --recipe paper-ablation --seeds 0," not in captured.err  # the sweep's own seeds need no flag
    only = table_for(sweep, Selection(recipe="paper-ablation"))
    assert row(only, "PA")["top1_mean"] == 72.5 and row(only, "LE")["status"] == "missing"
    picked = load_layout(results, selection=Selection(recipe="paper-ablation"))
    assert len(picked.run_dirs) == 1 and picked.experiment == "recipe paper-ablation"


def test_the_other_runs_note_suggests_the_seeds_that_select_them_and_stays_short(sweep, capsys):
    """Runs of the sweep's own experiment with seeds the flags did not pick: the hint adds them with --seeds;
    beyond a few experiments the note counts the rest."""
    results = sweep.parent / "results"
    one_seed = sweep.parent / "one_seed" / "pe.yaml"  # the same sweep asking for seed 0 only, as pe.yaml does
    one_seed.parent.mkdir()
    one_seed.write_text(SWEEP.replace("seeds: [0, 1, 2]", "seeds: [0]"))
    assert tables.main([str(one_seed), "--results-root", str(results)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "(select them with the flags they were launched with, e.g. --recipe quick --seeds 0,1,2)" in err
    assert tables.main([str(sweep), "--results-root", str(results), "--seeds", "0"]) == 0
    err = " ".join(capsys.readouterr().err.split())  # without --seeds, this sweep selects them all
    assert "(select them with the flags they were launched with, e.g. --recipe quick)" in err
    for lr in (0.1, 0.2, 0.3, 0.4):
        write_run(results / "pe", "PA", 0, sweep_file=sweep, sets={"optim.lr": lr})
    assert tables.main([str(sweep), "--results-root", str(results)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "and 1 run of 1 more experiment" in err and err.count("optim.lr=") <= 4


def test_override_sets_are_separate_experiments(sweep, capsys):
    """Runs launched with --set train.epochs=1 are another experiment: tables and status agree on it."""
    from ablations import status

    results = sweep.parent / "results" / "pe"
    for seed in range(3):
        write_run(results, "PA", seed, top1=10.0, sets={"train.epochs": 1}, sweep_file=sweep)
    plain = table_for(sweep)
    assert row(plain, "PA")["top1_mean"] == pytest.approx(sum(PA) / 3)  # the 1-epoch runs are not mixed in
    short = table_for(sweep, Selection(sets=("train.epochs=1",)))
    assert row(short, "PA")["top1_mean"] == 10.0 and row(short, "LE")["status"] == "missing"
    assert "1 epochs" in to_markdown(short) and "5 epochs" not in to_markdown(short)
    with pytest.raises(InputError, match="train.epochs=1"):
        load_layout(results)  # a bare folder with two experiments
    # status, given the same flags, lists exactly the run folders the table used
    root = str(sweep.parent / "results")
    assert status.main([str(sweep), "--results-root", root, "--set", "train.epochs=1", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed["runs"]] == [Path(p).name for p in short.layout.run_dirs]
    assert sorted(r["state"] for r in listed["runs"] if r["cell"] == "PA") == ["done"] * 3
    assert "9 runs recipe quick (" in listed["others"]
    # without flags: the sweep as written; the override runs are named, and a failed run makes exit 1
    assert status.main([str(sweep), "--results-root", root]) == 1
    out = capsys.readouterr().out
    assert "3 runs recipe quick with train.epochs=1" in out and "failed" in out


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "nope", "no such file or folder"),
    (lambda tmp: (tmp / "x.txt").write_text("hi") and tmp / "x.txt", "not a sweep file"),
    (lambda tmp: (tmp / "bad.yaml").write_text("name: [unclosed\n") and tmp / "bad.yaml", "not a valid sweep file"),
    (lambda tmp: (tmp / "odd.yaml").write_text("name: pe\n") and tmp / "odd.yaml", "not a valid sweep file"),
    (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "no run folders here"),
])
def test_bad_input_is_one_paragraph_and_exit_2(tmp_path, capsys, make, message):
    target = make(tmp_path)
    assert tables.main([str(target), "--results-root", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(target) in err and "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_sweep_without_results_yet(sweep, capsys):
    assert tables.main([str(sweep), "--results-root", str(sweep.parent / "elsewhere")]) == 2
    assert "none of the runs of" in capsys.readouterr().err


def test_a_sweep_whose_only_runs_another_sweep_launched_is_tabulated(tmp_path, capsys):
    """reduction was never launched, but pe's PA run is its DWConv row: the table shows it."""
    root = Path(__file__).resolve().parents[1]
    write_run(tmp_path / "results" / "pe", "PA", 0, sweep_file=root / "sweeps" / "pe.yaml")
    assert tables.main([str(root / "sweeps" / "reduction.yaml"), "--results-root", str(tmp_path / "results")]) == 0
    assert "| DWConv | 1 |" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------------
# Corrupt and partial files
# ----------------------------------------------------------------------------------------------------------
def truncate(path: Path, keep: int = 25) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_corrupt_files_are_reported_and_skipped(sweep, capsys):
    results = sweep.parent / "results" / "pe"
    le = runs_of(results, "LE")
    truncate(le[0] / "config.json")  # LE seed 0: cell unknown -> skipped
    truncate(le[1] / "result.json")  # LE seed 1: not done -> partial, not counted
    metrics = le[2] / "metrics.jsonl"  # LE seed 2: a damaged line inside the file -> that line ignored
    lines = metrics.read_bytes().split(b"\n")
    lines[4] = lines[4][:-20]
    metrics.write_bytes(b"\n".join(lines))
    df, problems = collect(results)
    assert len(df) == 8
    text = "\n".join(problems)
    assert f"{le[0] / 'config.json'}: not valid JSON" in text and "run folder skipped" in text
    assert f"{le[1] / 'result.json'}: not valid JSON" in text
    assert f"{le[2] / 'metrics.jsonl'}: line 5 is not valid JSON" in text
    assert df.set_index("path").loc[str(le[2]), "state"] == "done"  # the result stands; the curve loses a line

    assert tables.main([str(sweep), "--results-root", str(sweep.parent / "results")]) == 0
    captured = capsys.readouterr()
    assert f"warning: {le[0] / 'config.json'}" in captured.err and "Traceback" not in captured.err
    assert "| LE | 1 (1 partial, 1 missing) | 71.50 (n=1) |" in captured.out  # one seed: no "± –"


def test_corrupt_metrics_only_run_and_odd_content(tmp_path):
    results = tmp_path / "r"
    run = write_run(results, "A", 0, state="partial")
    (run / "metrics.jsonl").write_text('{"epoch": 0, "top1": 10}\n[1, 2]\n{"epoch": 1, "top1": 2')
    odd = write_run(results, "B", 0)
    (odd / "result.json").write_text(json.dumps({"final": {"top1": "high"}, "params": None}))
    (results / "stray").mkdir()  # not a run folder: ignored
    (results / "stray" / "notes.txt").write_text("x")
    (results / "noconfig").mkdir()
    (results / "noconfig" / "metrics.jsonl").write_text("{}\n")
    df, problems = collect(results)
    assert sorted(df["cell"]) == ["A", "B"]
    a = df.set_index("cell").loc["A"]
    assert a["curve_top1"] == [10.0] and a["state"] == "partial"
    assert math.isnan(df.set_index("cell").loc["B", "top1"])
    assert any("noconfig" in p and "missing" in p for p in problems)
    assert any("line 2" in p for p in problems) and any("line 3" in p for p in problems)


def test_duplicate_runs_of_a_seed_are_reported(sweep):
    results = sweep.parent / "results" / "pe"
    write_run(results, "PA", 0, top1=99.0, baseline=True, overrides={"optim.lr": 0.5})  # same meta, other config
    table = table_for(sweep)  # the sweep file: exactly its runs, the stray one is only named
    assert row(table, "PA")["n"] == 3 and not any("2 run folders" in p for p in table.problems)
    assert "not in the sweep as written" in table.layout.others
    layout = load_layout(results, sweep=sweep)  # a results folder: every run of the experiment found there
    table = build_table(collect(results)[0], layout)
    assert any("cell 'PA' seed 0: 2 run folders" in p for p in table.problems)
    assert row(table, "PA")["n"] == 3


def test_cells_not_in_the_sweep_are_shown(sweep):
    results = sweep.parent / "results" / "pe"
    write_run(results, "old level", 0)
    layout = load_layout(results, sweep=sweep)
    table = build_table(collect(results)[0], layout)
    assert list(table.rows["cell"])[-1] == "old level"
    assert any("does not list" in p for p in table.problems)


# ----------------------------------------------------------------------------------------------------------
# Export and speed
# ----------------------------------------------------------------------------------------------------------
def test_collect_export_roundtrip(sweep, tmp_path, capsys):
    out = tmp_path / "runs.csv"
    assert collect_command.main([str(sweep.parent / "results"), "-o", str(out)]) == 0
    df = read_export(out)
    assert len(df) == 9 and set(COLUMNS) == set(df.columns)
    le = df[(df["cell"] == "LE") & (df["seed"] == 1)].iloc[0]
    assert le["top1"] == 73.0 and le["curve_top1"][-1] == pytest.approx(73.0) and len(le["curve_epoch"]) == 5
    assert collect_command.main([str(sweep), "--results-root", str(sweep.parent / "results")]) == 0
    assert "9 runs" in capsys.readouterr().out


def test_parquet_needs_pyarrow(sweep, tmp_path, capsys):
    pytest.importorskip("pandas")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        df, _ = collect(sweep.parent / "results")
        with pytest.raises(InputError, match="needs pyarrow.*runs.csv"):
            export(df, tmp_path / "runs.parquet")
        assert collect_command.main([str(sweep.parent / "results"), "-o", str(tmp_path / "runs.parquet")]) == 2
        assert "Traceback" not in capsys.readouterr().err
    else:
        export(collect(sweep.parent / "results")[0], tmp_path / "runs.parquet")
        assert len(read_export(tmp_path / "runs.parquet")) == 9


def test_bench_runs(capsys):
    from benchmarks import tables as bench

    assert bench.main(["--runs", "40", "--epochs", "3", "--repeat", "1"]) == 0
    assert "collect + table of 40 runs" in capsys.readouterr().out


def test_a_locked_partial_run_is_running(sweep):
    from ablations import store

    run = write_run(sweep.parent / "results" / "pe", "GL", 2, state="partial", sweep_file=sweep)
    with store.run_lock(run):
        table = table_for(sweep)
    gl = row(table, "GL")
    assert (gl["n"], gl["n_failed"], gl["n_running"], gl["n_missing"]) == (1, 1, 1, 0)
    assert "| GL | 1 (1 failed, 1 running) |" in to_markdown(table)


def tamper(run_dir: Path, how: str) -> None:
    """Edit a finished run folder by hand, as a user might."""
    config, result = run_dir / "config.json", run_dir / "result.json"
    document = json.loads(config.read_text())
    if how == "config":
        document["config"]["optim"]["lr"] = 0.5
    elif how == "meta":
        document["meta"]["cell"] = "none"
    elif how == "no config":
        config.unlink()
        return
    else:
        data = json.loads(result.read_text())
        if how == "number":
            data["final"]["top1"] = 1e308
        else:  # a result copied from another run's folder
            data["config_hash"] = "0123456789"
        result.write_text(json.dumps(data))
        return
    config.write_text(json.dumps(document))


@pytest.mark.parametrize("how, words", [("config", "does not hash to the folder's id"), ("meta", "its meta"),
                                        ("no config", "cannot be told to belong"), ("number", "which cannot be"),
                                        ("result", "written for the config")])
def test_a_tampered_run_folder_is_reported_by_status_tables_and_run(sweep, capsys, how, words):
    """A run folder edited by hand after the run: nothing trusts its numbers or its place in the sweep."""
    from ablations import run as run_cli
    from ablations import status as status_cli

    results = sweep.parent / "results"
    pa0 = runs_of(results / "pe", "PA")[0]
    tamper(pa0, how)

    if how != "no config":  # a folder without config.json is not listed by its sweep folder: the sweep file finds it
        df, problems = collect(results / "pe")
        assert df.set_index("path").loc[str(pa0), "state"] == "corrupt"
        assert any(words in p for p in problems)

    assert status_cli.main([str(sweep), "--results-root", str(results)]) == 1
    out = capsys.readouterr().out
    assert "corrupt" in out and words in out

    assert tables.main([str(sweep), "--results-root", str(results)]) == 0
    captured = capsys.readouterr()
    assert words in captured.err
    pa_row = next(line for line in captured.out.splitlines() if line.startswith("| PA "))
    assert pa_row.split("|")[2].strip().split()[0] == "2", "the tampered seed is not counted"

    assert run_cli.main([str(sweep), "--results-root", str(results), "--dry-run", "--no-eta"]) == 0
    out = capsys.readouterr().out
    assert "1 corrupt" in out and words in out
    # seed 0 has nothing left to run but the corrupt run: run says so and exits 1, as status does
    assert run_cli.main([str(sweep), "--results-root", str(results), "--seeds", "0", "--no-eta"]) == 1
    out = capsys.readouterr().out
    assert "1 run(s) are corrupt and never launched" in out and str(pa0) in out and words in out


# ----------------------------------------------------------------------------------------------------------
# Publication-ready output
# ----------------------------------------------------------------------------------------------------------
SPEED_SWEEP = SWEEP.replace("columns: [top1, top5]", "columns: [img_s, top1]").replace(
    "  PA: {top1: 72.88, top5: 90.62}", "  PA: {top1: 72.88, top5: 90.62, img_s: 1246}")


def test_throughput_is_not_compared_with_the_papers_gpu_number_on_cpu(tmp_path):
    path = tmp_path / "pe.yaml"
    path.write_text(SPEED_SWEEP)
    results = tmp_path / "results" / "pe"
    for seed in range(3):
        write_run(results, "PA", seed, top1=PA[seed], img_s=20.0, device="cpu (2 threads)", sweep_file=path)
    table = table_for(path)
    pa = row(table, "PA")
    assert math.isnan(pa["img_s_vs_paper"]) and pa["top1_vs_paper"] == pytest.approx(sum(PA) / 3 - 72.88)
    md = to_markdown(table)
    assert "1246 (GPU; no Δ)" in md and "measured it on a GPU" in md
    for seed in range(3):  # the same runs on a GPU: compared
        write_run(results, "PA", seed, top1=PA[seed], img_s=1300.0, device="cuda (NVIDIA A100)", sweep_file=path)
    assert row(table_for(path), "PA")["img_s_vs_paper"] == pytest.approx(1300 - 1246)


def test_latex_is_paper_safe_and_says_its_packages(sweep):
    text = to_latex(table_for(sweep))
    assert r"\usepackage{booktabs}" in text and r"\usepackage{graphicx}" in text
    assert str(sweep.parent) not in text and "RuntimeError" not in text and "out of memory" not in text
    assert "none seed 0: failed at epoch 2 (see the run's error.json)" in text
    assert "(n=1)" in text  # GL: one finished seed


def test_long_csv_has_one_row_per_cell_and_metric(sweep, capsys):
    from analysis.render import to_long_csv

    long = pd.read_csv(pd.io.common.StringIO(to_long_csv(table_for(sweep))))
    assert len(long) == 4 * 2 and set(long["metric"]) == {"top1", "top5"}
    le = long[(long["cell"] == "LE") & (long["metric"] == "top1")].iloc[0]
    assert le["mean"] == pytest.approx(sum(LE) / 3) and le["paper"] == 71.98 and le["n"] == 3
    assert le["ci_low"] == pytest.approx(-2.086826, abs=1e-5) and le["unit"] == "%"
    assert tables.main([str(sweep), "--results-root", str(sweep.parent / "results")]) == 0
    written = sweep.parent / "results" / "pe" / "reports" / "quick_seeds-0-1-2" / "table_long.csv"
    assert written.read_text() == to_long_csv(table_for(sweep))


def test_published_note_is_printed_under_the_table(tmp_path):
    path = tmp_path / "pe.yaml"
    path.write_text(SWEEP.replace("published:\n", "published_note: the paper's EMSA params are 10.49 M\npublished:\n"))
    write_run(tmp_path / "results" / "pe", "PA", 0, top1=73.0, sweep_file=path)
    assert "Paper's numbers: the paper's EMSA params are 10.49 M" in to_markdown(table_for(path))
    assert "Paper's numbers" not in to_markdown(table_for(sweep_without_note(tmp_path)))


def sweep_without_note(tmp_path: Path) -> Path:
    path = tmp_path / "plain" / "pe.yaml"
    path.parent.mkdir()
    path.write_text(SWEEP)
    write_run(path.parent / "results" / "pe", "PA", 0, top1=73.0, sweep_file=path)
    return path


def test_collect_flattens_the_config_and_writes_long_curves(sweep, tmp_path, capsys):
    df, _ = collect(sweep.parent / "results")
    assert {"optim.lr", "model.pos_encoding", "train.batch_size", "train.device_batch"} <= set(df.columns)
    by_cell = df.groupby("cell")["model.pos_encoding"].first().to_dict()
    assert by_cell["LE"] == "le" and by_cell["PA"] == "pa" and set(df["train.epochs"]) == {5}
    assert df.groupby("model.pos_encoding")["top1"].mean()["pa"] == pytest.approx(sum(PA) / 3)
    for suffix in (".csv", ".parquet"):
        out = tmp_path / f"runs{suffix}"
        assert collect_command.main([str(sweep.parent / "results"), "-o", str(out)]) == 0
        assert read_export(out)["optim.lr"].notna().all()
        curves = (pd.read_parquet if suffix == ".parquet" else pd.read_csv)(tmp_path / f"runs_curves{suffix}")
        assert list(curves.columns) == list(CURVE_COLUMNS)
        le1 = curves[(curves["cell"] == "LE") & (curves["seed"] == 1)]
        assert sorted(set(le1["epoch"])) == [1, 2, 3, 4, 5] and {"top1", "val_loss"} <= set(le1["metric"])
        last = le1[(le1["metric"] == "top1") & (le1["epoch"] == 5)]["value"]
        assert last.iloc[0] == pytest.approx(73.0)
    assert "curve points" in capsys.readouterr().err


def test_names_with_a_pipe_or_a_formula_stay_text_in_markdown_and_csv(tmp_path, capsys):
    """An axis named ax|is keeps the Markdown header's columns; a level named =HYPERLINK(...) is not a spreadsheet
    formula in table.csv, table_long.csv or collect's CSV."""
    path = tmp_path / "odd.yaml"
    path.write_text(SWEEP.replace("name: pos_encoding", "name: 'ax|is'").replace(
        "levels: {none: none, LE: le, GL: gl, PA: pa}", "levels: {'=HYPERLINK(\"http://x\")': none, PA: pa}")
        .replace("published:\n  none: {top1: 71.54, top5: 89.82}\n  LE: {top1: 71.98, top5: 90.32}\n"
                 "  GL: {top1: 72.04, top5: 90.41}\n", "published:\n"))
    for cell in ('=HYPERLINK("http://x")', "PA"):
        write_run(tmp_path / "results" / "pe", cell, 0, sweep_file=path)
    out_dir = tmp_path / "out"
    assert tables.main([str(path), "--results-root", str(tmp_path / "results"), "--seeds", "0", "-o",
                        str(out_dir)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| "))
    assert header.startswith("| ax\\|is | n |") and header.count(" | ") == header.replace("\\|", "").count(" | ")
    table_csv = pd.read_csv(out_dir / "table.csv")
    assert '\'=HYPERLINK("http://x")' in set(table_csv["cell"])
    assert '\'=HYPERLINK("http://x")' in set(pd.read_csv(out_dir / "table_long.csv")["cell"])
    assert collect_command.main([str(path), "--results-root", str(tmp_path / "results"), "--seeds", "0", "-o",
                                 str(tmp_path / "runs.csv")]) == 0
    assert '\'=HYPERLINK("http://x")' in set(pd.read_csv(tmp_path / "runs.csv")["cell"])


def test_numbers_written_as_text_stay_numbers_in_csv():
    from analysis.render import formula_like

    assert [formula_like(v) for v in ("-5", "+1", "1e-3", "=1+1", "-x", "@a", "PA", 3)] == [
        False, False, False, True, True, True, False, False]


def test_a_folder_of_another_sweep_is_not_tabled_beside_this_sweeps_published_numbers(sweep, tmp_path, capsys):
    other = tmp_path / "pe2.yaml"
    other.write_text(SWEEP.replace("name: pe\n", "name: pe2\n", 1))
    assert tables.main([str(tmp_path / "results" / "pe"), "--sweep", str(other)]) == 2
    err = capsys.readouterr().err
    assert "its runs are of sweep 'pe', not of 'pe2'" in err and str(other) in err
    assert tables.main([str(tmp_path / "results" / "pe"), "--sweep", str(sweep)]) == 0


def test_an_impossible_row_in_a_done_runs_metrics_makes_it_corrupt_where_curves_are_read(sweep):
    """run_state decides "done" without parsing metrics.jsonl (planning reads thousands of folders); where the rows
    are read, a NaN row appended to them makes the run corrupt and never replaces a real epoch in a curve."""
    from analysis.runs import collect_curves

    results = sweep.parent / "results" / "pe"
    pa0 = runs_of(results, "PA")[0]
    with open(pa0 / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 5, "top1": NaN, "val_loss": Infinity}\n')
    df, problems = collect(results)
    assert df.set_index("path").loc[str(pa0), "state"] == "corrupt"
    assert any("top1 is nan" in p or "val_loss is inf" in p for p in problems)
    curves = collect_curves(results)
    assert pa0.name not in set(curves["run_id"]) and curves["value"].notna().all()
    table, _ = collect(results, curves=False)  # a table reads result.json only: the run is still there, done
    assert table.set_index("path").loc[str(pa0), "state"] == "done"
