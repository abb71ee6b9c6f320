"""Synthetic facial wounds: inward dents carved into a complete head, in the face model's frame.

In the spirit of cirmesh's ``scarCreatingV2`` (the authors' Cir3D-FaIR generator), vectorised and in
millimetres with +z out of the face:

* where: a wound starts at a *candidate* vertex (front-facing: vertex normal ``n_z > min_normal_z``, in
  front of the head's mid-plane ``z > (z_min + z_max) / 2``, inside the face: regions ``face``,
  ``forehead``, ``nose``, ``lips``) and only moves *woundable* vertices (the same without the normal test).
  The eye band is excluded: every vertex within ``eye_margin_mm`` of ``eye_region`` / eyeball vertices, or
  within ``eye_radius_mm`` of an eye landmark. cirmesh excludes only a horizontal eye band
  (``y in [0.65, 0.70]`` of the height); the lips stay allowed here as there (a dent in the lips can meet
  the mouth cavity of a source that has one).
* how deep: a peak depth ``depth ~ U(depth_range_mm)`` (default 4-12 mm: cirmesh's older ``scarCreating``
  uses 4-10 mm; ``scarCreatingV2`` 20-30 mm on FLAME heads, which carve through the thin nose), clamped to
  ``max_depth_fraction`` of the seed's distance to the head centre (the vertex centroid) so no wound can
  reach the far side of the head.
* which way: every wound vertex moves along ONE inward direction, minus the depth-weighted mean normal of
  the wound. cirmesh moves along -z; per-vertex normals (the other choice) converge on a curved nose and
  fold the surface into itself, a single direction only flattens it.
* shapes (``d`` = geodesic distance from the seed along mesh edges, in mm; cirmesh's ring ``i`` of ``n``
  grown by breadth-first search is the band ``d ~ i R / n`` here, which keeps the size in mm whatever the
  mesh resolution):

  - ``circle_scar``: radius ``R ~ U(scar_radius_range_mm)``, depth ``depth (1 - d / R)`` for ``d < R``
    (cirmesh: ring ``i`` sinks by ``depth (n - i) / n``).
  - ``long_scar``: half length ``R ~ U(long_scar_length_range_mm) / 2``, half width
    ``w ~ U(long_scar_width_range_mm) / 2`` around a line through the seed at a random angle in the
    image plane (cirmesh: x or y only); depth ``depth (1 - d / R) (1 - (t / w)^2)`` where ``t`` is the
    distance from the line in the x-y plane, zero outside ``d < R, t < w``.
  - ``tissue_loss_<site>``: a volume removed at a named site (``nasal_tip``, ``left_cheek``,
    ``right_cheek``, ``forehead``, ``chin``) located from the five landmarks; radius
    ``R ~ U(tissue_loss_radius_range_mm)``, smooth bump ``depth (1 - (d / R)^2)^2``.

* ``none`` (:data:`NO_WOUND`, not in :data:`WOUND_TYPES`): no wound; the head stays complete (empty mask,
  zero depth), for datasets of complete faces (the base stage's pre-training set).

A vertex belongs to the wound (``mask``) exactly when it moves; it moves by ``depth_mm`` (at least
:data:`MIN_DEPTH_MM`, smaller displacements are dropped so the mask survives float32 and text files).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

from faceregen.face_model.linear import FIVE_POINT_NAMES, LinearFaceModel
from faceregen.mesh_io import vertex_normals

TISSUE_LOSS_SITES = ("nasal_tip", "left_cheek", "right_cheek", "forehead", "chin")
WOUND_TYPES = ("circle_scar", "long_scar") + tuple(f"tissue_loss_{site}" for site in TISSUE_LOSS_SITES)
#: The kind that leaves the head complete; accepted by :func:`make_wound`, not one of the default types.
NO_WOUND = "none"

#: Regions a wound may touch (cheeks are part of ``face``).
WOUNDABLE_REGIONS = ("face", "forehead", "nose", "lips")

#: Displacements below this are dropped: the mask is "moved by at least 1 micrometre".
MIN_DEPTH_MM = 1e-3


@dataclass(frozen=True)
class Wound:
    """An imperfect head: displaced vertices (V, 3) float32, wound ``mask`` (V,) bool, inward
    displacement ``depth_mm`` (V,) float32 (>= 0, zero exactly outside the mask), and its ``kind``."""

    vertices_mm: np.ndarray
    mask: np.ndarray
    depth_mm: np.ndarray
    kind: str


def geodesic_distance_mm(vertices_mm: np.ndarray, faces: np.ndarray, source: int, limit_mm: float) -> np.ndarray:
    """Shortest-path distance (V,) from vertex ``source`` along mesh edges (Dijkstra), ``inf`` beyond ``limit_mm``."""
    n = len(vertices_mm)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    keys = np.unique(edges[:, 0] * n + edges[:, 1])  # each undirected edge once
    first, second = keys // n, keys % n
    lengths = np.linalg.norm(vertices_mm[first] - vertices_mm[second], axis=1)
    graph = coo_matrix((lengths, (first, second)), shape=(n, n)).tocsr()
    return dijkstra(graph, directed=False, indices=source, limit=limit_mm)


def woundable_mask(
    vertices_mm: np.ndarray, model: LinearFaceModel, eye_margin_mm: float = 5.0, eye_radius_mm: float = 14.0
) -> np.ndarray:
    """Vertices (V,) a wound may move: face regions, in front of the mid-plane, outside the eye band."""
    inside = np.zeros(len(vertices_mm), dtype=bool)
    for region in WOUNDABLE_REGIONS:
        inside[model.regions[region]] = True
    z = vertices_mm[:, 2]
    inside &= z > 0.5 * (z.min() + z.max())
    eye_vertices = np.concatenate([model.regions[r] for r in ("eye_region", "left_eyeball", "right_eyeball")])
    if len(eye_vertices):
        near_eye, _ = cKDTree(vertices_mm[eye_vertices]).query(vertices_mm, distance_upper_bound=eye_margin_mm)
        inside &= ~np.isfinite(near_eye)
    eyes = model.landmarks.positions(vertices_mm, ("right_eye", "left_eye"))
    inside &= np.linalg.norm(vertices_mm[:, None, :] - eyes[None], axis=-1).min(axis=1) > eye_radius_mm
    return inside


def tissue_loss_site_mm(vertices_mm: np.ndarray, model: LinearFaceModel, site: str) -> np.ndarray:
    """A site's centre (3,) from the five landmarks (a ``chin`` landmark is used when the model has one).

    With eye centres ``e_r, e_l``, mouth corners ``m_r, m_l``, ``e = (e_r + e_l) / 2``, ``m = (m_r + m_l) / 2``:
    nasal tip = nose tip; left cheek = ``e_l + 0.4 (m_l - e_l) + 0.25 (e_l - e_r)`` (right: mirrored);
    forehead = ``e + 0.5 (e - m)``; chin = ``m + 0.55 (m - e)``.
    """
    lm = model.landmarks
    e_r, e_l, nose, m_r, m_l = lm.positions(vertices_mm, FIVE_POINT_NAMES)
    eyes, mouth = 0.5 * (e_r + e_l), 0.5 * (m_r + m_l)
    if site == "nasal_tip":
        return nose
    if site == "left_cheek":
        return e_l + 0.4 * (m_l - e_l) + 0.25 * (e_l - e_r)
    if site == "right_cheek":
        return e_r + 0.4 * (m_r - e_r) + 0.25 * (e_r - e_l)
    if site == "forehead":
        return eyes + 0.5 * (eyes - mouth)
    if site == "chin":
        return lm.positions(vertices_mm, ("chin",))[0] if "chin" in lm.names else mouth + 0.55 * (mouth - eyes)
    raise ValueError(f"unknown tissue-loss site {site!r}; expected one of {TISSUE_LOSS_SITES}")


def _uniform(rng: np.random.Generator, value_range: tuple[float, float], name: str) -> float:
    lo, hi = (float(v) for v in value_range)
    if not 0.0 < lo <= hi:
        raise ValueError(f"{name}={value_range}: expected (low, high) with 0 < low <= high")
    return float(rng.uniform(lo, hi))


def make_wound(
    vertices_mm: np.ndarray,
    faces: np.ndarray,
    model: LinearFaceModel,
    kind: str,
    rng: np.random.Generator,
    *,
    depth_range_mm: tuple[float, float] = (4.0, 12.0),
    scar_radius_range_mm: tuple[float, float] = (8.0, 20.0),
    long_scar_length_range_mm: tuple[float, float] = (30.0, 70.0),
    long_scar_width_range_mm: tuple[float, float] = (6.0, 14.0),
    tissue_loss_radius_range_mm: tuple[float, float] = (15.0, 28.0),
    max_depth_fraction: float = 0.5,
    min_normal_z: float = 0.5,
    eye_margin_mm: float = 5.0,
    eye_radius_mm: float = 14.0,
) -> Wound:
    """Carve one wound of ``kind`` (one of :data:`WOUND_TYPES`, or :data:`NO_WOUND`) into the complete head
    ``vertices_mm``.

    All randomness comes from ``rng`` (seed, size, depth, angle), in a fixed order; ``none`` draws nothing.
    """
    if kind not in WOUND_TYPES + (NO_WOUND,):
        raise ValueError(f"unknown wound type {kind!r}; expected one of {WOUND_TYPES + (NO_WOUND,)}")
    v = np.asarray(vertices_mm, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if v.shape != (model.n_vertices, 3):
        raise ValueError(f"vertices {v.shape} do not match face model {model.name!r} ({model.n_vertices}, 3)")
    if kind == NO_WOUND:
        return Wound(v.astype(np.float32), np.zeros(len(v), bool), np.zeros(len(v), np.float32), kind)
    normals = vertex_normals(v, faces)
    woundable = woundable_mask(v, model, eye_margin_mm, eye_radius_mm)
    candidates = np.flatnonzero(woundable & (normals[:, 2] > min_normal_z))  # front-facing
    if len(candidates) == 0:
        raise ValueError(f"face model {model.name!r}: no candidate vertex for a wound (check its face regions)")

    if kind.startswith("tissue_loss_"):
        site = tissue_loss_site_mm(v, model, kind.removeprefix("tissue_loss_"))
        seed = candidates[np.argmin(np.linalg.norm(v[candidates, :2] - site[:2], axis=1))]
    else:
        seed = int(rng.choice(candidates))
    depth = _uniform(rng, depth_range_mm, "depth_range_mm")
    depth = min(depth, max_depth_fraction * float(np.linalg.norm(v[seed] - v.mean(axis=0))))

    if kind == "circle_scar":
        radius = _uniform(rng, scar_radius_range_mm, "scar_radius_range_mm")
        d = geodesic_distance_mm(v, faces, seed, radius)
        profile = np.clip(1.0 - d / radius, 0.0, None)
    elif kind == "long_scar":
        half_length = 0.5 * _uniform(rng, long_scar_length_range_mm, "long_scar_length_range_mm")
        half_width = 0.5 * _uniform(rng, long_scar_width_range_mm, "long_scar_width_range_mm")
        angle = rng.uniform(0.0, np.pi)
        d = geodesic_distance_mm(v, faces, seed, half_length)
        offset = v[:, :2] - v[seed, :2]
        t = np.abs(offset[:, 1] * np.cos(angle) - offset[:, 0] * np.sin(angle))
        profile = np.clip(1.0 - d / half_length, 0.0, None) * np.clip(1.0 - (t / half_width) ** 2, 0.0, None)
    else:
        radius = _uniform(rng, tissue_loss_radius_range_mm, "tissue_loss_radius_range_mm")
        d = geodesic_distance_mm(v, faces, seed, radius)
        profile = np.clip(1.0 - (d / radius) ** 2, 0.0, None) ** 2

    depth_mm = np.where(woundable, depth * profile, 0.0)
    depth_mm[depth_mm < MIN_DEPTH_MM] = 0.0
    mask = depth_mm > 0.0
    inward = -(depth_mm[mask, None] * normals[mask]).sum(axis=0)
    inward /= np.linalg.norm(inward)
    displaced = v.copy()
    displaced[mask] += depth_mm[mask, None] * inward
    return Wound(displaced.astype(np.float32), mask, depth_mm.astype(np.float32), kind)
