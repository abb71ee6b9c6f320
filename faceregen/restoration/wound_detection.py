"""Wound detection: where the scan lies inside the completed surface, cleaned into connected regions.

``depth_mm`` of a scan vertex ``p`` is its distance to the nearest point ``c`` of the completed surface
(:class:`~faceregen.restoration.registration.TriangleSurface`), positive when ``p`` lies inside (behind the
surface: ``(c - p) . n > 0``, ``n`` the outward normal of the triangle holding ``c``). The wound is found by
hysteresis on the scan's own mesh: connected regions of vertices deeper than ``low_mm`` that reach deeper than
``threshold_mm`` somewhere and cover at least ``min_area_mm2``; ``low_mm`` is ``max(low_floor_mm, low_sigmas x
sigma)`` with ``sigma`` the fit's robust residual scale, so noise on intact skin stays out while the wound's
shallow rim comes in. When no region reaches ``threshold_mm``, the deepest one reaching
``fallback_threshold_mm`` is the wound (a scan handed over for a filling has one, and the fit, drawn toward
the scan, takes part of a shallow scar's depth), never more than that one region. Only ``facial`` vertices may
be wounded when given (the restorer passes those whose nearest named vertex of the face model lies in its
face, forehead, nose or lips, where the generator's and the clinic's wounds are, and which do not lie on a
surface the regions leave unnamed, such as the mouth cavity: :meth:`~faceregen.restoration.Restorer.facial`;
ears, scalp and neck, which a face scan barely shows and the model fits worst, stay out), and never where the scan ends (its longest border loop) or next to it
(:func:`~faceregen.restoration.holes.scan_end`: a partial scan's end is no evidence of a wound); the rims of
the scan's holes may be wounded (a deep wound's steep walls are often a hole in a face-only scan). Unmasked
islands bordering a region, smaller than it, are filled. A given mask always wins.

The wound's shallow rim lies below ``low_mm`` (the fit's noise level keeps the hysteresis out of it), and a
filling without it comes out short. :func:`grow_into_rim` extends the final mask over it: the vertices within
``rim_mm`` of the mask and deeper than the rim's floor, connected to it through such vertices, in the facial regions or not (the generator's wounds, seeded there,
reach beyond them: a third of some test wounds' vertices). Only the final mask grows: the refits keep their
margin around the detected wound. The floor is ``max(rim_floor_mm, rim_sigmas x s)``, ``s`` the robust scale
of the depth outside the mask (:func:`depth_scale_mm`): the scatter of the intact skin about the completed
face. After the joint refits that is about 0.05 mm on a clean scan (the floor: 0.15 mm) and 0.15 mm with
0.2 mm of scanner noise (0.45 mm); a fixed floor low enough for the clean scan grows into a noisy scan's
scatter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from scipy.spatial import cKDTree

from faceregen.restoration.holes import scan_end
from faceregen.restoration.registration import IcpSettings, TriangleSurface


@dataclass(frozen=True)
class WoundSettings:
    threshold_mm: float = 3.0
    fallback_threshold_mm: float | None = 2.0
    low_floor_mm: float = 0.2
    low_sigmas: float = 1.0
    min_area_mm2: float = 50.0
    rim_mm: float = 10.0
    rim_floor_mm: float = 0.15
    rim_sigmas: float = 3.0


@dataclass(frozen=True)
class SurfaceDepth:
    """Per scan vertex: ``depth_mm`` (N,) below the completed surface (positive inside) and the nearest
    completed-surface point ``closest_mm`` (N, 3), both in the scan's frame."""

    depth_mm: np.ndarray
    closest_mm: np.ndarray


def depth_below_surface(points_mm: np.ndarray, vertices_mm: np.ndarray, faces: np.ndarray) -> SurfaceDepth:
    """Signed depth of points below a closed or open outward-facing triangle surface (module docstring)."""
    vertices_mm = np.asarray(vertices_mm, np.float64)
    points_mm = np.asarray(points_mm, np.float64)
    found = TriangleSurface(faces, len(vertices_mm)).match(points_mm, np.zeros_like(points_mm), vertices_mm,
                                                          cKDTree(vertices_mm), IcpSettings())
    distance = np.linalg.norm(points_mm - found.closest, axis=1)
    return SurfaceDepth(np.where(found.residual < 0, distance, -distance), found.closest)


