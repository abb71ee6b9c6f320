"""Model files shipped in registry packages (the embedded default needs nothing else)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def face_recognition_models_file(filename: str) -> Path:
    """Path of a model file shipped in ``face_recognition_models/models/`` (dlib's CC0 models).

    The package is located without importing it: its ``__init__`` imports ``pkg_resources``, which
    recent setuptools no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"{filename}: the face_recognition_models package is not installed (pip install face_recognition_models)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the face_recognition_models package")
    return path
