"""A callback for train.py in a subprocess: appends each epoch it starts to a text file."""

from pathlib import Path

import pytorch_lightning as pl


class StartedEpochsFile(pl.Callback):
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        with self.path.open("a") as fh:
            fh.write(f"{trainer.current_epoch}\n")
