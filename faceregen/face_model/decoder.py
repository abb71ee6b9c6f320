"""The geometry decoder: the face model as a frozen linear layer, and MICA's region weights."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from faceregen.face_model.linear import LinearFaceModel


class FaceModelDecoder(nn.Module):
    """``G(z) = B z + A`` as a frozen linear layer: codes (B, K) -> vertices (B, V, 3) in mm.

    ``B`` and ``A`` are buffers (saved with checkpoints, moved with ``.to(device)``, never trained).
    """

    def __init__(self, face_model: LinearFaceModel, n_components: int | None = None) -> None:
        super().__init__()
        k = face_model.n_components if n_components is None else n_components
        if not 0 < k <= face_model.n_components:
            raise ValueError(f"n_components={k}: the face model {face_model.name!r} has {face_model.n_components}")
        v = face_model.n_vertices
        self.register_buffer("mean_mm", torch.from_numpy(np.ascontiguousarray(face_model.mean_mm, np.float32)))
        basis = np.ascontiguousarray(face_model.basis_mm[:, :, :k], np.float32).reshape(v * 3, k)
        self.register_buffer("basis_mm", torch.from_numpy(basis))

    @property
    def n_components(self) -> int:
        return self.basis_mm.shape[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.basis_mm.T).view(z.shape[0], -1, 3) + self.mean_mm


def region_weights(face_model: LinearFaceModel, weights: Mapping[str, float], default: float = 1.0) -> np.ndarray:
    """Per-vertex loss weights (V,) float32, MICA-style.

    Every vertex starts at ``default``; then each ``region: weight`` entry is applied IN ORDER, later
    entries overwriting earlier ones where regions overlap (MICA: whole 1.0 -> eyeballs 0.01 -> ears 0.01
    -> face 150).
    """
    w = np.full(face_model.n_vertices, default, dtype=np.float32)
    for region, value in weights.items():
        if region not in face_model.regions:
            raise ValueError(
                f"region_weights: unknown region {region!r}; the face model {face_model.name!r} has "
                f"{sorted(face_model.regions)}"
            )
        w[face_model.regions[region]] = value
    return w


def evaluation_vertices(face_model: LinearFaceModel) -> np.ndarray:
    """Boolean (V,) mask of the vertices the metrics are computed on: all but the eyeballs.

    Cir3D-FaIR's ground truth has no eyeballs (the paper removes them from MICA's output before
    comparing), so eyeball vertices never count in the distances.
    """
    mask = np.ones(face_model.n_vertices, dtype=bool)
    mask[face_model.regions["left_eyeball"]] = False
    mask[face_model.regions["right_eyeball"]] = False
    return mask
