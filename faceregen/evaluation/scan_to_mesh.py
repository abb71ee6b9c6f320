"""NoW-style scan-to-mesh distance, for a prediction whose topology differs from the ground truth's.

1. Alignment (Umeyama 1991): the similarity ``y ~ s R x + t`` that maps the predicted mesh's landmarks
   ``x_i`` onto the scan's ``y_i`` in the least-squares sense, ``min sum_i |y_i - (s R x_i + t)|^2``:
   with centred ``X, Y`` and ``Sigma = Y^T X / n = U D V^T``, ``S = diag(1, 1, sign(det U det V))``,
   ``R = U S V^T``, ``s = tr(D S) / (|X|^2 / n)`` (or 1 for a rigid fit), ``t = mean(y) - s R mean(x)``.
2. Distance: for every scan point, the Euclidean distance to the nearest point of the aligned predicted
   SURFACE (not its vertices). Exact, without rtree: candidate triangles are those of the ``k`` nearest
   points of a grid covering every triangle to within ``r`` (scipy ``cKDTree``); a scan point whose
   ``k``-th grid distance minus ``r`` is already at least its best distance is settled, the others are
   retried with ``2k`` (:func:`point_to_surface_distance_mm`).
3. Report: median, mean and standard deviation of those distances, in mm (NoW's figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from trimesh.triangles import closest_point

from faceregen import geometry


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


def surface_samples(triangles: np.ndarray, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Points covering every triangle: a barycentric grid ``(i/n, j/n)``, ``i + j <= n``, per triangle with
    ``n = ceil(longest edge / spacing_mm)``; every point of a triangle is then within ``longest edge / n``
    (<= ``spacing_mm``) of one of its grid points.

    Returns:
        ``(points (S, 3), triangle index (S,), covering radius)``: the largest ``longest edge / n``.
    """
    edges = np.linalg.norm(triangles - np.roll(triangles, 1, axis=1), axis=2).max(axis=1)
    n_per_triangle = np.maximum(np.ceil(edges / spacing_mm), 1).astype(np.int64)
    points, owners = [], []
    for n in np.unique(n_per_triangle):
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = i + j <= n
        weights = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=1) / n  # (G, 3)
        chosen = np.flatnonzero(n_per_triangle == n)
        points.append(np.einsum("gk,tkc->tgc", weights, triangles[chosen]).reshape(-1, 3))
        owners.append(np.repeat(chosen, len(weights)))
    return np.concatenate(points), np.concatenate(owners), float((edges / n_per_triangle).max())


def point_to_surface_distance_mm(
    points_mm: np.ndarray, vertices_mm: np.ndarray, faces: np.ndarray, k: int = 16, chunk: int = 20000
) -> np.ndarray:
    """Exact distance (N,) from each point to the nearest point of the triangle surface.

    Candidates: the triangles of the ``k`` nearest :func:`surface_samples` (spacing: half the median
    edge). A triangle none of whose samples is among them is at least ``d_k - r`` away (``d_k``: the
    ``k``-th sample distance, ``r``: the covering radius), so a point whose best candidate distance is at
    most ``d_k - r`` is settled; the others are retried with ``2k`` samples.
    """
    points = _points("scan points", points_mm)
    vertices = _points("mesh vertices", vertices_mm)
    faces = np.asarray(faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"faces must be a non-empty (F, 3) array of indices below {len(vertices)}, got {faces.shape}")
    triangles = vertices[faces]
    spacing = 0.5 * np.median(np.linalg.norm(triangles - np.roll(triangles, 1, axis=1), axis=2))
    samples, owners, radius = surface_samples(triangles, max(spacing, 1e-9))
    tree = cKDTree(samples)
    distances = np.empty(len(points))
    for start in range(0, len(points), chunk):
        pending = np.arange(start, min(start + chunk, len(points)))
        n_candidates = min(k, len(samples))
        while len(pending):
            sample_distance, nearest_samples = tree.query(points[pending], k=n_candidates)
            sample_distance = sample_distance.reshape(len(pending), n_candidates)
            candidates = owners[nearest_samples.reshape(len(pending), n_candidates)]
            repeated = np.repeat(points[pending], n_candidates, axis=0)
            nearest = closest_point(triangles[candidates.ravel()], repeated)
            best = np.linalg.norm(nearest - repeated, axis=1).reshape(len(pending), n_candidates).min(axis=1)
            settled = (n_candidates == len(samples)) | (sample_distance[:, -1] - radius >= best)
            distances[pending[settled]] = best[settled]
            pending = pending[~settled]
            n_candidates = min(2 * n_candidates, len(samples))
    return distances


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
    return {
        "median_mm": float(np.median(distances)),
        "mean_mm": float(distances.mean()),
        "std_mm": float(distances.std()),
        "n_points": int(len(distances)),
        "distances_mm": distances,
        "alignment": alignment,
    }
