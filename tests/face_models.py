"""The stand-in face model for tests (no Anny, no FLAME): an ellipsoid head with a nose bump."""

from __future__ import annotations

import numpy as np
import trimesh

from faceregen.face_model.linear import FIVE_POINT_NAMES, NOW_LANDMARKS, REGION_NAMES, Landmarks, LinearFaceModel

TOY_LANDMARKS_XY_MM = {
    "right_eye": (-32.0, 25.0),
    "left_eye": (32.0, 25.0),
    "nose_tip": (0.0, -5.0),
    "right_mouth_corner": (-24.0, -42.0),
    "left_mouth_corner": (24.0, -42.0),
    "right_eye_outer": (-44.0, 25.0),
    "right_eye_inner": (-20.0, 25.0),
    "left_eye_inner": (20.0, 25.0),
    "left_eye_outer": (44.0, 25.0),
    "nose_bottom": (0.0, -22.0),
}
LANDMARK_NAMES = FIVE_POINT_NAMES + tuple(n for n in NOW_LANDMARKS if n not in FIVE_POINT_NAMES)


def toy_face_model(subdivisions: int = 4) -> LinearFaceModel:
    """A small stand-in face model: an ellipsoid head (radii 75 x 100 x 90 mm) with a nose bump.

    Landmarks are the front vertices nearest to fixed (x, y) positions; regions are simple boxes and balls;
    the basis has axis scalings, a nose-size mode and two smooth random modes (a few mm each).
    """
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=1.0)
    unit = np.asarray(sphere.vertices)
    mean = unit * np.array([75.0, 100.0, 90.0])
    nose_bump = np.exp(-((mean[:, 0] / 12.0) ** 2 + ((mean[:, 1] + 5.0) / 22.0) ** 2)) * (mean[:, 2] > 0)
    mean[:, 2] += 28.0 * nose_bump
    front = np.flatnonzero(mean[:, 2] > 0)
    indices = np.array(
        [[front[np.argmin(np.linalg.norm(mean[front, :2] - TOY_LANDMARKS_XY_MM[n], axis=1))]] for n in LANDMARK_NAMES]
    )
    landmarks = Landmarks(LANDMARK_NAMES, indices.astype(np.int64), np.ones((len(LANDMARK_NAMES), 1), np.float32))

    def ball(name: str, radius_mm: float) -> np.ndarray:
        centre = mean[indices[LANDMARK_NAMES.index(name), 0]]
        return np.flatnonzero(np.linalg.norm(mean - centre, axis=1) < radius_mm)

    x, y, z = mean.T
    regions = {name: np.zeros(0, np.int64) for name in REGION_NAMES}
    regions["face"] = np.flatnonzero((z > 35.0) & (y < 75.0) & (y > -90.0))
    regions["forehead"] = np.flatnonzero((z > 35.0) & (y >= 45.0) & (y < 75.0))
    regions["nose"] = ball("nose_tip", 22.0)
    regions["lips"] = np.flatnonzero((z > 35.0) & (np.abs(y + 42.0) < 8.0) & (np.abs(x) < 26.0))
    regions["eye_region"] = np.union1d(ball("right_eye", 12.0), ball("left_eye", 12.0))
    regions["scalp"] = np.flatnonzero(y > 75.0)
    regions["neck"] = np.flatnonzero(y < -90.0)
    rng = np.random.default_rng(0)
    columns = [mean * scale for scale in np.eye(3) * 0.04] + [np.stack([0 * x, 0 * y, 6.0 * nose_bump], axis=1)]
    for _ in range(2):
        frequency = rng.normal(size=3) / 60.0
        columns.append(3.0 * np.sin(mean @ frequency + rng.uniform(0, 6))[:, None] * unit)
    return LinearFaceModel(
        name=f"toy-ellipsoid-{subdivisions}",
        mean_mm=mean.astype(np.float32),
        basis_mm=np.stack(columns, axis=-1).astype(np.float32),
        faces=np.asarray(sphere.faces, np.int64),
        landmarks=landmarks,
        regions={k: np.asarray(v, np.int64) for k, v in regions.items()},
    )