def vertex_areas_mm2(vertices_mm: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A third of the area of each vertex's triangles (N,)."""
    corners = vertices_mm[faces]
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    return np.bincount(faces.ravel(), weights=np.repeat(area / 3.0, 3), minlength=len(vertices_mm))


def _components(faces: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Connected-component labels (N,) of the vertices in ``keep`` along mesh edges between kept vertices
    (-1 for the others)."""
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    edges = edges[keep[edges].all(axis=1)]
    n = len(keep)
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.where(keep, labels, -1)


def woundable(vertices_mm: np.ndarray, faces: np.ndarray, facial: np.ndarray | None) -> np.ndarray:
    """The vertices (N,) bool that may be wounded: ``facial`` ones (all when None) away from the scan's end."""
    keep = ~scan_end(vertices_mm, faces)
    return keep if facial is None else keep & facial


def detect_wound(vertices_mm: np.ndarray, faces: np.ndarray, depth_mm: np.ndarray, sigma_mm: float,
                 settings: WoundSettings = WoundSettings(), facial: np.ndarray | None = None) -> np.ndarray:
    """The wound mask (N,) bool of a scan from its depth below the completed surface (module docstring),
    among the ``facial`` vertices (N,) bool when given."""
    low = max(settings.low_floor_mm, settings.low_sigmas * sigma_mm)
    candidate = (depth_mm > min(low, settings.threshold_mm)) & woundable(vertices_mm, faces, facial)
    labels = _components(faces, candidate)
    area = vertex_areas_mm2(vertices_mm, faces)
    mask = np.zeros(len(depth_mm), dtype=bool)
    deepest, deepest_mm = None, settings.fallback_threshold_mm
    for label in np.unique(labels[labels >= 0]):
        region = labels == label
        if area[region].sum() < settings.min_area_mm2:
            continue
        reach_mm = depth_mm[region].max()
        if reach_mm > settings.threshold_mm:
            mask |= region
        elif deepest_mm is not None and reach_mm > deepest_mm:
            deepest, deepest_mm = region, reach_mm
    if not mask.any() and deepest is not None:
        mask = deepest
    if mask.any():
        outside = _components(faces, ~mask)
        edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        rim = edges[mask[edges[:, 0]] & ~mask[edges[:, 1]], 1]  # unmasked vertices next to the wound
        sizes = np.bincount(outside[outside >= 0])
        for label in np.unique(outside[rim]):
            if sizes[label] < mask.sum() and sizes[label] < sizes.max():
                mask |= outside == label
    return mask


def depth_scale_mm(depth_mm: np.ndarray) -> float:
    """The robust scale of depths (mm): 1.4826 x their median absolute deviation (a Gaussian's sigma)."""
    if depth_mm.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(depth_mm - np.median(depth_mm))))


def grow_into_rim(vertices_mm: np.ndarray, faces: np.ndarray, depth_mm: np.ndarray, mask: np.ndarray,
                  settings: WoundSettings = WoundSettings()) -> np.ndarray:
    """The wound ``mask`` (N,) bool extended over its shallow rim (module docstring): the vertices within
    ``rim_mm`` of the mask (straight-line distance), deeper than the floor (``rim_floor_mm``, or ``rim_sigmas``
    robust scales of the depth outside the mask when that is more) and not at the scan's end,
    that reach it along mesh edges through such vertices. The facial regions do not bound it: a wound seeded
    in them may reach beyond (a chin's into the jaw, a scar's toward an eye or ear)."""
    if not mask.any() or settings.rim_mm <= 0:
        return mask
    floor_mm = max(settings.rim_floor_mm, settings.rim_sigmas * depth_scale_mm(depth_mm[~mask]))
    near_mm, _ = cKDTree(vertices_mm[mask]).query(vertices_mm, distance_upper_bound=settings.rim_mm)
    allowed = mask | (np.isfinite(near_mm) & (depth_mm > floor_mm) & woundable(vertices_mm, faces, None))
    labels = _components(faces, allowed)
    return np.isin(labels, np.unique(labels[mask]))
