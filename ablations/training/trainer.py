"""The trainer: one run, trained in its run folder, resumable to the bit.

Its command line is `python -m ablations.train RUN_DIR` (ablations/train.py, which answers --help without
importing torch); jobs reach it through ablations.executors.job.RunJob.

`train_run(config, run_dir)` builds everything from timm (model, optimizer with bias/norm excluded from
weight decay, warm-up + cosine schedule stepped per update, Mixup/CutMix, label smoothing, EMA) and
writes the run folder described in `ablations.store`: one metrics.jsonl row per epoch, checkpoint.pt
after every epoch, result.json at the end, error.json if it fails.

Exact resume. A run resumed from any checkpoint, even one saved mid-epoch, produces the same metrics as
an uninterrupted one, to the bit (on the same device and thread count, with the same train.compile backend).
Nothing random depends on the history of the process: every training step reseeds torch/numpy/random from
(seed, epoch, step, rank), each sample's augmentation is seeded by (seed, epoch, index) (see
`ablations.training.loaders`), each epoch's order comes from a (seed, epoch)-seeded sampler, and the schedule is
a function of the update count.

Epochs are numbered from 1 in every file (metrics rows, best epoch, error.json); steps within an epoch
from 0.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import platform
import sys
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import timm
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from tqdm import tqdm

import rest
from ablations import store
from ablations.cli import PrintableFormatter
from ablations.provenance import code_provenance
from ablations.spec.config import REST_KNOBS, RunConfig
from ablations.training.loaders import DeviceBatches, build_loaders, mix_seed, seed_everything
from ablations.training.models import create_model
from ablations.training.tracking import Tracker, open_tracker
from rest.complexity import time_iterations
from rest_knobs import VARIANTS

log = logging.getLogger("ablations.train")

# the config's optimizer names -> timm's ("sgd" in timm is Nesterov; the paper's protocol is plain momentum)
TIMM_OPTIMIZERS = {"adamw": "adamw", "sgd": "momentum"}


class Preempted(Exception):
    """Training stopped on request (request_stop / SIGTERM / SIGUSR1) after saving a checkpoint."""


class RunFailed(RuntimeError):
    """The run cannot succeed as configured (e.g. the loss diverged); error.json says why."""


class CheckpointMismatch(ValueError):
    """checkpoint.pt belongs to another config than config.json: resuming it would mix two runs."""


_STOP = threading.Event()


def request_stop() -> None:
    """Ask the job to checkpoint and raise Preempted before its next training step (under DDP: within
    LOSS_READ_EVERY updates, where the ranks agree on it).

    Safe from a signal handler. The request stands until a training loop honours it, so one made while a
    run is starting up, or finishing, stops the next run a launcher starts in this process.
    """
    _STOP.set()


def seed_step(seed: int, epoch: int, step: int, rank: int) -> None:
    """Reseed all RNGs at the start of a training step: drop path, Mixup and friends draw from these."""
    seed_everything(mix_seed(seed, "step", epoch, step, rank))


# Updates between reads of the training loss from the device. A read waits for the GPU to finish what is queued,
# so it is not done once per update; a non-finite loss fails the run at the next read, always before a checkpoint.
LOSS_READ_EVERY = 20


def autocast_dtype(config: RunConfig, device: torch.device) -> torch.dtype | None:
    """The run's autocast dtype on `device` (None: float32). train.amp acts on CUDA only: true is float16,
    "bfloat16" bfloat16, which a card without it (before Ampere) refuses with the run failed."""
    if device.type != "cuda" or config.train.amp is False:
        return None
    if config.train.amp != "bfloat16":
        return torch.float16
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        raise RunFailed(f"train.amp=bfloat16: {torch.cuda.get_device_name(device)} does not compute in bfloat16; "
                        f"use train.amp=true (float16 with a loss scaler)")
    return torch.bfloat16


def init_distributed_from_env() -> bool:
    """Initialize torch.distributed from MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK, if set.

    NCCL on GPU (each process takes GPU LOCAL_RANK), gloo on CPU. Returns whether it is initialized.
    """
    if dist.is_initialized():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    return True


class Ranks:
    """The process's place in a distributed job (or the whole job, when not distributed)."""

    def __init__(self, device: torch.device):
        self.active = dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        self.main = self.rank == 0
        self.device = device

    def sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank updates its own copy from
        its own batch during a step, and DDP syncs them only at the start of the next forward."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


