"""One run store per results root: sweeps whose cells expand to the same config share one run folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ablations import results_root, store
from ablations.experiment import NO_SELECTION, resolve
from ablations.plan import make_plan
from analysis.synthetic import write_run

ROOT = Path(__file__).resolve().parents[1]
PE, REDUCTION = ROOT / "sweeps" / "pe.yaml", ROOT / "sweeps" / "reduction.yaml"
SELECT = ["--set", "data.img_size=33", "--set", "data.train_limit=64", "--set", "data.val_limit=32",
          "--set", "train.batch_size=16", "--set", "train.epochs=1"]


def command(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)


def test_the_shipped_ablation_tables_share_one_baseline_run():
    runs = {name: {r.run_id: r.cell.label for r in resolve(ROOT / "sweeps" / f"{name}.yaml").runs}
            for name in ("pe", "reduction", "emsa", "attention", "stem")}
    shared = set.intersection(*(set(ids) for ids in runs.values()))
    assert len(shared) == 1, runs
    (baseline,) = shared
    assert [runs[name][baseline] for name in runs] == ["PA", "DWConv", "origin", "EMSA", "ResT stem"]
    assert sum(map(len, runs.values())) == 15 and len(set().union(*runs.values())) == 11


def test_two_sweeps_launched_at_the_same_moment_train_the_shared_baseline_once(tmp_path):
    """The bundled quick PE and reduction sweeps with the same flags: 6 runs, not 7, and every table whole."""
    results = tmp_path / "results"
    launches = [subprocess.Popen([sys.executable, "-m", "ablations.run", str(sweep), "--results-root", str(results),
                                  *SELECT, "--executor", "local", "--no-eta", "--no-progress"], cwd=tmp_path,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for sweep in (PE, REDUCTION)]
    outputs = [p.communicate(timeout=900)[0] for p in launches]
    assert all(p.returncode == 0 for p in launches), outputs
    finished = [int(o.split(" run(s) finished")[0].rsplit("\n", 1)[-1]) if " run(s) finished" in o else 0
                for o in outputs]
    assert sum(finished) == 6, outputs
    folders = store.run_dirs_in(results_root.store_dir(results))
    assert len(folders) == 6 and all(store.run_state(d).state == store.DONE for d in folders)
    assert all(len(store.read_metrics(d / store.METRICS).rows) == 1 for d in folders), "each trained once"
    assert sorted(p.name for p in results.iterdir()) == ["pe", "reduction", "runs"]

    # the shared run is PA for pe and DWConv for reduction; whichever launched it, the other shows the origin
    status = command("ablations.status", str(REDUCTION), "--results-root", str(results), *SELECT, cwd=tmp_path)
    other = command("ablations.status", str(PE), "--results-root", str(results), *SELECT, cwd=tmp_path)
    assert status.returncode == 0 and other.returncode == 0, status.stderr + other.stderr
    assert status.stdout.count(" done ") == 3 and other.stdout.count(" done ") == 4
    dwconv = next(line for line in status.stdout.splitlines() if line.strip().startswith("DWConv"))
    pa = next(line for line in other.stdout.splitlines() if line.strip().startswith("PA"))
    assert ("(reused: pe PA)" in dwconv) != ("(reused: reduction DWConv)" in pa), (dwconv, pa)

    for target in (str(REDUCTION), str(results / "reduction")):  # the sweep file, or the bare sweep folder
        table = command("analysis.tables", target, "--results-root", str(results), *SELECT, cwd=tmp_path)
        assert table.returncode == 0, table.stderr
        assert ("DWConv = pe PA" in table.stdout) == ("(reused: pe PA)" in dwconv)  # the caption names the origin
        rows = [line.split("|")[1].strip() for line in table.stdout.splitlines() if line.startswith("| ")][2:]
        assert rows == ["DWConv", "Avg", "Max"] or sorted(rows) == ["Avg", "DWConv", "Max"], table.stdout
    collected = command("analysis.collect", str(REDUCTION), "--results-root", str(results), *SELECT,
                        "-o", str(tmp_path / "runs.csv"), cwd=tmp_path)
    assert collected.returncode == 0, collected.stderr
    import pandas as pd

    df = pd.read_csv(tmp_path / "runs.csv").set_index("cell")
    assert sorted(df.index) == ["Avg", "DWConv", "Max"] and set(df["sweep"]) == {"reduction"}
    assert df["origin"].notna().sum() == (df.loc["DWConv", "origin"] == "pe PA")  # only the shared run, if reused


def test_a_run_folder_of_the_earlier_layout_is_read_and_reused_in_place(tmp_path):
    """results/<sweep>/<cell>-s<seed>-<hash>/ keeps working: found by its hash, by this sweep and by others."""
    results = tmp_path / "results"
    pa = write_run(results / "pe", "PA", 0, sweep_file=PE)  # written where a launch puts it: the store
    legacy = results / "pe" / f"pa-s0-{results_root.config_hash(pa.name)}"
    shutil.move(pa, legacy)
    (results / "pe" / results_root.LEDGER).unlink()
    for sweep, cell in ((PE, "PA"), (REDUCTION, "DWConv")):
        plan = make_plan(resolve(sweep, NO_SELECTION, results))
        (planned,) = [p for p in plan.runs if p.run.cell.label == cell]
        assert planned.run_dir == legacy and planned.state.state == store.DONE
        assert [p.run_dir.parent for p in plan.runs if p is not planned] == [results / "runs"] * (len(plan.runs) - 1)
    from analysis.source import load_layout

    layout = load_layout(results / "pe")  # the bare folder of the earlier layout
    assert layout.run_dirs == (legacy,)


def test_a_later_launch_keeps_the_origin_and_a_ledger_names_only_folders_of_the_results_root(tmp_path):
    results = tmp_path / "results"
    run_dir = write_run(results / "pe", "PA", 0, sweep_file=PE)
    reduction = resolve(REDUCTION, NO_SELECTION, results)
    (dwconv,) = [r for r in reduction.runs if r.cell.label == "DWConv"]
    assert reduction.run_dir(dwconv) == run_dir
    store.write_config(run_dir, dwconv.config, reduction.meta(dwconv))
    assert store.read_meta(run_dir)["sweep"] == "pe" and results_root.origin(run_dir, reduction.meta(dwconv)) == \
        "pe PA"
    results_root.record_members(reduction.results_dir, [(run_dir, reduction.meta(dwconv))])
    results_root.record_members(reduction.results_dir, [(run_dir, reduction.meta(dwconv))])  # once only
    with open(reduction.results_dir / results_root.LEDGER, "a") as f:  # lines that point outside are skipped
        for name in ("../../etc", "/etc/passwd", "runs/../../x-0123456789", "runs/.hidden-0123456789"):
            f.write(json.dumps({"run": name, "meta": {"cell": "x"}}) + "\n")
    assert results_root.members(reduction.results_dir) == [(run_dir, reduction.meta(dwconv))]


@pytest.mark.parametrize("name", ["runs", "reports"])
def test_a_sweep_may_not_take_the_run_stores_name(tmp_path, name):
    from ablations.spec.sweep import SweepError, load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(PE.read_text().replace("name: pe", f"name: {name}"))
    with pytest.raises(SweepError, match="a folder of every sweep"):
        load_sweep(path)


def test_two_sweeps_submitted_to_slurm_at_the_same_instant_get_one_job_for_the_shared_run(slurm_cluster, tmp_path,
                                                                                         capsys):
    from ablations import run as run_cli
    from ablations.executors import slurm

    results = tmp_path / "results"
    barrier, codes = threading.Barrier(2), []

    def launch(sweep: Path) -> None:
        barrier.wait()
        codes.append(run_cli.main([str(sweep), "--results-root", str(results), *SELECT, "--executor", "slurm",
                                   "--no-eta", "--time-min", "10", "--cpus-per-task", "1", "--mem-gb", "1"]))

    threads = [threading.Thread(target=launch, args=(sweep,)) for sweep in (PE, REDUCTION)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert codes == [0, 0], capsys.readouterr()
        folders = store.run_dirs_in(results_root.store_dir(results))
        jobs = {d: (store.read_slurm_record(d) or {}).get("job_ids", []) for d in folders}
        assert len(folders) == 6 and all(len(ids) == 1 for ids in jobs.values()), jobs
    finally:
        slurm.cancel(results_root.store_dir(results))


STUDY = ROOT / "sweeps" / "paper-ablations.yaml"


def test_a_study_is_planned_as_one_and_each_distinct_run_counted_once(tmp_path, capsys):
    from ablations import run as run_cli
    from ablations import status as status_cli

    results = tmp_path / "results"
    assert run_cli.main([str(STUDY), "--results-root", str(results), "--dry-run", "--no-eta"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("sweep ")] == \
        ["sweep pe", "sweep reduction", "sweep emsa", "sweep attention", "sweep stem"]
    assert "study: 5 sweeps, 15 cells, 15 runs of which 11 distinct" in out and "11 new" in out
    assert out.count("optimizer adamw") == 1, "the protocol is shown once"
    assert not results.exists()
    # the study file and its sweep files named one by one are the same study
    assert run_cli.main([str(PE), str(REDUCTION), str(ROOT / "sweeps" / "emsa.yaml"),
                         str(ROOT / "sweeps" / "attention.yaml"), str(ROOT / "sweeps" / "stem.yaml"),
                         "--results-root", str(results), "--dry-run", "--no-eta"]) == 0
    assert capsys.readouterr().out == out
    assert status_cli.main([str(STUDY), "--results-root", str(results), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["sweep"] for s in shown["sweeps"]] == ["pe", "reduction", "emsa", "attention", "stem"]


def test_a_study_launch_trains_each_distinct_run_once(tmp_path, capsys):
    from ablations import run as run_cli

    results = tmp_path / "results"
    code = run_cli.main([str(PE), str(REDUCTION), "--results-root", str(results), *SELECT, "--executor", "local",
                         "--no-eta", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "launching 6 run(s)" in out and "6 run(s) finished, 0 failed" in out, out
    assert f"status: python -m ablations.status {PE} {REDUCTION}" in out
    assert f"report: python -m analysis.report {PE} {REDUCTION}" in out  # analysis.tables is about one sweep
    assert {meta["cell"] for _, meta in results_root.members(results / "reduction")} == {"DWConv", "Avg", "Max"}
    assert run_cli.main([str(PE), str(REDUCTION), "--results-root", str(results), *SELECT, "--executor", "local",
                         "--no-eta"]) == 0
    assert "nothing to run" in capsys.readouterr().out


@pytest.mark.parametrize("text, key", [
    ("study: s\nsweeps: [pe.yaml]\nextra: 1\n", "extra"),
    ("sweeps: [pe.yaml]\n", "study"),
    ("study: s\nsweeps: []\n", "sweeps"),
    ("study: s\nsweeps: [nosuch.yaml]\n", "sweeps"),
    ("study: s\nsweeps: [inner.yaml]\n", "sweeps"),
])
def test_a_bad_study_file_is_refused_naming_the_file_and_key(tmp_path, capsys, text, key):
    from ablations import run as run_cli

    shutil.copy(PE, tmp_path / "pe.yaml")
    (tmp_path / "inner.yaml").write_text("study: inner\nsweeps: [pe.yaml]\n")
    study = tmp_path / "study.yaml"
    study.write_text(text)
    assert run_cli.main([str(study), "--results-root", str(tmp_path / "results"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(study) in err and key in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "results").exists()


def test_a_study_goes_to_slurm_as_one_array_and_one_cancel_stops_it(slurm_cluster, tmp_path, capsys):
    from ablations import cancel as cancel_cli
    from ablations import run as run_cli
    from ablations.executors import slurm

    results = tmp_path / "results"
    flags = [str(PE), str(REDUCTION), "--results-root", str(results), *SELECT]
    try:
        assert run_cli.main([*flags, "--executor", "slurm", "--no-eta", "--sbatch", "hold", "--time-min", "10",
                             "--cpus-per-task", "1", "--mem-gb", "1"]) == 0
        out = capsys.readouterr().out
        assert "submitted 6 run(s) as one job array" in out, out
        assert cancel_cli.main(flags) == 0
        out = capsys.readouterr().out
        assert out.startswith("cancelled 4 job(s)") and "cancelled 2 job(s)" in out, out  # pe's 4, reduction's 2 more
    finally:
        slurm.cancel(results_root.store_dir(results))


def test_two_launches_writing_a_new_runs_config_at_once_keep_one_origin(tmp_path, monkeypatch):
    """config.json is created exclusively: a launch that found none, but writes after another launch made it,
    keeps the other's meta (the window between reading and writing, made to happen here)."""
    results = tmp_path / "results"
    pe, reduction = (resolve(s, NO_SELECTION, results) for s in (PE, REDUCTION))
    (pa,) = [r for r in pe.runs if r.cell.label == "PA"]
    (dwconv,) = [r for r in reduction.runs if r.cell.label == "DWConv"]
    run_dir = pe.run_dir(pa)
    store.write_config(run_dir, pa.config, pe.meta(pa))  # pe's launch made it first
    real, calls = store.read_json, []

    def late(path):  # reduction's launch read config.json just before pe's launch wrote it
        calls.append(path)
        return (None, f"{path}: missing") if len(calls) == 1 else real(path)

    monkeypatch.setattr(store, "read_json", late)
    store.write_config(run_dir, dwconv.config, reduction.meta(dwconv))
    monkeypatch.undo()
    assert store.read_meta(run_dir)["cell"] == "PA" and not list(run_dir.glob(".*.tmp"))
    store.write_config(run_dir, dwconv.config, reduction.meta(dwconv))  # a later launch: the origin stays
    assert store.read_meta(run_dir)["cell"] == "PA"


def test_status_shows_a_run_slurm_cancelled_as_cancelled(tmp_path):
    """After ablations.cancel: the state and the summary say cancelled (not new), and the detail says what to do,
    not the last INFO line of the job's log."""
    from ablations import status as status_cli
    from ablations.executors.slurm import RunStatus

    results = tmp_path / "results"
    plan = make_plan(resolve(PE, NO_SELECTION, results))
    planned = plan.runs[0]
    store.write_config(planned.run_dir, planned.run.config, plan.meta(planned.run))
    cluster = {planned.run_dir.name: RunStatus(planned.run_dir.name, planned.run_dir, "cancelled", "7_0", "CANCELLED",
                                               0, "2026-12-07 INFO epoch 1/3: train_loss 0.8")}
    row = status_cli.describe(planned, cluster, plan.meta(planned.run))
    assert row["state"] == "cancelled" and "INFO" not in row["detail"] and "launching again starts it" in row["detail"]
    rows = [row, *(status_cli.describe(p, {}, plan.meta(p.run)) for p in plan.runs[1:])]
    assert status_cli.format_table(plan, rows).splitlines()[-1].strip() == "3 new, 1 cancelled"
