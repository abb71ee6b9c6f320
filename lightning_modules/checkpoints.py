"""Trained runs back into memory: a run's config and its MICAModule checkpoint (evaluate.py, reconstruct.py)."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from faceregen.encoders.checkpoints import MICA_ENCODER_KEY, MICA_GENERATOR_KEY, load_state_strict, read_torch_file

#: a key only MICAModule's state dict has (the face model as a frozen layer)
MICA_STATE_KEY = "face_model_decoder.mean_mm"
#: where a run folder keeps its resolved config: Hydra's runs, then the base stage's cache folders
RUN_CONFIG_NAMES = (".hydra/config.yaml", "config.yaml")


def read_mica_state_dict(ckpt: str | os.PathLike) -> dict:
    """The ``state_dict`` of a Lightning checkpoint of MICAModule; ValueError naming the file for any other kind."""
    checkpoint = read_torch_file(ckpt)
    if isinstance(checkpoint, dict) and MICA_ENCODER_KEY in checkpoint and MICA_GENERATOR_KEY in checkpoint:
        raise ValueError(
            f"{ckpt}: a checkpoint in MICA's mica.tar layout (encoder + mapping network: a starting point for "
            "training, model.base_checkpoint=...), not a Lightning checkpoint of a trained MICAModule"
        )
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        found = sorted(map(str, checkpoint))[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"{ckpt}: not a Lightning checkpoint (no 'state_dict' entry; found {found})")
    state = checkpoint["state_dict"]
    if MICA_STATE_KEY not in state:
        prefixes = sorted({k.split(".", 1)[0] for k in state})
        raise ValueError(
            f"{ckpt}: does not fit MICAModule: a Lightning checkpoint of another module (state dict parts "
            f"{prefixes}, e.g. SwAV's), expected MICAModule's (with {MICA_STATE_KEY!r})"
        )
    return state


def load_mica_state(module, ckpt: str | os.PathLike):
    """Load a MICAModule checkpoint's weights into ``module`` strictly; returns ``module``."""
    load_state_strict(module, read_mica_state_dict(ckpt), source=ckpt)
    return module


def run_config(
    run_dir: str | os.PathLike, root_dir: str | os.PathLike, data_overrides: dict | None = None, source: str | None = None
) -> DictConfig:
    """The run's resolved config made usable outside its Hydra job.

    Read from ``<run>/.hydra/config.yaml`` (or ``<run>/config.yaml``, the base stage's cache folders).
    ``paths.root_dir`` becomes ``root_dir`` (this machine's) and ``paths.output_dir`` the run folder, the two
    values Hydra filled in at run time; ``data_overrides`` (e.g. ``{"root": folder}``) replace entries of
    ``data``, and a new ``data.root`` switches the synthetic generator off (the folder is read as it is).
    ``source`` (e.g. the checkpoint) is named in the error when no config is found.
    """
    run_dir = Path(run_dir)
    path = next((run_dir / name for name in RUN_CONFIG_NAMES if (run_dir / name).is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"{source or run_dir}: no {' or '.join(RUN_CONFIG_NAMES)} in its run folder {run_dir} (expected the "
            "layout of train.py's runs, <run>/checkpoints/<name>.ckpt beside <run>/.hydra/config.yaml)"
        )
    cfg = OmegaConf.load(path)
    cfg.paths.root_dir = str(root_dir)
    cfg.paths.output_dir = str(run_dir)
    for key, value in (data_overrides or {}).items():
        cfg.data[key] = value
    if (data_overrides or {}).get("root"):
        cfg.generator = None
    return cfg


def run_dir_of(ckpt: str | os.PathLike) -> Path:
    """``<run>`` for ``<run>/checkpoints/<name>.ckpt``."""
    return Path(ckpt).resolve().parent.parent
