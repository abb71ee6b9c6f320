"""A training stage built once and reused by every run that needs it (the base model, the SwAV stage).

Every stage goes: key -> folder -> build its module and data -> Trainer -> fit -> save its checkpoint ->
barrier. The key hashes what decides the stage's result (:meth:`CachedStage.decided_by`, with the stage's
version), paths under the project root taken relative to it, so a moved or copied project keeps its caches.
The checkpoint, written last and atomically, marks the folder complete. Parallel jobs: the global rank 0 of
a job builds under the folder's inter-process lock, after removing what an unfinished build left; another
job waits, then finds the checkpoint. The other ranks of a DDP job train with their rank 0 and take no lock.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from callbacks.metrics_json import MetricsJSON
from faceregen.locking import build_lock

log = logging.getLogger(__name__)


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
    """sha256 (16 hex digits) of everything that decides a result, paths under ``root_dir`` relative to it."""
    tree = portable(resolved(decided_by), os.path.abspath(root_dir))
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_stage(folder: Path, checkpoint: Path, build: Callable[[], None]) -> Path:
    """``checkpoint``, built by ``build()`` into ``folder`` when it is not there yet (module docstring)."""
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


class CachedStage(ABC):
    """One stage of ``cfg`` whose settings are ``cfg.<stage>`` (``seed``, ``max_epochs``, ``cache_dir``)."""

    #: bump when the stage's procedure changes: the cache key changes with it
    version: int
    #: the MICA-layout checkpoint the stage leaves in its folder
    checkpoint_name: str

    def __init__(self, cfg: DictConfig, settings: DictConfig) -> None:
        self.cfg, self.settings = cfg, settings

    @abstractmethod
    def decided_by(self) -> dict:
        """Everything that decides the stage's result (its version is added)."""

    @abstractmethod
    def build(self, folder: Path) -> tuple[pl.LightningModule, pl.LightningDataModule, DictConfig, dict]:
        """The module, its datamodule, the trainer's config and extra ``Trainer`` keyword arguments."""

    @abstractmethod
    def save(self, module: pl.LightningModule, datamodule: pl.LightningDataModule, checkpoint: Path) -> None:
        """Write the stage's checkpoint, last (rank 0, after fitting)."""

    def fit(self, trainer: pl.Trainer, module: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
        trainer.fit(module, datamodule=datamodule)

    def key(self) -> str:
        return config_key({"version": self.version, **self.decided_by()}, self.cfg.paths.root_dir)

    def folder(self) -> Path:
        return Path(self.settings.cache_dir) / self.key()

    def checkpoint(self) -> Path:
        """The stage's checkpoint, trained first when it is not cached."""
        folder = self.folder()
        checkpoint = folder / self.checkpoint_name
        if checkpoint.is_file():
            log.info("%s from the cache: %s", type(self).__name__, checkpoint)
        return cached_stage(folder, checkpoint, lambda: self.train(folder, checkpoint))

    def train(self, folder: Path, checkpoint: Path) -> None:
        """Fit the stage (seeded by its own ``seed``) into ``folder`` and save ``checkpoint``."""
        log.info("%s: training into %s", type(self).__name__, folder)
        pl.seed_everything(self.settings.seed, workers=True)
        module, datamodule, trainer_cfg, trainer_kwargs = self.build(folder)
        callbacks = [*trainer_kwargs.pop("callbacks", []), MetricsJSON(str(folder))]
        trainer = hydra.utils.instantiate(
            trainer_cfg, max_epochs=self.settings.max_epochs, default_root_dir=str(folder), callbacks=callbacks,
            logger=CSVLogger(folder, name="csv"), **trainer_kwargs,
        )
        self.fit(trainer, module, datamodule)
        if trainer.global_rank == 0:
            self.save(module, datamodule, checkpoint)
        trainer.strategy.barrier()
