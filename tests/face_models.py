"""A small closed face-like LinearFaceModel for tests (no Anny, no FLAME): an ellipsoid head."""

from __future__ import annotations

import numpy as np
import trimesh

from faceregen.face_model.linear import FIVE_POINT_NAMES, REGION_NAMES, Landmarks, LinearFaceModel


def ellipsoid_face_model(n_components: int = 8, subdivisions: int = 3, seed: int = 0) -> LinearFaceModel:
    """An ellipsoid 'head' (mm, face toward +z) with a smooth random basis, landmarks and regions.

    Regions are geometric: face = front (z > 0.3 r), eyeballs = two small front patches, ears = the
    sides, etc. Good enough for code paths that only need the interface.
    """
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    radii_mm = np.array([75.0, 100.0, 90.0])
    mean = (sphere.vertices * radii_mm).astype(np.float32)
    unit = sphere.vertices
    rng = np.random.default_rng(seed)
    # smooth deformation fields: low-order polynomials of the unit direction, a few mm each
    features = np.stack([unit[:, 0], unit[:, 1], unit[:, 2], unit[:, 0] * unit[:, 1], unit[:, 1] ** 2, unit[:, 2] ** 2], 1)
    basis = np.einsum("vf,fck->vck", features, rng.normal(0, 2.0, (features.shape[1], 3, n_components))).astype(np.float32)
    x, y, z = unit.T

    def idx(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask).astype(np.int64)

    eye = lambda sx: (np.hypot(x - sx * 0.35, y - 0.3) < 0.12) & (z > 0)  # noqa: E731
    regions = {name: np.zeros(0, np.int64) for name in REGION_NAMES}
    regions.update(
        face=idx((z > 0.3) & ~eye(1) & ~eye(-1)),
        left_eyeball=idx(eye(1)),
        right_eyeball=idx(eye(-1)),
        left_ear=idx(x > 0.9),
        right_ear=idx(x < -0.9),
        nose=idx((np.hypot(x, y + 0.05) < 0.15) & (z > 0)),
        lips=idx((np.hypot(x, y + 0.45) < 0.2) & (z > 0)),
        forehead=idx((y > 0.55) & (z > 0.3)),
        scalp=idx(y > 0.8),
        neck=idx(y < -0.9),
        eye_region=idx((np.abs(y - 0.3) < 0.2) & (z > 0.3)),
    )

    def nearest(direction) -> int:
        return int(np.argmax(unit @ (np.asarray(direction) / np.linalg.norm(direction))))

    points = {
        "right_eye": nearest([-0.35, 0.3, 0.88]),
        "left_eye": nearest([0.35, 0.3, 0.88]),
        "nose_tip": nearest([0.0, 0.0, 1.0]),
        "right_mouth_corner": nearest([-0.25, -0.45, 0.86]),
        "left_mouth_corner": nearest([0.25, -0.45, 0.86]),
    }
    landmarks = Landmarks(
        FIVE_POINT_NAMES,
        np.array([[points[n]] for n in FIVE_POINT_NAMES], np.int64),
        np.ones((5, 1), np.float32),
    )
    return LinearFaceModel("test-ellipsoid", mean, basis, np.asarray(sphere.faces, np.int64), landmarks, regions)
