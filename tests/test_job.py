"""RunJob without SLURM: in-process, and under submitit's LocalExecutor (two gloo tasks; USR2 checkpoint+requeue)."""
from __future__ import annotations

import os
import signal
import time

import pytest
import submitit
from conftest import standin_starts
from submitit.helpers import DelayedSubmission

from ablations import store
from ablations.executors.job import RunJob


def local_executor(folder, **params) -> submitit.LocalExecutor:
    executor = submitit.LocalExecutor(folder)
    executor.update_parameters(timeout_min=10, **params)
    return executor


def test_in_process_real_run_then_done(tmp_path, make_run):
    run_dir = make_run(tmp_path)
    result = RunJob(run_dir)()
    assert set(result["final"]) == {"top1", "top5", "val_loss"}
    for name in (store.CONFIG, store.METRICS, store.CHECKPOINT, store.RESULT, store.LOG):
        assert (run_dir / name).is_file(), name
    assert [r["epoch"] for r in store.read_metrics(run_dir / store.METRICS).rows] == [1]
    assert not (run_dir / "slurm.json").exists()  # not a SLURM job
    # a finished run is never trained again: the stored result comes back, nothing is appended
    assert RunJob(run_dir)() == store.read_json(run_dir / store.RESULT)[0]
    assert len(store.read_metrics(run_dir / store.METRICS).rows) == 1


def test_locked_run_is_left_alone(tmp_path, make_run, standin_trainer):
    run_dir = make_run(tmp_path, standin={})
    with store.run_lock(run_dir), pytest.raises(store.RunLocked):
        RunJob(run_dir, trainer=standin_trainer)()
    assert store.run_state(run_dir).state == store.NEW


def test_checkpoint_resubmits_a_fresh_job_for_the_same_folder(tmp_path):
    job = RunJob(tmp_path, trainer="some.trainer", num_workers=3)
    delayed = job.checkpoint()
    assert isinstance(delayed, DelayedSubmission) and not delayed.args and not delayed.kwargs
    again = delayed.function
    assert isinstance(again, RunJob) and again is not job
    assert (again.run_dir, again.trainer, again.num_workers) == (str(tmp_path), "some.trainer", 3)


def test_two_gloo_tasks_rank0_alone_writes(tmp_path, make_run, standin_trainer, wait_until):
    run_dir = make_run(tmp_path, standin={"steps": 3, "step_s": 0.05}, overrides={"train.epochs": 2})
    job = local_executor(tmp_path / "submitit", tasks_per_node=2).submit(RunJob(run_dir, trainer=standin_trainer))
    wait_until(job.done, 180, "the 2-task job")
    results = job.results()
    assert [r["world"] for r in results] == [2, 2]
    starts = standin_starts(run_dir)
    assert sorted((s["rank"], s["world"]) for s in starts) == [(0, 2), (1, 2)]
    rank0 = next(s["pid"] for s in starts if s["rank"] == 0)
    assert (run_dir / store.LOCK).read_text().strip() == str(rank0)  # the lock was taken by rank 0
    rows = store.read_metrics(run_dir / store.METRICS).rows
    assert [(r["epoch"], r["pid"], r["world"]) for r in rows] == [(1, rank0, 2), (2, rank0, 2)]


def test_two_gloo_tasks_real_trainer(tmp_path, make_run, wait_until):
    # 64 px: at 32 px stage 4 has a single token and DDP stops on its unused attention parameters
    # train.devices: a 2-process run is another computation than a 1-process one (another run id)
    run_dir = make_run(tmp_path, overrides={"data.img_size": 64, "data.train_limit": 32, "data.val_limit": 16,
                                            "train.devices": 2})
    job = local_executor(tmp_path / "submitit", tasks_per_node=2).submit(RunJob(run_dir))
    wait_until(job.done, 600, "the 2-task real run")
    first, second = job.results()
    assert first == second == store.read_json(run_dir / store.RESULT)[0]  # rank 0's result, broadcast
    assert [r["epoch"] for r in store.read_metrics(run_dir / store.METRICS).rows] == [1]
    assert store.run_state(run_dir).state == store.DONE


def test_usr2_saves_mid_epoch_requeues_and_resumes(tmp_path, make_run, standin_trainer, wait_until):
    run_dir = make_run(tmp_path, standin={"steps": 10, "step_s": 0.3}, overrides={"train.epochs": 2})
    job = local_executor(tmp_path / "submitit").submit(RunJob(run_dir, trainer=standin_trainer))
    first = wait_until(lambda: standin_starts(run_dir), 120, "training to start")[0]
    time.sleep(1.0)  # a few steps into epoch 1
    os.kill(first["pid"], signal.SIGUSR2)  # what SLURM sends before the time limit
    wait_until(job.done, 120, "the requeued job to finish")
    assert job.result()["epochs"] == 2
    starts = standin_starts(run_dir)
    assert len(starts) == 2 and starts[1]["pid"] != first["pid"]
    assert starts[1]["epoch"] == 0 and 0 < starts[1]["step"] < 10  # resumed from the mid-epoch checkpoint
    assert [r["epoch"] for r in store.read_metrics(run_dir / store.METRICS).rows] == [1, 2]
