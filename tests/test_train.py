"""The training job on tiny configs: run folder contract, exact resume, failures, datasets, DDP (gloo)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ablations.training.trainer as train
from ablations import store
from ablations.spec.config import RunConfig, with_overrides
from ablations.train import main
from ablations.training.trainer import Preempted, RunFailed, request_stop, train_run

ROOT = Path(__file__).resolve().parent.parent
TINY = {"data.img_size": 32, "data.train_limit": 64, "data.val_limit": 32, "train.epochs": 2,
        "train.batch_size": 16}
TIMES = {"epoch_time_s", "train_img_s"}
RESULT_KEYS = {"final", "best", "params", "macs_paper", "macs_total", "throughput_img_s", "device", "wall_time_s",
               "epochs", "versions", "git_commit", "finished_at"}


def tiny(**overrides) -> RunConfig:
    return with_overrides(RunConfig(), {**TINY, **overrides})


def metrics(run_dir: Path) -> list[dict]:
    read = store.read_metrics(run_dir / store.METRICS)
    assert not read.problems
    return [{k: v for k, v in row.items() if k not in TIMES} for row in read.rows]


def outcome(run_dir: Path) -> tuple:
    result = json.loads((run_dir / store.RESULT).read_text())
    return metrics(run_dir), result["final"], result["best"]


def write_config(run_dir: Path, config: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    store.atomic_write_json(run_dir / store.CONFIG, {"config": config.to_dict(), "meta": {}})


def cli(*args: str):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "ablations.train", *args, "--no-progress"], dict(cwd=ROOT, env=env)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the CLI subprocesses: exact comparisons between the two need the same
    thread count, and on a shared 2-core machine two busy-waiting OpenMP threads can be 10x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """An uninterrupted tiny run: what every interrupted one must reproduce exactly."""
    run_dir = tmp_path_factory.mktemp("reference")
    result = train_run(tiny(), run_dir, progress=False)
    return run_dir, result


def test_tiny_run_writes_the_run_folder(reference):
    run_dir, result = reference
    assert set(result) >= RESULT_KEYS
    assert json.loads((run_dir / store.RESULT).read_text()) == result
    rows = store.read_metrics(run_dir / store.METRICS).rows
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert set(row) >= {"epoch", "train_loss", "lr", "val_loss", "top1", "top5", "epoch_time_s", "train_img_s"}
        assert 0 <= row["top1"] <= row["top5"] <= 100
    assert result["final"] == {k: rows[-1][k] for k in ("top1", "top5", "val_loss")}
    assert result["best"]["epoch"] in (1, 2) and result["epochs"] == 2
    assert set(result["versions"]) == {"python", "torch", "torchvision", "timm"}
    assert result["params"] > 9e6 and result["macs_total"] >= result["macs_paper"] > 0
    assert result["throughput_img_s"] > 0 and result["wall_time_s"] > 0 and result["device"].startswith("cpu")
    assert (run_dir / store.CHECKPOINT).exists() and (run_dir / store.LOG).read_text().count("epoch 2/2") == 1
    assert not (run_dir / store.ERROR).exists()
    assert store.run_state(run_dir).state == store.DONE


def test_best_weights_load_with_timm_and_the_final_checkpoint_is_slim(reference):
    import timm

    run_dir, result = reference
    kept = result["kept"]
    assert kept["checkpoint"] == store.CHECKPOINT and kept["best_weights"] == store.BEST_WEIGHTS
    assert "pretrained_cfg_overlay=dict(file='best.pt', num_classes=10)" in kept["load_with"]
    assert "img_size=32" in kept["load_with"]
    best = torch.load(run_dir / store.BEST_WEIGHTS, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in best.values())  # a plain state dict
    model = timm.create_model("rest_lite", pretrained=True, num_classes=10, img_size=32,
                              pretrained_cfg_overlay=dict(file=str(run_dir / store.BEST_WEIGHTS), num_classes=10))
    loaded = model.state_dict()
    assert loaded.keys() == best.keys()
    assert all(torch.equal(loaded[k], best[k]) for k in best)
    assert not all(torch.equal(v, timm.create_model("rest_lite", num_classes=10).state_dict()[k])
                   for k, v in best.items())  # trained weights, not a fresh model's
    final = store.load_checkpoint(run_dir / store.CHECKPOINT)
    assert final["optimizer"] is None and final["scheduler"] is None and final["epoch"] == 2
    if result["best"]["epoch"] == 2:
        assert all(torch.equal(final["model"][k], best[k]) for k in best)


def test_tensorboard_event_files_per_step_and_per_epoch(reference):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = reference
    events = EventAccumulator(str(run_dir / store.TENSORBOARD))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == list(range(2 * 64 // 16))  # 2 epochs of 4 updates
    assert [e.step for e in events.Scalars("train/lr")] == steps
    rows = store.read_metrics(run_dir / store.METRICS).rows
    assert [e.value for e in events.Scalars("epoch/top1")] == pytest.approx([r["top1"] for r in rows])
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [1, 2]


def test_keep_none_and_no_logger_leave_only_the_numbers(tmp_path):
    run_dir = tmp_path / "run"
    config = tiny(**{"train.epochs": 1, "train.keep_checkpoints": "none", "train.logger": "none"})
    result = train_run(config, run_dir, progress=False)
    assert result["kept"] == {"checkpoint": None, "best_weights": None}
    for name in (store.CHECKPOINT, store.BEST_WEIGHTS, store.TENSORBOARD):
        assert not (run_dir / name).exists(), name
    assert store.run_state(run_dir).state == store.DONE
    best = tmp_path / "best"
    train_run(with_overrides(config, {"train.keep_checkpoints": "best"}), best, progress=False)
    assert (best / store.BEST_WEIGHTS).exists() and not (best / store.CHECKPOINT).exists()


def test_wandb_logger_logs_and_a_missing_package_is_a_clear_failure(tmp_path, monkeypatch):
    import types

    calls = []

    class FakeRun:
        def log(self, data):
            calls.append(("log", data))

        def finish(self):
            calls.append(("finish", None))

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    train_run(tiny(**{"train.epochs": 1, "train.logger": "wandb"}), tmp_path / "w", progress=False)
    init = calls[0][1]
    assert calls[0][0] == "init" and init["id"] == "w" and init["config"]["train"]["epochs"] == 1
    assert init["dir"].startswith(str(tmp_path / "w")) and calls[-1][0] == "finish"
    assert sum("train/loss" in c[1] for c in calls if c[0] == "log") == 4
    assert (tmp_path / "w" / store.TENSORBOARD).is_dir()  # wandb comes on top of TensorBoard
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed
    with pytest.raises(RuntimeError, match="pip install"):
        train_run(tiny(**{"train.epochs": 1, "train.logger": "wandb"}), tmp_path / "missing", progress=False)


def test_finished_run_is_not_trained_again(reference, tmp_path):
    run_dir = tmp_path / "again"
    run_dir.mkdir()
    for name in (store.CHECKPOINT, store.METRICS):
        (run_dir / name).write_bytes((reference[0] / name).read_bytes())
    train_run(tiny(), run_dir, progress=False)
    assert outcome(run_dir) == outcome(reference[0])
    assert "epoch 1/2" not in (run_dir / store.LOG).read_text()


def test_kill_9_mid_epoch_then_relaunch_is_exact(reference, tmp_path):
    run_dir = tmp_path / "killed"
    write_config(run_dir, tiny())
    command, options = cli(str(run_dir))
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options)
    deadline = time.time() + 120
    while not (run_dir / store.CHECKPOINT).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / store.RESULT).exists(), "the job finished before it could be killed"
    assert len(store.read_metrics(run_dir / store.METRICS).rows) == 1
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **options)
    assert done.returncode == 0, done.stderr
    assert outcome(run_dir) == outcome(reference[0])
    assert "resuming from" in (run_dir / store.LOG).read_text()


def stop_at(monkeypatch, epoch: int, step: int) -> None:
    original = train.seed_step

    def seed_step(seed, e, s, rank):
        if (e, s) == (epoch, step):
            request_stop()
        original(seed, e, s, rank)

    monkeypatch.setattr(train, "seed_step", seed_step)


def test_request_stop_mid_epoch_then_resume_is_exact(reference, tmp_path, monkeypatch):
    run_dir = tmp_path / "stopped"
    stop_at(monkeypatch, 0, 2)  # raised at step 2 -> the checkpoint resumes at step 3 of epoch 1
    with pytest.raises(Preempted):
        train_run(tiny(), run_dir, progress=False)
    ckpt = torch.load(run_dir / store.CHECKPOINT, weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (0, 3)
    assert not (run_dir / store.METRICS).exists() and not (run_dir / store.ERROR).exists()
    monkeypatch.undo()
    train_run(tiny(), run_dir, progress=False)
    assert outcome(run_dir) == outcome(reference[0])


def test_a_stop_asked_in_an_epochs_last_update_comes_before_its_validation(reference, tmp_path, monkeypatch):
    """Not after the epoch's validation pass and checkpoint (minutes on ImageNet, taken from the time a signal
    gives before the job is killed): the checkpoint is at the epoch's end, and the resumed run validates it."""
    run_dir = tmp_path / "stopped"
    stop_at(monkeypatch, 0, 3)  # epoch 1's last update of 4
    with pytest.raises(Preempted, match="epoch 1 step 4"):
        train_run(tiny(), run_dir, progress=False)
    ckpt = torch.load(run_dir / store.CHECKPOINT, weights_only=True)
    assert (ckpt["epoch"], ckpt["step"]) == (0, 4) and not (run_dir / store.METRICS).exists()
    monkeypatch.undo()
    train_run(tiny(), run_dir, progress=False)
    assert outcome(run_dir) == outcome(reference[0])


