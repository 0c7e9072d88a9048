"""The command lines as a user meets them: what they import, their help, where runs go, signals, --jobs,
--force through the one run path, and plans that compute nothing when nothing is left to run."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_runner import ROOT, SELECT_TINY, TINY, cli, run_dirs, write_sweep

from ablations import store
from ablations.executors.job import ALREADY_DONE, TRAINED, RunJob
from ablations.experiment import Selection, resolve

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
LIGHT_MODULES = ("ablations.spec.config", "ablations.spec.dataset_checks", "ablations.spec.sweep",
                 "ablations.spec.recipe", "ablations.store", "ablations.experiment", "ablations.plan", "ablations.run",
                 "ablations.status", "ablations.cancel", "ablations.train", "ablations.executors.job",
                 "ablations.executors.slurm", "analysis.source", "analysis.runs", "analysis.collect", "analysis.tables",
                 "analysis.report", "ablations.results_root", "ablations.spec.study")
COMMANDS = ("ablations.run", "ablations.status", "ablations.cancel", "ablations.train", "analysis.tables",
            "analysis.plots", "analysis.collect", "analysis.report")


def python(*args: str, cwd: Path = ROOT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600,
                          **kwargs)


def test_config_sweep_store_status_and_readers_import_neither_torch_nor_timm():
    code = (f"import sys\nfor m in {LIGHT_MODULES!r}: __import__(m)\n"
            "print(sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules))")
    proc = python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("module", COMMANDS)
def test_every_command_has_help_for_every_flag(module):
    proc = python("-X", "importtime", "-m", module, "--help")
    assert proc.returncode == 0 and "usage: python -m" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "timm", "pandas"}, f"{module} --help imports torch, timm or pandas"
    parser = __import__(module, fromlist=["build_parser"]).build_parser()
    undocumented = [a.option_strings or a.dest for a in parser._actions
                    if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert undocumented == []


def test_status_help_shows_only_the_flags_that_select_runs():
    out = python("-m", "ablations.status", "--help").stdout
    for flag in ("--recipe", "--set", "--seeds", "--data-root", "--results-root", "--json"):
        assert flag in out
    for flag in ("--force", "--wait", "--partition", "--executor", "--dry-run", "--retry-failed"):
        assert flag not in out


def test_the_output_flag_has_one_name():
    for args in (["analysis.tables"], ["analysis.collect"], ["analysis.report"], ["analysis.plots", "table"],
                 ["analysis.plots", "scaling"], ["analysis.plots", "attention"]):
        out = python("-m", *args, "--help").stdout
        assert "-o OUTPUT, --output OUTPUT" in out and "--out " not in out, args


def test_cancel_of_a_sweep_never_launched(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    proc = python("-m", "ablations.cancel", str(sweep), "--results-root", str(tmp_path / "results"))
    assert proc.returncode == 0 and "never launched" in proc.stdout and "Traceback" not in proc.stderr


def test_bad_input_is_one_line_naming_file_key_and_line(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml", levels="{PA: pa, odd: zz}")
    for module in ("ablations.run", "ablations.status", "ablations.cancel", "analysis.tables"):
        proc = python("-m", module, str(sweep), "--results-root", str(tmp_path / "r"))
        assert proc.returncode == 2, module
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert f"{sweep} (line 11)" in proc.stderr and "axes[0].levels.odd" in proc.stderr and "'zz'" in proc.stderr


# ---- where runs go ----------------------------------------------------------------------------------------------
def fake_slurm_client(folder: Path, sinfo_exit: int) -> str:
    """A PATH holding an `sbatch` and an `sinfo` that exits with `sinfo_exit` (1: no controller answers)."""
    folder.mkdir()
    for name, code in (("sbatch", 0), ("sinfo", sinfo_exit)):
        path = folder / name
        path.write_text(f"#!/bin/sh\necho debug\nexit {code}\n")
        path.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_executor_auto_needs_a_controller_that_answers(tmp_path, monkeypatch):
    from ablations.run import resolve_executor

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("PATH", fake_slurm_client(tmp_path / "down", sinfo_exit=1))
    assert resolve_executor("auto") == ("local", "the SLURM client is installed but no controller answers")
    monkeypatch.setenv("PATH", fake_slurm_client(tmp_path / "up", sinfo_exit=0))
    assert resolve_executor("auto")[0] == "slurm"
    monkeypatch.setenv("SLURM_JOB_ID", "1234")  # inside an allocation: the runs use it
    assert resolve_executor("auto") == ("local", "inside SLURM allocation 1234: the runs use it")
    assert resolve_executor("slurm")[0] == "slurm"


def test_the_plan_header_says_where_runs_go(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    proc = cli(str(sweep), "--results-root", str(tmp_path / "results"), "--dry-run", *TINY, cwd=tmp_path, check=True)
    assert "runs go to: local executor (--executor local)" in proc.stdout


# ---- plans -----------------------------------------------------------------------------------------------------
def finish(experiment, speed: float | None = None) -> None:
    """Every run of the experiment made to look finished (as benchmarks.planning does)."""
    for run in experiment.runs:
        run_dir = experiment.run_dir(run)
        store.write_config(run_dir, run.config, experiment.meta(run))
        store.append_metrics(run_dir, {"epoch": 1, "top1": 90.0, "top5": 99.0, "val_loss": 0.3})
        result = {"final": {"top1": 90.0, "top5": 99.0, "val_loss": 0.3}, "epochs": 1}
        if speed is not None:
            import platform

            result.update(train_img_s=speed, host=platform.node())
        store.write_result(run_dir, result)


def test_a_finished_sweep_is_planned_without_torch(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    finish(resolve(sweep, Selection(sets=tuple(SELECT_TINY[1::2])), tmp_path / "results"))
    for module, extra in (("ablations.run", ["--executor", "local"]), ("ablations.status", [])):
        proc = python("-X", "importtime", "-m", module, str(sweep), "--results-root", str(tmp_path / "results"),
                      *SELECT_TINY, *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert not imported & {"torch", "timm"}, module
    assert "nothing to run: every run is done" in python("-m", "ablations.run", str(sweep), "--results-root",
                                                          str(tmp_path / "results"), *SELECT_TINY, "--executor",
                                                          "local", cwd=tmp_path).stdout


def test_a_dry_run_with_a_warm_cache_imports_no_torch(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    args = ["-m", "ablations.run", str(sweep), "--results-root", str(tmp_path / "results"), "--dry-run",
            *TINY[:-1]]  # with the cost columns (no --no-eta)
    first = python(*args, cwd=tmp_path)
    assert first.returncode == 0 and "10.00M" in first.stdout, first.stdout + first.stderr
    again = python("-X", "importtime", *args, cwd=tmp_path)
    imported = {line.rsplit("|", 1)[-1].strip() for line in again.stderr.splitlines() if "|" in line}
    assert again.returncode == 0 and "10.00M" in again.stdout
    assert not imported & {"torch", "timm"}, "a warm dry run imported torch"


def test_costs_at_the_runs_own_size_and_eta_from_recorded_speeds(tmp_path):
    from ablations.plan import PlanCache, complexity_of, counting_code, make_plan, recorded_speed

    sweep = write_sweep(tmp_path / "tiny.yaml", levels="{PA: pa, LE: le}")
    results = tmp_path / "results"
    small = resolve(sweep, Selection(sets=("data.img_size=48",)), results)
    large = resolve(sweep, Selection(sets=("data.img_size=224",)), results)
    cache = PlanCache(tmp_path / "cache.json")
    le_small = complexity_of(small.runs[1].config, 10, cache)["params"]
    le_large = complexity_of(large.runs[1].config, 10, cache)["params"]
    assert le_small < le_large  # LE's embedding grows with the input: the plan shows the trained model's size
    assert len(cache.data["complexity"]) == 2
    # counts cached by other model or counting code are computed again, not shown
    stale = {key.replace(counting_code(), "other-code"): {**value, "params": 1}
             for key, value in cache.data["complexity"].items()}
    cache.data["complexity"] = stale
    assert complexity_of(small.runs[1].config, 10, cache)["params"] == le_small
    assert recorded_speed(make_plan(small), small.runs[0].config, 10, cache) is None  # nothing finished yet
    finish(small, speed=123.0)
    speed = recorded_speed(make_plan(small), small.runs[0].config, 10, cache)
    assert (speed.source, speed.img_per_s, speed.runs) == ("recorded", 123.0, 2)
    assert "recorded by 2 finished run(s)" in speed.describe()
    for speeds in cache.data["speeds"].values():  # a cache written before speeds kept their time: bare floats
        speeds.update({name: 999.0 for name in speeds})
    speed = recorded_speed(make_plan(small), small.runs[0].config, 10, cache)
    assert speed.img_per_s == 123.0, "read again from the runs (with their time), not the bare 999s"


def test_a_recorded_speed_is_the_median_of_recent_runs_and_says_how_many_and_how_old():
    """16 runs recorded on a loaded machine weeks ago must not decide today's ETA: the median of the most recent
    (at most 8, none stale) does, and the plan says which."""
    from datetime import UTC, datetime, timedelta

    from ablations.plan import RECENT_RUNS, STALE_DAYS, recent_median

    now = datetime.now(UTC)
    at = lambda days: (now - timedelta(days=days)).isoformat(timespec="seconds")  # noqa: E731
    loaded_long_ago = [(19.0, at(STALE_DAYS + 10 + i)) for i in range(16)]
    today = [(60.0, at(0.01 * i)) for i in range(3)] + [(4.0, at(0.02))]  # one slowed by a busy machine
    median, recorded = recent_median(loaded_long_ago + today, now=now.timestamp())
    assert median == 60.0 and recorded.used == 4 and recorded.total == 20
    assert "4-60 img/s; the 4 most recent of 20; finished <1 min to" in recorded.describe()
    many = [(float(i), at(i / 24)) for i in range(1, 13)]  # hourly
    median, recorded = recent_median(many, now=now.timestamp())
    assert recorded.used == RECENT_RUNS and median == 4.5, "the 8 most recent: 1 to 8"


def test_a_speed_measurement_says_so_and_shows_its_spread(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    proc = cli(str(sweep), "--results-root", str(tmp_path / "results"), *SELECT_TINY, "--executor", "local",
               "--set", "train.epochs=1", "--set", "data.train_limit=16", "--set", "data.val_limit=16",
               cwd=tmp_path, check=True)
    assert "from a speed measurement of rest_lite on this machine (spread" in proc.stdout
    again = cli(str(sweep), "--results-root", str(tmp_path / "results"), *SELECT_TINY, "--executor", "local",
                "--set", "train.epochs=1", "--set", "data.train_limit=16", "--set", "data.val_limit=16",
                "--dry-run", "--set", "train.seed=0", "--seeds", "1", cwd=tmp_path, check=True)
    assert "recorded by 2 finished run(s) of rest_lite on this machine" in again.stdout


# ---- the one run path ------------------------------------------------------------------------------------------------
def test_force_archives_under_the_lock_in_process_and_under_submitit(tmp_path, make_run, standin_trainer, wait_until):
    import submitit

    run_dir = make_run(tmp_path / "sweep", standin={"steps": 1, "step_s": 0.01})
    assert RunJob(run_dir, trainer=standin_trainer).run().status == TRAINED
    assert RunJob(run_dir, trainer=standin_trainer).run().status == ALREADY_DONE  # skipped: nothing archived
    assert not (run_dir / store.PREVIOUS).exists()
    first = (run_dir / store.RESULT).read_text()
    assert RunJob(run_dir, force=True, trainer=standin_trainer).run().status == TRAINED
    [archive] = (run_dir / store.PREVIOUS).iterdir()
    assert (archive / store.RESULT).read_text() == first and store.run_state(run_dir).state == store.DONE
    # the same object under submitit's local executor: the same decisions
    executor = submitit.LocalExecutor(tmp_path / "submitit")
    executor.update_parameters(timeout_min=5)
    job = executor.submit(RunJob(run_dir, force=True, trainer=standin_trainer))
    wait_until(job.done, 120, "the forced job")
    assert job.result()["epochs"] == 1
    assert len(list((run_dir / store.PREVIOUS).iterdir())) == 2
    # a job that finds the folder locked leaves it alone, whatever it was asked
    with store.run_lock(run_dir), pytest.raises(store.RunLocked):
        RunJob(run_dir, force=True, trainer=standin_trainer).run()
    assert len(list((run_dir / store.PREVIOUS).iterdir())) == 2


def test_jobs_runs_several_at_once_and_refuses_more_than_the_cores(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml", levels="{PA: pa, GL: gl}")
    results = tmp_path / "results"
    proc = cli(str(sweep), "--results-root", str(results), *TINY, "--jobs", "2", cwd=tmp_path)
    if len(os.sched_getaffinity(0)) < 2:
        assert proc.returncode == 2 and "--jobs" in proc.stderr
        return
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 run(s) finished, 0 failed" in proc.stdout
    assert all(store.run_state(d).state == store.DONE for d in run_dirs(results))
    epochs = [line for line in proc.stderr.splitlines() if "epoch 1/1" in line]
    names = {d.name for d in run_dirs(results)}
    assert len(epochs) == 2 and all(any(f"[{n}]" in line for n in names) for line in epochs), proc.stderr
    too_many = cli(str(sweep), "--results-root", str(results), *TINY, "--jobs", "999", cwd=tmp_path)
    assert too_many.returncode == 2 and too_many.stderr.startswith("error: --jobs: 999")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_a_signal_stops_a_local_sweep_with_one_line_and_it_resumes(tmp_path, signum, code):
    sweep = write_sweep(tmp_path / "tiny.yaml", epochs=2, levels="{PA: pa, GL: gl}")
    results = tmp_path / "results"
    slow = [*TINY, "--set", "data.train_limit=256"]
    proc = subprocess.Popen([sys.executable, "-m", "ablations.run", str(sweep), "--results-root", str(results),
                             *slow, "--no-progress"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(results.glob("runs/*/log.txt")):
        time.sleep(0.05)
    time.sleep(1.0)  # into the training loop
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, out + err
    assert "Traceback" not in err and f"sweep interrupted by {signal.Signals(signum).name}" in err
    assert [line for line in err.splitlines() if "interrupted" in line][-1].startswith("sweep interrupted")
    assert sum(store.run_state(d).state == store.DONE for d in run_dirs(results)) < 2  # stopped mid-sweep
    resumed = cli(str(sweep), "--results-root", str(results), *slow, cwd=tmp_path, check=True)
    assert "0 failed" in resumed.stdout
    assert all(store.run_state(d).state == store.DONE for d in run_dirs(results))
    for run_dir in run_dirs(results):
        assert [r["epoch"] for r in store.read_metrics(run_dir / store.METRICS).rows] == [1, 2]


def test_status_json_and_exit_code(tmp_path):
    sweep = write_sweep(tmp_path / "tiny.yaml")
    experiment = resolve(sweep, Selection(), tmp_path / "results")
    finish(experiment)
    failed = experiment.run_dir(experiment.runs[1])
    (failed / store.RESULT).unlink()
    store.write_error(failed, "RuntimeError: boom", "", 1)
    proc = python("-m", "ablations.status", str(sweep), "--results-root", str(tmp_path / "results"), "--json",
                  cwd=tmp_path)
    assert proc.returncode == 1
    listed = json.loads(proc.stdout)
    assert [(r["cell"], r["state"]) for r in listed["runs"]] == [("PA", "done"), ("GL", "failed")]
    assert "boom" in listed["runs"][1]["detail"] and listed["others"] is None


def test_an_unusable_results_root_or_a_full_disk_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    import errno

    from ablations import run as run_cli

    sweep = write_sweep(tmp_path / "tiny.yaml")
    not_a_folder = tmp_path / "results"
    not_a_folder.write_text("a file, not a folder\n")
    assert run_cli.main([str(sweep), "--results-root", str(not_a_folder), *TINY]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(not_a_folder) in err

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", full)
    assert run_cli.main([str(sweep), "--results-root", str(tmp_path / "r2"), *TINY]) == 1
    err = capsys.readouterr().err
    assert "config.json: No space left on device" in err and "Traceback" not in err
    assert not list((tmp_path / "r2").rglob(".*.tmp")), "no temp file is left behind"


def test_slurm_eta_comes_from_recorded_gpu_runs_or_is_omitted(tmp_path, capsys):
    from ablations import run as run_cli
    from analysis.synthetic import write_run

    sweep = write_sweep(tmp_path / "tiny.yaml")
    results = tmp_path / "results"
    select = ["--results-root", str(results), "--set", "data.img_size=33", "--executor", "slurm", "--dry-run"]
    cpu_run = write_run(results / "tiny", "PA", 0, sweep_file=sweep, sets={"data.img_size": 33}, device="cpu")
    result = json.loads((cpu_run / store.RESULT).read_text())
    store.atomic_write_json(cpu_run / store.RESULT, {**result, "train_img_s": 50.0, "host": os.uname().nodename})
    assert run_cli.main([str(sweep), *select]) == 0
    out = capsys.readouterr().out
    assert "no ETA: no finished GPU run has recorded a speed" in out and "measurement" not in out
    store.atomic_write_json(cpu_run / store.RESULT, {**result, "train_img_s": 500.0, "device": "cuda (H100)"})
    assert run_cli.main([str(sweep), *select]) == 0
    out = capsys.readouterr().out
    assert "at 500 training img/s recorded by 1 finished GPU run(s)" in out


def test_the_plan_shows_the_whole_protocol_and_what_each_slurm_array_requests(tmp_path, capsys):
    from ablations import run as run_cli

    sweep = write_sweep(tmp_path / "tiny.yaml", key="model.name", levels="{Lite: rest_lite, Small: rest_small}",
                        baseline="Lite")
    sweep.write_text(sweep.read_text() + "slurm:\n  time_min: 30\n  mem_gb: 2\n"
                     "  per_level: {Small: {time_min: 600, gpus_per_node: 4, partition: big}}\n")
    flags = ["--results-root", str(tmp_path / "r"), "--dry-run", "--no-eta", "--set", "optim.lr_base_batch=512",
             "--set", "sched.name=step", "--set", "train.epochs=10", "--set", "sched.warmup_epochs=2"]
    assert run_cli.main([str(sweep), *flags, "--executor", "local"]) == 0
    out = capsys.readouterr().out
    assert "  optimizer adamw: lr 0.0005 x 32 / 512 = 3.125e-05, weight decay 0.05" in out
    assert "  schedule step over 10 epochs, warm-up 2 epochs from 1e-06, lr x 0.1 after epochs 3, 6, 9" in out
    assert "  augmentation: crop scale (1, 1), flip 0, RandAugment off, mixup 0, cutmix 0, label smoothing 0.1" in out
    assert "SLURM array" not in out
    assert run_cli.main([str(sweep), *flags, "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "  SLURM array for Lite: 1 node x 1 task, 0 GPU/node, 30 min, mem 2 GB; at most 64 at once" in out
    assert "  SLURM array for Small: 1 node x 1 task, 4 GPU/node, 600 min, mem 2 GB, partition big" in out
    assert "warning: no cpus/task" not in out, "the digits load in the training process: no workers to starve"


def test_a_gpu_array_without_cpus_per_task_for_image_files_is_warned_in_the_plan(tmp_path, capsys):
    """The data-loading workers follow --cpus-per-task; a cluster's default of 1 CPU would give none."""
    from ablations import run as run_cli

    for split in ("train", "val"):
        for label in ("a", "b"):
            (tmp_path / "data" / split / label).mkdir(parents=True)
            for i in range(40):
                (tmp_path / "data" / split / label / f"{i}.png").write_bytes(b"")  # counted, never decoded
    sweep = write_sweep(tmp_path / "tiny.yaml")
    flags = [str(sweep), "--results-root", str(tmp_path / "r"), "--dry-run", "--no-eta", "--executor", "slurm",
             "--set", "data.dataset=imagefolder", "--data-root", str(tmp_path / "data"), "--set", "train.batch_size=8",
             "--gpus-per-node", "1"]
    assert run_cli.main(flags) == 0
    assert "warning: no cpus/task for PA" in capsys.readouterr().out
    assert run_cli.main([*flags, "--cpus-per-task", "9"]) == 0
    out = capsys.readouterr().out
    assert "cpus/task 9" in out and "warning: no cpus/task" not in out


