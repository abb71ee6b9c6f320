"""Instantiate everything from a Hydra config, fit, test, and return the metric Hydra sweeps optimise."""

from __future__ import annotations

import logging

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers); None -> []."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def run(cfg: DictConfig) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data`` (when ``cfg.train``), test the best checkpoint (``cfg.test``).

    The face model is instantiated once and handed to both the data and the model, which check the
    vertex count against it. Returns the best validation score (or the test mean distance when no
    training ran), so Hydra's sweepers can optimise it.
    """
    pl.seed_everything(cfg.seed, workers=True)
    log.info("Face model <%s>", cfg.face_model._target_)
    face_model = hydra.utils.instantiate(cfg.face_model)
    datamodule = hydra.utils.instantiate(cfg.data, face_model=face_model)
    model = hydra.utils.instantiate(cfg.model, face_model=face_model)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=instantiate_group(cfg.get("logger")) or False
    )
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if cfg.train and trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
    metric = trainer.callback_metrics.get("val/mean_distance_mm" if cfg.train else "test/mean_distance_mm")
    return None if metric is None else float(metric)