def test_truncated_metrics_line_is_dropped_on_resume(reference, tmp_path, monkeypatch):
    run_dir = tmp_path / "truncated-metrics"
    stop_at(monkeypatch, 1, 0)
    with pytest.raises(Preempted):
        train_run(tiny(), run_dir, progress=False)
    monkeypatch.undo()
    with open(run_dir / store.METRICS, "ab") as f:
        f.write(b'{"epoch": 2, "train_lo')  # a write cut short
    assert store.run_state(run_dir).problems
    train_run(tiny(), run_dir, progress=False)
    assert outcome(run_dir) == outcome(reference[0])


def test_half_line_of_a_checkpointed_epoch_is_repaired_from_the_checkpoint(reference, tmp_path, monkeypatch):
    run_dir = tmp_path / "half-line"
    stop_at(monkeypatch, 1, 0)  # epoch 1 is finished and checkpointed
    with pytest.raises(Preempted):
        train_run(tiny(), run_dir, progress=False)
    monkeypatch.undo()
    data = (run_dir / store.METRICS).read_bytes()
    (run_dir / store.METRICS).write_bytes(data[: len(data) // 2])  # epoch 1's line, cut in half
    train_run(tiny(), run_dir, progress=False)
    assert outcome(run_dir) == outcome(reference[0])  # epoch 1's row is there again, not dropped
    assert "restored from the checkpoint" in (run_dir / store.LOG).read_text()


def test_truncated_checkpoint_starts_over(reference, tmp_path):
    run_dir = tmp_path / "truncated-checkpoint"
    run_dir.mkdir()
    good = (reference[0] / store.CHECKPOINT).read_bytes()
    (run_dir / store.CHECKPOINT).write_bytes(good[: len(good) // 3])
    (run_dir / store.METRICS).write_text(json.dumps({"epoch": 1, "top1": 1.0}) + "\n")
    train_run(tiny(), run_dir, progress=False)
    assert (run_dir / (store.CHECKPOINT + ".corrupt")).exists()
    assert outcome(run_dir) == outcome(reference[0])
    assert "starting over" in (run_dir / store.LOG).read_text()


def test_nan_loss_fails_the_run(tmp_path):
    run_dir = tmp_path / "nan"
    (run_dir).mkdir()
    (run_dir / store.ERROR).write_text("{}")  # a stale failure is removed when the run starts
    with pytest.raises(RunFailed, match="non-finite loss"):
        train_run(tiny(**{"optim.lr": 1e9, "train.epochs": 1}), run_dir, progress=False)
    error = json.loads((run_dir / store.ERROR).read_text())
    assert error["reason"].startswith("non-finite loss (nan) at epoch 1 step ")
    assert error["epoch"] == 1 and "RunFailed" in error["traceback"]
    assert store.run_state(run_dir).state == store.FAILED and not (run_dir / store.RESULT).exists()


def test_a_loss_not_read_yet_is_read_before_the_epochs_checkpoint(tmp_path, monkeypatch):
    """Losses read only every LOSS_READ_EVERY updates: a non-finite one in an epoch's last update still fails
    the run before that epoch's row and checkpoint, which keep the epoch before."""
    monkeypatch.setattr(train, "LOSS_READ_EVERY", 100)  # no read inside an epoch of 4 updates
    accumulate, updates = train.accumulate_gradients, []

    def diverging(*args, **kwargs):
        updates.append(1)
        loss = accumulate(*args, **kwargs)
        return loss * float("nan") if len(updates) == 8 else loss  # epoch 2's last update

    monkeypatch.setattr(train, "accumulate_gradients", diverging)
    run_dir = tmp_path / "late"
    with pytest.raises(RunFailed, match=r"non-finite loss \(nan\) at epoch 2 step 3"):
        train_run(tiny(), run_dir, progress=False)
    assert [row["epoch"] for row in metrics(run_dir)] == [1]
    assert store.load_checkpoint(run_dir / store.CHECKPOINT)["epoch"] == 1  # epoch 1's: resumable, finite


def test_train_amp_chooses_the_autocast_dtype_and_a_card_without_bfloat16_fails_the_run(monkeypatch):
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")

    def dtype(amp, device):
        return train.autocast_dtype(with_overrides(RunConfig(), {"train.amp": amp}), device)

    assert [dtype(amp, cpu) for amp in (True, False, "bfloat16")] == [None] * 3  # CPU: float32 whatever it says
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert [dtype(amp, cuda) for amp in (True, False, "bfloat16")] == [torch.float16, None, torch.bfloat16]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert dtype("bfloat16", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(RunFailed, match="V100-SXM2-16GB does not compute in bfloat16; use train.amp=true"):
        dtype("bfloat16", cuda)  # emulated bfloat16 (float32 compute) is no AMP: refused, not slow
    # true and false keep the run ids they had before "bfloat16" became a choice (their folders stay theirs)
    assert (RunConfig().short_hash(), with_overrides(RunConfig(), {"train.amp": False}).short_hash()) == \
        ("bfea2f33eb", "cd03b8a843"), "every run id changed: existing run folders would no longer be found"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run scripts/gpu_check.sh)")
@pytest.mark.parametrize("amp, scaled", [(True, True), ("bfloat16", False)])
def test_cuda_trains_under_float16_with_a_loss_scaler_and_under_bfloat16_without(tmp_path, amp, scaled):
    if amp == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip(f"{torch.cuda.get_device_name()} has no native bfloat16 (a run there fails, by design)")
    run_dir = tmp_path / str(amp)
    trainer = train.Trainer(tiny(**{"train.amp": amp, "train.epochs": 1}), run_dir, progress=False, num_workers=0)
    assert trainer.amp and trainer.scaler.is_enabled() == scaled
    assert trainer.autocast.fast_dtype == (torch.float16 if scaled else torch.bfloat16)
    result = trainer.run()
    assert result["device"].startswith("cuda") and 0.0 <= result["final"]["top1"] <= 100.0
    # one GPU: no update waits for the device between two reads of the loss (torch raises on a sync), under float16
    # too, whose loss scaler hands its found-inf flag to the fused optimizer on the device
    assert trainer.optimizer.param_groups[0]["fused"]
    trainer = train.Trainer(tiny(**{"train.amp": amp}), tmp_path / "syncs", progress=False, num_workers=0)
    update = next(train.in_groups(iter(trainer.train_loader), trainer.accum))
    on_device = [(x.to(trainer.device), y.to(trainer.device)) for x, y in update]
    trainer.train_step(trainer.model, 0, 0, on_device)  # the first update allocates and reads the lr schedule
    trainer.read_losses()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, train.LOSS_READ_EVERY - 1):  # fewer than a read's worth: no read among them
            trainer.train_step(trainer.model, 0, step, on_device)
        assert len(trainer.unread) == train.LOSS_READ_EVERY - 2
    finally:
        torch.cuda.set_sync_debug_mode(0)
    trainer.read_losses()
    assert np.isfinite(trainer.last_loss)


def test_the_loss_is_read_from_the_device_every_few_updates_and_changes_nothing(reference, tmp_path, monkeypatch):
    """A read of the loss waits for the GPU: it happens every LOSS_READ_EVERY updates and at the end of each
    epoch, yet every update is still logged and the numbers are those of a run read at another cadence."""
    monkeypatch.setattr(train, "LOSS_READ_EVERY", 3)
    reads, logged = [], []
    read_losses = train.Trainer.read_losses

    def counting(self):
        reads.append(len(self.unread))
        read_losses(self)

    monkeypatch.setattr(train.Trainer, "read_losses", counting)
    monkeypatch.setattr(train.Tracker, "step", lambda self, update, loss, lr: logged.append((update, loss)))
    run_dir = tmp_path / "every3"
    train_run(tiny(**{"train.logger": "none"}), run_dir, progress=False)
    assert [n for n in reads if n] == [3, 1, 3, 1]  # 2 epochs of 4 updates
    assert [u for u, _ in logged] == list(range(8)) and all(np.isfinite(loss) for _, loss in logged)
    assert metrics(run_dir) == metrics(reference[0])  # same training losses, summed in the same order


def test_train_compile_trains_the_compiled_step_and_logs_its_compiling_update(reference, tmp_path, monkeypatch):
    compiled = []
    compile_ = torch.compile

    def spy(model, **kwargs):
        compiled.append((type(model).__name__, kwargs))
        return compile_(model, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    run_dir = tmp_path / "compiled"
    train_run(tiny(**{"train.compile": "eager"}), run_dir, progress=False)
    assert compiled == [("ResT", {"backend": "eager", "dynamic": False})]
    assert tiny(**{"train.compile": "eager"}).short_hash() == tiny().short_hash()  # how, not what: the same id
    log_text = (run_dir / store.LOG).read_text()
    assert log_text.count("torch.compile (eager): the first update took") == 1, log_text
    for ours, eager in zip(metrics(run_dir), metrics(reference[0]), strict=True):  # the same training
        assert ours == pytest.approx(eager, rel=1e-4, abs=1e-4)
    # another run of another size in the same process (a local sweep): compiled again, with static shapes
    train_run(tiny(**{"train.compile": "eager", "train.epochs": 1, "train.batch_size": 8, "data.img_size": 48}),
              tmp_path / "second", progress=False)
    assert len(compiled) == 2


def test_nan_validation_in_the_last_epoch_fails_the_run(tmp_path, monkeypatch):
    original = train.Trainer.evaluate

    def evaluate(self, model):
        metrics = original(self, model)
        return {**metrics, "val_loss": float("nan")} if self.epoch + 1 == self.config.train.epochs else metrics

    monkeypatch.setattr(train.Trainer, "evaluate", evaluate)
    run_dir = tmp_path / "diverged"
    with pytest.raises(RunFailed, match="non-finite validation metrics at epoch 2"):
        train_run(tiny(), run_dir, progress=False)
    assert not (run_dir / store.RESULT).exists()
    assert store.run_state(run_dir).state == store.FAILED


def test_cli_exit_codes(tmp_path):
    assert main([str(tmp_path / "nowhere")]) == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / store.CONFIG).write_text(json.dumps({"config": {"optim": {"lr": "fast"}}, "meta": {}}))
    assert main([str(bad)]) == 2
    nan = tmp_path / "nan"
    write_config(nan, tiny(**{"optim.lr": 1e9, "train.epochs": 1}))
    command, options = cli(str(nan))
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **options)
    assert done.returncode == 1, done.stderr
    assert "non-finite loss" in json.loads((nan / store.ERROR).read_text())["reason"]


def test_missing_dataset_is_bad_input(tmp_path, monkeypatch):
    monkeypatch.delenv("REST_DATA_ROOT", raising=False)
    run_dir = tmp_path / "nodata"
    (tmp_path / "cifar").mkdir()
    write_config(run_dir, tiny(**{"data.dataset": "cifar10", "data.root": str(tmp_path / "cifar")}))
    assert main([str(run_dir)]) == 2
    assert "cifar-10-batches-py" in json.loads((run_dir / store.ERROR).read_text())["reason"]


def test_tiny_imagefolder_trains_one_epoch(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / c / f"{i}.png")
    config = tiny(**{"data.dataset": "imagefolder", "data.root": str(tmp_path / "data"), "train.epochs": 1,
                     "train.batch_size": 8, "data.eval_crop_pct": 0.875, "aug.reprob": 0.25})
    result = train_run(config, tmp_path / "run", progress=False, num_workers=1)
    assert 0 <= result["final"]["top1"] <= 100 and result["final"]["top5"] == 100.0  # 2 classes
    assert len(store.read_metrics(tmp_path / "run" / store.METRICS).rows) == 1


def test_mixup_label_smoothing_ema_and_clip_run(tmp_path):
    config = tiny(**{"train.epochs": 1, "aug.mixup": 0.8, "aug.cutmix": 1.0, "aug.label_smoothing": 0.1,
                     "train.ema": True, "train.ema_decay": 0.9, "optim.clip_grad": 1.0, "optim.name": "sgd",
                     "optim.lr": 0.1, "optim.lr_base_batch": 64, "sched.warmup_epochs": 1,
                     "model.drop_path_rate": 0.1})
    result = train_run(config, tmp_path / "run", progress=False)
    assert set(result["final_ema"]) == {"top1", "top5", "val_loss"}
    row = store.read_metrics(tmp_path / "run" / store.METRICS).rows[0]
    assert "ema_top1" in row and row["lr"] > 0


def test_init_distributed_from_env_without_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert train.init_distributed_from_env() is False


def _ddp_worker(rank: int, world: int, port: int, run_dir: str, out_dir: str, stop_on_rank1_at=None,
                read_every: int = train.LOSS_READ_EVERY, epochs: int = 1) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train.LOSS_READ_EVERY = read_every  # a spawned process of its own: nothing to restore
    if rank == 1 and stop_on_rank1_at is not None:  # a signal to one rank only, in update (epoch, step)
        seed_step = train.seed_step

        def seed_step_then_stop(seed, epoch, step, r):
            seed_step(seed, epoch, step, r)
            if (epoch, step) == tuple(stop_on_rank1_at):
                request_stop()

        train.seed_step = seed_step_then_stop
    assert train.init_distributed_from_env()
    try:
        result = train_run(tiny(**{"train.epochs": epochs, "train.devices": world}), Path(run_dir), progress=False)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    except Preempted as stopped:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"preempted": str(stopped)}))
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gloo_two_processes(tmp_path):
    run_dir, out_dir = tmp_path / "ddp", tmp_path / "out"
    out_dir.mkdir()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), str(run_dir), str(out_dir)), nprocs=2)
    results = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    assert json.loads((run_dir / store.RESULT).read_text()) == results[0]
    assert [r["epoch"] for r in store.read_metrics(run_dir / store.METRICS).rows] == [1]  # written once
    assert (run_dir / store.LOG).read_text().count("done:") == 1
    # One process accumulating 2 passes of 8 computes what 2 processes of 8 do: the same samples in the same
    # passes, the same per-pass randomness and BatchNorm batches, the same averaged gradient (float tolerance).
    accumulated = train_run(tiny(**{"train.epochs": 1, "train.device_batch": 8}), tmp_path / "accum",
                            progress=False)
    ddp_rows, acc_rows = metrics(run_dir), metrics(tmp_path / "accum")
    for key in ("train_loss", "val_loss", "top1", "top5", "lr"):
        assert acc_rows[0][key] == pytest.approx(ddp_rows[0][key], rel=1e-4, abs=1e-4), key
    assert accumulated["final"]["top1"] == pytest.approx(results[0]["final"]["top1"], abs=1e-4)


