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


# ---- the run-folder corpus: malformed-but-parseable, tampered, planted links --------------------------------------
CORPUS = sorted((__import__("pathlib").Path(__file__).parent / "data" / "bad_run_folders").glob("*.json"))


def run_folder(parent, edit_config=None, edit_meta=None, remove_config=False):
    """A run folder named as a sweep names it (<cell>-s<seed>-<hash>), config.json + one epoch of metrics; the
    corpus case's edits of config.json made by hand after the launch."""
    from ablations.spec.config import RunConfig, with_overrides

    config = with_overrides(RunConfig(), {"data.img_size": 32, "train.epochs": 1})
    run_dir = parent / f"cell-s0-{config.short_hash()}"
    run_dir.mkdir(parents=True)
    written = with_overrides(config, edit_config) if edit_config else config
    document = store.config_document(written, {"sweep": "sweep", "cell": "PA", "seed": 0})
    document["meta"].update(edit_meta or {})
    if not remove_config:
        store.atomic_write_json(run_dir / store.CONFIG, document)
    store.append_metrics(run_dir, {"epoch": 1, "top1": 50.0})
    return run_dir


def test_the_run_folder_corpus_is_large_enough():
    assert len(CORPUS) >= 25


@pytest.mark.parametrize("case", CORPUS, ids=lambda p: p.stem)
def test_bad_run_folder_is_reported_never_trusted(case, tmp_path):
    spec = json.loads(case.read_text())
    run_dir = run_folder(tmp_path / "sweep", spec.get("edit_config"), spec.get("edit_meta"), spec.get("remove_config"))
    for name, content in spec.get("outside", {}).items():
        (tmp_path / "sweep" / name).write_text(content)
    for name, content in spec["files"].items():
        path = run_dir / name
        if isinstance(content, dict) and content.get("dir"):
            path.mkdir()
        elif isinstance(content, dict):
            path.symlink_to(content["symlink"])
        else:
            path.write_text(content)
    state = store.run_state(run_dir)  # never raises
    assert state.state == spec["state"], state
    assert spec["problem"] in " ".join(state.problems + [state.error or ""])
    if (spec["state"] == store.PARTIAL and "mid-line" not in spec["problem"]) or spec.get("result_unread"):
        assert store.read_result(run_dir) is None, "an unusable result.json is never read as a result"


def test_a_sane_run_folder_is_done_and_its_id_checks(tmp_path):
    run_dir = run_folder(tmp_path)
    assert store.identity_problem(run_dir) is None
    store.write_result(run_dir, {"final": {"top1": 50.0, "top5": 90.0}, "epochs": 1})
    assert store.run_state(run_dir).state == store.DONE


def test_run_files_are_never_opened_through_a_planted_link(tmp_path):
    run_dir = run_folder(tmp_path / "sweep")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for name in (store.LOCK, store.METRICS, store.LOG):
        target = run_dir / name
        target.unlink(missing_ok=True)
        target.symlink_to(victim)
    with pytest.raises(store.UnsafeFile, match="symbolic link"):
        with store.run_lock(run_dir):
            pass
    with pytest.raises(store.UnsafeFile, match="symbolic link"):
        store.append_metrics(run_dir, {"epoch": 2})
    with pytest.raises(store.UnsafeFile, match="symbolic link"):
        store.open_log(run_dir)
    assert victim.read_text() == "precious\n"
    assert not store.is_locked(run_dir)
    (run_dir / store.RESULT).unlink(missing_ok=True)
    import os

    os.mkfifo(run_dir / store.RESULT)  # a FIFO would hang a plain open()
    assert store.run_state(run_dir).state == store.PARTIAL


def test_a_directory_where_the_lock_belongs_is_named(tmp_path):
    run_dir = run_folder(tmp_path)
    (run_dir / store.LOCK).mkdir()
    assert not store.is_locked(run_dir)
    with pytest.raises(store.UnsafeFile, match=r"\.lock.*is a directory"):
        with store.run_lock(run_dir):
            pass


def test_a_status_probe_never_makes_a_claim_fail(tmp_path):
    """is_locked probes with a momentary lock; a claim that meets it waits instead of skipping the run."""
    import fcntl
    import os

    run_dir = run_folder(tmp_path)
    (run_dir / store.LOCK).touch()
    fd = os.open(run_dir / store.LOCK, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a probe, frozen mid-probe
    import threading

    threading.Timer(0.2, lambda: os.close(fd)).start()  # ...and done 0.2 s later
    with store.run_lock(run_dir):  # before: RunLocked at once, and the launch skipped a runnable run
        pass
    # a real holder is still reported, and still refuses a claim
    with store.run_lock(run_dir):
        probe = f"from ablations import store; print(store.is_locked({str(run_dir)!r}))"
        root = str(__import__("pathlib").Path(__file__).parents[1])
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": root})
        assert other.stdout.strip() == "True"


def test_a_run_of_an_earlier_config_schema_is_done_after_training(tmp_path):
    """A config.json without a field added since (read with its default) hashes to its folder's id as written:
    the result records that hash, so the finished run is done, not a result "of another config"."""
    from ablations.executors.job import RunJob
    from ablations.spec.config import RunConfig, with_overrides

    config = with_overrides(RunConfig(), {"data.img_size": 33, "data.train_limit": 32, "data.val_limit": 16,
                                          "train.batch_size": 16, "train.epochs": 1}).to_dict()
    del config["model"]["head_norm"]  # as if written before the knob existed (its default is the value)
    run_dir = tmp_path / f"rest-lite-s0-{store.config_digest(config)}"
    run_dir.mkdir()
    store.atomic_write_json(run_dir / store.CONFIG, {"config": config, "meta": {}})
    RunJob(run_dir, progress=False).run()
    assert store.run_state(run_dir).state == store.DONE, store.run_state(run_dir)
    assert store.read_result(run_dir)["config_hash"] == run_dir.name.rsplit("-", 1)[1]
