"""Instantiate everything from a Hydra config, fit, test, and return the metric Hydra sweeps optimise."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from faceregen.io import atomic_write_text
from training.base_stage import EMBEDDED, BaseStage
from training.building import prepare_data_and_model
from training.ssl_stage import SSLStage


def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group (callbacks, loggers); None -> []."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]


def record_stages(cfg: DictConfig, start: str | Path | None) -> None:
    """``<run dir>/stages.json``: the checkpoint this run starts from and, for the embedded base and
    SwAV stages, the folders holding their own ``metrics.json`` (for ``evaluate.py``'s figures)."""
    start_path = Path(start) if start else None
    stages = {
        "start_checkpoint": str(start_path) if start_path else None,
        "ssl_stage_dir": str(start_path.parent) if start_path and cfg.get("ssl_stage") else None,
        "base_stage_dir": None,
    }
    if cfg.model.get("base_checkpoint") == EMBEDDED:
        stages["base_stage_dir"] = str(BaseStage(cfg).folder())
    atomic_write_text(Path(cfg.paths.output_dir) / "stages.json", json.dumps(stages, indent=2))


def check_training_settings(cfg: DictConfig) -> None:
    """ValueError for a run that is to train (``train: true``) but whose trainer would train nothing."""
    for key in ("max_epochs", "max_steps"):
        if cfg.train and cfg.trainer.get(key) == 0:
            raise ValueError(
                f"trainer.{key}=0 with train=true trains nothing (and the run would pass for a trained "
                f"{cfg.task_name!r} result); set it >= 1, or train=false (experiment=pretrained) to test only"
            )


def run(cfg: DictConfig) -> float | None:
    """Fit ``cfg.model`` on ``cfg.data`` (when ``cfg.train``), then test the best checkpoint (``cfg.test``).

    Returns the best checkpoint's monitored validation score (else the last validation face error after a
    rigid fit; the test one when nothing was trained), so Hydra's sweepers can optimise it.
    """
    check_training_settings(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    overrides = {}
    start = cfg.model.get("base_checkpoint")
    stage = None  # the stage whose encoder the run starts from, when it is one of ours (it knows the complete faces)
    if start == EMBEDDED:
        stage = BaseStage(cfg)
        start = stage.checkpoint()
    if cfg.get("ssl_stage"):
        if not start:
            raise ValueError("ssl_stage needs a base_checkpoint to start SwAV from (embedded or a mica.tar)")
        ssl = SSLStage(cfg, Path(start))
        start, stage = ssl.checkpoint(), ssl if stage else None
    if stage and cfg.model.get("readout_init"):
        overrides["base_statistics"] = str(stage.statistics_path())
    record_stages(cfg, start)
    if start:
        overrides["base_checkpoint"] = str(start)
        pl.seed_everything(cfg.seed, workers=True)  # the run does not depend on the earlier stages' draws
    datamodule, model = prepare_data_and_model(cfg, **overrides)
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=instantiate_group(cfg.get("callbacks")), logger=instantiate_group(cfg.get("logger")) or False
    )
    score = None
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        score = trainer.callback_metrics.get("val/face_rigid_mm")
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_score is not None:
            score = trainer.checkpoint_callback.best_model_score
    if cfg.test:
        best = trainer.checkpoint_callback.best_model_path if cfg.train and trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
        if not cfg.train:
            score = trainer.callback_metrics.get("test/face_rigid_mm")
    return None if score is None else float(score)
