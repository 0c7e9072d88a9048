"""A symbolic link planted where the harness keeps runs (a sweep's folder, the run store, a run's folder, its
tensorboard/ or previous/, the SLURM code snapshots and job pickles) is refused with exit 2 naming it, and nothing
is written through it; the results root itself may be a link."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ablations import run as run_cli
from ablations import status as status_cli
from ablations import store
from ablations.experiment import resolve

ROOT = Path(__file__).resolve().parents[1]
PE = str(ROOT / "sweeps" / "pe.yaml")
TINY = ["--set", "train.epochs=1", "--set", "data.train_limit=32", "--set", "data.val_limit=16", "--no-eta"]


def first_run_dir(results: Path) -> Path:
    experiment = resolve(PE, root=results)
    return experiment.run_dir(experiment.runs[0])


def plant(results: Path, where: str, elsewhere: Path) -> Path:
    """A link at `where` (relative to the results root) to an empty folder outside it; returns the link."""
    elsewhere.mkdir()
    run_dir = first_run_dir(results)
    link = {"sweep": results / "pe", "store": results / "runs", "run": run_dir,
            "tensorboard": run_dir / store.TENSORBOARD, "previous": run_dir / store.PREVIOUS,
            "code snapshot": results / "runs" / ".code", "submitit": results / "runs" / ".submitit"}[where]
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, link)
    return link


@pytest.mark.parametrize("where", ["sweep", "store", "run", "tensorboard", "previous", "code snapshot", "submitit"])
def test_a_planted_link_is_refused_by_run_and_status(tmp_path, capsys, where):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    link = plant(results, where, elsewhere)
    # the sweep's own settings: the planted run folder is the one its first run would use
    commands = [(run_cli.main, ["--no-eta", "--force", "--logger", "tensorboard"])]
    if where not in ("tensorboard", "previous"):  # status never enters those
        commands.append((status_cli.main, []))
    for main, flags in commands:
        assert main([PE, "--results-root", str(results), *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(link) in err and "symbolic link" in err and "Traceback" not in err, err
    assert not any(elsewhere.iterdir()), "nothing was written through the link"


@pytest.mark.parametrize("levels, link_at", [(2, "runs"), (2, "runs/r-s0-0123456789"),
                                             (3, "runs/r-s0-0123456789/tensorboard")])
def test_real_dir_refuses_a_link_at_any_level_it_checks(tmp_path, levels, link_at):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    elsewhere.mkdir()
    (results / link_at).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(elsewhere, results / link_at)
    wanted = results / "runs" / "r-s0-0123456789" / ("tensorboard" if levels == 3 else "")
    with pytest.raises(store.UnsafeFile, match="symbolic link"):
        store.real_dir(wanted, levels)
    assert not any(elsewhere.iterdir())


def test_the_writers_refuse_a_link_planted_after_the_plan(tmp_path):
    """Between the plan and the job a link can appear: the job's own folder checks refuse it too."""
    run_dir = tmp_path / "results" / "runs" / "r-s0-0123456789"
    run_dir.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, run_dir / store.TENSORBOARD)
    with pytest.raises(store.UnsafeFile):
        store.tensorboard_dir(run_dir)
    (run_dir / store.LOG).write_text("old log\n")
    os.symlink(elsewhere, run_dir / store.PREVIOUS)
    with pytest.raises(store.UnsafeFile):
        store.archive_previous(run_dir)
    assert (run_dir / store.LOG).is_file() and not any(elsewhere.iterdir())


def test_a_results_root_that_is_a_link_is_the_users_choice(tmp_path, capsys):
    real = tmp_path / "scratch"
    real.mkdir()
    os.symlink(real, tmp_path / "results")
    assert run_cli.main([PE, "--results-root", str(tmp_path / "results"), "--dry-run", *TINY]) == 0


def test_a_code_snapshot_is_never_taken_from_a_planted_link(tmp_path):
    """SLURM jobs put the snapshot on their PYTHONPATH: one planted under the snapshot's (predictable) name would run
    code from elsewhere."""
    from ablations.executors.slurm.submit import CODE_DIR, snapshot_code

    results = tmp_path / "results" / "runs"
    first = snapshot_code(results)
    elsewhere = tmp_path / "elsewhere"
    first.rename(elsewhere)
    os.symlink(elsewhere, first)
    with pytest.raises(store.UnsafeFile, match="symbolic link"):
        snapshot_code(results)
    assert first.parent == results / CODE_DIR
