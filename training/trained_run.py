"""A trained run back into memory (evaluate.py, reconstruct.py): its config, checked; its checkpoint; its test metrics.

A run folder is what people share, so nothing in it may run code. The checkpoint is read with
``torch.load(weights_only=True)``; the run's ``.hydra/config.yaml`` names the classes Hydra instantiates,
so before anything is built the groups a trained run is rebuilt from (:data:`REBUILT_GROUPS`) are
resolved and every ``_target_`` in them must be on an allowlist: the project's own classes
(:data:`ALLOWED_TARGETS`), torch's optimisers and learning-rate schedulers, ``functools.partial``, and
what the caller trusts explicitly (``trusted_targets=[...]`` of ``evaluate.py`` / ``reconstruct.py``).
Anything else is refused naming the key and the file, before any module is imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from faceregen.encoders.checkpoints import MICA_ENCODER_KEY, MICA_GENERATOR_KEY, load_state_strict, read_torch_file
from lightning_modules.mica_module import MICAModule
from training.building import ensure_dataset, with_face_model

#: a key only MICAModule's state dict has (the face model as a frozen layer)
MICA_STATE_KEY = "face_model_decoder.mean_mm"
#: where a run folder keeps its resolved config: Hydra's runs, then the base stage's cache folders
RUN_CONFIG_NAMES = (".hydra/config.yaml", "config.yaml")
#: the groups of a run's config that rebuilding it instantiates (nothing else of it is instantiated)
REBUILT_GROUPS = ("face_model", "model", "generator", "data")
#: what a run's config may name in :data:`REBUILT_GROUPS`: the project's callables and ``functools.partial``
ALLOWED_TARGETS = frozenset({
    "datamodules.cir3dfair.Cir3DFaIRDataModule",
    "faceregen.encoders.identity_encoder.build_identity_encoder",
    "faceregen.encoders.mapping_network.MappingNetwork",
    "faceregen.face_model.anny_source.anny_face_model",
    "faceregen.face_model.flame_source.flame_face_model",
    "faceregen.ssl.multicrop.FaceMultiCrop",
    "faceregen.synthetic.generate_dataset",
    "lightning_modules.mica_module.MICAModule",
    "functools.partial",
})
#: torch modules whose classes of the given kind a run's config may name: optimisers and LR schedulers
TORCH_TARGETS = {"torch.optim": torch.optim.Optimizer, "torch.optim.lr_scheduler": torch.optim.lr_scheduler.LRScheduler}
MICA_MODULE_TARGET = f"{MICAModule.__module__}.{MICAModule.__qualname__}"


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


def run_config_file(run_dir: str | os.PathLike, source: str | os.PathLike | None = None) -> Path:
    """``<run>/.hydra/config.yaml`` (or ``<run>/config.yaml``); FileNotFoundError naming ``source`` when absent."""
    run_dir = Path(run_dir)
    path = next((run_dir / name for name in RUN_CONFIG_NAMES if (run_dir / name).is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"{source or run_dir}: no {' or '.join(RUN_CONFIG_NAMES)} in its run folder {run_dir} (expected the "
            "layout of train.py's runs, <run>/checkpoints/<name>.ckpt beside <run>/.hydra/config.yaml)"
        )
    return path


def run_config(
    run_dir: str | os.PathLike, paths: Mapping, data_overrides: Mapping | None = None, source: str | None = None
) -> DictConfig:
    """The run's config (:func:`run_config_file`) made usable outside its Hydra job. Nothing is checked or built.

    ``paths`` (this machine's ``paths`` config) replaces the run's, which may name another machine's
    folders; ``paths.output_dir`` becomes the run folder. ``data_overrides`` (e.g. ``{"root": folder}``)
    replace entries of ``data``, and a new ``data.root`` switches the synthetic generator off (the folder
    is read as it is).
    """
    cfg = OmegaConf.load(run_config_file(run_dir, source))
    cfg.paths = {**{key: paths[key] for key in paths if key != "output_dir"}, "output_dir": str(run_dir)}
    for key, value in (data_overrides or {}).items():
        cfg.data[key] = value
    if (data_overrides or {}).get("root"):
        cfg.generator = None
    return cfg


def run_dir_of(ckpt: str | os.PathLike) -> Path:
    """``<run>`` for ``<run>/checkpoints/<name>.ckpt``."""
    return Path(ckpt).resolve().parent.parent


def allowed_target(target: object, trusted_targets: Collection[str] = ()) -> bool:
    """Whether a run's config may name ``target``: :data:`ALLOWED_TARGETS`, ``trusted_targets``, or a class
    of :data:`TORCH_TARGETS` (looked up in the already imported torch modules: nothing is imported)."""
    if not isinstance(target, str):
        return False
    if target in ALLOWED_TARGETS or target in trusted_targets:
        return True
    module, _, name = target.rpartition(".")
    kind = TORCH_TARGETS.get(module)
    found = getattr(sys.modules.get(module), name, None) if kind else None
    return isinstance(found, type) and issubclass(found, kind)


def check_targets(node: object, key: str, source: str | os.PathLike, trusted_targets: Collection[str] = ()) -> None:
    """Raise ValueError naming ``source`` and the key of the first ``_target_`` under ``node`` (a resolved
    config: plain dicts and lists) that :func:`allowed_target` refuses, or of a string still holding an
    interpolation (an escaped ``\\${...}`` would be resolved again when instantiated, after this check)."""
    if isinstance(node, str) and "${" in node:
        raise ValueError(f"{source}: refused {key}={node!r}: an interpolation left after resolving the config")
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for name, value in items:
        path = f"{key}[{name}]" if isinstance(node, list) else f"{key}.{name}"
        if name == "_target_" and not allowed_target(value, trusted_targets):
            raise ValueError(
                f"{source}: refused {path}={value!r}: a run's config may name only the project's classes, "
                "torch's optimisers and schedulers and functools.partial (a class of your own: trusted_targets=[...])"
            )
        check_targets(value, path, source, trusted_targets)


def checked_groups(cfg: DictConfig, source: str | os.PathLike, trusted_targets: Collection[str] = ()) -> DictConfig:
    """:data:`REBUILT_GROUPS` of ``cfg``, resolved into plain values and checked by :func:`check_targets`."""
    groups = {}
    for group in REBUILT_GROUPS:
        try:
            value = cfg.get(group)
            value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except OmegaConfBaseException as err:
            raise ValueError(f"{source}: cannot resolve {group} ({type(err).__name__}: {err})") from err
        check_targets(value, group, source, trusted_targets)
        groups[group] = value
    return OmegaConf.create(groups)


@dataclass(frozen=True)
class TrainedRun:
    """A trained run rebuilt from its folder (:func:`load_trained_run`)."""

    #: the run's :data:`REBUILT_GROUPS`, resolved and checked
    config: DictConfig
    #: the face model built from the run's config (triangles, regions; its ``G(z)`` is also in the module)
    face_model: object
    #: the run's MICAModule with the checkpoint's weights, in eval mode
    module: MICAModule

    def test_datamodule(self):
        """The run's datamodule set up for the test split (the synthetic data generated when the run's
        config has a generator and it is missing)."""
        ensure_dataset(self.config, self.face_model)
        datamodule = with_face_model(self.config.data)(
            face_model=self.face_model, alignment=self.module.identity_encoder.alignment
        )
        datamodule.setup("test")
        return datamodule


def load_trained_run(
    ckpt: str | os.PathLike,
    paths: Mapping,
    data_overrides: Mapping | None = None,
    trusted_targets: Collection[str] = (),
    device: str = "cpu",
) -> TrainedRun:
    """The run of ``ckpt`` (``<run>/checkpoints/<name>.ckpt``) rebuilt from ``<run>/.hydra/config.yaml``.

    The checkpoint is checked first (a MICAModule's Lightning checkpoint), then the config's rebuilt groups
    (:func:`checked_groups`, see the module docstring), then the face model and the module are built and
    the state dict loaded strictly. The encoder's pretrained weights and the base checkpoint are not
    loaded: the checkpoint holds every weight, the face model's ``G(z) = B z + A`` included.

    Args:
        paths: this machine's ``paths`` config (:func:`run_config`).
        data_overrides: entries replacing the run's ``data`` config (:func:`run_config`).
        trusted_targets: ``_target_`` values allowed beyond the allowlist (the caller's own classes).
        device: ``cpu``, ``cuda``, ...; ``auto``: ``cuda`` when available.
    """
    state = read_mica_state_dict(ckpt)
    run_dir = run_dir_of(ckpt)
    source = run_config_file(run_dir, ckpt)
    config = checked_groups(run_config(run_dir, paths, data_overrides, source=str(ckpt)), source, trusted_targets)
    if not isinstance(config.model, DictConfig) or config.model.get("_target_") != MICA_MODULE_TARGET:
        found = config.model.get("_target_") if isinstance(config.model, DictConfig) else config.model
        raise ValueError(f"{source}: model is {found!r}, expected {MICA_MODULE_TARGET} (the checkpoint {ckpt} is one)")
    config.model.base_checkpoint = None
    if isinstance(config.model.get("identity_encoder"), DictConfig):
        config.model.identity_encoder.pretrained = None
    face_model = hydra.utils.instantiate(config.face_model)
    module = with_face_model(config.model)(face_model=face_model)
    load_state_strict(module, state, source=ckpt)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TrainedRun(config, face_model, module.eval().to(device))


def evaluate_test_split(module, datamodule) -> dict[str, float]:
    """The module's ``test/*`` metrics on the datamodule's test split (a bare Lightning test loop)."""
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False)
    return {key: float(value) for key, value in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
