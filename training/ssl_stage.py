"""Stage 1 of the SSL settings (paper section 3): SwAV on the identity encoder, then MICA fine-tunes.

:class:`SSLStage` starts SwAV from the encoder of the base model (the embedded base or a user's
``mica.tar``), trains it on the images of the ``ssl_fraction`` subset of TRAIN identities (val and test
never reach it), and writes a MICA-layout checkpoint whose encoder is the SwAV-trained one and whose
mapping network is the base model's (or SwAV's, with ``use_mapping_network``). Stage 2 (MICA) starts
from exactly those weights. The encoder and the mapping network are MICA's (``model.identity_encoder``,
``model.mapping_network``: one source of truth), only the encoder's freezing is the stage's own. It is a
:class:`~training.cached_stage.CachedStage`, keyed by the starting weights and the configs it is built from.
On the embedded base, the SwAV-trained encoder's read-out statistics on the base stage's complete faces
(:meth:`SSLStage.statistics_path`) let stage 2 pool them with its training images, as ``transfer`` pools the
base encoder's.
"""

from __future__ import annotations

import functools
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from datamodules.cir3dfair import Cir3DFaIRDataModule
from faceregen.encoders.checkpoints import load_mica_checkpoint, load_state_strict, save_mica_checkpoint
from faceregen.face_model.decoder import component_count
from training.base_stage import complete_face_statistics_path
from training.building import ensure_dataset, with_face_model
from training.cached_stage import CachedStage, file_digest


class SSLStage(CachedStage):
    """SwAV (``cfg.ssl_stage``) from ``start_checkpoint``, saved as ``mica_ssl.tar``."""

    version = 3
    checkpoint_name = "mica_ssl.tar"

    def __init__(self, cfg: DictConfig, start_checkpoint: Path) -> None:
        super().__init__(cfg, cfg.ssl_stage)
        self.start_checkpoint = Path(start_checkpoint)

    def decided_by(self) -> dict:
        """The starting weights, the encoder (and the mapping network when SwAV trains it), the data and
        its split, and the stage's settings."""
        cfg = self.cfg
        return {
            "start": file_digest(self.start_checkpoint),
            "identity_encoder": cfg.model.identity_encoder,
            "mapping_network": self.mapping_network_config(),
            "data": {k: v for k, v in cfg.data.items() if k not in Cir3DFaIRDataModule.RUNTIME_OPTIONS},
            "ssl_stage": {k: cfg.ssl_stage[k] for k in cfg.ssl_stage if k != "cache_dir"},
        }

    def mapping_network_config(self) -> dict | None:
        """MICA's mapping network and the code size it predicts, when SwAV trains it (else None)."""
        if not self.settings.model.use_mapping_network:
            return None
        return {"mapping_network": self.cfg.model.mapping_network, "n_components": self.cfg.model.n_components}

    def build(self, folder: Path):
        cfg, stage = self.cfg, self.settings
        face_model = hydra.utils.instantiate(cfg.face_model)
        ensure_dataset(cfg, face_model)
        encoder_state, mapping_state = load_mica_checkpoint(self.start_checkpoint)
        identity_encoder = hydra.utils.instantiate(cfg.model.identity_encoder, freeze=stage.freeze)
        identity_encoder.load_encoder_state(encoder_state, f"{self.start_checkpoint} (encoder)")
        mapping_network = functools.partial(
            hydra.utils.instantiate(cfg.model.mapping_network),
            output_dim=component_count(face_model, cfg.model.n_components),
        )
        swav = hydra.utils.instantiate(stage.model, _partial_=True)(
            identity_encoder=identity_encoder, mapping_network=mapping_network
        )
        if swav.mapping_network is not None:
            load_state_strict(swav.mapping_network, mapping_state, f"{self.start_checkpoint} (mapping network)")
        multicrop = hydra.utils.instantiate(stage.multicrop, input_size=identity_encoder.input_size)
        datamodule = with_face_model(cfg.data)(
            face_model=face_model, alignment=identity_encoder.alignment, mode="ssl", ssl_transform=multicrop
        )
        return swav, datamodule, cfg.trainer, {"enable_checkpointing": False}

    def save(self, module, datamodule, checkpoint: Path) -> None:
        trained = module.encoder_state_dict()
        if "mapping_network" not in trained:  # the base model's, as stage 2 would have started from it
            trained["mapping_network"] = load_mica_checkpoint(self.start_checkpoint)[1]
        OmegaConf.save(self.settings, checkpoint.parent / "ssl_stage.yaml")
        save_mica_checkpoint(checkpoint, trained["identity_encoder"], trained["mapping_network"])

    def statistics_path(self) -> Path:
        """The read-out statistics of the SwAV-trained encoder's features on the base stage's complete faces
        (its train and validation images; for a start from the embedded base, whose data they are), kept
        beside ``mica_ssl.tar`` (computed on first use: :func:`~training.base_stage.complete_face_statistics_path`)."""
        return complete_face_statistics_path(self.cfg, self.checkpoint())
