"""--grid: axes from the command line, as Hydra's multirun adds them; part of the experiment's identity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_runner import SELECT_TINY, write_sweep

from ablations import run as run_cli
from ablations import status as status_cli
from analysis import collect as collect_cli
from analysis import tables as tables_cli

ROOT = Path(__file__).resolve().parents[1]
PE = ROOT / "sweeps" / "pe.yaml"
GRID = ["--grid", "model.reduction=dwconv,avg"]


def test_a_grid_axis_multiplies_the_cells_labelled_by_its_values(tmp_path, capsys):
    assert run_cli.main([str(PE), *GRID, "--results-root", str(tmp_path / "r"), "--dry-run", "--no-eta"]) == 0
    out = capsys.readouterr().out
    cells = [line.split("0:")[0].strip() for line in out.splitlines() if " 0:new" in line]
    assert cells == ["none / dwconv", "none / avg", "LE / dwconv", "LE / avg", "GL / dwconv", "GL / avg",
                     "PA / dwconv *", "PA / avg"]  # the first value is the grid axis's baseline
    assert "8 cells x 1 seeds = 8 runs" in out and not (tmp_path / "r").exists()
    two = ["--grid", "model.reduction=dwconv,avg", "--grid", "model.head_norm=true,false"]
    assert run_cli.main([str(PE), *two, "--results-root", str(tmp_path / "r"), "--dry-run", "--no-eta"]) == 0
    assert "16 cells x 1 seeds = 16 runs" in capsys.readouterr().out


@pytest.mark.parametrize("flags, words", [
    (["--grid", "model.reduction=dwconv,bogus"], ["model.reduction", "dwconv"]),  # names what is allowed
    (["--grid", "model.pos_encoding=pa,gl"], ["model.pos_encoding", "varies it already"]),
    (["--grid", "model.reduction=avg"], ["two values or more"]),
    (["--grid", "model.reduction=avg,avg"], ["listed twice"]),
    (["--grid", "optim.lrr=1,2"], ["optim.lrr"]),
    (["--grid", "model.reduction=dwconv,avg", "--grid", "model.reduction=max,avg"], ["given twice"]),
    (["--grid", "model.reduction=dwconv,avg", "--set", "model.reduction=avg"], ["--set gives it one value"]),
])
def test_a_bad_grid_is_refused_with_one_line(tmp_path, capsys, flags, words):
    assert run_cli.main([str(PE), *flags, "--results-root", str(tmp_path / "r"), "--dry-run", "--no-eta"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and all(w in err for w in words), err
    assert not (tmp_path / "r").exists()


def test_a_grid_is_part_of_the_experiment_every_command_selects(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "tiny.yaml", levels="{PA: pa, GL: gl}")
    results = tmp_path / "results"
    select = [str(sweep), "--results-root", str(results), *SELECT_TINY, *GRID]
    assert run_cli.main([*select, "--executor", "local", "--no-eta", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "4 run(s) finished" in out and "--grid model.reduction=dwconv,avg" in out.splitlines()[-1]
    assert status_cli.main([*select, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(r["cell"], r["state"]) for r in shown["runs"]] == [
        ("PA / dwconv", "done"), ("PA / avg", "done"), ("GL / dwconv", "done"), ("GL / avg", "done")]
    # without the grid: the sweep as written, whose runs are the grid's dwconv cells (dwconv is the default)
    assert status_cli.main([str(sweep), "--results-root", str(results), *SELECT_TINY, "--json"]) == 0
    assert [r["state"] for r in json.loads(capsys.readouterr().out)["runs"]] == ["done", "done"]

    assert tables_cli.main(select) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| axis / model.reduction |") and len(lines) == 2 + 4, captured.out
    assert "grid model.reduction=dwconv,avg" in captured.err  # the experiment shown names its grid
    assert "Grid axes added to the sweep's (--grid): model.reduction=dwconv,avg." in captured.out  # and the caption
    (folder,) = (results / "tiny" / "reports").iterdir()
    assert "+grid-" in folder.name  # its own folder (the name is cut when long; a hash tells experiments apart)
    assert collect_cli.main([*select, "-o", str(tmp_path / "runs.csv")]) == 0
    import pandas as pd

    assert sorted(pd.read_csv(tmp_path / "runs.csv")["cell"]) == ["GL / avg", "GL / dwconv", "PA / avg",
                                                                   "PA / dwconv"]
    # a bare sweep folder: the grid picks its experiment
    assert tables_cli.main([str(results / "tiny"), *SELECT_TINY, *GRID]) == 0
    assert sum(line.startswith("| ") for line in capsys.readouterr().out.splitlines()) == 2 + 4


def test_the_plots_of_a_grid_facet_by_its_last_axis(tmp_path):
    from ablations.experiment import Selection
    from analysis.figures import bars, curves
    from analysis.runs import collect
    from analysis.source import load_layout
    from analysis.synthetic import write_run
    from analysis.table import build_table

    results = tmp_path / "results"
    for cell in ("none / dwconv", "none / avg", "LE / dwconv", "LE / avg", "GL / dwconv", "GL / avg",
                 "PA / dwconv", "PA / avg"):
        write_run(results / "pe", cell, 0, sweep_file=PE, grid={"model.reduction": ["dwconv", "avg"]})
    layout = load_layout(PE, results_root=results, selection=Selection(grids=("model.reduction=dwconv,avg",)))
    df = collect(results, run_dirs=layout.run_dirs, metas=layout.run_meta)[0]
    table = build_table(df, layout)
    titles = [ax.get_title() for ax in bars(table, df).axes if ax.get_visible()]
    assert titles == ["Top-1 (model.reduction = dwconv)", "Top-5 (model.reduction = dwconv)",
                      "Top-1 (model.reduction = avg)", "Top-5 (model.reduction = avg)"], titles
    panels = [ax for ax in curves(table, df).axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["model.reduction = dwconv"] * 2 + ["model.reduction = avg"] * 2
    legend = [t.get_text() for t in panels[2].get_legend().get_texts()]
    assert [text.split(" (")[0] for text in legend] == ["none / avg", "LE / avg", "GL / avg", "PA / avg"]


def test_the_facets_come_from_the_cells_levels_even_when_a_level_name_holds_the_label_separator(tmp_path):
    """Cell labels join level names with " / "; a level name may hold it too ("1x1 / IN"), so the facet of
    a cell is its recorded level, not a split of its label, for a sweep file's cells and for a bare folder."""
    from ablations import store
    from ablations.spec.config import RunConfig
    from analysis.figures import bars
    from analysis.runs import collect
    from analysis.source import load_layout
    from analysis.synthetic import write_run
    from analysis.table import build_table

    sweep = tmp_path / "slash.yaml"
    sweep.write_text(
        "name: slash\npaper_table: levels with a slash\nrecipe: quick\nmodel: rest_lite\nseeds: [0]\naxes:\n"
        "  - {name: reduction, key: model.reduction, baseline: dwconv, levels: {dwconv: dwconv, avg: avg}}\n"
        "  - {name: kernel, baseline: 1x1 / IN, levels: {1x1 / IN: {model.head_norm: true},"
        " 3x3 / IN: {model.head_norm: false}}}\n")
    results = tmp_path / "results"
    cells = ("dwconv / 1x1 / IN", "dwconv / 3x3 / IN", "avg / 1x1 / IN", "avg / 3x3 / IN")
    for cell in cells:
        write_run(results / "slash", cell, 0, sweep_file=sweep)
    ledger = results / "slash" / "runs.jsonl"
    rows = [json.loads(line) for line in ledger.read_text().splitlines()]
    for row in rows[:2]:  # two runs of before meta.axes: their axes' order comes from their cell labels
        del row["meta"]["axes"]
        run_dir = results / row["run"]  # runs/<id>, from the results root
        document = json.loads((run_dir / "config.json").read_text())
        del document["meta"]["axes"]
        (run_dir / "config.json").write_text(json.dumps(
            store.config_document(RunConfig.from_dict(document["config"]), document["meta"])))
    ledger.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for layout in (load_layout(sweep, results_root=results), load_layout(results / "slash")):
        df = collect(results, run_dirs=layout.run_dirs, metas=layout.run_meta)[0]
        table = build_table(df, layout)
        titles = [ax.get_title() for ax in bars(table, df).axes if ax.get_visible()]
        assert sorted(set(titles)) == ["Top-1 (kernel = 1x1 / IN)", "Top-1 (kernel = 3x3 / IN)",
                                       "Top-5 (kernel = 1x1 / IN)", "Top-5 (kernel = 3x3 / IN)"], titles


