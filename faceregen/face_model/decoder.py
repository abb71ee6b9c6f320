"""The geometry decoder: the face model as a frozen linear layer, and MICA's region weights."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from faceregen.face_model.linear import LinearFaceModel


def component_count(face_model: LinearFaceModel, n_components: int | None) -> int:
    """How many of the face model's components a code holds: ``n_components``, or all of them (None)."""
    k = face_model.n_components if n_components is None else n_components
    if not 0 < k <= face_model.n_components:
        raise ValueError(f"n_components={k}: the face model {face_model.name!r} has {face_model.n_components}")
    return k


class FaceModelDecoder(nn.Module):
    """``G(z) = B z + A`` as a frozen linear layer: codes (B, K) -> vertices (B, V, 3) in mm.

    ``B`` and ``A`` are buffers (saved with checkpoints, moved with ``.to(device)``, never trained).
    """

    def __init__(self, face_model: LinearFaceModel, n_components: int | None = None) -> None:
        super().__init__()
        k = component_count(face_model, n_components)
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


#: The face parts errors are reported for (the field's regions: REALY's nose, mouth, forehead, cheek; + chin).
FACE_PARTS = ("nose", "forehead", "cheeks", "lips", "chin")


def face_parts(face_model: LinearFaceModel) -> dict[str, np.ndarray]:
    """Boolean (V,) masks of :data:`FACE_PARTS`, cut from the model's ``face`` region on the mean head by its
    five landmarks, so every face model gets the same parts (as REALY cuts its regions by keypoints). With
    ``d`` the distance between the eye centres, ``m`` the mouth corners' midpoint, ``n`` the mean head's
    unit vertex normals, and only forward-facing face vertices (``n_z > 0.3``):

    * ``forehead``: the model's ``forehead`` region.
    * ``nose``: within ``0.28 d`` of the nose tip's x (the alar width), from ``0.2 d`` below the nose tip
      up to the eyes' height.
    * ``lips``: within the mouth corners' half-width + ``0.1 d`` of ``m``'s x, from ``0.25 d`` below
      ``m`` up to the nose's lower end.
    * ``chin``: as wide as the lips, below them, at most ``0.3 d`` behind ``m`` (not its underside).
    * ``cheeks``: between ``m``'s and the eyes' heights, beside the nose and the lips, outside the model's
      ``eye_region``.
    """
    from faceregen.mesh_io import vertex_normals

    mean = face_model.mean_mm.astype(np.float64)
    face = face_model.region_mask("face") & (vertex_normals(mean, face_model.faces)[:, 2] > 0.3)
    points = dict(zip(face_model.landmarks.names, face_model.landmarks.positions(mean[None])[0]))
    d = np.linalg.norm(points["left_eye"] - points["right_eye"])
    eyes_y = 0.5 * (points["left_eye"][1] + points["right_eye"][1])
    mouth = 0.5 * (points["left_mouth_corner"] + points["right_mouth_corner"])
    mouth_half_width = 0.5 * np.linalg.norm(points["left_mouth_corner"] - points["right_mouth_corner"]) + 0.1 * d
    nose_bottom_y = points["nose_tip"][1] - 0.2 * d
    x, y, z = mean[:, 0], mean[:, 1], mean[:, 2]
    nose = face & (np.abs(x - points["nose_tip"][0]) < 0.28 * d) & (y >= nose_bottom_y) & (y <= eyes_y)
    beside_mouth = np.abs(x - mouth[0]) < mouth_half_width
    lips = face & beside_mouth & (y >= mouth[1] - 0.25 * d) & (y < nose_bottom_y)
    chin = face & beside_mouth & (y < mouth[1] - 0.25 * d) & (z > mouth[2] - 0.3 * d)
    cheeks = face & ~nose & ~lips & ~face_model.region_mask("eye_region") & (y > mouth[1]) & (y < eyes_y)
    return {"nose": nose, "forehead": face_model.region_mask("forehead"), "cheeks": cheeks, "lips": lips, "chin": chin}