def test_a_stop_asked_of_one_ddp_rank_stops_every_rank_at_the_same_update_and_resumes_exactly(tmp_path):
    """The ranks agree on a stop at the loss reads (every 2 updates here), not before every update (a collective
    and a host sync each): rank 1 alone is asked during epoch 1's first update (of 4), both go on to the read
    after the second and stop there, one checkpoint at step 2; resumed, the run ends as an uninterrupted one."""
    run_dir, out_dir, port = tmp_path / "ddp", tmp_path / "out", free_port()
    out_dir.mkdir()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(run_dir), str(out_dir), (0, 0), 2, 2), nprocs=2)
    stopped = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert stopped[0] == stopped[1] == {"preempted": "stopped on request at epoch 1 step 2; checkpoint saved"}
    checkpoint = store.load_checkpoint(run_dir / store.CHECKPOINT)
    assert (checkpoint["epoch"], checkpoint["step"]) == (0, 2)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), str(run_dir), str(out_dir), None, 2, 2), nprocs=2)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path / "whole"), str(tmp_path), None, 2, 2),
                                nprocs=2)
    assert outcome(run_dir) == outcome(tmp_path / "whole")


@pytest.mark.parametrize("backend", [None, "eager"])
def test_ddp_all_reduces_once_per_update_when_accumulating_compiled_or_not(tmp_path, monkeypatch, backend):
    """4 passes per update under DDP: one all-reduce of each gradient bucket per update, also when the step is
    compiled around DDP (the compiled wrapper hides DDP's no_sync, which the trainer keeps apart)."""
    import torch.distributed as dist

    passes, reduces = [], []  # reduces: the pass each all-reduce of a gradient bucket came in

    def count(state, bucket):
        reduces.append(len(passes))
        future = torch.futures.Future()
        future.set_result(bucket.buffer())
        return future

    ddp_init = torch.nn.parallel.DistributedDataParallel.__init__

    def counting_init(self, *args, **kwargs):
        ddp_init(self, *args, **kwargs)
        self.register_comm_hook(None, count)

    forward_loss = train.Trainer.forward_loss
    monkeypatch.setattr(train.Trainer, "forward_loss", lambda self, *a: passes.append(1) or forward_loss(self, *a))
    monkeypatch.setattr(torch.nn.parallel.DistributedDataParallel, "__init__", counting_init)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        train_run(tiny(**{"train.epochs": 1, "train.device_batch": 4, "train.compile": backend}), tmp_path / "run",
                  progress=False)
    finally:
        dist.destroy_process_group()
    assert len(passes) == 4 * 4 and set(reduces) == {4, 8, 12, 16}, reduces  # only in each update's last pass


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_a_resumed_optimizer_keeps_this_processs_implementation(name):
    """A checkpoint's param groups carry the fused flag of the process that saved it (an unfused CPU run, a
    checkpoint from before CUDA runs fused): loading one keeps the optimizer's own, with the state loaded."""
    from timm.optim import create_optimizer_v2

    def optimizer(**how):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = create_optimizer_v2(model, opt=train.TIMM_OPTIMIZERS[name], lr=0.1, weight_decay=1e-4, **how)
        model(torch.randn(8, 4)).square().mean().backward()
        opt.step()
        return opt

    saved, fused = optimizer().state_dict(), optimizer(fused=True)
    assert not saved["param_groups"][0]["fused"]
    train.load_keeping_implementation(fused, saved)
    assert fused.param_groups[0]["fused"] is True
    assert fused.param_groups[0]["weight_decay"] == saved["param_groups"][0]["weight_decay"]
    for ours, theirs in zip(fused.state_dict()["state"].values(), saved["state"].values(), strict=True):
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    unfused = optimizer()
    train.load_keeping_implementation(unfused, fused.state_dict())
    assert not unfused.param_groups[0]["fused"]