class Trainer:
    def __init__(self, config: RunConfig, run_dir: Path, progress: bool, num_workers: int):
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.tracker = Tracker([])  # rank 0 opens train.logger's when it starts training
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")
        self.ranks = Ranks(self.device)
        _, self.device_batch, self.accum = config.batch_split()
        self.amp_dtype = autocast_dtype(config, self.device)
        self.amp = self.amp_dtype is not None
        self.train_loader, self.val_loader, self.num_classes = build_loaders(
            config, distributed=self.ranks.active, num_workers=num_workers)
        self.steps_per_epoch = self.train_loader.sampler.steps  # updates; the loader yields accum micro-batches each
        aug = config.aug
        self.mixup = None
        if aug.mixup > 0 or aug.cutmix > 0:
            if self.device_batch % 2:
                raise ValueError("aug.mixup / aug.cutmix need an even batch per device (train.device_batch)")
            self.mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix,
                               label_smoothing=aug.label_smoothing, num_classes=self.num_classes)
            self.criterion = SoftTargetCrossEntropy()
        elif aug.label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=aug.label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()
        self.autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else nullcontext()
        self.memory_format = torch.channels_last if self.amp else torch.contiguous_format
        self.to_device = DeviceBatches(config, self.device, self.memory_format)
        self.build_state()

    # ---- state ---------------------------------------------------------------------------------------------
    def build_state(self) -> None:
        """A fresh model, EMA, optimizer, schedule and scaler, and the progress counters of a new run."""
        c = self.config
        seed_everything(c.train.seed)
        self.model = create_model(c, self.num_classes).to(self.device, memory_format=self.memory_format)
        self.ema = ModelEmaV3(self.model, decay=c.train.ema_decay) if c.train.ema else None
        # fused on CUDA: the update in one kernel, to which float16's loss scaler hands its found-inf flag on the
        # device (GradScaler.step reads it, a host sync per update, for an optimizer that is not fused)
        self.optimizer = create_optimizer(c, self.model, fused=self.device.type == "cuda")
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=c.sched.name, num_epochs=c.train.epochs, warmup_epochs=c.sched.warmup_epochs,
            warmup_lr=c.warmup_lr, min_lr=c.min_lr,
            decay_epochs=c.step_decay_epochs, decay_rate=0.1,
            step_on_epochs=c.sched.per_epoch, updates_per_epoch=self.steps_per_epoch,
        )
        # float16 needs its loss scaled (its gradients underflow), bfloat16 has float32's range (timm's train.py)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.epoch, self.step = 0, 0  # the next step to run (0-based)
        self.partial = dict(loss_sum=0.0, images=0, train_s=0.0, time_s=0.0)  # the current epoch so far
        self.unread: list[tuple] = []  # (epoch, step, update, lr, images, mean loss on the device) not read yet
        self.compiling = False  # whether the next update compiles the training step (train.compile)
        self.ddp: nn.parallel.DistributedDataParallel | None = None  # the training model's DDP wrapper, if any
        self.last_loss = math.nan  # the latest loss read
        self.stop_agreed = False  # under DDP: whether a rank had asked to stop at the latest read (read_losses)
        self.best: dict = dict(top1=-1.0, top5=-1.0, epoch=0)
        self.last: dict | None = None  # the last metrics row
        self.wall_before = 0.0  # wall time of earlier attempts

    def checkpoint(self) -> dict:
        return dict(
            config=self.config.to_dict(), epoch=self.epoch, step=self.step, partial=dict(self.partial),
            best=dict(self.best), last=self.last, wall_time_s=self.wall_time(),
            model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
            ema=self.ema.state_dict() if self.ema else None,
        )

    def save(self) -> None:
        if self.ranks.main:
            store.save_checkpoint(self.run_dir, self.checkpoint())
        self.ranks.barrier()

    def resume(self) -> None:
        """Load checkpoint.pt if there is one (a corrupt one is set aside), and cut metrics.jsonl to match."""
        path = self.run_dir / store.CHECKPOINT
        if path.exists():
            try:
                self.load(store.load_checkpoint(path, map_location=self.device))
                log.info("resuming from %s: epoch %d, step %d", path, self.epoch + 1, self.step)
            except CheckpointMismatch:
                raise
            except Exception as err:  # truncated file, unreadable pickle, missing or mismatched keys
                self.set_aside(path, err)
        self.ranks.barrier()
        if self.ranks.main:
            self.cut_metrics()
        self.ranks.barrier()

    def load(self, ckpt: dict) -> None:
        if identity_of(ckpt["config"]) != self.config.identity_dict():
            raise CheckpointMismatch(f"{self.run_dir / store.CHECKPOINT} was written for another config than "
                                     f"{self.run_dir / store.CONFIG}; delete the checkpoint or restore the config")
        self.model.load_state_dict(ckpt["model"])
        if ckpt.get("optimizer") is None:  # a finished run's final checkpoint (train.keep_optimizer false)
            if int(ckpt["epoch"]) < self.config.train.epochs:
                raise ValueError("checkpoint without optimizer state before the last epoch")
        else:
            load_keeping_implementation(self.optimizer, ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt["scaler"]:  # empty when saved without AMP (e.g. on CPU)
                self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema:
            self.ema.load_state_dict(ckpt["ema"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.partial, self.best, self.last = dict(ckpt["partial"]), dict(ckpt["best"]), ckpt["last"]
        self.wall_before = float(ckpt["wall_time_s"])

    def set_aside(self, path: Path, err: Exception) -> None:
        log.warning("%s is unreadable (%s: %s); renamed to %s.corrupt, starting over",
                    path, type(err).__name__, str(err).splitlines()[0] if str(err) else "", path.name)
        self.ranks.barrier()  # every rank has tried to read it before it moves
        if self.ranks.main:
            store.set_aside(path)
        self.build_state()  # a failed load may have filled part of the model

    def cut_metrics(self) -> None:
        """Keep only the rows of epochs the checkpoint has finished: nothing is counted twice."""
        path = self.run_dir / store.METRICS
        if not path.exists():
            return
        read = store.read_metrics(path)
        for problem in read.problems:
            log.warning("%s", problem)
        keep, seen = [], set()
        for row in read.rows:
            epoch = row.get("epoch")
            if isinstance(epoch, int) and 1 <= epoch <= self.epoch and epoch not in seen:
                keep.append(row)
                seen.add(epoch)
        last = self.last
        if isinstance(last, dict) and last.get("epoch") == self.epoch and self.epoch not in seen:
            keep.append(last)  # the checkpoint's own copy of the row whose line was cut: repaired, not dropped
            log.warning("%s: the row of epoch %d was cut; restored from the checkpoint", path, self.epoch)
        if len(keep) != len(read.rows) or read.problems:
            log.info("%s: kept %d of %d rows (the checkpoint has %d epochs done)",
                     path, len(keep), len(read.rows), self.epoch)
            store.rewrite_metrics(self.run_dir, keep)

    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.started

    # ---- training ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.started = time.perf_counter()
        self.resume()
        c = self.config
        if self.ranks.main:
            self.tracker = open_tracker(c.train.logger, self.run_dir, config=c.to_dict(), run_id=self.run_dir.name,
                                        resume_update=self.epoch * self.steps_per_epoch + self.step)
        ddp_model = self.model
        if self.ranks.active:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=device_ids,
                find_unused_parameters=has_unused_parameters(self.model, c.data.img_size, self.device))
        self.ddp = ddp_model if self.ranks.active else None  # its no_sync, which compiling would hide
        ddp_model = self.compiled(ddp_model)  # around DDP, as torch's DDP + compile guide does
        if self.epoch == 0 and self.step == 0:
            log.info("training %s on %s: %d epochs of %d steps, batch %d, lr %.3g, %d classes",
                     c.model.name, self.device, c.train.epochs, self.steps_per_epoch, c.train.batch_size, c.lr,
                     self.num_classes)
        while self.epoch < c.train.epochs:
            self.train_epoch(ddp_model)
            self.end_epoch()
        return self.finish()

    def compiled(self, model: nn.Module) -> nn.Module:
        """`model` under torch.compile with train.compile's backend (as is without one). Evaluation stays eager:
        another mode would compile another graph, for a pass a tenth of the epoch's."""
        backend = self.config.train.compile
        self.compiling = backend is not None  # the next update compiles: its time is logged
        # dynamic=False: a training step's shapes never change, and the symbolic shapes torch tries when it sees
        # a second size in one process (a local sweep) failed on Conv-1's baddbmm under DDP's graph split
        return model if backend is None else torch.compile(model, backend=backend, dynamic=False)

    def stop_requested(self) -> bool:
        """Whether to checkpoint and stop before the next update. The ranks of a DDP job must stop at the same
        update: their requests travel with the losses at each read (read_losses), so one rank's request stops
        them all within LOSS_READ_EVERY updates, without a collective and a host sync per update."""
        return self.stop_agreed if self.ranks.active else _STOP.is_set()

    def train_epoch(self, model: nn.Module) -> None:
        epoch, start = self.epoch, self.step
        model.train()
        self.train_loader.sampler.set_epoch(epoch, skip=start)
        tic = time.perf_counter()
        updates = in_groups(self.train_loader, self.accum)  # each update: accum micro-batches
        with tqdm(updates, total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}",
                  disable=None if self.progress and self.ranks.main else True, file=sys.stderr, leave=False) as bar:
            for step, micro_batches in enumerate(bar, start=start):
                if self.stop_requested():
                    self.preempt(step, tic)
                tic_update = time.perf_counter()
                self.train_step(model, epoch, step, micro_batches)
                if self.compiling:  # the first update of a compiled step: how long compiling took
                    self.read_losses()  # waits for the device
                    log.info("torch.compile (%s): the first update took %.1f s, compiling included",
                             self.config.train.compile, time.perf_counter() - tic_update)
                    self.compiling = False
                if not self.unread:  # read just now
                    bar.set_postfix(loss=f"{self.last_loss:.3f}", refresh=False)
        self.read_losses()  # the epoch's last updates: a non-finite loss fails the run before its checkpoint
        if self.stop_requested():  # asked during the epoch's last updates: stopped before its validation
            self.preempt(self.steps_per_epoch, tic)
        self.step = self.steps_per_epoch
        self.add_time(tic, train=True)

    def preempt(self, step: int, tic: float) -> NoReturn:
        """Checkpoint before update `step` of the epoch (steps_per_epoch: before its validation) and raise
        Preempted: a request to stop is honoured."""
        self.read_losses()  # the updates done so far, into the sums the checkpoint keeps
        self.step = step
        self.add_time(tic, train=True)
        self.save()
        _STOP.clear()
        raise Preempted(f"stopped on request at epoch {self.epoch + 1} step {step}; checkpoint saved")

    def train_step(self, model: nn.Module, epoch: int, step: int, micro_batches) -> None:
        """One update from this rank's accum micro-batches (gradients summed with weight 1/accum, so the update
        is the one of the whole global batch). This rank's mean loss stays on the device until
        read_losses, every LOSS_READ_EVERY updates, which averages the ranks' at once."""
        c = self.config
        updates = epoch * self.steps_per_epoch + step
        if c.sched.per_epoch:
            self.scheduler.step(epoch)
        else:
            self.scheduler.step_update(updates)  # the lr is a function of the update count: nothing to replay
        self.optimizer.zero_grad(set_to_none=True)
        loss = accumulate_gradients(
            model, micro_batches, self.forward_loss, self.scaler.scale, no_sync=self.ddp and self.ddp.no_sync,
            before_micro_batch=lambda j: seed_step(c.train.seed, epoch, step, j * self.ranks.world + self.ranks.rank),
        )
        if c.optim.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), c.optim.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model, step=updates + 1)
        images = sum(len(x) for x, _ in micro_batches) * self.ranks.world
        self.partial["images"] += images
        self.unread.append((epoch, step, updates, self.optimizer.param_groups[0]["lr"], images, loss))
        if len(self.unread) >= LOSS_READ_EVERY:
            self.read_losses()

    def read_losses(self) -> None:
        """The unread updates' losses, read from the device at once: averaged over the ranks, checked (a
        non-finite one fails the run, naming its update), logged per update, and added to the epoch's training
        loss in update order. Under DDP the ranks' stop requests are summed with them (stop_requested)."""
        if not self.unread:
            return
        unread, self.unread = self.unread, []
        losses = torch.stack([loss for *_, loss in unread])
        if self.ranks.active:
            # One collective and one read for all: each rank's losses and its request to stop, gathered and summed
            # here in rank order (an all_reduce's order of summation may depend on an element's position in the
            # vector, which moves with the read's window: the same loss could differ in its last bit on resume).
            mine = torch.cat([losses, losses.new_full((1,), float(_STOP.is_set()))])
            ranks = mine.new_empty(self.ranks.world * len(mine))  # flat: gloo takes no (world, n) output
            dist.all_gather_into_tensor(ranks, mine)
            *values, requests = map(sum, zip(*ranks.view(self.ranks.world, -1).tolist(), strict=True))
            values = [value / self.ranks.world for value in values]
            self.stop_agreed = requests > 0
        else:
            values = losses.tolist()
        for (epoch, step, update, lr, images, _), value in zip(unread, values, strict=True):
            if not math.isfinite(value):
                raise RunFailed(f"non-finite loss ({value}) at epoch {epoch + 1} step {step}")
            self.tracker.step(update, value, lr)
            self.partial["loss_sum"] += value * images
        self.last_loss = values[-1]

    def forward_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one micro-batch (mixup drawn from the RNGs seeded for it)."""
        x = self.to_device(x, train=True)
        y = y.to(self.device, non_blocking=True)
        if self.mixup is not None:
            x, y = self.mixup(x, y)
        with self.autocast:
            return self.criterion(model(x), y)

    def add_time(self, tic: float, train: bool = False) -> None:
        seconds = time.perf_counter() - tic
        self.partial["time_s"] += seconds
        if train:
            self.partial["train_s"] += seconds

    @torch.inference_mode()
    def evaluate(self, model: nn.Module) -> dict:
        model.eval()
        # (loss sum, top-1 hits, top-5 hits) summed on the device and read once: no host sync per batch
        totals = torch.zeros(3, dtype=torch.float64, device=self.device)
        k, images = min(5, self.num_classes), 0
        for x, y in self.val_loader:
            images += len(y)
            x = self.to_device(x, train=False)
            y = y.to(self.device, non_blocking=True)
            with self.autocast:
                logits = model(x)
            hits = logits.topk(k, dim=1).indices.eq(y[:, None])  # timm.utils.accuracy's test, as counts
            totals += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(),
                                   hits[:, :1].sum().double(), hits.sum().double()])
        loss_sum, correct1, correct5, count = self.ranks.sum([*totals.tolist(), float(images)])
        model.train()
        return dict(val_loss=loss_sum / count, top1=100.0 * correct1 / count, top5=100.0 * correct5 / count)

    def end_epoch(self) -> None:
        tic = time.perf_counter()
        self.ranks.broadcast_buffers(self.model)  # every rank evaluates the model rank 0 saves
        metrics = self.evaluate(self.model)
        if self.ema is not None:
            metrics.update({f"ema_{k}": v for k, v in self.evaluate(self.ema.module).items()})
        self.add_time(tic)
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if bad:  # a run that diverged in its last steps must not be "done" with NaN accuracy
            raise RunFailed(f"non-finite validation metrics at epoch {self.epoch + 1}: {bad}")
        p = self.partial
        row = dict(
            epoch=self.epoch + 1, train_loss=p["loss_sum"] / max(1, p["images"]),
            lr=self.optimizer.param_groups[0]["lr"], **metrics, epoch_time_s=round(p["time_s"], 3),
            train_img_s=round(p["images"] / max(p["train_s"], 1e-9), 1),
        )
        if self.ranks.main:
            store.append_metrics(self.run_dir, row)  # before the checkpoint: see cut_metrics
        log.info("epoch %d/%d: train_loss %.4f  val_loss %.4f  top1 %.2f  top5 %.2f  (%.1f s, %.0f img/s)",
                 row["epoch"], self.config.train.epochs, row["train_loss"], row["val_loss"], row["top1"],
                 row["top5"], row["epoch_time_s"], row["train_img_s"])
        self.tracker.epoch((self.epoch + 1) * self.steps_per_epoch, row)
        if row["top1"] > self.best["top1"]:
            self.best = dict(top1=row["top1"], top5=row["top5"], epoch=row["epoch"])
            if self.ranks.main:  # before the checkpoint that records it as the best
                store.save_best_weights(self.run_dir, self.model.state_dict())
        self.last = row
        self.epoch, self.step = self.epoch + 1, 0
        self.partial = dict(loss_sum=0.0, images=0, train_s=0.0, time_s=0.0)
        self.save()

    # ---- the end -------------------------------------------------------------------------------------------
    def finish(self) -> dict:
        result = None
        threads = [0.0] * self.ranks.world  # each rank's torch threads (SLURM: its --cpus-per-task on CPU)
        threads[self.ranks.rank] = float(torch.get_num_threads())
        threads = self.ranks.sum(threads)
        if self.ranks.main:
            last = self.last
            result = dict(
                config_hash=store.written_config_hash(self.run_dir),  # what it was computed for: result_impossible
                final={k: last[k] for k in ("top1", "top5", "val_loss")},
                best=dict(self.best),
                **rest.complexity(self.model, self.config.data.img_size),
                throughput_img_s=self.throughput(),
                train_img_s=self.training_speed(),
                device=describe_device(self.device),
                world_size=self.ranks.world,
                torch_threads=[int(t) for t in threads],
                host=platform.node(),
                wall_time_s=round(self.wall_time(), 2),
                epochs=self.config.train.epochs,
                versions=dict(python=platform.python_version(), torch=torch.__version__,
                              torchvision=torchvision.__version__, timm=timm.__version__),
                **code_provenance(),  # git_commit, git_dirty
                finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            if self.ema is not None:
                result["final_ema"] = {k: last[f"ema_{k}"] for k in ("top1", "top5", "val_loss")}
            result["kept"] = self.kept_files()
            store.write_result(self.run_dir, result)
            self.prune()  # after result.json: a run cut short here is done, not restarted
            log.info("done: top1 %.2f (best %.2f at epoch %d), %.0f s", result["final"]["top1"],
                     self.best["top1"], self.best["epoch"], result["wall_time_s"])
        if self.ranks.active:
            shared = [result]
            dist.broadcast_object_list(shared, src=0, device=self.device if self.device.type == "cuda" else None)
            result = shared[0]
        return result

    def kept_files(self) -> dict:
        """What stays in the run folder after prune(), and how to load the best weights."""
        keep, c = self.config.train.keep_checkpoints, self.config
        kept: dict = {"checkpoint": store.CHECKPOINT if keep == "last" else None,
                      "best_weights": store.BEST_WEIGHTS if keep in ("last", "best") else None}
        if kept["best_weights"]:
            rest_model = c.model.name in VARIANTS
            knobs = "".join(f"{k}={getattr(c.model, k)!r}, " for k in REST_KNOBS) if rest_model else ""
            size = f"img_size={c.data.img_size}, " if getattr(self.model, "built_img_size", None) else ""
            n = self.num_classes
            kept["load_with"] = (f"timm.create_model({c.model.name!r}, pretrained=True, num_classes={n}, "
                                 f"{size}{knobs}"
                                 f"pretrained_cfg_overlay=dict(file='{store.BEST_WEIGHTS}', num_classes={n}))"
                                 f"  # after import rest")
        return kept

    def prune(self) -> None:
        """train.keep_checkpoints at the end of a run: last = checkpoint.pt without the optimizer state (unless
        train.keep_optimizer) and best.pt; best = best.pt only; none = neither."""
        keep = self.config.train.keep_checkpoints
        if keep == "last" and not self.config.train.keep_optimizer:
            slim = {**self.checkpoint(), "optimizer": None, "scheduler": None, "scaler": None}
            store.save_checkpoint(self.run_dir, slim)
        if keep in ("best", "none"):
            store.remove_output(self.run_dir, store.CHECKPOINT)
        if keep == "none":
            store.remove_output(self.run_dir, store.BEST_WEIGHTS)

    def training_speed(self) -> float | None:
        """Training images/s of this run (median over its epochs): the planner's ETA for the next runs."""
        speeds = sorted(r["train_img_s"] for r in store.read_metrics(self.run_dir / store.METRICS).rows
                        if isinstance(r.get("train_img_s"), int | float))
        return speeds[len(speeds) // 2] if speeds else None

    @torch.inference_mode()
    def throughput(self) -> float:
        """Inference img/s at data.img_size, batch min(train.batch_size, 64), like benchmarks.model."""
        model = self.model.eval()
        batch = min(self.config.train.batch_size, 64)
        size = self.config.data.img_size
        x = torch.randn(batch, 3, size, size, device=self.device).contiguous(memory_format=self.memory_format)

        def infer():
            with self.autocast:
                model(x)

        seconds = time_iterations(infer, warmup=2, iters=5 if self.device.type == "cpu" else 20, device=self.device)
        return round(batch / seconds, 1)


def create_optimizer(config: RunConfig, model: nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """timm's optimizer for the run, fused (torch's one-kernel implementation) if asked.

    Fused SGD takes its first step for the one that finds no momentum buffer and leaves the buffers it
    allocates unwritten when the loss scaler skips that step (float16 overflow, common in the first updates),
    so the next update reads uninitialised memory. Its buffers start at zero here: with no dampening the first
    step then gives the gradient, what an unfused first step gives, whether or not a skipped step came first.
    """
    optimizer = create_optimizer_v2(model, opt=TIMM_OPTIMIZERS[config.optim.name], lr=config.lr,
                                    weight_decay=config.optim.weight_decay, momentum=config.optim.momentum,
                                    **({"fused": True} if fused else {}))
    if fused and isinstance(optimizer, torch.optim.SGD):
        for group in optimizer.param_groups:
            if group["momentum"] and not group["dampening"]:
                for param in group["params"]:
                    optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
    return optimizer


IMPLEMENTATION_KEYS = ("fused", "foreach", "differentiable", "capturable")  # how an optimizer computes


def load_keeping_implementation(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """The optimizer's state from a checkpoint, its implementation kept: a checkpoint stores its param groups
    whole, and loading would set the fused flag of the process that saved it (another device, or a checkpoint
    from before the trainer fused on CUDA; an unfused step given float16's found-inf flag fails)."""
    how = [{key: group[key] for key in IMPLEMENTATION_KEYS if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, how, strict=True):
        group.update(kept)


def accumulate_gradients(model: nn.Module, micro_batches, forward_loss, scale=lambda loss: loss, *, no_sync=None,
                         before_micro_batch=lambda j: None) -> torch.Tensor:
    """Backward the mean loss over `micro_batches` ((x, y) pairs of equal size), one micro-batch at a time.

    Each micro-batch's loss is divided by their number, so the summed gradient is the gradient of the mean
    loss over all of them: the update of one batch of their union (up to BatchNorm, whose batch statistics are
    per micro-batch, as they are per device in a multi-GPU run). BatchNorm's running statistics move on the
    first micro-batch only: a multi-GPU step keeps rank 0's (DDP broadcasts its buffers), so they move once
    per update from one device's batch whatever the split. Under DDP (`no_sync`: the DDP module's, given apart
    because a compiled model hides that module) the gradients are all-reduced once, on the last micro-batch
    (so every rank runs every backward; the caller sums the loss over the ranks, and a non-finite one fails
    them all alike). Returns the mean loss of this process, on the device (float64: reading it would wait for
    the GPU).
    """
    count = len(micro_batches)
    losses = []  # summed on the device, not read: a read is a host sync
    for j, (x, y) in enumerate(micro_batches):
        before_micro_batch(j)
        sync = j == count - 1 or no_sync is None
        with nullcontext() if sync else no_sync(), frozen_running_stats(model, j > 0):
            loss = forward_loss(model, x, y)
            scale(loss / count).backward()
        losses.append(loss.detach().double())
    return torch.stack(losses).sum() / count


@contextmanager
def frozen_running_stats(model: nn.Module, frozen: bool = True):
    """BatchNorm layers normalize with the batch's statistics but leave their running statistics alone."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if frozen else []
    saved = [m.momentum for m in layers]
    try:
        for m in layers:
            m.momentum = 0.0  # running = (1 - 0) x running + 0 x batch
        yield
    finally:
        for m, momentum in zip(layers, saved, strict=True):
            m.momentum = momentum


def in_groups(iterable, n: int):
    """Consecutive tuples of n items (itertools.batched, which Python 3.11 lacks); a short tail is dropped."""
    it = iter(iterable)
    while len(group := tuple(itertools.islice(it, n))) == n:
        yield group


def identity_of(config: dict) -> dict:
    """What a config dict computes (its identity=False fields dropped), as RunConfig.identity_dict() gives it."""
    try:
        return RunConfig.from_dict(config).identity_dict()
    except ValueError:
        return config


def has_unused_parameters(model: nn.Module, img_size: int, device: torch.device) -> bool:
    """Whether a backward pass leaves some parameters without a gradient, which DDP must be told.

    ResT at inputs under 64 px has a single key in stage 4, so its query and Conv-1 get no gradient.
    Run in eval mode (BatchNorm statistics untouched), with no randomness: the training state is unchanged.
    """
    was_training = model.training
    model.eval()
    model(torch.zeros(1, 3, img_size, img_size, device=device)).float().sum().backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return unused


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def git_commit() -> str | None:
    """The commit of the code this job runs (from the SLURM snapshot's provenance.json, or git)."""
    from ablations.provenance import code_provenance

    return code_provenance()["git_commit"]


class _LogFile(logging.StreamHandler):
    """log.txt, opened by ablations.store (never through a symbolic link); closed with the handler."""

    def close(self) -> None:
        try:
            self.flush()
            self.stream.close()
        finally:
            super().close()


def _log_handlers(run_dir: Path, main: bool) -> list[logging.Handler]:
    """The terminal's lines name the run (several train at once with --jobs N); log.txt, in its folder, needs not."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    named = PrintableFormatter(f"%(asctime)s %(levelname)s [{Path(run_dir).name.replace('%', '%%')}] %(message)s",
                               "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].setFormatter(named)
    if main:
        handlers.append(_LogFile(store.open_log(run_dir)))
        handlers[1].setFormatter(fmt)
    else:
        handlers[0].setLevel(logging.WARNING)
    for h in handlers:
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers


def train_run(config: RunConfig, run_dir: Path, *, progress: bool = True, num_workers: int = 0) -> dict:
    """Train one run in `run_dir` (resuming from its checkpoint) and return what result.json holds.

    Raises Preempted after saving a checkpoint if asked to stop (request_stop; ablations.executors.job.RunJob turns
    signals into that request), RunFailed if the loss diverges; any failure is recorded in error.json. In a
    torch.distributed job only rank 0 writes files.
    """
    run_dir = Path(run_dir)
    main = not dist.is_initialized() or dist.get_rank() == 0
    if main:
        store.start_attempt(run_dir)  # an old failure no longer stands; a save cut short is removed
    handlers = _log_handlers(run_dir, main)
    trainer = None
    try:
        trainer = Trainer(config, run_dir, progress, num_workers)
        return trainer.run()
    except Preempted as err:
        log.info("%s", err)
        raise
    except Exception as err:
        reason = str(err) if isinstance(err, RunFailed) else store.failure_reason(err)
        log.error("run failed: %s", reason)
        if main:
            store.write_error(run_dir, reason, traceback.format_exc(), trainer.epoch + 1 if trainer else 0)
        raise
    finally:
        if trainer is not None:
            trainer.tracker.close()
        for h in handlers:
            log.removeHandler(h)
            h.close()
