"""NoW-style scan-to-mesh distance, for a prediction whose topology differs from the ground truth's.

1. Alignment (Umeyama 1991): the similarity ``y ~ s R x + t`` that maps the predicted mesh's landmarks
   ``x_i`` onto the scan's ``y_i`` in the least-squares sense, ``min sum_i |y_i - (s R x_i + t)|^2``:
   with centred ``X, Y`` and ``Sigma = Y^T X / n = U D V^T``, ``S = diag(1, 1, sign(det U det V))``,
   ``R = U S V^T``, ``s = tr(D S) / (|X|^2 / n)`` (or 1 for a rigid fit), ``t = mean(y) - s R mean(x)``.
2. Distance: for every scan point, the Euclidean distance to the nearest point of the aligned predicted
   SURFACE (not its vertices), exact (libigl's AABB tree, :func:`point_to_surface_distance_mm`).
3. Report: median, mean and standard deviation of those distances, in mm (NoW's figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceregen import geometry
from faceregen.face_model.linear import NOW_LANDMARKS


@dataclass(frozen=True)
class Similarity:
    """``x -> scale * rotation @ x + translation``."""

    scale: float
    rotation: np.ndarray  # (3, 3), det +1
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def inverse(self) -> Similarity:
        """``y -> R^T (y - t) / s``."""
        return Similarity(1.0 / self.scale, self.rotation.T, -(self.rotation.T @ self.translation) / self.scale)

    def then(self, other: Similarity) -> Similarity:
        """``other`` after this one: ``x -> other.apply(self.apply(x))``."""
        return Similarity(other.scale * self.scale, other.rotation @ self.rotation, other.apply(self.translation))

    def to_dict(self) -> dict:
        return {"scale": self.scale, "rotation": self.rotation.tolist(), "translation": self.translation.tolist()}


def _points(name: str, array: np.ndarray, n: int | None = None) -> np.ndarray:
    points = np.asarray(array, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or (n is not None and len(points) != n) or not np.isfinite(points).all():
        expected = f"({n}, 3)" if n is not None else "(N, 3)"
        raise ValueError(f"{name} must be a finite {expected} array, got {points.shape}")
    return points


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> Similarity:
    """The least-squares similarity (rigid when ``with_scale`` is False) mapping ``source`` onto ``target``.

    Raises:
        ValueError: shapes differ, fewer than 3 points, or the source points are all at one place.
    """
    x = _points("source landmarks", source)
    y = _points("target landmarks", target, len(x))
    if len(x) < 3:
        raise ValueError(f"the alignment needs at least 3 corresponding landmarks, got {len(x)}")
    if ((x - x.mean(axis=0)) ** 2).sum() <= 0:
        raise ValueError("the source landmarks all coincide: no alignment is defined")
    scale, rotation, translation = geometry.umeyama(x, y, with_scale)
    return Similarity(float(scale), rotation, translation)


def closest_points_on_surface(points_mm: np.ndarray, vertices_mm: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest point (N, 3) of the triangle surface to each point, and its distance (N,): libigl's
    AABB tree (``igl.point_mesh_squared_distance``)."""
    import igl

    points = _points("scan points", points_mm)
    vertices = _points("mesh vertices", vertices_mm)
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"faces must be a non-empty (F, 3) array of indices below {len(vertices)}, got {faces.shape}")
    squared, _, closest = igl.point_mesh_squared_distance(points, vertices, faces)
    return np.asarray(closest, dtype=np.float64), np.sqrt(np.maximum(squared, 0.0))