def test_fused_sgd_after_a_skipped_first_step_updates_as_the_unfused_one():
    """float16's loss scaler skips an update whose gradients overflow, common in the first ones. Fused SGD
    takes its first step for the one without a momentum buffer and leaves the buffers unwritten when that step
    is skipped: create_optimizer starts them at zero, so the next update is the unfused one's."""
    config = tiny(**{"optim.name": "sgd"})

    def train_three_updates(fused: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(30, 30), torch.nn.BatchNorm1d(30), torch.nn.Linear(30, 3))
        optimizer = train.create_optimizer(config, model, fused=fused)
        assert len(optimizer.param_groups) == 2 and bool(optimizer.param_groups[0]["fused"]) == fused
        if fused:  # before any step: the buffers exist, zero
            assert all(optimizer.state[p]["momentum_buffer"].count_nonzero() == 0 for p in model.parameters())
        scaler, x = torch.amp.GradScaler("cpu"), torch.randn(8, 30)
        for i in range(3):
            junk = [torch.full((30, 30), 3e38) for _ in range(20)]  # freed memory that a new buffer may reuse
            del junk
            optimizer.zero_grad(set_to_none=True)
            loss = model(x).square().mean() * (float("inf") if i == 0 else 1.0)  # the first update overflows
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.allclose(train_three_updates(fused=True), train_three_updates(fused=False), atol=1e-6)


def test_accumulated_gradients_equal_one_large_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.GELU(), torch.nn.Linear(5, 3))
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))

    def loss_of(m, xb, yb):
        return torch.nn.functional.cross_entropy(m(xb), yb)

    def update(micro_batches):
        m = __import__("copy").deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9)
        loss = train.accumulate_gradients(m, micro_batches, loss_of).item()
        opt.step()
        return loss, [p.detach().clone() for p in m.parameters()]

    one_loss, one = update([(x, y)])
    acc_loss, acc = update([(x[:2], y[:2]), (x[2:4], y[2:4]), (x[4:6], y[4:6]), (x[6:], y[6:])])
    assert acc_loss == pytest.approx(one_loss, rel=1e-6)
    for a, b in zip(one, acc, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    _, different = update([(x[:4], y[:4])])  # half the batch: another update (the test can fail)
    assert not all(torch.allclose(a, b) for a, b in zip(one, different, strict=True))


def test_a_run_for_two_devices_refuses_one_process(tmp_path):
    with pytest.raises(ValueError, match="train.devices=2"):
        train_run(tiny(**{"train.devices": 2}), tmp_path / "run", progress=False)
    assert "train.devices=2" in json.loads((tmp_path / "run" / store.ERROR).read_text())["reason"]
