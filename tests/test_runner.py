"""The sweep runner end to end, through the real CLI (`python -m ablations.run`), on tiny bundled-data runs."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablations import store
from ablations.experiment import Selection, resolve
from ablations.plan import make_plan
from ablations.results_root import members

ROOT = Path(__file__).resolve().parents[1]
SELECT_TINY = ["--set", "data.img_size=33", "--set", "data.train_limit=64", "--set", "data.val_limit=32",
               "--set", "train.batch_size=16"]  # the selection flags: status, tables... take these too
TINY = [*SELECT_TINY, "--executor", "local", "--no-eta"]


def write_sweep(path: Path, *, name: str = "tiny", epochs: int = 1, levels: str = "{PA: pa, GL: gl}",
                key: str = "model.pos_encoding", baseline: str = "PA") -> Path:
    path.write_text(
        f"name: {name}\npaper_table: tiny test table\nrecipe: quick\nmodel: rest_lite\n"
        f"overrides: {{train.epochs: {epochs}}}\nseeds: [0]\n"
        f"axes:\n  - name: axis\n    key: {key}\n    baseline: {baseline}\n    levels: {levels}\n"
    )
    return path


def cli(*args: str, cwd: Path, check: bool = False, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "ablations.run", *args, "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, **kwargs)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def run_dirs(results: Path, sweep: str = "tiny") -> list[Path]:
    """The run folders a sweep's folder lists (they are in the results root's run store), by cell name."""
    return [d for d, _ in sorted(members(results / sweep), key=lambda m: m[1]["cell"])]


def test_end_to_end_tiny_sweep(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    proc = cli(str(sweep), "--results-root", str(results), *TINY, cwd=tmp_path, check=True)
    assert "sweep tiny: tiny test table" in proc.stdout
    assert "quick recipe" in proc.stdout  # says on screen that this is not the paper protocol
    assert "2 run(s) finished, 0 failed" in proc.stdout
    dirs = run_dirs(results)
    assert len(dirs) == 2
    for run_dir in dirs:
        for name in (store.CONFIG, store.METRICS, store.CHECKPOINT, store.RESULT, store.LOG):
            assert (run_dir / name).exists(), f"{run_dir.name} lacks {name}"
        document = json.loads((run_dir / store.CONFIG).read_text())
        assert document["meta"]["run_id"] == run_dir.name and document["meta"]["recipe"] == "quick"
        assert document["config"]["data"]["img_size"] == 33
        assert len(store.read_metrics(run_dir / store.METRICS).rows) == 1
    # everything done: a relaunch submits nothing, and status shows it
    # its closing lines name the commands about these runs, with every selection flag given
    assert f"status: python -m ablations.status {sweep} --set data.img_size=33" in proc.stdout
    assert f"tables: python -m analysis.tables {sweep} --set data.img_size=33" in proc.stdout
    assert f"--results-root {results}" in proc.stdout.splitlines()[-1]
    again = cli(str(sweep), "--results-root", str(results), *TINY, cwd=tmp_path, check=True)
    assert "nothing to run" in again.stdout
    status = subprocess.run([sys.executable, "-m", "ablations.status", str(sweep), "--results-root", str(results),
                             *SELECT_TINY], cwd=tmp_path, capture_output=True, text=True, env={**os.environ,
                             "PYTHONPATH": str(ROOT)}, timeout=300)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count(" done ") >= 2 and "2 done" in status.stdout


def test_dry_run_writes_nothing(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    proc = cli(str(sweep), "--results-root", str(tmp_path / "results"), "--dry-run", *TINY, cwd=tmp_path, check=True)
    assert "2 runs: 2 new" in proc.stdout
    assert "nothing was written" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_nan_loss_fails_that_run_and_the_others_finish(tmp_path):
    sweep = write_sweep(tmp_path / "lr.yaml", key="optim.lr", levels="{ok: 0.001, huge: 1.0e+9}", baseline="ok")
    results = tmp_path / "results"
    proc = cli(str(sweep), "--results-root", str(results), *TINY, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 run(s) finished, 1 failed" in proc.stdout
    assert "non-finite loss" in proc.stdout
    states = {meta["cell"].lower(): store.run_state(d) for d, meta in members(results / "tiny")}
    assert states["ok"].state == store.DONE
    assert states["huge"].state == store.FAILED and "non-finite" in states["huge"].error


def read_final(run_dir: Path) -> dict:
    result = json.loads((run_dir / store.RESULT).read_text())
    rows = store.read_metrics(run_dir / store.METRICS).rows
    keys = ("epoch", "train_loss", "val_loss", "top1", "top5", "lr")
    return {"final": result["final"], "best": result["best"], "metrics": [{k: r[k] for k in keys} for r in rows]}


def test_kill_9_mid_epoch_then_relaunch_resumes_with_identical_metrics(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml", epochs=3, levels="{PA: pa}")
    slow = [*TINY, "--set", "data.train_limit=192"]
    # uninterrupted reference run
    cli(str(sweep), "--results-root", str(tmp_path / "ref"), *slow, cwd=tmp_path, check=True)
    # interrupted run: SIGKILL after the first checkpoint exists, i.e. during epoch 2 or 3
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ablations.run", str(sweep), "--results-root", str(results),
                             *slow, "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    checkpoint = None
    while time.time() < deadline and proc.poll() is None:
        found = list(results.glob("runs/*/checkpoint.pt"))
        if found:
            checkpoint = found[0]
            time.sleep(0.3)  # into the next epoch
            break
        time.sleep(0.05)
    assert checkpoint is not None and proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = checkpoint.parent
    assert not (run_dir / store.RESULT).exists()
    assert store.run_state(run_dir).state == store.PARTIAL
    cli(str(sweep), "--results-root", str(results), *slow, cwd=tmp_path, check=True)
    (ref_dir,) = run_dirs(tmp_path / "ref")
    assert ref_dir.name == run_dir.name
    assert read_final(run_dir) == read_final(ref_dir)


def test_two_concurrent_launches_run_each_cell_once(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml", levels="{PA: pa, GL: gl, none: none}")
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "ablations.run", str(sweep), "--results-root", str(results), *TINY,
               "--no-progress"]
    launches = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in launches]
    assert all(p.returncode == 0 for p in launches), outputs
    finished = sum(int(o.split(" run(s) finished")[0].rsplit("\n", 1)[-1]) for o in outputs if " run(s) finished" in o)
    assert finished == 3, outputs  # every cell trained by exactly one of the two launches
    for run_dir in run_dirs(results):
        assert store.run_state(run_dir).state == store.DONE
        assert len(store.read_metrics(run_dir / store.METRICS).rows) == 1


def test_corrupt_files_are_reported_and_the_cell_is_partial(tmp_path):
    sweep_path = write_sweep(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    cli(str(sweep_path), "--results-root", str(results), *TINY, cwd=tmp_path, check=True)
    first, second = run_dirs(results)
    (first / store.RESULT).write_text('{"final": {"top1": 5')  # truncated
    with open(second / store.METRICS, "a") as f:
        f.write('{"epoch": 2, "top')
    proc = cli(str(sweep_path), "--results-root", str(results), "--dry-run", *TINY, cwd=tmp_path, check=True)
    assert "warning" in proc.stdout and "result.json" in proc.stdout and "metrics.jsonl" in proc.stdout
    assert f"0:{store.PARTIAL}" in proc.stdout
    # the truncated result is resumed from the checkpoint and finished again
    cli(str(sweep_path), "--results-root", str(results), *TINY, cwd=tmp_path, check=True)
    assert store.run_state(first).state == store.DONE


@pytest.mark.parametrize("n_seeds", [3])
def test_seeds_flag_repeats_every_cell(tmp_path, n_seeds):
    experiment = resolve(write_sweep(tmp_path / "tiny.yaml"), Selection(seeds=tuple(range(n_seeds))),
                         tmp_path / "results")
    plan = make_plan(experiment)
    assert len(plan.runs) == 2 * n_seeds
    assert plan.counts()[store.NEW] == 2 * n_seeds


def test_plan_prints_the_batch_split_and_deviations_logger_is_not_an_experiment(tmp_path, capsys):
    from ablations import run as run_cli

    sweep = write_sweep(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    common = [str(sweep), "--results-root", str(results), "--executor", "local", "--no-eta", "--dry-run"]
    assert run_cli.main([*common, "--set", "train.device_batch=8", "--set", "train.batch_size=32"]) == 0
    out = capsys.readouterr().out
    assert "global batch 32 = 1 device x 8 per device x 4 accumulation steps" in out
    assert "DEVIATION from recipe quick: train.device_batch=8 (recipe: None)" not in out  # quick sets none
    assert run_cli.main([*common, "--set", "train.batch_size=64"]) == 0
    assert "DEVIATION from recipe quick: train.batch_size=64 (recipe: 32)" in capsys.readouterr().out
    plain = make_plan(resolve(sweep, Selection(), results))
    logged = make_plan(resolve(sweep, Selection(sets=("train.logger=none", "train.keep_checkpoints=none")), results))
    assert [p.run.run_id for p in plain.runs] == [p.run.run_id for p in logged.runs]
    assert plain.experiment.key == logged.experiment.key
    assert run_cli.main([*common, "--logger", "none", "--keep-checkpoints", "best"]) == 0
    assert run_cli.main([*common[:-1], "--set", "train.devices=2"]) == 2  # local: one process per run
    assert "train.devices" in capsys.readouterr().err


def test_data_loading_workers_default_from_the_jobs_cpus(monkeypatch):
    from ablations.executors.job import default_workers, job_cpus

    assert job_cpus({"SLURM_CPUS_PER_TASK": "6"}) == 6 and default_workers({"SLURM_CPUS_PER_TASK": "6"}) == 5
    assert default_workers({"SLURM_CPUS_PER_TASK": "64"}) == 8 and default_workers({"REST_JOB_CPUS": "1"}) == 0
    assert job_cpus({}) == len(os.sched_getaffinity(0))  # locally: this machine's cores
    assert default_workers({"REST_JOB_CPUS": "3"}) == 2
    from ablations.executors.job import workers_for
    from ablations.spec.config import RunConfig, with_overrides

    images = with_overrides(RunConfig(), {"data.dataset": "imagefolder", "data.root": "/data"})
    assert workers_for(images, None, {"SLURM_CPUS_PER_TASK": "10"}) == 8
    assert workers_for(RunConfig(), None, {"SLURM_CPUS_PER_TASK": "10"}) == 0  # digits: in memory
    assert workers_for(images, 2, {"SLURM_CPUS_PER_TASK": "10"}) == 2  # --workers wins


@pytest.mark.parametrize("case", ["digits", "imagefolder", "train_limit"])
def test_a_batch_larger_than_the_training_set_is_refused_before_anything_is_written(tmp_path, capsys, case):
    """The loader drops the last partial batch: a global batch over the training images would train no step."""
    from ablations import run as run_cli

    sweep = write_sweep(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    flags = {"digits": ["--set", "train.batch_size=2048"],
             "train_limit": ["--set", "data.train_limit=12", "--set", "train.batch_size=16"]}.get(case)
    if case == "imagefolder":  # 3 images (and a file torchvision does not read) in train/<class>/
        for rel in ("train/a/0.png", "train/a/1.JPG", "train/b/sub/2.png", "train/b/notes.txt", "val/a/0.png",
                    "val/b/0.png"):
            (tmp_path / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / rel).write_bytes(b"not decoded by the check")
        flags = ["--set", "data.dataset=imagefolder", "--data-root", str(tmp_path / "data")]
    common = [str(sweep), "--results-root", str(results), "--executor", "local", "--no-eta", "--dry-run"]
    if case == "imagefolder":
        assert run_cli.main([*common, *flags, "--set", "train.batch_size=3"]) == 0  # one full batch: trains
        capsys.readouterr()
        flags = [*flags, "--set", "train.batch_size=4"]
    assert run_cli.main([*common[:-1], *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {sweep}: train.batch_size: ") and err.count("\n") == 1, err
    expected = {"digits": "2048 (the global batch of one update) is more than the 1,438 training images of dataset "
                          "'digits'",
                "imagefolder": "4 (the global batch of one update) is more than the 3 training images of dataset "
                               "'imagefolder'",
                "train_limit": "16 (the global batch of one update) is more than the 12 training images of "
                               "data.train_limit=12 (dataset 'digits' has 1,438)"}[case]
    assert expected in err and "no training step" in err
    assert not results.exists()
