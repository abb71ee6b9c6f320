"""``<run>/checkpoints/last.ckpt``: where ``ckpt_path=last`` resumes, rewritten at the end of every epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint


class LastCheckpoint(Checkpoint):
    """Save the whole training state as ``<dirpath>/last.ckpt`` at the end of every training epoch (after
    its validation) and, with ``every_n_train_steps``, every that many optimizer steps within epochs.

    ModelCheckpoint's ``save_last`` writes ``last.ckpt`` only when it saves a top-k checkpoint, so a run
    killed after epochs that did not improve resumed from its best epoch. Each save goes to
    ``.last.ckpt.tmp`` and is renamed over ``last.ckpt``: a kill leaves the previous one whole. As a
    :class:`Checkpoint` it runs after the other callbacks' epoch-end hooks, so the state it saves holds
    their rows of the epoch (the ``metrics.json`` history among them). List it after the ModelCheckpoint
    whose best checkpoint the run reports: ``trainer.checkpoint_callback`` is the first checkpoint callback.
    """

    FILE_NAME = "last.ckpt"

    def __init__(self, dirpath: str | os.PathLike, every_n_train_steps: int | None = None) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps={every_n_train_steps}: expected a positive step count or null")
        self.path = Path(dirpath) / self.FILE_NAME
        self.every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        last_batch = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0 and not last_batch:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        tmp = self.path.with_name(f".{self.FILE_NAME}.tmp")
        trainer.save_checkpoint(tmp)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.path)
        trainer.strategy.barrier()
