"""Experiment tracking: what a run logs besides metrics.jsonl (train.logger).

    tensorboard (default)  TensorBoard event files in the run folder's tensorboard/: per update the training
                           loss and lr (step = update count), per epoch every metrics.jsonl field.
    wandb                  the same, and to Weights & Biases when the `wandb` package is installed (an
                           optional extra: pip install 'rest-ablations[wandb]'); WANDB_MODE=offline works
                           without network (the run is kept under the run folder's wandb/).
    none                   nothing but metrics.jsonl.

Rank 0 logs. A resumed run continues the same TensorBoard folder; events at or after the resumed update are
purged (purge_step), so a curve never shows a stretch twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ablations import store


class MissingLogger(RuntimeError):
    """train.logger names a package that is not installed."""


class Tracker:
    """The run's loggers (none, TensorBoard, and W&B), behind two calls: step() and epoch()."""

    def __init__(self, writers: list[Any]):
        self.writers = writers

    def step(self, update: int, loss: float, lr: float) -> None:
        for w in self.writers:
            w.step(update, loss, lr)

    def epoch(self, update: int, row: dict) -> None:
        for w in self.writers:
            w.epoch(update, row)

    def close(self) -> None:
        for w in self.writers:
            w.close()


class TensorBoardWriter:
    def __init__(self, run_dir: Path, resume_update: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(store.tensorboard_dir(run_dir)), purge_step=resume_update or None)

    def step(self, update: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, update)
        self.writer.add_scalar("train/lr", lr, update)

    def epoch(self, update: int, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float):
                self.writer.add_scalar(f"epoch/{key}", value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbWriter:
    def __init__(self, run_dir: Path, config: dict, run_id: str, project: str):
        try:
            import wandb
        except ImportError:
            raise MissingLogger("train.logger=wandb needs the wandb package: pip install 'rest-ablations[wandb]' "
                                "(or pip install wandb); --logger tensorboard or none needs nothing") from None
        folder = store.wandb_dir(run_dir)
        self.wandb = wandb
        self.run = wandb.init(project=project, id=run_id, name=run_id, dir=str(folder), config=config,
                              resume="allow")

    def step(self, update: int, loss: float, lr: float) -> None:
        self.run.log({"train/loss": loss, "train/lr": lr, "update": update})

    def epoch(self, update: int, row: dict) -> None:
        self.run.log({**{f"epoch/{k}": v for k, v in row.items() if isinstance(v, int | float)}, "update": update})

    def close(self) -> None:
        self.run.finish()


def open_tracker(logger: str, run_dir: Path, *, config: dict, run_id: str, resume_update: int,
                 project: str = "rest-ablations") -> Tracker:
    """The loggers train.logger asks for (MissingLogger if wandb is asked for and not installed)."""
    writers: list[Any] = []
    if logger in ("tensorboard", "wandb"):
        writers.append(TensorBoardWriter(run_dir, resume_update))
    if logger == "wandb":
        writers.append(WandbWriter(run_dir, config, run_id, project))
    return Tracker(writers)