def point_to_surface_distance_mm(points_mm: np.ndarray, vertices_mm: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Exact distance (N,) from each point to the nearest point of the triangle surface
    (:func:`closest_points_on_surface`)."""
    return closest_points_on_surface(points_mm, vertices_mm, faces)[1]


def distance_report(distances: np.ndarray, alignment: Similarity) -> dict:
    """NoW's figures of scan-to-surface distances (mm): median, mean, std, with the points and the alignment."""
    return {
        "median_mm": float(np.median(distances)),
        "mean_mm": float(distances.mean()),
        "std_mm": float(distances.std()),
        "n_points": int(len(distances)),
        "distances_mm": distances,
        "alignment": alignment,
    }


def scan_to_mesh_distance(
    scan_points_mm: np.ndarray,
    scan_landmarks_mm: np.ndarray,
    mesh_vertices_mm: np.ndarray,
    mesh_faces: np.ndarray,
    mesh_landmarks_mm: np.ndarray,
    with_scale: bool = False,
) -> dict:
    """Align the predicted mesh to the scan by corresponding landmarks, then measure scan -> surface.

    Args:
        scan_points_mm: (N, 3) the ground-truth scan (any topology; points or vertices).
        scan_landmarks_mm: (L, 3) landmarks on the scan.
        mesh_vertices_mm, mesh_faces: the predicted mesh.
        mesh_landmarks_mm: (L, 3) the same landmarks on the prediction, in the same order.
        with_scale: also fit a scale (NoW fits a similarity; a metric prediction in mm needs none).

    Returns:
        ``{"median_mm", "mean_mm", "std_mm", "n_points", "distances_mm" (N,), "alignment": Similarity}``.
    """
    alignment = umeyama(mesh_landmarks_mm, scan_landmarks_mm, with_scale=with_scale)
    aligned_vertices = alignment.apply(_points("mesh vertices", mesh_vertices_mm))
    distances = point_to_surface_distance_mm(scan_points_mm, aligned_vertices, mesh_faces)
    return distance_report(distances, alignment)


#: About how many cropped scan points the ICP refinement of :func:`now_distance` uses (every k-th).
REFINE_POINTS = 1000


def now_crop_sphere(landmarks_mm: np.ndarray) -> tuple[np.ndarray, float]:
    """NoW's face crop from the scan's :data:`NOW_LANDMARKS` (7, 3): centre and radius (mm).

    ``bridge`` = midpoint of the inner eye corners; centre = ``nose_bottom + 0.3 (bridge - nose_bottom)``;
    radius = ``1.4 (|outer_right - outer_left| + |bridge - nose_bottom|) / 2``.
    """
    landmarks = _points("NoW landmarks", landmarks_mm, len(NOW_LANDMARKS))
    bridge = 0.5 * (landmarks[1] + landmarks[2])
    centre = landmarks[4] + 0.3 * (bridge - landmarks[4])
    radius = 1.4 * (np.linalg.norm(landmarks[0] - landmarks[3]) + np.linalg.norm(bridge - landmarks[4])) / 2
    return centre, float(radius)


def now_distance(
    scan_points_mm: np.ndarray,
    scan_landmarks_mm: np.ndarray,
    mesh_vertices_mm: np.ndarray,
    mesh_faces: np.ndarray,
    mesh_landmarks_mm: np.ndarray,
    metrical: bool = False,
    refine_iterations: int = 10,
) -> dict:
    """The NoW protocol: crop, align, scan-to-mesh distance.

    1. Crop the scan to :func:`now_crop_sphere` of its landmarks.
    2. Align the predicted mesh by its :data:`NOW_LANDMARKS` (Umeyama; similarity, or rigid when
       ``metrical``), then refine by ICP on every k-th cropped scan point (at most ~:data:`REFINE_POINTS`):
       each iteration fits the same kind of transform from the nearest surface points of the aligned mesh
       to those scan points and composes it, while the RMS
       distance falls (it stops when it falls by less than 1e-4 mm, or rises: that step is not taken).
    3. The exact distance of every cropped scan point to the aligned surface: median, mean, std (mm).
    """
    scan = _points("scan points", scan_points_mm)
    vertices = _points("mesh vertices", mesh_vertices_mm)
    faces = np.asarray(mesh_faces, dtype=np.int64)
    centre, radius = now_crop_sphere(scan_landmarks_mm)
    crop = scan[np.linalg.norm(scan - centre, axis=1) <= radius]
    if len(crop) < 3:
        raise ValueError(f"the NoW crop (centre {np.round(centre, 1)}, radius {radius:.1f} mm) holds {len(crop)} scan points")
    alignment = umeyama(mesh_landmarks_mm, scan_landmarks_mm, with_scale=not metrical)
    refine = crop[:: max(1, len(crop) // REFINE_POINTS)]
    closest, distances = closest_points_on_surface(refine, alignment.apply(vertices), faces)
    for _ in range(refine_iterations):
        step = umeyama(closest, refine, with_scale=not metrical)
        refined = Similarity(
            step.scale * alignment.scale,
            step.rotation @ alignment.rotation,
            step.scale * step.rotation @ alignment.translation + step.translation,
        )
        refined_closest, refined_distances = closest_points_on_surface(refine, refined.apply(vertices), faces)
        improvement = np.sqrt(np.mean(distances**2)) - np.sqrt(np.mean(refined_distances**2))
        if improvement < 0:
            break
        alignment, closest, distances = refined, refined_closest, refined_distances
        if improvement < 1e-4:
            break
    distances = point_to_surface_distance_mm(crop, alignment.apply(vertices), faces)
    return distance_report(distances, alignment)
