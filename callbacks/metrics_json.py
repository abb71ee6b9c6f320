"""Write each run's metrics where ``evaluate.py`` finds them: ``<run dir>/metrics.json`` and, after a test,
the per-image test metrics ``<run dir>/test_samples.csv`` (for paired comparisons between settings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from faceregen.evaluation.runs import TEST_SAMPLES_NAME
from faceregen.evaluation.table import csv_text
from faceregen.io import atomic_write_text


def _plain(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}


class MetricsJSON(pl.Callback):
    """Per-epoch history (train/val), the best checkpoint and the test metrics, rewritten atomically.

    Format: ``{"history": [{"epoch": int, "<stage>/<name>": float, ...}], "best_checkpoint": str|null,
    "best_score": float|null, "monitor": str, "test": {...}}``. The run's resolved config is Hydra's
    ``<run dir>/.hydra/config.yaml``.
    """

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / "metrics.json"
        self.history: list[dict] = []
        self.test: dict[str, float] = {}
        self.validated_epoch: int | None = None

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        """Resuming a fit restores the history; restoring the best checkpoint for testing keeps the later
        epochs this process has seen (rows are merged by epoch, this process's rows win)."""
        rows = {row["epoch"]: row for row in state_dict["history"]}
        rows.update({row["epoch"]: row for row in self.history})
        self.history = [rows[epoch] for epoch in sorted(rows)]

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One row per epoch, written once the epoch's training aggregates exist (validation ran before).

        Validation metrics are kept only when validation ran in this epoch (``callback_metrics`` still holds
        older ones otherwise).
        """
        if trainer.global_rank != 0:
            return
        metrics = _plain(trainer.callback_metrics)
        if self.validated_epoch != trainer.current_epoch:
            metrics = {k: v for k, v in metrics.items() if not k.startswith("val/") and "/val_" not in k}
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        self.history = [r for r in self.history if r["epoch"] != row["epoch"]] + [row]
        self._write(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        self.test = {k: v for k, v in _plain(trainer.callback_metrics).items() if k.startswith("test/")}
        self._write(trainer)
        samples = pl_module.test_sample_metrics() if hasattr(pl_module, "test_sample_metrics") else {}
        describe = getattr(trainer.datamodule, "describe_items", None)
        if samples and describe is not None:
            columns = {**describe(samples.pop("index").astype(np.int64)), **samples}
            n_images = len(columns["sample"])
            rows = [{name: value[i].item() for name, value in columns.items()} for i in range(n_images)]
            atomic_write_text(self.path.parent / TEST_SAMPLES_NAME, csv_text(rows))

    def _write(self, trainer: pl.Trainer) -> None:
        ckpt = trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") or None
        score = getattr(ckpt, "best_model_score", None)
        payload = {
            "history": self.history,
            "monitor": getattr(ckpt, "monitor", None),
            "best_checkpoint": best,
            "best_score": None if score is None else float(score),
            "test": self.test,
        }
        atomic_write_text(self.path, json.dumps(payload, indent=2))
