"""The base stage: MICA's own pre-training on complete faces, played on synthetic data.

In the paper every setting but "scratch" starts from MICA pre-trained on large sets of complete faces.
Users with MICA's ``mica.tar`` set ``base_checkpoint=/path/to/mica.tar``. On the embedded default,
``base_checkpoint=embedded`` trains MICAModule on a separate synthetic set of COMPLETE faces (no wounds,
identities disjoint from the imperfect set: another name prefix and seed; more varied light and small
head poses) and saves it in MICA's checkpoint layout, so the loader that reads a user's ``mica.tar``
reads it too. It is built once and cached under a key of everything that decides it, its own training
seed (``base_stage.seed``: every run seed shares one base model, the same whichever job built it) included,
and this machine's folders excluded (paths under the project root enter the key relative to it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from callbacks.metrics_json import MetricsJSON
from faceregen.encoders.checkpoints import save_mica_checkpoint
from faceregen.locking import build_lock

log = logging.getLogger(__name__)

#: Bump when the base stage's procedure changes: the cache key changes with it.
BASE_STAGE_VERSION = 2
EMBEDDED = "embedded"
CHECKPOINT_NAME = "mica_base.tar"


def resolved(tree: dict) -> dict:
    """Config nodes (resolved in their own config) and plain values as plain JSON-able containers."""
    return {
        k: resolved(v) if isinstance(v, dict) else OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in tree.items()
    }


def portable(tree, root_dir: str):
    """``tree`` with every absolute path under ``root_dir`` made relative to it (other values as they are)."""
    if isinstance(tree, dict):
        return {k: portable(v, root_dir) for k, v in tree.items()}
    if isinstance(tree, list):
        return [portable(v, root_dir) for v in tree]
    if isinstance(tree, str) and os.path.isabs(tree):
        relative = os.path.relpath(tree, root_dir)
        if relative != os.pardir and not relative.startswith(os.pardir + os.sep):
            return relative
    return tree


def config_key(decided_by: dict, root_dir: str | os.PathLike) -> str:
    """A stage's cache key: sha256 (16 hex digits) of everything that decides its result, paths under the
    project's ``root_dir`` taken relative to it (a moved or copied project keeps its caches)."""
    tree = portable(resolved(decided_by), os.path.abspath(root_dir))
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def cached_stage(folder: Path, checkpoint: Path, build: Callable[[], None]) -> Path:
    """``checkpoint``, built by ``build()`` into ``folder`` when it is not there yet.

    ``checkpoint`` marks the stage complete (``build`` writes it last, atomically). Parallel jobs: the
    global rank 0 of a job builds under the folder's inter-process lock, after removing what an unfinished
    build left in ``folder``; another job waits, then finds the checkpoint. The other ranks of a DDP job
    train together with their rank 0 (which holds the lock) and take no lock.
    """
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if not checkpoint.is_file() and rank_zero_only.rank != 0:
        build()
    elif not checkpoint.is_file():
        with build_lock(folder):
            if not checkpoint.is_file():
                if folder.exists():
                    log.info("%s: removing what an unfinished build left", folder)
                    shutil.rmtree(folder)
                build()
    return checkpoint


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
    return config_key(decided_by, cfg.paths.root_dir)


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
    folder = Path(cfg.base_stage.cache_dir) / base_stage_key(cfg)
    checkpoint = folder / CHECKPOINT_NAME
    if checkpoint.is_file():
        log.info("Base model (MICA on complete faces) from the cache: %s", checkpoint)
    return cached_stage(folder, checkpoint, lambda: train_base_model(cfg, folder, checkpoint))


def train_base_model(cfg: DictConfig, folder: Path, checkpoint: Path) -> None:
    """Train MICA on the complete faces (seeded by ``base_stage.seed``) and save it as ``checkpoint``."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from lightning_modules.runner import prepare_data_and_model

    log.info("Training the base model (MICA on complete synthetic faces) into %s", folder)
    pl.seed_everything(cfg.base_stage.seed, workers=True)
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
        OmegaConf.save(base, folder / "config.yaml")
        save_mica_checkpoint(checkpoint, model.identity_encoder.encoder_state_dict(), model.mapping_network.state_dict())
    trainer.strategy.barrier()
