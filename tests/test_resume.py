"""Resuming (`ckpt_path=last`) continues from the last finished epoch, whatever the best one was."""

import json
import signal
import time
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from omegaconf import open_dict
from torch.utils.data import DataLoader

from test_experiments import compose_train
from test_parallel_jobs import tiny_overrides, train_cli


class NeverImproves(pl.LightningModule):
    """Logs the monitored ``val/face_rigid_mm = epoch``: epoch 0 is the best, every later epoch does not improve."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/face_rigid_mm", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(torch.randn(4, 2), batch_size=2)

    def val_dataloader(self):
        return DataLoader(torch.randn(2, 2), batch_size=2)


class StartedEpochs(pl.Callback):
    def __init__(self) -> None:
        self.epochs = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


def configured_checkpoints(tmp_path: Path, **last_options) -> list[pl.Callback]:
    """conf/callbacks' model_checkpoint and last_checkpoint, writing under ``tmp_path``."""
    cfg = compose_train()
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.callbacks.last_checkpoint.update(last_options)
    return [hydra.utils.instantiate(cfg.callbacks[name]) for name in ("model_checkpoint", "last_checkpoint")]


def fit(tmp_path: Path, max_epochs: int, ckpt_path=None, extra=(), **last_options) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[*configured_checkpoints(tmp_path, **last_options), *extra],
                         logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(NeverImproves(), ckpt_path=ckpt_path)
    return trainer


def read_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_last_checkpoint_is_the_last_epoch_not_the_best(tmp_path):
    trainer = fit(tmp_path, max_epochs=3)
    assert Path(trainer.checkpoint_callback.best_model_path).name == "epoch_000.ckpt"
    last = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 6)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    started = StartedEpochs()
    resumed = fit(tmp_path, max_epochs=4, ckpt_path="last", extra=[started])
    assert started.epochs == [3] and resumed.global_step == 8
    assert Path(resumed.checkpoint_callback.best_model_path).name == "epoch_000.ckpt"


def test_last_checkpoint_every_n_train_steps_within_an_epoch(tmp_path):
    seen = []

    class Probe(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                seen.append(read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"])

    fit(tmp_path, max_epochs=1, extra=[Probe()], every_n_train_steps=1)
    assert seen == [1]
    with pytest.raises(InstantiationException, match="every_n_train_steps=0: expected a positive step count"):
        configured_checkpoints(tmp_path, every_n_train_steps=0)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # builds data and models from nothing
def test_kill_after_a_non_improving_epoch_then_resume(tmp_path):
    """train.py killed (-9) after epochs that did not improve (monitor `epoch`, mode min: only epoch 0 is a
    best), resumed with ckpt_path=last: it continues at the killed epoch's start, and metrics.json holds
    the whole history, each epoch once, the epochs before the kill as they were."""
    run = tmp_path / "run"
    probe = tmp_path / "started.txt"
    overrides = [*tiny_overrides(tmp_path), "experiment=scratch", "test=false", f"hydra.run.dir={run}",
                 "callbacks.model_checkpoint.monitor=epoch", "callbacks.model_checkpoint.mode=min", "callbacks.early_stopping=null",
                 "+callbacks.started._target_=resume_probe.StartedEpochsFile", f"+callbacks.started.path={probe}"]
    started = time.monotonic()
    job = train_cli([*overrides, "trainer.max_epochs=100"])
    last = run / "checkpoints" / "last.ckpt"
    try:
        while not (last.is_file() and read_checkpoint(last)["epoch"] >= 2):
            assert job.poll() is None, job.stdout.read()[-4000:]
            assert time.monotonic() - started < 900, "no last.ckpt of epoch 2 within 15 minutes"
            time.sleep(0.2)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    killed_at = time.monotonic() - started
    killed = read_checkpoint(last)
    epoch = killed["epoch"]
    before = {row["epoch"]: row for row in json.loads((run / "metrics.json").read_text())["history"]}
    probe.write_text("")
    resume = train_cli([*overrides, "ckpt_path=last", f"trainer.max_epochs={epoch + 3}"])
    output, _ = resume.communicate(timeout=900)
    print(f"killed after {killed_at:.0f} s at epoch {epoch}; resume took {time.monotonic() - started - killed_at:.0f} s")
    assert resume.returncode == 0, output[-4000:]
    assert [int(e) for e in probe.read_text().split()] == [epoch + 1, epoch + 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == list(range(epoch + 3))
    assert [metrics["history"][e] for e in range(epoch + 1)] == [before[e] for e in range(epoch + 1)]
    assert Path(metrics["best_checkpoint"]).name == "epoch_000.ckpt"
    assert read_checkpoint(last)["epoch"] == epoch + 2