def test_two_grid_axes_keep_their_order_in_the_stored_meta_and_a_bare_folder_with_its_sweep(tmp_path):
    """The axes' order is the experiment's (the cells' labels follow it): stored as pairs, not as a JSON object
    that comes back sorted; and a results folder with --sweep takes the grid too."""
    from ablations.experiment import ExperimentKey, Selection, resolve
    from analysis.source import load_layout
    from analysis.synthetic import write_run

    grids = ("train.epochs=1,2", "model.reduction=dwconv,avg")  # not in sorted order
    experiment = resolve(PE, Selection(grids=grids, seeds=(0,)), tmp_path / "results")
    meta = json.loads(json.dumps(experiment.meta(experiment.runs[0]), sort_keys=True))  # as config.json keeps it
    assert ExperimentKey.from_meta(meta) == experiment.key
    write_run(tmp_path / "results" / "pe", "PA / 1 / avg", 0, sweep_file=PE,
              grid={"train.epochs": ["1", "2"], "model.reduction": ["dwconv", "avg"]})
    bare = load_layout(tmp_path / "results" / "pe", selection=Selection(grids=grids))
    assert len(bare.run_dirs) == 1
    with_sweep = load_layout(tmp_path / "results" / "pe", sweep=PE, selection=Selection(grids=grids))
    assert [c.label for c in with_sweep.cells][:2] == ["none / 1 / dwconv", "none / 1 / avg"]


def test_a_grid_whose_cells_would_be_one_run_is_refused(tmp_path, capsys):
    assert run_cli.main([str(PE), "--grid", "train.keep_checkpoints=last,best", "--results-root", str(tmp_path),
                         "--dry-run", "--no-eta"]) == 2
    assert "are the same run" in capsys.readouterr().err
