"""SLURM settings, the code snapshot, and submission/requeue/status/cancel against a real single-node cluster."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import standin_starts

from ablations import store
from ablations.executors.job import read_slurm_record
from ablations.executors.slurm import SlurmSettings, cancel, snapshot_code, status, submit
from ablations.executors.slurm.submit import make_executor
from ablations.results_root import members
from ablations.spec.config import ConfigError
from ablations.spec.errors import InputError

SETTINGS = SlurmSettings(time_min=20, cpus_per_task=1, mem_gb=3)
ENDED = ("done", "failed", "cancelled")


ROOT = Path(__file__).resolve().parents[1]


def states(sweep_dir: Path) -> dict[str, str]:
    return {row.run_id: row.state for row in status(sweep_dir)}


def metric_epochs(run_dir: Path) -> list[int]:
    return [row["epoch"] for row in store.read_metrics(run_dir / store.METRICS).rows]


def history(run_dir: Path) -> list[tuple]:
    return [(e["job_id"], e["state"], e.get("restart")) for e in read_slurm_record(run_dir)["history"]]


# ---- settings and snapshot (no cluster) --------------------------------------------------------------------------
def write_sweep(path: Path, name: str, slurm: str, levels: str = "{PA: pa, GL: gl}",
                head: str = "overrides: {train.epochs: 1}\n") -> Path:
    """A tiny PE sweep file of the quick recipe for the cluster tests: its name, the lines before `slurm:`
    (seeds, overrides), the `slurm:` block and the levels."""
    path.write_text(f"name: {name}\npaper_table: t\nrecipe: quick\nmodel: rest_lite\n{head}slurm: {slurm}\n"
                    f"axes:\n  - name: pe\n    key: model.pos_encoding\n    baseline: PA\n    levels: {levels}\n")
    return path


def test_settings_from_mapping_and_cli():
    mapping = {"partition": "gpu", "time_min": 30, "mem_gb": 16, "gpus_per_node": 8,
               "additional_parameters": {"exclusive": True}}
    settings = SlurmSettings.from_mapping(mapping, "sweeps/t.yaml")
    assert (settings.partition, settings.time_min, settings.mem_gb, settings.gpus_per_node) == ("gpu", 30, 16.0, 8)
    assert settings.additional_parameters == {"exclusive": True}
    assert SlurmSettings.from_mapping(None, "x") == SlurmSettings()
    changed = settings.with_cli(partition="debug", time_min=None, account="lab")
    assert (changed.partition, changed.time_min, changed.account) == ("debug", 30, "lab")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.partition = "other"


@pytest.mark.parametrize("mapping, key, words", [
    ({"partiton": "gpu"}, "slurm.partiton", "unknown setting"),
    ({"time_min": "1h"}, "slurm.time_min", "expected int"),
    ({"nodes": True}, "slurm.nodes", "expected int"),
    ({"nodes": 0}, "slurm.nodes", "positive"),
    ({"gpus_per_node": -1}, "slurm.gpus_per_node", ">= 0"),
    ({"mem_gb": "16G"}, "slurm.mem_gb", "expected float or null"),
    ({"additional_parameters": ["mail-type=END"]}, "slurm.additional_parameters", "mapping"),
])
def test_settings_errors_name_source_and_key(mapping, key, words):
    with pytest.raises(InputError) as info:
        SlurmSettings.from_mapping(mapping, "sweeps/t.yaml")
    assert isinstance(info.value, ConfigError) and info.value.key == key
    assert str(info.value).startswith(f"sweeps/t.yaml: {key}: ") and words in str(info.value)


def test_cli_errors_name_the_command_line():
    with pytest.raises(InputError, match=r"^command line: slurm.time_min: expected int"):
        SlurmSettings().with_cli(time_min=1.5)


def test_snapshot_copies_packages_by_content(tmp_path):
    root = tmp_path / "checkout"
    for rel, text in {"rest/__init__.py": "A = 1\n", "ablations/executors/job.py": "B = 2\n", "analysis/x.txt": "c",
                      "rest_knobs.py": "K = 1\n", "rest/__pycache__/m.cpython-311.pyc": "junk",
                      "tests/test_x.py": "t", "setup.py": "s"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    first = snapshot_code(tmp_path / "sweep", root)
    assert first.parent == tmp_path / "sweep" / ".code"
    assert sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file()) == [
        "ablations/executors/job.py", "analysis/x.txt", "rest/__init__.py", "rest_knobs.py"]
    assert snapshot_code(tmp_path / "sweep", root) == first  # same code, same snapshot
    (root / "ablations/executors/job.py").write_text("B = 3\n")
    second = snapshot_code(tmp_path / "sweep", root)
    assert second != first and (first / "ablations/executors/job.py").read_text() == "B = 2\n"
    assert (second / "ablations/executors/job.py").read_text() == "B = 3\n"


BAD_SETTINGS = sorted((Path(__file__).parent / "data" / "bad_slurm_settings").glob("*.yaml"))


def test_the_settings_corpus_is_large_enough():
    assert len(BAD_SETTINGS) >= 15


@pytest.mark.parametrize("path", BAD_SETTINGS, ids=lambda p: p.stem)
def test_bad_slurm_settings_are_refused_before_anything_reaches_a_job_script(path):
    from ablations.spec.yamlio import load_yaml_strict

    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(InputError) as info:
        SlurmSettings.from_mapping(load_yaml_strict(path), str(path))
    assert expect in str(info.value) and "\n" not in str(info.value).split(": ", 2)[1]


def test_command_line_slurm_values_are_checked_for_every_executor(tmp_path, capsys):
    from ablations import run as run_cli

    sweep = ROOT / "sweeps" / "pe.yaml"
    for flags in (["--partition", "gpu\ntouch /tmp/x #"], ["--sbatch", "comment=$(id)"],
                  ["--sbatch=--uid=0"], ["--time-min", "1", "--signal-delay-s", "60"]):
        code = run_cli.main([str(sweep), "--results-root", str(tmp_path / "r"), "--executor", "local", "--no-eta",
                             "--dry-run", *flags])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (flags, err)
    assert not (tmp_path / "r").exists()


def test_signal_delay_and_max_requeues_come_from_the_command_line():
    from types import SimpleNamespace

    from ablations.run import build_parser, slurm_settings

    plan = SimpleNamespace(sweep=SimpleNamespace(slurm={"time_min": 30}, path="sweeps/t.yaml"))
    args = build_parser().parse_args(["s.yaml", "--signal-delay-s", "300", "--max-requeues", "7", "--sbatch",
                                      "exclusive", "--sbatch", "mail-type=END"])
    settings = slurm_settings(args, plan)
    assert (settings.signal_delay_s, settings.max_num_timeout) == (300, 7)
    assert settings.additional_parameters == {"exclusive": True, "mail-type": "END"}
    args = build_parser().parse_args(["s.yaml", "--signal-delay-s", "1800"])
    with pytest.raises(InputError, match="cannot fit the checkpoint signal"):
        slurm_settings(args, plan)


def test_job_ids_from_run_files_never_become_options(sweep_dir, make_run):
    from ablations.executors.slurm import job_ids_of, valid_job_id

    assert [valid_job_id(v) for v in ("123", "123_4", "--user=alice", "1;id", "12 3", 5, None)] == [
        "123", "123_4", None, None, None, None, None]
    run_dir = make_run(sweep_dir)
    store.atomic_write_json(run_dir / store.SLURM_JSON, {"job_id": "--user=alice", "job_ids": ["-u", "77"],
                                                         "history": [{"job_id": "--me", "state": "SUBMITTED"}]})
    assert job_ids_of(read_slurm_record(run_dir)) == ["77"]
    [row] = status(sweep_dir)
    assert row.job_id is None


def test_failure_reason_is_the_exception_not_srun():
    from ablations.executors.slurm import failure_reason

    log = ("submitit INFO starting\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
           "    main()\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
           "srun: error: node1: task 0: Exited with exit code 1\n")
    assert failure_reason(log) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert failure_reason("loading\nslurmstepd: error: *** JOB 5 CANCELLED ***\n"
                          "srun: error: task 0: Killed\n") == "loading"
    assert failure_reason("") is None


def test_per_level_resources_setup_lines_and_bare_flags():
    settings = SlurmSettings.from_mapping({"time_min": 60, "setup": ["module load cuda/12"],
                                           "per_level": {"Large": {"time_min": 600, "gpus_per_node": 2}}}, "s.yaml")
    large, lite = settings.for_levels(["Large", "PA"]), settings.for_levels(["Lite", "PA"])
    assert (large.time_min, large.gpus_per_node, lite.time_min, lite.gpus_per_node) == (600, 2, 60, 0)
    assert large.setup == ("module load cuda/12",) and large.per_level == {}
    executor = make_executor(Path("/tmp/logs"), large.with_cli(additional_parameters={"exclusive": True}), "t",
                             code_dir=Path("/tmp/code"))
    text = executor._executor._make_submission_file_text("CMD", "uid")
    assert "module load cuda/12" in text and "#SBATCH --exclusive\n" in text and "--time=600" in text


def test_snapshot_is_group_readable_and_jobs_learn_the_commit(tmp_path, monkeypatch):
    import stat

    from ablations.provenance import ENV_COMMIT, ENV_DIRTY, code_provenance

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    snap = snapshot_code(tmp_path / "sweep", ROOT)
    for path in [snap, *snap.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o040, f"{path} is not readable by the group"
        if path.is_dir():
            assert mode & 0o010, f"{path} cannot be entered by the group"
    text = make_executor(tmp_path / "logs", SETTINGS, "t", code_dir=snap)._executor._make_submission_file_text(
        "CMD", "uid")
    assert f"export {ENV_COMMIT}={head} {ENV_DIRTY}=" in text
    monkeypatch.setenv(ENV_COMMIT, head)
    monkeypatch.setenv(ENV_DIRTY, "1")
    assert code_provenance(tmp_path) == {"git_commit": head, "git_dirty": True}  # no .git there: the job's view


def test_cpu_threads_follow_cpus_per_task(monkeypatch):
    import torch

    from ablations.executors.job import cpu_threads_from_slurm

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
        assert cpu_threads_from_slurm() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "x")
        assert cpu_threads_from_slurm() is None
    finally:
        torch.set_num_threads(before)


def test_the_job_name_tells_experiments_apart_and_a_job_pickle_is_never_unpickled(tmp_path, make_run):
    import pickle
    import re

    from ablations.executors.job import RunJob
    from ablations.executors.slurm import SBATCH_VALUE, run_dir_of_job
    from ablations.experiment import Selection, resolve

    def name(selection: Selection, results: Path = tmp_path / "results") -> str:
        return resolve(ROOT / "sweeps" / "pe.yaml", selection, results).job_name()

    base = name(Selection())
    assert re.fullmatch(SBATCH_VALUE["pattern"], base) and re.fullmatch(r"pe-[0-9a-f]{10}", base)
    assert name(Selection(seeds=(5, 6))) == name(Selection(sets=("train.logger=none",))) == base  # one experiment
    assert len({base, name(Selection(sets=("optim.lr=0.1",))), name(Selection(), tmp_path / "elsewhere")}) == 3

    class Planted:  # what unpickling would run
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    sweep_dir = tmp_path / "sweep"
    run_dir = make_run(sweep_dir)
    (sweep_dir / ".submitit").mkdir()
    (sweep_dir / ".submitit" / "7_0_submitted.pkl").write_bytes(pickle.dumps([Planted(), RunJob(run_dir)]))
    assert run_dir_of_job(sweep_dir, "7_0") == run_dir and not (tmp_path / "ran").exists()
    (sweep_dir / ".submitit" / "7_1_submitted.pkl").write_bytes(pickle.dumps(RunJob(tmp_path / "not-here")))
    (sweep_dir / ".submitit" / "7_2_submitted.pkl").symlink_to(sweep_dir / ".submitit" / "7_0_submitted.pkl")
    (sweep_dir / ".submitit" / "7_3_submitted.pkl").write_bytes(b"\x80\x05garbage")
    assert [run_dir_of_job(sweep_dir, f"7_{i}") for i in (1, 2, 3, 4)] == [None] * 4


# ---- against the cluster -----------------------------------------------------------------------------------------
def test_sbatch_script(slurm_cluster, tmp_path):
    settings = SlurmSettings(partition="p", account="a", qos="q", constraint="c", mem_gb=4, time_min=90,
                             additional_parameters={"exclusive": True})
    executor = make_executor(tmp_path / "logs", settings, "t5", code_dir=tmp_path / "code")
    text = executor._executor._make_submission_file_text("CMD", "uid")
    for line in ("--partition=p", "--account=a", "--qos=q", "--constraint=c", "--mem=4GB", "--time=90",
                 "--job-name=t5", "--signal=USR2@120", "--exclusive", f"export PYTHONPATH={tmp_path / 'code'}"):
        assert line in text, line
    assert "gpus" not in text
    assert " -P -u -m submitit.core._submit" in executor._executor._submitit_command_str


def test_job_array_of_real_runs_then_nothing_to_resubmit(slurm_cluster, sweep_dir, make_run, wait_until):
    runs = [make_run(sweep_dir, seed=seed) for seed in (0, 1)]
    job_ids = submit(sweep_dir, runs, SETTINGS, "test-array")
    array_id = job_ids[0].split("_")[0]
    assert job_ids == [f"{array_id}_0", f"{array_id}_1"]  # one array
    wait_until(lambda: all(s in ENDED for s in states(sweep_dir).values()), 900, "the array to end")
    # a run is done once result.json is written; its job records COMPLETED a moment later, on its way out
    wait_until(lambda: all(history(d)[-1][1] == "COMPLETED" for d in runs), 120, "the jobs to record COMPLETED")
    rows = {row.run_dir: row for row in status(sweep_dir)}
    for index, run_dir in enumerate(runs):
        assert rows[run_dir].state == "done", rows[run_dir]
        assert rows[run_dir].job_id == f"{array_id}_{index}"
        for name in (store.CONFIG, store.METRICS, store.CHECKPOINT, store.RESULT, store.LOG):
            assert (run_dir / name).is_file(), name
        assert metric_epochs(run_dir) == [1]
        assert "final" in store.read_json(run_dir / store.RESULT)[0]
        record = read_slurm_record(run_dir)
        assert (record["array_job_id"], record["array_index"]) == (array_id, index)
        assert Path(record["code"]).parent == sweep_dir / ".code"
        assert [state for _, state, _ in history(run_dir)] == ["SUBMITTED", "RUNNING", "COMPLETED"]
    assert submit(sweep_dir, runs, SETTINGS, "test-array") == []  # everything finished: nothing to submit


def test_scontrol_requeue_resumes_from_checkpoint_once(slurm_cluster, sweep_dir, make_run, standin_trainer,
                                                        wait_until):
    # 5 s epochs: the job ignores SIGTERM and is killed KillWait (5 s) after the requeue, in epoch 2
    run_dir = make_run(sweep_dir, standin={"steps": 10, "step_s": 0.5}, overrides={"train.epochs": 3})
    [job_id] = submit(sweep_dir, [run_dir], SETTINGS, "test-requeue", trainer=standin_trainer)
    assert submit(sweep_dir, [run_dir], SETTINGS, "test-requeue", trainer=standin_trainer) == []  # already queued
    wait_until(lambda: metric_epochs(run_dir), 180, "the first epoch")
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
    wait_until(lambda: states(sweep_dir)[run_dir.name] == "requeued", 60, "status to say requeued", interval=0.2)
    wait_until(lambda: states(sweep_dir)[run_dir.name] in ENDED, 240, "the requeued job to end")
    assert states(sweep_dir)[run_dir.name] == "done"
    first, second = standin_starts(run_dir)
    assert first["epoch"] == 0 and second["epoch"] >= 1  # resumed from the per-epoch checkpoint
    assert Path(second["ablations"]).is_relative_to(sweep_dir / ".code")  # ran the snapshot, not the checkout
    assert metric_epochs(run_dir) == [1, 2, 3]  # each epoch once
    assert history(run_dir) == [(job_id, "SUBMITTED", None), (job_id, "RUNNING", 0), (job_id, "RUNNING", 1),
                                (job_id, "COMPLETED", None)]


def test_usr2_checkpoints_mid_epoch_and_requeues(slurm_cluster, sweep_dir, make_run, standin_trainer, wait_until):
    run_dir = make_run(sweep_dir, standin={"steps": 10, "step_s": 0.3}, overrides={"train.epochs": 2})
    [job_id] = submit(sweep_dir, [run_dir], SETTINGS, "test-usr2", trainer=standin_trainer)
    wait_until(lambda: standin_starts(run_dir), 180, "training to start")
    time.sleep(1.0)  # a few steps into epoch 1
    # what SLURM sends signal_delay_s before the time limit (submitit's own test does the same)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)
    wait_until(lambda: states(sweep_dir)[run_dir.name] in ENDED, 240, "the requeued job to end")
    assert states(sweep_dir)[run_dir.name] == "done"
    first, second = standin_starts(run_dir)
    assert second["epoch"] == 0 and 0 < second["step"] < 10  # resumed from the mid-epoch checkpoint
    assert metric_epochs(run_dir) == [1, 2]
    assert [state for _, state, _ in history(run_dir)] == ["SUBMITTED", "RUNNING", "REQUEUED", "RUNNING", "COMPLETED"]


def test_cancelled_and_failed_jobs_are_reported(slurm_cluster, sweep_dir, make_run, standin_trainer, wait_until):
    slow = make_run(sweep_dir, seed=0, standin={"steps": 10_000, "step_s": 0.5})
    raises = make_run(sweep_dir, seed=1, standin={"steps": 1, "step_s": 0.1, "fail": True})
    broken = make_run(sweep_dir, seed=2)
    store.atomic_write_json(broken / store.CONFIG, {"meta": {}})  # RunJob raises before any training
    real = make_run(sweep_dir, seed=3, overrides={"data.dataset": "imagefolder", "data.root": "/nonexistent/data"})
    slow_id, _, _ = submit(sweep_dir, [slow, raises, broken], SETTINGS, "test-fail", trainer=standin_trainer)
    submit(sweep_dir, [real], SETTINGS, "test-fail-real")
    others_failed = lambda: all(states(sweep_dir)[d.name] == "failed" for d in (raises, broken, real))  # noqa: E731
    wait_until(lambda: standin_starts(slow) and others_failed(), 300, "the slow run to start and the others to fail")
    assert cancel(sweep_dir) == [slow_id]
    wait_until(lambda: all(s in ENDED for s in states(sweep_dir).values()), 300, "every job to end")
    rows = {row.run_dir: row for row in status(sweep_dir)}
    assert rows[slow].state == "cancelled" and rows[slow].slurm_state == "CANCELLED"
    assert "CANCELLED" in rows[slow].error
    assert rows[raises].state == "failed" and rows[raises].error.startswith("stand-in failure at epoch 1")
    assert rows[broken].state == "failed" and rows[broken].slurm_state == "FAILED"
    assert "expected {\"config\": ..., \"meta\": ...}" in rows[broken].error  # from the job's stderr log
    assert rows[real].state == "failed" and "/nonexistent/data" in rows[real].error  # from error.json
    assert [state for _, state, _ in history(slow)] == ["SUBMITTED", "RUNNING", "CANCELLED"]
    # failed runs are not resubmitted unless asked
    assert submit(sweep_dir, [raises, real], SETTINGS, "again", trainer=standin_trainer) == []
    assert len(submit(sweep_dir, [raises], SETTINGS, "again", retry_failed=True, trainer=standin_trainer)) == 1


def test_status_of_a_run_never_submitted(sweep_dir, make_run):
    run_dir = make_run(sweep_dir)
    [row] = status(sweep_dir)
    assert (row.run_id, row.state, row.job_id, row.error) == (run_dir.name, "new", None, None)
    assert json.loads((run_dir / store.CONFIG).read_text())["meta"]["run_id"] == run_dir.name


def test_cli_submits_one_array_waits_and_reports(slurm_cluster, tmp_path):
    """The user's path: ablations.run --executor slurm --wait, then status, relaunch and cancel."""
    sweep = write_sweep(tmp_path / "tiny.yaml", "tinyslurm", "{time_min: 30, cpus_per_task: 1, mem_gb: 2}")
    select = ["--set", "data.img_size=33", "--set", "data.train_limit=32", "--set", "data.val_limit=16",
              "--set", "train.batch_size=16", "--results-root", str(tmp_path / "results")]  # which runs
    tiny = [*select, "--no-eta", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(module: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, str(sweep), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    submitted = cli("ablations.run", *tiny, "--executor", "slurm", "--wait", "--array-parallelism", "2")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "submitted 2 run(s) as one job array" in submitted.stdout
    run_dirs = [d for d, _ in members(tmp_path / "results" / "tinyslurm")]
    assert len(run_dirs) == 2
    array_ids = {json.loads((d / "slurm.json").read_text())["array_job_id"] for d in run_dirs}
    assert len(array_ids) == 1, "both runs belong to one job array"
    assert all(store.run_state(d).state == store.DONE for d in run_dirs)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert {store.read_result(d)["git_commit"] for d in run_dirs} == {head}, "the snapshot's code is recorded"

    status = cli("ablations.status", *select)
    assert status.returncode == 0 and status.stdout.count(" done ") == 2 and "job " in status.stdout
    again = cli("ablations.run", *tiny, "--executor", "slurm")
    assert again.returncode == 0 and "nothing to run" in again.stdout
    cancelled = subprocess.run([sys.executable, "-m", "ablations.cancel", str(sweep), *select], cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=120)
    assert cancelled.returncode == 0 and "cancelled 0 job(s)" in cancelled.stdout


def test_two_submissions_at_the_same_instant_give_one_set_of_jobs(slurm_cluster, sweep_dir, make_run,
                                                                   standin_trainer):
    import threading

    runs = [make_run(sweep_dir, seed=s, standin={"steps": 10_000, "step_s": 0.5}) for s in range(2)]
    barrier, results = threading.Barrier(2), []

    def submit_now():
        barrier.wait()
        results.append(submit(sweep_dir, runs, SETTINGS, "race", trainer=standin_trainer))

    threads = [threading.Thread(target=submit_now) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    ids = sorted(j for r in results for j in r)
    assert len(ids) == 2 and sorted(map(len, results)) == [0, 2], results
    records = [read_slurm_record(d) for d in runs]
    assert all(r["job_ids"] == [r["job_id"]] for r in records), records
    # cancel finds every job ever submitted, also one whose run record was lost (from the submissions log)
    store.atomic_write_json(runs[1] / store.SLURM_JSON, {"history": []})
    # a done run's job is on its way out (--wait returns once result.json is written, the job may still be in
    # squeue for a moment): cancel leaves it alone and reports only what it cancelled
    store.atomic_write_json(runs[0] / store.RESULT, {"final": {"top1": 50.0}, "epochs": 1})
    store.append_jsonl(runs[0] / store.METRICS, {"epoch": 1})
    assert store.run_state(runs[0]).state == store.DONE
    assert cancel(sweep_dir, runs) == [j for j in ids if j != records[0]["job_id"]]  # the experiment's runs
    (runs[0] / store.RESULT).unlink()  # not done after all: its job is cancelled like any other
    assert cancel(sweep_dir, runs) == [records[0]["job_id"]]


def test_an_sbatch_refusal_exits_2_and_leaves_nothing_behind(slurm_cluster, tmp_path, capsys):
    from ablations import run as run_cli

    results = tmp_path / "results"
    code = run_cli.main([str(ROOT / "sweeps" / "pe.yaml"), "--results-root", str(results), "--executor", "slurm",
                         "--partition", "nosuchpartition", "--no-eta", "--set", "data.img_size=33"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert "invalid partition" in err.lower() and err.startswith("error: sbatch:")
    assert not results.exists(), sorted(str(p) for p in results.rglob("*"))


def test_per_level_resources_submit_one_array_per_group(slurm_cluster, tmp_path, capsys):
    from ablations import run as run_cli
    from ablations.executors import slurm

    sweep = write_sweep(tmp_path / "groups.yaml", "groups",
                        "{time_min: 20, cpus_per_task: 1, mem_gb: 2, setup: ['export GROUPS_SETUP=1'],"
                        " per_level: {GL: {time_min: 25}}}", levels="{PA: pa, GL: gl, LE: le}")
    results = tmp_path / "results"
    try:
        code = run_cli.main([str(sweep), "--results-root", str(results), "--executor", "slurm", "--no-eta",
                             "--no-progress", "--set", "data.img_size=33", "--sbatch", "requeue"])
        out = capsys.readouterr().out
        assert code == 0 and "3 run(s) as 2 job arrays (one per resource group)" in out, out
        arrays = {meta["cell"]: read_slurm_record(d)["array_job_id"] for d, meta in members(results / "groups")}
        assert arrays["PA"] == arrays["LE"] != arrays["GL"]
        limits = {}
        for cell, array in arrays.items():
            shown = subprocess.run(["scontrol", "show", "job", array], capture_output=True, text=True).stdout
            limits[cell] = shown.split("TimeLimit=")[1].split()[0]
        assert limits == {"PA": "00:20:00", "LE": "00:20:00", "GL": "00:25:00"}
    finally:
        slurm.cancel(results / "runs")


def test_a_refused_resource_group_leaves_no_folder_and_names_what_went_out(slurm_cluster, tmp_path, capsys):
    from ablations import run as run_cli
    from ablations.executors import slurm

    sweep = write_sweep(tmp_path / "mixed.yaml", "mixed",
                        "{time_min: 20, cpus_per_task: 1, mem_gb: 2, per_level: {GL: {partition: nosuchpartition}}}")
    results = tmp_path / "results"
    try:
        code = run_cli.main([str(sweep), "--results-root", str(results), "--executor", "slurm", "--no-eta",
                             "--no-progress", "--set", "data.img_size=33"])
        err = capsys.readouterr().err
        assert code == 2 and "invalid partition" in err.lower() and "1 run(s) of other resource groups" in err
        left = {meta["cell"] for _, meta in members(results / "mixed")}
        assert left == {"PA"} and len(store.run_dirs_in(results / "runs")) == 1, \
            "the refused group's run folder is removed; the sweep lists the run that went out"
    finally:
        slurm.cancel(results / "runs")


def test_jobs_whose_ids_no_file_recorded_are_found_by_the_experiments_job_name(slurm_cluster, tmp_path, capsys):
    """A submission that died between sbatch and writing the ids (slurm.json, the submissions log): status shows
    the jobs and cancel cancels them, found by the experiment's job name; another experiment's jobs (same
    sweep, same results folder) and another sweep's are never touched."""
    from ablations import cancel as cancel_cli
    from ablations import run as run_cli
    from ablations import status as status_cli
    from ablations.experiment import Selection, resolve

    results = tmp_path / "results"
    sweeps = {}
    own = {"orphans": "", "orphans2": "overrides: {optim.weight_decay: 0.01}\n"}  # another sweep, runs of its own
    for name in ("orphans", "orphans2"):
        sweeps[name] = write_sweep(tmp_path / f"{name}.yaml", name, "{time_min: 20, cpus_per_task: 1, mem_gb: 1}",
                                   head="seeds: [0]\n" + own[name])

    sets = {"mine": ("data.img_size=33",), "other": ("data.img_size=33", "optim.lr=0.001")}
    experiments = {"mine": resolve(sweeps["orphans"], Selection(sets=sets["mine"]), results),
                   "other": resolve(sweeps["orphans"], Selection(sets=sets["other"]), results),
                   "other sweep": resolve(sweeps["orphans2"], Selection(sets=sets["mine"]), results)}
    flags = {what: [str(sweeps["orphans2" if what == "other sweep" else "orphans"]), "--results-root", str(results),
                    *(f for s in sets["other" if what == "other" else "mine"] for f in ("--set", s))]
             for what in experiments}
    names = {what: e.job_name() for what, e in experiments.items()}
    assert len(set(names.values())) == 3 and names["mine"].startswith("orphans-"), names
    ids = {}
    try:
        for what, experiment in experiments.items():  # held: the jobs stay pending and never use a core
            assert run_cli.main([*flags[what], "--executor", "slurm", "--no-eta", "--no-progress", "--sbatch",
                                 "hold"]) == 0
            ids[what] = [read_slurm_record(experiment.run_dir(r))["job_id"] for r in experiment.runs]
        capsys.readouterr()
        runs = results / "runs"  # the crash: no file names a job
        for path in [*runs.glob(f"*/{store.SLURM_JSON}"), runs / ".submitit" / "submissions.jsonl"]:
            path.unlink()
        lost = ids["other"][1]
        (runs / ".submitit" / f"{lost}_submitted.pkl").unlink()  # nothing tells its run

        assert status_cli.main([*flags["mine"], "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [(r["state"], r["job_id"]) for r in shown["runs"]] == [("pending", j) for j in ids["mine"]]
        assert shown["unrecorded_jobs"] == []
        assert status_cli.main(flags["other"]) == 0
        out = capsys.readouterr().out
        assert f"job {ids['other'][0]}" in out and f"unrecorded job {lost} of this experiment (pending)" in out

        assert cancel_cli.main(flags["mine"]) == 0
        assert capsys.readouterr().out.startswith(f"cancelled 2 job(s): {', '.join(ids['mine'])}")
        pending = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
        assert not set(ids["mine"]) & set(pending.split())
        assert set(ids["other"] + ids["other sweep"]) <= set(pending.split()), "another experiment's jobs stay"
        for run, job_id in zip(experiments["mine"].runs, ids["mine"], strict=True):  # the records are back
            assert history(experiments["mine"].run_dir(run))[-1][:2] == (job_id, "CANCELLED")

        assert cancel_cli.main([*flags["other"], "--seeds", "0"]) == 0  # some runs only: the unknown one stays
        out = capsys.readouterr().out
        assert out.startswith(f"cancelled 1 job(s): {ids['other'][0]}\n") and "left alone: unrecorded" in out
        assert cancel_cli.main(flags["other"]) == 0  # the whole experiment: its job of unknown run too
        assert f"cancelled 1 job(s): {lost}\n" in capsys.readouterr().out
        pending = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
        assert set(pending.split()) & {*ids["mine"], *ids["other"], *ids["other sweep"]} == set(ids["other sweep"])
    finally:
        held = [j for js in ids.values() for j in js]
        if held:
            subprocess.run(["scancel", *held], timeout=60)


def test_a_two_task_ddp_job_on_cpu_trains_end_to_end(slurm_cluster, tmp_path, wait_until):
    """The cluster path with torch.distributed: one run as one SLURM job of 2 tasks (2 gloo ranks on CPU),
    through the CLI; each rank sets torch's threads to its --cpus-per-task."""
    sweep = write_sweep(tmp_path / "ddp.yaml", "ddp", "{time_min: 20, cpus_per_task: 1, mem_gb: 4}",
                        levels="{PA: pa}", head="seeds: [0]\noverrides: {train.epochs: 1}\n")
    results = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "ablations.run", str(sweep), "--results-root", str(results), "--executor", "slurm",
         "--tasks-per-node", "2", "--set", "train.devices=2", "--set", "data.img_size=33", "--set",
         "data.train_limit=32", "--set", "data.val_limit=16", "--set", "train.batch_size=16", "--no-eta",
         "--no-progress", "--wait"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    [(run_dir, _)] = members(results / "ddp")
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert store.run_state(run_dir).state == store.DONE
        result = store.read_result(run_dir)
        assert result["world_size"] == 2 and result["torch_threads"] == [1, 1], result
        assert result["device"] == "cpu (1 thread)"
        assert metric_epochs(run_dir) == [1]
        # done once result.json is written; the job records COMPLETED a moment later, on its way out
        wait_until(lambda: history(run_dir)[-1][1] == "COMPLETED", 120, "the job to record COMPLETED")
        assert [state for _, state, _ in history(run_dir)] == ["SUBMITTED", "RUNNING", "COMPLETED"]
    finally:
        cancel(results / "runs")