# ---- names from files never drive the terminal ---------------------------------------------------------------------
ESCAPE = "\x1b[2J\x1b[H"  # clear the screen, cursor home


def test_every_command_escapes_control_characters_on_stdout_and_in_errors(capsys):
    from ablations.cli import command
    from ablations.spec.errors import InputError

    @command
    def prints(argv=None):
        print(f"cell {ESCAPE}none\x00")
        raise InputError(f"sweeps/{ESCAPE}pe.yaml", "axes", "a\x07bell")

    assert prints([]) == 2
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x00" not in out and "\x07" not in err
    assert r"cell \x1b[2J\x1b[Hnone\x00" in out and r"sweeps/\x1b[2J\x1b[Hpe.yaml" in err


def test_a_cell_name_and_a_failure_reason_from_run_files_are_printed_escaped(tmp_path, capsys):
    """A ledger line (results/<sweep>/runs.jsonl) and an error.json are files anyone with access could write."""
    from ablations import status
    from analysis import tables
    from analysis.synthetic import write_run

    results = tmp_path / "results" / "pe"
    run_dir = write_run(results, "PA", 0, baseline=True)
    meta = {**store.read_meta(run_dir), "cell": f"{ESCAPE}PA"}
    (results / "runs.jsonl").write_text(json.dumps({"run": f"pe/{run_dir.name}", "meta": meta}) + "\n")
    assert tables.main([str(results)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and r"\x1b[2J\x1b[HPA" in out
    pe = Path(__file__).resolve().parents[1] / "sweeps" / "pe.yaml"
    failed = write_run(results, "LE", 0, state=store.FAILED, sweep_file=pe)
    store.write_error(failed, f"RuntimeError: {ESCAPE}out of memory", "", 1)
    assert status.main([str(pe), "--results-root", str(results.parent)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and r"RuntimeError: \x1b[2J\x1b[Hout of memory" in out
    result = json.loads((run_dir / store.RESULT).read_text())  # a key of result.json is named in a warning
    (run_dir / store.RESULT).write_text(json.dumps({**result, f"{ESCAPE}key": -1}))
    tables.main([str(results)])
    err = capsys.readouterr().err
    assert "\x1b" not in err and r"\x1b[2J\x1b[Hkey is -1" in err


def test_an_error_after_a_ctrl_c_that_an_import_swallowed_is_that_ctrl_c(monkeypatch, capsys):
    """torch's C extension swallows an exception raised while it imports numpy (a Ctrl-C at that moment), and
    numpy's next import fails with an ImportError: the command ends as the Ctrl-C, one line and exit 130."""
    import ablations
    from ablations.cli import command

    monkeypatch.setattr(ablations, "_INTERRUPTIONS", [])

    @command
    def swallowed(argv=None) -> int:
        try:
            ablations.interrupted(signal.SIGINT, None)  # the handler command_started installs, on Ctrl-C
        except KeyboardInterrupt:
            pass  # as torch's C initialisation does
        raise ImportError("cannot load module more than once per process")

    assert swallowed([]) == 130 and capsys.readouterr().err.strip() == "interrupted"
    monkeypatch.setattr(ablations, "_INTERRUPTIONS", [])

    @command
    def broken(argv=None) -> int:
        raise ImportError("a real error, no Ctrl-C")

    with pytest.raises(ImportError, match="a real error"):
        broken([])


def test_a_swallowed_ctrl_c_with_no_error_after_it_stops_the_launch_before_anything_is_written(tmp_path, capsys,
                                                                                            monkeypatch):
    """A Ctrl-C swallowed inside an import may leave no error behind: ablations.run then stops where it would
    write or launch (checked here with --dry-run, the same moment), and any command ends with exit 130."""
    import ablations
    from ablations.cli import command
    from ablations.run import main as run_main

    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "pe.yaml"
    monkeypatch.setattr(ablations, "_INTERRUPTIONS", ["raised"])  # the handler fired; its exception was lost
    assert run_main([str(sweep), "--results-root", str(tmp_path), "--dry-run", "--no-eta"]) == 130
    out, err = capsys.readouterr()
    assert "--dry-run" not in out and err.strip() == "interrupted" and not any(tmp_path.iterdir())

    @command
    def finished(argv=None) -> int:
        print("done")
        return 0

    monkeypatch.setattr(ablations, "_INTERRUPTIONS", ["said"])  # the start-up handler printed its line already
    assert finished([]) == 130 and capsys.readouterr().err == ""


@pytest.mark.parametrize("module", ["ablations.run", "analysis.plots"])
@pytest.mark.parametrize("after_s", [0.15, 0.3, 0.6])
def test_ctrl_c_while_a_command_starts_is_one_line_and_exit_130(tmp_path, module, after_s):
    """Importing torch and timm takes seconds: a Ctrl-C then is the same one line as a Ctrl-C later."""
    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "pe.yaml"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = ["table"] if module == "analysis.plots" else []
    executor = ["--executor", "local"] if module == "ablations.run" else []  # never jobs that outlive the test
    proc = subprocess.Popen([sys.executable, "-m", module, *args, str(sweep), "--results-root", str(tmp_path),
                             *executor], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        time.sleep(after_s)
        assert proc.poll() is None, "the command ended before the Ctrl-C"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # the Ctrl-C was lost: end the command and what it started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and err.strip() == "interrupted" and "Traceback" not in err, err
