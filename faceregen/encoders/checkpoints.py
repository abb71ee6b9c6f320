"""Reading other projects' checkpoints into the encoder side: insightface backbones and MICA's ``mica.tar``.

Formats (all read with ``torch.load(..., map_location="cpu", weights_only=True)``, no arbitrary pickles):

- insightface ``arcface_torch`` ``backbone.pth``: a plain state dict of an IResNet
  (``conv1.weight``, ``layer1.0.bn1.weight``, ..., ``features.running_var``).
- MICA ``mica.tar`` (``micalib/models/mica.py``, ``MICA.model_dict``): a dict with
  ``"arcface"``: the state dict of MICA's ``Arcface`` (an iresnet100, insightface keys), and
  ``"flameModel"``: the state dict of MICA's ``Generator``, whose ``regressor.*`` entries are the mapping
  network (``regressor.network.0.weight``, ..., ``regressor.output.bias``) and whose ``generator.*``
  entries are FLAME's buffers (not needed here: the face model comes from :mod:`faceregen.face_model`).
  Training checkpoints also carry ``opt``, ``scheduler``, ``epoch``, ... which are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

MICA_ENCODER_KEY = "arcface"
MICA_GENERATOR_KEY = "flameModel"
MICA_MAPPING_PREFIX = "regressor."
#: How many offending keys an error message lists for each kind of problem.
SHOWN_KEYS = 5

StateDict = dict[str, torch.Tensor]


def cpu_copy(state: StateDict) -> StateDict:
    """Detached CPU copies of a state dict's tensors (what later training cannot change)."""
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_KEYS])
    return f"{shown}, ... ({len(items)} in all)" if len(items) > SHOWN_KEYS else shown


def load_state_strict(module: nn.Module, state: StateDict, source: str | Path) -> None:
    """Load ``state`` into ``module`` requiring the same keys and shapes.

    Raises:
        ValueError: naming ``source`` and the first few missing keys, unexpected keys and shape
            mismatches (``key: file shape vs model shape``).
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = [
        f"{what} [{_listing(items)}]"
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        if items
    ]
    if problems:
        raise ValueError(f"{source}: does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def read_torch_file(path: str | Path) -> object:
    """``torch.load`` on the CPU with ``weights_only=True``; clear errors for missing, empty or unsafe files.

    Raises:
        FileNotFoundError: no such file. IsADirectoryError: a folder.
        ValueError: naming the file and why it is not a checkpoint: empty, not torch's format, or a global
            (class or function) that a weights-only load refuses, by name.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: a folder, expected a checkpoint file (e.g. <run>/checkpoints/last.ckpt)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file (0 bytes), expected a torch checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # arbitrary bytes fail anywhere in the unpickler (IndexError, KeyError, ...)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise ValueError(
                f"{path}: names the global {refused.group(1)}, which is not loaded: a checkpoint may hold only "
                "tensors and plain containers (nothing in it is executed); re-save only its state dicts"
            ) from error
        raise ValueError(f"{path}: not a torch checkpoint ({type(error).__name__}: {_reason(error)})") from error


def _reason(error: Exception) -> str:
    """The first line of torch's message that is not its advice about ``weights_only``."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else "no details"


def _as_state_dict(obj: object, source: str) -> StateDict:
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{source}: expected a state dict (a non-empty mapping of names to tensors)")
    return dict(obj)


def load_insightface_backbone(path: str | Path) -> StateDict:
    """IResNet state dict from an insightface ``backbone.pth``, or from the ``arcface`` entry of a ``mica.tar``."""
    obj = read_torch_file(path)
    if isinstance(obj, dict) and MICA_ENCODER_KEY in obj:
        return _as_state_dict(obj[MICA_ENCODER_KEY], f"{path} ['{MICA_ENCODER_KEY}']")
    return _as_state_dict(obj, str(path))


def load_mica_checkpoint(path: str | Path) -> tuple[StateDict, StateDict]:
    """``(encoder_state, mapping_state)`` from MICA's ``mica.tar``.

    ``encoder_state`` loads into :class:`~faceregen.encoders.iresnet.IResNet` (iresnet100);
    ``mapping_state`` (``regressor.`` prefix removed) into
    :class:`~faceregen.encoders.mapping_network.MappingNetwork` (512 -> 300, 3 hidden layers).
    """
    obj = read_torch_file(path)
    if not isinstance(obj, dict) or MICA_ENCODER_KEY not in obj or MICA_GENERATOR_KEY not in obj:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{path}: expected MICA's checkpoint with '{MICA_ENCODER_KEY}' and '{MICA_GENERATOR_KEY}' "
            f"entries, found {found}"
        )
    encoder_state = _as_state_dict(obj[MICA_ENCODER_KEY], f"{path} ['{MICA_ENCODER_KEY}']")
    generator_state = _as_state_dict(obj[MICA_GENERATOR_KEY], f"{path} ['{MICA_GENERATOR_KEY}']")
    mapping_state = {
        k[len(MICA_MAPPING_PREFIX) :]: v for k, v in generator_state.items() if k.startswith(MICA_MAPPING_PREFIX)
    }
    if not mapping_state:
        raise ValueError(f"{path}: ['{MICA_GENERATOR_KEY}'] has no '{MICA_MAPPING_PREFIX}*' (mapping network) entries")
    return encoder_state, mapping_state


def save_mica_checkpoint(path: str | Path, encoder_state: StateDict, mapping_state: StateDict) -> Path:
    """Write ``encoder_state`` and ``mapping_state`` in MICA's ``mica.tar`` layout (atomically).

    The inverse of :func:`load_mica_checkpoint`: ``{"arcface": encoder, "flameModel": {"regressor.<k>":
    mapping}}``, so the loader that reads a user's ``mica.tar`` reads it too. For the dlib backbone the
    ``arcface`` entry holds that backbone's own keys.
    """
    from faceregen.io import atomic_path

    payload = {
        MICA_ENCODER_KEY: cpu_copy(encoder_state),
        MICA_GENERATOR_KEY: {MICA_MAPPING_PREFIX + k: v for k, v in cpu_copy(mapping_state).items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
