"""A sweep, study or recipe file that is not a regular file, or that never ends, is refused at once (exit 2,
one line naming it), never waited on or read whole."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The command in a process of its own, bounded in time: a hang fails the test, it does not block it."""
    return subprocess.run([sys.executable, "-m", "ablations.run", *args, "--dry-run", "--no-eta"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def special_file(kind: str, tmp_path: Path) -> Path:
    if kind == "fifo":
        path = tmp_path / "sweep.yaml"
        os.mkfifo(path)  # nobody writes: opening it for reading blocks, reading it waits forever
        return path
    if kind == "endless":
        return Path("/dev/zero")
    if kind == "huge":
        path = tmp_path / "sweep.yaml"
        path.write_bytes(b"# " + b"x" * 3_000_000 + b"\n")
        return path
    path = tmp_path / "sweeps.yaml"
    path.mkdir()
    return path


@pytest.mark.parametrize("kind, words", [("fifo", "not a regular file"), ("endless", "not a regular file"),
                                         ("huge", "too large"), ("folder", "is a folder")])
@pytest.mark.parametrize("as_what", ["sweep", "recipe"])
def test_a_special_or_endless_file_is_refused_at_once(tmp_path, kind, words, as_what):
    path = special_file(kind, tmp_path)
    args = [str(path)] if as_what == "sweep" else [str(ROOT / "sweeps" / "pe.yaml"), "--recipe", str(path)]
    proc = run(*args, "--results-root", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(path) in proc.stderr and words in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_fifo_listed_in_a_study_is_refused(tmp_path):
    os.mkfifo(tmp_path / "pe.yaml")
    (tmp_path / "study.yaml").write_text("study: s\nsweeps: [pe.yaml]\n")
    proc = run(str(tmp_path / "study.yaml"), "--results-root", str(tmp_path / "results"), cwd=tmp_path)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr


# ---- a FIFO where a run file or an image belongs: refused at once, never waited on ----------------------------------
def bounded(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


def tiny_run_with_fifo_checkpoint(tmp_path: Path) -> Path:
    from ablations import store
    from ablations.spec.config import RunConfig, with_overrides

    config = with_overrides(RunConfig(), {"data.img_size": 33, "data.train_limit": 32, "data.val_limit": 16,
                                          "train.batch_size": 16, "train.epochs": 1})
    run_dir = tmp_path / "results" / "runs" / config.short_hash()
    run_dir.mkdir(parents=True)
    store.atomic_write_json(run_dir / store.CONFIG, {"config": config.to_dict(), "meta": {}})
    os.mkfifo(run_dir / store.CHECKPOINT)
    return run_dir


def test_a_fifo_as_a_partial_runs_checkpoint_is_set_aside_and_the_run_starts_over(tmp_path):
    run_dir = tiny_run_with_fifo_checkpoint(tmp_path)
    proc = bounded("-m", "ablations.train", str(run_dir), "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not a regular file" in proc.stderr and "starting over" in proc.stderr
    assert (run_dir / "checkpoint.pt.corrupt").is_fifo() and (run_dir / "result.json").is_file()


def test_a_fifo_as_checkpoint_or_image_of_the_attention_plot_is_refused(tmp_path):
    run_dir = tiny_run_with_fifo_checkpoint(tmp_path)
    proc = bounded("-m", "analysis.plots", "attention", "--run", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 2 and "checkpoint.pt" in proc.stderr and "not a regular file" in proc.stderr, proc.stderr
    os.mkfifo(tmp_path / "cat.jpg")
    from analysis.attention import load_image

    with pytest.raises(Exception, match="cat.jpg.*not a regular file"):
        load_image(tmp_path / "cat.jpg", 32)  # opened non-blocking: a regression fails here, it does not hang


def test_a_fifo_in_an_image_folder_fails_its_read_naming_it(tmp_path):
    from ablations.spec.dataset_checks import DatasetError
    from ablations.training.loaders import load_image

    os.mkfifo(tmp_path / "0.jpg")
    with pytest.raises(DatasetError, match=r"0\.jpg: not a readable image.*not a regular file"):
        load_image(str(tmp_path / "0.jpg"))


def test_weights_beyond_the_file_size_limit_fail_the_run_naming_the_file_and_the_limit(tmp_path):
    import resource

    from ablations import store

    run_dir = tiny_run_with_fifo_checkpoint(tmp_path)
    os.unlink(run_dir / store.CHECKPOINT)
    limit = 2_000_000  # above config, log and metrics; below ResT-Lite's checkpoint (about 40 MB of weights)
    proc = subprocess.run([sys.executable, "-m", "ablations.train", str(run_dir), "--no-progress"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 1, proc.stderr[-2000:]
    reason = store.read_error(run_dir)["reason"]
    assert ("best.pt'" in reason or "checkpoint.pt'" in reason) and "file size limit" in reason, reason
    assert "unexpected pos" not in reason and not list(run_dir.glob(".*.tmp")), "no temporary file is left behind"


def test_an_append_beyond_the_file_size_limit_names_the_file_and_leaves_no_half_line(tmp_path):
    import resource

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"epoch": 1}\n')
    code = ("import sys; from ablations import store\n"
            "try:\n    store.append_jsonl(sys.argv[1], {'epoch': 2, 'pad': 'x' * 100000})\n"
            "except OSError as err:\n    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(metrics)], env=ENV, capture_output=True, text=True,
                          timeout=60, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000)))
    assert str(metrics) in proc.stdout and "file size limit" in proc.stdout, proc.stdout + proc.stderr
    assert metrics.read_text() == '{"epoch": 1}\n', "the cut line was taken back"


def test_a_fifo_as_a_partial_runs_checkpoint_is_refused_by_the_plan(tmp_path, capsys):
    from ablations import run as run_cli
    from ablations import store
    from ablations.experiment import resolve

    pe = str(ROOT / "sweeps" / "pe.yaml")
    experiment = resolve(pe, root=tmp_path / "results")
    run_dir = experiment.run_dir(experiment.runs[0])
    store.write_config(run_dir, experiment.runs[0].config, experiment.meta(experiment.runs[0]))
    os.mkfifo(run_dir / store.CHECKPOINT)
    assert run_cli.main([pe, "--results-root", str(tmp_path / "results"), "--no-eta"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "not a regular file" in err and err.count("\n") == 1
    assert not (run_dir / store.METRICS).exists(), "nothing ran"
