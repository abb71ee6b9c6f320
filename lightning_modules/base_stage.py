"""The base stage: MICA's own pre-training on complete faces, played on synthetic data.

In the paper every setting but "scratch" starts from MICA pre-trained on large sets of complete faces.
Users with MICA's ``mica.tar`` set ``base_checkpoint=/path/to/mica.tar``. On the embedded default,
``base_checkpoint=embedded`` trains MICAModule on a separate synthetic set of COMPLETE faces (no wounds,
identities disjoint from the imperfect set: another name prefix and seed; more varied light and small
head poses) and saves it in MICA's checkpoint layout, so the loader that reads a user's ``mica.tar``
reads it too. It is built once and cached under a key of everything that decides it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from callbacks.metrics_json import MetricsJSON
from faceregen.encoders.checkpoints import save_mica_checkpoint

log = logging.getLogger(__name__)

#: Bump when the base stage's procedure changes: the cache key changes with it.
BASE_STAGE_VERSION = 1
EMBEDDED = "embedded"
CHECKPOINT_NAME = "mica_base.tar"


def resolved(tree: dict) -> dict:
    """Config nodes (resolved in their own config) and plain values as plain JSON-able containers."""
    return {
        k: resolved(v) if isinstance(v, dict) else OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in tree.items()
    }


def config_key(decided_by: dict) -> str:
    """A stage's cache key: sha256 (16 hex digits) of everything that decides its result."""
    return hashlib.sha256(json.dumps(resolved(decided_by), sort_keys=True).encode()).hexdigest()[:16]


def base_stage_key(cfg: DictConfig) -> str:
    """Hash of everything that decides the base model: face model, architecture, loss, data, schedule."""
    decided_by = {
        "version": BASE_STAGE_VERSION,
        "face_model": cfg.face_model,
        "identity_encoder": cfg.model.identity_encoder,
        "mapping_network": cfg.model.mapping_network,
        "region_weights": cfg.model.region_weights,
        "n_components": cfg.model.n_components,
        "optimizer": cfg.model.optimizer,
        "base_stage": {k: cfg.base_stage[k] for k in cfg.base_stage if k != "cache_dir"},
        "batch_size": cfg.data.batch_size,
    }
    return config_key(decided_by)


def base_stage_config(cfg: DictConfig, folder: Path) -> DictConfig:
    """The run's config turned into the base stage's: complete-face data, no base, its own schedule."""
    stage = cfg.base_stage
    base = cfg.copy()
    with open_dict(base):
        base.generator = stage.generator
        base.data.root = stage.generator.root
        base.data.mode = "supervised"
        base.data.ssl_transform = None
        base.model.base_checkpoint = None
        base.trainer.max_epochs = stage.max_epochs
        base.trainer.default_root_dir = str(folder)
    return base


def ensure_base_checkpoint(cfg: DictConfig) -> Path:
    """Path of the embedded base model for this config; trains it first when it is not cached."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from lightning_modules.runner import prepare_data_and_model

    folder = Path(cfg.base_stage.cache_dir) / base_stage_key(cfg)
    checkpoint = folder / CHECKPOINT_NAME
    if checkpoint.is_file():
        log.info("Base model (MICA on complete faces) from the cache: %s", checkpoint)
        return checkpoint
    log.info("Training the base model (MICA on complete synthetic faces) into %s", folder)
    base = base_stage_config(cfg, folder)
    datamodule, model = prepare_data_and_model(base)
    trainer = hydra.utils.instantiate(
        base.trainer,
        callbacks=[
            ModelCheckpoint(dirpath=folder / "checkpoints", monitor="val/mean_distance_mm", mode="min"),
            MetricsJSON(str(folder)),
        ],
        logger=CSVLogger(folder, name="csv"),
    )
    trainer.fit(model, datamodule=datamodule)
    # loads the best weights into `model` and reports the error on held-out complete faces
    trainer.test(model, datamodule=datamodule, ckpt_path="best")
    if trainer.global_rank == 0:
        save_mica_checkpoint(checkpoint, model.identity_encoder.encoder_state_dict(), model.mapping_network.state_dict())
        OmegaConf.save(base, folder / "config.yaml")
    trainer.strategy.barrier()
    return checkpoint
