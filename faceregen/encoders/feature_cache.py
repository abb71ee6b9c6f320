"""A cache of a fixed identity encoder's features, on disk, shared by runs: each view keyed by its bytes.

Every setting but ``scratch`` taps backbone stages that do not train
(:attr:`IdentityEncoder.features_fixed <faceregen.encoders.identity_encoder.IdentityEncoder.features_fixed>`),
so a chip's features are the same in every epoch, every seed and every setting that shares the encoder's
weights, while scale and flip averaging encode each chip at ten views for the closed-form read-out and for
every validation and test: most of such a run's time. The cache keeps each view's features under

    folder = <directory>/<blake2b(the weights of the stages that shape the features, the stages, the grid,
                                  torch's version, the device type)>
    key    = blake2b(the view's float32 bytes)

A lookup computes only the views the folder does not hold and returns the stored features of the others,
bit for bit. :meth:`FeatureCache.flush` writes the new ones as a file of their own in the folder
(``<time>-<pid>-<n>.npz``, written atomically: runs in parallel never write the same file), which the
next run reads with the rest; nothing in it can execute (``allow_pickle=False``). New weights (another
encoder, or one that changed) give another folder, so a stale entry cannot be returned. Delete the
directory to reclaim the space (about 60 MB per thousand chips at ten views of 4096 features).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from faceregen.io import atomic_path

log = logging.getLogger(__name__)

#: bytes of a view's key and of a folder's fingerprint
DIGEST_SIZE = 16


def encoder_fingerprint(tensors: Iterable[tuple[str, torch.Tensor]], settings: str, device_type: str) -> str:
    """The folder name of an encoder: a hash of its named weights (in order), ``settings`` (what else shapes
    the features: stages, grid), torch's version and the device type the features are computed on."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    digest.update(f"{settings}|torch {torch.__version__}|{device_type}".encode())
    for name, tensor in tensors:
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def view_keys(views: torch.Tensor) -> list[bytes]:
    """The key of each view (B, ...): the hash of its float32 bytes."""
    rows = views.detach().to("cpu", torch.float32).contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=DIGEST_SIZE).digest() for row in rows]


class FeatureCache:
    """The module docstring's cache under ``directory``; one folder (encoder) loaded at a time."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        self.fingerprint: str | None = None
        self._features: dict[bytes, np.ndarray] = {}
        self._new: dict[bytes, np.ndarray] = {}
        self._written = 0
        self.hits = 0
        self.misses = 0

    @property
    def folder(self) -> Path:
        if self.fingerprint is None:
            raise RuntimeError("the feature cache has not been used yet: no encoder folder")
        return self.directory / self.fingerprint

    def _use(self, fingerprint: str) -> None:
        """Switch to ``fingerprint``'s folder: flush the current one's new entries, read the folder's files."""
        if fingerprint == self.fingerprint:
            return
        self.flush()
        self.fingerprint, self._features = fingerprint, {}
        for file in sorted(self.folder.glob("[!.]*.npz")):
            try:
                with np.load(file, allow_pickle=False) as data:
                    keys, features = data["keys"], data["features"]
            except (OSError, ValueError, KeyError) as err:
                raise ValueError(f"{file}: expected a feature-cache file (.npz with keys and features): {err}; "
                                 f"delete it (the cache rebuilds what is missing)") from err
            if keys.ndim != 2 or keys.shape[1] != DIGEST_SIZE or features.ndim != 2 or len(features) != len(keys):
                raise ValueError(f"{file}: keys {keys.shape}, features {features.shape}: expected (N, {DIGEST_SIZE}) "
                                 f"and (N, D); delete it (the cache rebuilds what is missing)")
            self._features.update(zip((bytes(k) for k in keys), features))
        if self._features:
            log.info("identity features: %d views from the cache %s", len(self._features), self.folder)

    def lookup(self, fingerprint: str, views: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The features (B, D) of ``views`` (B, ...) of the encoder ``fingerprint``: stored ones as stored,
        the others from ``compute`` (run once on those views, then kept)."""
        self._use(fingerprint)
        keys = view_keys(views)
        missing = [i for i, key in enumerate(keys) if key not in self._features]
        if missing:
            computed = compute(views[missing]).detach().to("cpu", torch.float32).numpy()
            for i, row in zip(missing, computed):
                self._features[keys[i]] = self._new[keys[i]] = row
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        stacked = np.stack([self._features[key] for key in keys])
        return torch.from_numpy(stacked).to(views.device, views.dtype)

    def flush(self) -> Path | None:
        """Write the entries computed since the last flush as a new file of the folder; returns its path."""
        if not self._new:
            return None
        self._written += 1
        path = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{self._written}.npz"
        keys = np.frombuffer(b"".join(self._new), np.uint8).reshape(-1, DIGEST_SIZE)
        with atomic_path(path) as tmp:
            np.savez(tmp, keys=keys, features=np.stack(list(self._new.values())))
        log.info("identity features: %d new views written to %s", len(self._new), path)
        self._new = {}
        return path
