"""The parts of a run built from its config: the face model, the synthetic data, MICA and its datamodule."""

from __future__ import annotations

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig


def with_face_model(cfg: DictConfig):
    """``cfg`` as a partial with plain containers (objects such as the face model cannot be merged into a config)."""
    return hydra.utils.instantiate(cfg, _partial_=True, _convert_="all")


def ensure_dataset(cfg: DictConfig, face_model) -> None:
    """Generate the synthetic dataset when ``cfg.generator`` is set (resumable: quick when complete)."""
    if cfg.get("generator"):
        with_face_model(cfg.generator)(face_model=face_model)


def prepare_data_and_model(cfg: DictConfig, **model_overrides) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The face model (once), the synthetic data (generated when missing), the model and its datamodule.

    The datamodule's face alignment follows the model's identity encoder (ArcFace 112 or dlib 150), and
    both check vertex counts against the same face model.
    """
    face_model = hydra.utils.instantiate(cfg.face_model)
    ensure_dataset(cfg, face_model)
    model = with_face_model(cfg.model)(face_model=face_model, **model_overrides)
    datamodule = with_face_model(cfg.data)(face_model=face_model, alignment=model.identity_encoder.alignment)
    return datamodule, model
