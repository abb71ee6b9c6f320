"""Every few epochs, a picture of a few fixed validation samples: input / prediction / ground truth / error.

Written to ``<output_dir>/samples/epoch_XXX.png`` (atomically) and, when the trainer has a
``WandbLogger``, logged to it as ``val/reconstructions``. Drawn with matplotlib only
(:mod:`faceregen.plotting`), never VTK, so it is safe inside a training process.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch.utils.data import default_collate

from faceregen.evaluation.figures import reconstruction_rows_figure
from faceregen.evaluation.runs import evenly_spread
from faceregen.plotting import save_figure


class ReconstructionSamples(pl.Callback):
    """Render ``n_samples`` validation items, evenly spread over the set (the same ones every time), every
    ``every_n_epochs`` epochs.

    Args:
        output_dir: the run directory (``samples/`` is made under it).
        every_n_epochs: draw after validation of epochs ``n - 1, 2n - 1, ...`` (0-based), i.e. every n-th.
        n_samples: how many validation items.

    The meshes are drawn with the module's face-model triangles (``pl_module.faces``).
    """

    def __init__(self, output_dir: str, every_n_epochs: int = 5, n_samples: int = 3) -> None:
        if every_n_epochs < 1 or n_samples < 1:
            raise ValueError(f"every_n_epochs and n_samples must be >= 1, got {every_n_epochs} and {n_samples}")
        self.folder = Path(output_dir) / "samples"
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples

    def _fixed_batch(self, trainer: pl.Trainer) -> dict:
        loader = trainer.val_dataloaders
        dataset = (loader[0] if isinstance(loader, (list, tuple)) else loader).dataset
        positions = evenly_spread(len(dataset), self.n_samples).tolist()
        if hasattr(dataset, "__getitems__"):
            return dataset.__getitems__(positions)
        return default_collate([dataset[i] for i in positions])

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0 or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        batch = self._fixed_batch(trainer)
        prediction = pl_module(batch["image"].to(pl_module.device)).float().cpu().numpy()
        titles = [f"val item {int(i)}" for i in batch["index"]] if "index" in batch else None
        figure = reconstruction_rows_figure(
            batch["image"].numpy(), prediction, batch["vertices_mm"].numpy(), pl_module.faces,
            pl_module.evaluation_mask.cpu().numpy(), titles,
        )
        path = save_figure(figure, self.folder / f"epoch_{trainer.current_epoch:03d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/reconstructions", images=[str(path)], step=trainer.global_step)
