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


def prepare_data_and_model(cfg: DictConfig, **model_overrides) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The face model (once), the synthetic data (generated when missing), the model and its datamodule.

    The datamodule's face alignment follows the model's identity encoder (ArcFace 112 or dlib 150), and
    both check vertex counts against the same face model.
    """
    face_model = hydra.utils.instantiate(cfg.face_model)
    if cfg.get("generator"):
        with_face_model(cfg.generator)(face_model=face_model)  # resumable: quick when complete
    model = with_face_model(cfg.model)(face_model=face_model, **model_overrides)
    datamodule = with_face_model(cfg.data)(face_model=face_model, alignment=model.identity_encoder.alignment)
    return datamodule, model


def with_face_model(cfg: DictConfig):
    """``cfg`` as a partial with plain containers (objects such as the face model cannot be merged into a config)."""
    return hydra.utils.instantiate(cfg, _partial_=True, _convert_="all")


def run(cfg: DictConfig) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data`` (when ``cfg.train``), then test the best checkpoint (``cfg.test``).

    Returns the best validation mean distance (or the test one when nothing was trained), so Hydra's
    sweepers can optimise it.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = prepare_data_and_model(cfg)
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
