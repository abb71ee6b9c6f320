"""Stage 1 of the SSL settings (paper section 3): SwAV on the identity encoder, then MICA fine-tunes.

``ensure_ssl_checkpoint`` starts SwAV from the encoder of the base model (the embedded base or a user's
``mica.tar``), trains it on the images of the ``ssl_fraction`` subset of TRAIN identities (val and test
never reach it), and writes a MICA-layout checkpoint whose encoder is the SwAV-trained one and whose
mapping network is the base model's (or SwAV's, with ``use_mapping_network``). Stage 2 (MICA) starts
from exactly those weights. Stage 1 is cached under a key of everything that decides it and reused.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from callbacks.metrics_json import MetricsJSON
from lightning_modules.base_stage import cached_stage, config_key
from faceregen.encoders.checkpoints import load_mica_checkpoint, load_state_strict, save_mica_checkpoint

log = logging.getLogger(__name__)

#: Bump when stage 1's procedure changes: the cache key changes with it.
SSL_STAGE_VERSION = 2
CHECKPOINT_NAME = "mica_ssl.tar"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ssl_stage_key(cfg: DictConfig, start_checkpoint: Path) -> str:
    """Hash of the starting weights, the encoder, the data and split, and the SwAV settings."""
    decided_by = {
        "version": SSL_STAGE_VERSION,
        "start": file_digest(start_checkpoint),
        "identity_encoder": cfg.model.identity_encoder,
        "data": {
            k: cfg.data[k]
            for k in ("root", "split_ratios", "split_seed", "ssl_fraction", "ssl_seed", "batch_size", "identity_pattern")
        },
        "ssl_stage": {k: cfg.ssl_stage[k] for k in cfg.ssl_stage if k != "cache_dir"},
    }
    return config_key(decided_by, cfg.paths.root_dir)


def ensure_ssl_checkpoint(cfg: DictConfig, start_checkpoint: Path) -> Path:
    """MICA-layout checkpoint with the SwAV-trained encoder; trains SwAV first when not cached."""
    folder = Path(cfg.ssl_stage.cache_dir) / ssl_stage_key(cfg, start_checkpoint)
    checkpoint = folder / CHECKPOINT_NAME
    if checkpoint.is_file():
        log.info("SwAV stage from the cache: %s", checkpoint)
    return cached_stage(folder, checkpoint, lambda: train_ssl_stage(cfg, start_checkpoint, folder, checkpoint))


def train_ssl_stage(cfg: DictConfig, start_checkpoint: Path, folder: Path, checkpoint: Path) -> None:
    """SwAV from ``start_checkpoint`` (seeded by ``ssl_stage.seed``), saved as ``checkpoint``."""
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger

    from lightning_modules.runner import ensure_dataset, with_face_model

    stage = cfg.ssl_stage
    log.info("SwAV stage (ssl_fraction=%s) into %s", cfg.data.ssl_fraction, folder)
    pl.seed_everything(stage.seed, workers=True)
    face_model = hydra.utils.instantiate(cfg.face_model)
    ensure_dataset(cfg, face_model)
    encoder_state, mapping_state = load_mica_checkpoint(start_checkpoint)
    identity_encoder = hydra.utils.instantiate(cfg.model.identity_encoder, freeze=stage.freeze)
    identity_encoder.load_encoder_state(encoder_state, f"{start_checkpoint} (encoder)")
    swav = hydra.utils.instantiate(stage.model, _partial_=True, identity_encoder=None)(identity_encoder=identity_encoder)
    if swav.mapping_network is not None:
        load_state_strict(swav.mapping_network, mapping_state, f"{start_checkpoint} (mapping network)")
    multicrop = hydra.utils.instantiate(stage.multicrop, input_size=identity_encoder.input_size)
    datamodule = with_face_model(cfg.data)(
        face_model=face_model, alignment=identity_encoder.alignment, mode="ssl", ssl_transform=multicrop
    )
    stage_cfg = cfg.trainer.copy()
    with open_dict(stage_cfg):
        stage_cfg.max_epochs = stage.max_epochs
        stage_cfg.default_root_dir = str(folder)
    trainer = hydra.utils.instantiate(
        stage_cfg, callbacks=[MetricsJSON(str(folder))], logger=CSVLogger(folder, name="csv"), enable_checkpointing=False
    )
    trainer.fit(swav, datamodule=datamodule)
    if trainer.global_rank == 0:
        trained = swav.encoder_state_dict()
        OmegaConf.save(stage, folder / "ssl_stage.yaml")
        save_mica_checkpoint(checkpoint, trained["identity_encoder"], trained.get("mapping_network", mapping_state))
    trainer.strategy.barrier()
