"""The base stage: MICA's own pre-training on complete faces, played on synthetic data.

In the paper every setting but "scratch" starts from MICA pre-trained on large sets of complete faces.
Users with MICA's ``mica.tar`` set ``base_checkpoint=/path/to/mica.tar``. On the embedded default,
``base_checkpoint=embedded`` trains MICAModule on a separate synthetic set of COMPLETE faces (no wounds,
identities disjoint from the imperfect set: another name prefix and seed; more varied light and small
head poses) and saves it in MICA's checkpoint layout, so the loader that reads a user's ``mica.tar``
reads it too. It is a :class:`~training.cached_stage.CachedStage`: built once under a key of everything
that decides it, its own training seed (``base_stage.seed``: every run seed shares one base model, the same
whichever job built it) included. Beside the model it keeps the read-out statistics of its features on its
train and validation images (``readout_statistics.npz``): a run that fine-tunes the base model directly
fits its closed-form read-out on them pooled with its own training images (``MICAModule``'s
``base_statistics``; after SwAV, :class:`~training.ssl_stage.SSLStage` recomputes them with its encoder).
They are computed on first use, for the read-out the run fits (mirror images, chip scales: the file's name
says which), so the model itself does not depend on those options: the base stage trains and picks its
epoch on the chips as aligned (``model.chip_scales`` off).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import ModelCheckpoint

from faceregen.encoders.checkpoints import save_mica_checkpoint
from faceregen.encoders.readout import ReadoutStatistics
from faceregen.locking import build_lock
from training.building import prepare_data_and_model
from training.cached_stage import CachedStage

EMBEDDED = "embedded"
#: the file, beside a stage's checkpoint, holding the read-out statistics of its encoder on the complete faces
STATISTICS_NAME = "readout_statistics.npz"
#: the same with every image's mirror image too (``model.flip_averaging``)
FLIPPED_STATISTICS_NAME = "readout_statistics_with_mirror_images.npz"


def statistics_name(cfg: DictConfig) -> str:
    """The read-out statistics file that ``cfg``'s model pools: with mirror images under ``flip_averaging``,
    at each chip scale under ``chip_scales`` (``..._at_chip_scales_0.9_1.0_1.1.npz``)."""
    name = FLIPPED_STATISTICS_NAME if cfg.model.get("flip_averaging", False) else STATISTICS_NAME
    scales = cfg.model.get("chip_scales")
    if scales:
        name = name.replace(".npz", "_at_chip_scales_" + "_".join(f"{float(s):g}" for s in scales) + ".npz")
    return name


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


def complete_face_statistics(module, datamodule) -> ReadoutStatistics:
    """The read-out statistics of ``module``'s features on the complete faces' train and validation images
    (``datamodule`` set up on them): what a fine-tuning's read-out pools with its own training images."""
    return module.readout_statistics(datamodule.train_dataloader()).pooled(module.readout_statistics(datamodule.val_dataloader()))


def complete_face_statistics_path(cfg: DictConfig, checkpoint: Path) -> Path:
    """The read-out statistics (:func:`complete_face_statistics`) of the encoder in ``checkpoint`` (a stage's
    MICA-layout checkpoint) for ``cfg``'s model, beside the checkpoint. Computed on first use, by one job at a
    time (the file's lock): the checkpoint does not depend on them, so neither do the stage's key and version."""
    path = checkpoint.parent / statistics_name(cfg)
    if not path.is_file():
        with build_lock(path):
            if not path.is_file():
                datamodule, module = prepare_data_and_model(base_stage_config(cfg, checkpoint.parent),
                                                            base_checkpoint=str(checkpoint))
                datamodule.setup("fit")
                complete_face_statistics(module, datamodule).save(path)
    return path


class BaseStage(CachedStage):
    """MICA trained on the complete faces of ``cfg.base_stage.generator``, saved as ``mica_base.tar``."""

    version = 4
    checkpoint_name = "mica_base.tar"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg, cfg.base_stage)

    def decided_by(self) -> dict:
        """Face model, architecture, loss, data, schedule."""
        cfg = self.cfg
        return {
            "face_model": cfg.face_model,
            "identity_encoder": cfg.model.identity_encoder,
            "mapping_network": cfg.model.mapping_network,
            "region_weights": cfg.model.region_weights,
            "n_components": cfg.model.n_components,
            "flip_averaging": cfg.model.get("flip_averaging", False),
            "optimizer": cfg.model.optimizer,
            "base_stage": {k: cfg.base_stage[k] for k in cfg.base_stage if k != "cache_dir"},
            "batch_size": cfg.data.batch_size,
        }

    def build(self, folder: Path):
        base = base_stage_config(self.cfg, folder)
        with open_dict(base):
            base.model.chip_scales = None  # not in the key: the statistics, computed on use, carry the scales
        datamodule, model = prepare_data_and_model(base)
        checkpoints = ModelCheckpoint(dirpath=folder / "checkpoints", monitor="val/mean_distance_mm", mode="min")
        return model, datamodule, base.trainer, {"callbacks": [checkpoints]}

    def fit(self, trainer: pl.Trainer, module, datamodule) -> None:
        """Fit, then load the best weights into ``module`` and report the error on held-out complete faces."""
        trainer.fit(module, datamodule=datamodule)
        trainer.test(module, datamodule=datamodule, ckpt_path="best")

    def statistics_path(self) -> Path:
        """The read-out statistics of the base model's features on its train and validation images, for the
        run's read-out (computed on first use: :func:`complete_face_statistics_path`)."""
        return complete_face_statistics_path(self.cfg, self.checkpoint())

    def save(self, module, datamodule, checkpoint: Path) -> None:
        """The config and the model."""
        OmegaConf.save(base_stage_config(self.cfg, checkpoint.parent), checkpoint.parent / "config.yaml")
        save_mica_checkpoint(checkpoint, module.identity_encoder.encoder_state_dict(), module.mapping_network.state_dict())
