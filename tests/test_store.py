"""Run folders: atomic writes, tolerant readers, states, and the per-run lock."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ablations import store


def test_atomic_write_leaves_no_temp_files(tmp_path):
    store.atomic_write_json(tmp_path / "a.json", {"x": 1})
    store.atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_truncated_metrics_line_is_reported_not_raised(tmp_path):
    path = tmp_path / store.METRICS
    store.append_jsonl(path, {"epoch": 1, "top1": 50.0})
    with open(path, "ab") as f:
        f.write(b'{"epoch": 2, "to')  # a job killed mid-write
    read = store.read_metrics(path)
    assert read.rows == [{"epoch": 1, "top1": 50.0}]
    assert len(read.problems) == 1 and "line 2" in read.problems[0]


def test_states(tmp_path):
    run = tmp_path / "run"
    assert store.run_state(run).state == store.NEW
    run.mkdir()
    assert store.run_state(run).state == store.NEW
    store.append_jsonl(run / store.METRICS, {"epoch": 1})
    assert store.run_state(run).state == store.PARTIAL
    store.atomic_write_json(run / store.ERROR, {"reason": "non-finite loss (nan)"})
    state = store.run_state(run)
    assert state.state == store.FAILED and "nan" in state.error
    store.atomic_write_json(run / store.RESULT, {"final": {"top1": 90.0}, "epochs": 1})
    assert store.run_state(run).state == store.DONE


def test_truncated_result_json_means_partial_with_a_problem(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    store.append_jsonl(run / store.METRICS, {"epoch": 1})
    (run / store.RESULT).write_text('{"final": {"top1": 9')
    state = store.run_state(run)
    assert state.state == store.PARTIAL
    assert any("result.json" in p for p in state.problems)


def test_truncated_metrics_means_partial(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / store.METRICS).write_text('{"epoch": 1}\n{"epo')
    state = store.run_state(run)
    assert state.state == store.PARTIAL and state.epochs_done == 1 and state.problems


LOCK_HOLDER = """
import sys, time
from ablations import store
with store.run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_lock_is_exclusive_across_processes_and_released_on_kill(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert store.is_locked(run)
        with pytest.raises(store.RunLocked), store.run_lock(run):
            pass
    finally:
        holder.kill()  # SIGKILL: the kernel releases the flock
        holder.wait()
    deadline = time.time() + 5
    while store.is_locked(run) and time.time() < deadline:
        time.sleep(0.05)
    with store.run_lock(run):
        assert (run / store.LOCK).exists()


def test_done_run_whose_metrics_were_cut_is_partial(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    store.append_jsonl(run / store.METRICS, {"epoch": 1})
    store.atomic_write_json(run / store.RESULT, {"final": {"top1": 90.0}, "epochs": 1})
    assert store.run_state(run).state == store.DONE
    with open(run / store.METRICS, "ab") as f:
        f.write(b'{"epoch": 2, "to')
    state = store.run_state(run)
    assert state.state == store.PARTIAL and any("metrics.jsonl" in p for p in state.problems)
