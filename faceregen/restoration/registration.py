"""Registration of the face model to a scan: landmarks (or a multi-start search), then robust ICP.

The pose is a similarity ``x_model = s R x_scan + t`` (:class:`~faceregen.evaluation.scan_to_mesh.Similarity`)
from the scan's frame (mm) to the face model's.

* Landmarks: a scan in the face model's topology carries the model's landmarks (fixed vertex combinations),
  so the similarity from its landmarks to the template's (Umeyama, with scale) starts the fit.
* Any other topology: the orientation is searched. The scan's and the template's principal axes (of their
  vertices) are matched in each of the 24 proper signed permutations (the cube's rotation group: principal
  axes are defined up to order and sign, and a face-only scan orders them differently from a whole head),
  the scan's centroid placed on the template's centroid and, for partial scans, on the centroid of its
  face region; each of these 48 starts runs a few ICP steps (to the nearest vertex's tangent plane) on a few
  hundred points (all starts batched, :func:`coarse_icp`), and the few best distinct orientations (lowest
  truncated residual) are refined; of those whose cost is within ``decisive_ratio`` times the best's, the
  completion picks the one its shape fits best (the best alone: it is decisive, no check). Landmarks are
  then the template's, mapped into the scan.
  This needs no photograph-like render (a grey scan seen from an unknown side gives a face detector nothing
  to find) and copes with any orientation; its basin is the ICP's, about 45 degrees around each of the 24
  starts, which tile the rotations.
* ICP, point-to-plane (Chen and Medioni): scan points ``p_i`` (moved by the current pose to ``q_i``) are
  matched to the nearest point ``m_i`` of the template's triangles (searched among the triangles around the
  nearest vertex, :class:`TriangleSurface`), with the triangle's unit normal ``n_i``; residual ``r_i = n_i .
  (q_i - m_i)``: exact for a scan denser than the model, whose points lie between the model's vertices. Linearising a small rotation ``w``, translation ``d`` and relative scale ``e`` about the centroid
  ``c`` of the points, ``r_i + ((q_i - c) x n_i) . w + n_i . d + (n_i . (q_i - c)) e``, weighted least
  squares gives the step. Weights are Tukey's biweight ``(1 - (r / k)^2)^2`` for ``|r| < k = 4.685 sigma``,
  ``sigma = max(1.4826 MAD(r), sigma_floor_mm)``, and zero for matches farther than ``max_match_mm`` or whose
  normals disagree (``n_p . n_i < min_normal_dot``): the wound, holes, noise and the part of the template
  the scan does not cover drop out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from faceregen.evaluation.scan_to_mesh import Similarity, umeyama
from faceregen.face_model.linear import LinearFaceModel
from faceregen.mesh_io import vertex_normals
from faceregen.restoration.scan import Scan

#: Tukey's biweight constant (95 % efficiency under Gaussian noise)
TUKEY_K = 4.685
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class IcpSettings:
    """``max_match_mm``: farther matches are ignored; ``min_normal_dot``: matches whose normals disagree
    more are ignored; ``sigma_floor_mm``: the robust scale never drops below (the scan's noise level);
    ``iterations`` of the final refinement; ``coarse_iterations`` and ``coarse_points`` per start of the
    search; ``min_overlap``: the least share of the scan that must match the model after registration;
    ``with_scale``: also fit a scale (off by default: a scan's units are known, so its scale is 1, and a
    scale fitted against the mean head only absorbs the patient's head size, which the code should carry);
    ``decisive_ratio``: the orientations whose truncated cost in the search is at least this many times the
    best's are dropped before the shape check; the best alone is taken unchecked (``inf``: check all)."""

    max_match_mm: float = 20.0
    min_normal_dot: float = 0.3
    sigma_floor_mm: float = 0.3
    iterations: int = 15
    coarse_iterations: int = 8
    coarse_points: int = 300
    min_overlap: float = 0.3
    with_scale: bool = False
    decisive_ratio: float = 2.0


@dataclass(frozen=True)
class Registration:
    """The pose (scan mm -> face-model frame), how it was found, the model's landmarks in the scan's frame,
    and the final match: the share of scan points with a nonzero weight and their weighted RMS residual."""

    pose: Similarity
    method: str
    landmarks_scan_mm: np.ndarray
    overlap: float
    rms_mm: float

    def to_dict(self) -> dict:
        return {"method": self.method, "pose_scan_to_model": self.pose.to_dict(),
                "landmarks_scan_mm": self.landmarks_scan_mm.round(3).tolist(),
                "overlap": round(self.overlap, 4), "rms_mm": round(self.rms_mm, 4)}


def _medians(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The median of the ``valid`` entries along the last axis (..., N) -> (...), as :func:`numpy.median`;
    0 where there are none."""
    if values.shape[-1] == 0:
        return np.zeros(values.shape[:-1])
    ordered = np.sort(np.where(valid, values, np.inf), axis=-1)  # the valid ones first
    count = valid.sum(axis=-1, keepdims=True)
    low = np.take_along_axis(ordered, np.maximum(count - 1, 0) // 2, axis=-1)
    high = np.take_along_axis(ordered, np.maximum(count, 1) // 2, axis=-1)
    return np.where(count > 0, 0.5 * (low + high), 0.0)[..., 0]


def tukey_weights(residuals_mm: np.ndarray, sigma_floor_mm: float,
                  valid: np.ndarray | None = None) -> tuple[np.ndarray, float | np.ndarray]:
    """Tukey biweights of residuals (N,) and the robust scale ``sigma`` they used (module docstring); for
    rows of residuals (S, N) with their ``valid`` mask, each row's weights (0 where not valid) and scale (S,)."""
    r = np.asarray(residuals_mm, dtype=np.float64)
    valid = np.ones(r.shape, dtype=bool) if valid is None else valid
    centred = r - _medians(r, valid)[..., None]
    sigma = np.maximum(MAD_TO_SIGMA * _medians(np.abs(centred), valid), sigma_floor_mm)
    u = r / (TUKEY_K * sigma[..., None])
    weights = np.where(valid & (np.abs(u) < 1.0), (1.0 - u**2) ** 2, 0.0)
    return weights, (float(sigma) if r.ndim == 1 else sigma)


def rotation_from_vector(w: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation (3, 3) by angle ``|w|`` about ``w / |w|``."""
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(w) / angle
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1.0 - np.cos(angle)) * cross @ cross


def pose_rows(moved: np.ndarray, normals: np.ndarray, centre: np.ndarray, with_scale: bool) -> np.ndarray:
    """Jacobian rows (N, 6 or 7) of the point-to-plane residual w.r.t. (rotation, translation[, scale])."""
    arm = moved - centre
    rows = [np.cross(arm, normals), normals]
    if with_scale:
        rows.append(np.einsum("nc,nc->n", normals, arm)[:, None])
    return np.concatenate(rows, axis=1)


def pose_step(step: np.ndarray, centre: np.ndarray) -> Similarity:
    """The similarity ``x -> c + (1 + e) R(w) (x - c) + d`` of a step ``(w, d[, e])``."""
    scale = 1.0 + (float(step[6]) if len(step) > 6 else 0.0)
    rotation = rotation_from_vector(step[:3])
    return Similarity(scale, rotation, centre + step[3:6] - scale * rotation @ centre)


def closest_on_triangles(corners: np.ndarray, points: np.ndarray,
                         barycentric: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The squared distance (M,) from each point (M, 3) to its triangle ``corners`` (M, 3, 3), and (when
    ``barycentric``) the barycentric coordinates (M, 3) of the triangle's nearest point.

    With ``e = b - a``, ``f = c - a``, ``p' = p - a``: the projection onto the triangle's plane, ``a + v e +
    w f`` with ``(v, w)`` solving the 2x2 normal equations, when ``1 - v - w``, ``v`` and ``w`` are all >= 0;
    else (a triangle is convex) the nearest of the three edges' clamped projections, at squared distance
    ``|p'|^2 - 2 t (p' . e) + t^2 |e|^2``, ``t = clip((p' . e) / |e|^2, 0, 1)`` on edge ``ab`` (likewise ``ac``,
    ``bc``). A degenerate triangle has no inside and falls to its edges.
    """
    a = corners[:, 0]
    ab, ac, ap = corners[:, 1] - a, corners[:, 2] - a, points - a
    bc, bp = ac - ab, ap - ab

    def dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.einsum("mc,mc->m", x, y)

    d00, d01, d11, d20, d21, app = dot(ab, ab), dot(ab, ac), dot(ac, ac), dot(ap, ab), dot(ap, ac), dot(ap, ap)
    d_bc, d_bp, bpp = dot(bc, bc), dot(bp, bc), dot(bp, bp)
    tiny = 1e-30
    determinant = d00 * d11 - d01 * d01
    safe = np.where(determinant > tiny * np.maximum(d00 * d11, tiny), determinant, np.inf)
    v, w = (d11 * d20 - d01 * d21) / safe, (d00 * d21 - d01 * d20) / safe
    inside = (v >= 0) & (w >= 0) & (v + w <= 1) & np.isfinite(safe)
    t_ab = np.clip(d20 / np.maximum(d00, tiny), 0.0, 1.0)
    t_ac = np.clip(d21 / np.maximum(d11, tiny), 0.0, 1.0)
    t_bc = np.clip(d_bp / np.maximum(d_bc, tiny), 0.0, 1.0)
    on_ab = app - t_ab * (2 * d20 - t_ab * d00)
    on_ac = app - t_ac * (2 * d21 - t_ac * d11)
    on_bc = bpp - t_bc * (2 * d_bp - t_bc * d_bc)
    squared = np.minimum(np.minimum(on_ab, on_ac), on_bc)
    plane = app - v * (2 * d20 - v * d00) - w * (2 * d21 - w * d11) + 2 * v * w * d01
    squared = np.maximum(np.where(inside, plane, squared), 0.0)
    if not barycentric:
        return squared, None
    # the region of the nearest point: inside, else the first nearest edge (ab, then ac, then bc)
    edge_ab = ~inside & (on_ab <= on_ac) & (on_ab <= on_bc)
    edge_ac = ~inside & ~edge_ab & (on_ac <= on_bc)
    edge_bc = ~inside & ~edge_ab & ~edge_ac
    coordinates = np.stack([1 - v - w, v, w], axis=1)
    coordinates[edge_ab] = np.stack([1 - t_ab, t_ab, np.zeros_like(t_ab)], axis=1)[edge_ab]
    coordinates[edge_ac] = np.stack([1 - t_ac, np.zeros_like(t_ac), t_ac], axis=1)[edge_ac]
    coordinates[edge_bc] = np.stack([np.zeros_like(t_bc), 1 - t_bc, t_bc], axis=1)[edge_bc]
    return squared, coordinates


@dataclass
class Matches:
    """Scan points matched to a triangle surface: the triangle's ``corners`` (N, 3) vertex indices, the
    ``barycentric`` (N, 3) coordinates of the nearest point ``closest`` (N, 3) on it, its unit ``normal``
    (N, 3), the point-to-plane ``residual`` (N,) in mm and ``valid`` (N,): within reach, normals agreeing."""

    corners: np.ndarray
    barycentric: np.ndarray
    closest: np.ndarray
    normal: np.ndarray
    residual: np.ndarray
    valid: np.ndarray


class TriangleSurface:
    """A triangle mesh's connectivity for nearest-point queries: every vertex's ring of triangles.

    The nearest point of the surface is searched on the triangles around the nearest vertex (exact unless
    a farther vertex's triangle comes closer, which needs badly shaped triangles)."""

    def __init__(self, faces: np.ndarray, n_vertices: int) -> None:
        self.faces = np.asarray(faces, dtype=np.int64)
        flat = self.faces.ravel()
        order = np.argsort(flat, kind="stable")
        vertex, face = flat[order], order // 3
        counts = np.bincount(vertex, minlength=n_vertices)
        slot = np.arange(len(order)) - np.r_[0, np.cumsum(counts)[:-1]][vertex]
        ring = np.full((n_vertices, max(int(counts.max()), 1)), -1, dtype=np.int64)
        ring[vertex, slot] = face
        self.ring, self.in_ring = np.maximum(ring, 0), ring >= 0
        self.in_ring[:, 0] = True  # a vertex in no triangle (unreferenced) has triangle 0 as its one candidate

    def match(self, moved: np.ndarray, moved_normals: np.ndarray, vertices: np.ndarray, tree: cKDTree,
              settings: IcpSettings) -> Matches:
        """Nearest surface point of each moved scan point, its point-to-plane residual and validity."""
        n = len(moved)
        _, nearest = tree.query(moved)
        candidates, in_ring = self.ring[nearest], self.in_ring[nearest]
        owner, _ = np.nonzero(in_ring)  # one (point, triangle) pair per real ring entry, no padding
        face_corners = vertices[self.faces]
        distance = np.full(in_ring.shape, np.inf)
        distance[in_ring] = closest_on_triangles(face_corners[candidates[in_ring]], moved[owner], barycentric=False)[0]
        rows = np.arange(n)
        face = candidates[rows, distance.argmin(axis=1)]
        triangle = face_corners[face]
        barycentric = closest_on_triangles(triangle, moved)[1]
        closest = np.einsum("nk,nkc->nc", barycentric, triangle)
        normal = np.cross(triangle[:, 1] - triangle[:, 0], triangle[:, 2] - triangle[:, 0])
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        offset = moved - closest
        valid = (np.linalg.norm(offset, axis=1) < settings.max_match_mm) & (
            np.einsum("nc,nc->n", normal, moved_normals) > settings.min_normal_dot)
        return Matches(self.faces[face], barycentric, closest, normal,
                       np.einsum("nc,nc->n", normal, offset), valid)


def icp(points: np.ndarray, point_normals: np.ndarray, vertices: np.ndarray, surface: TriangleSurface,
        pose: Similarity, settings: IcpSettings, iterations: int, with_scale: bool = True,
        tree: cKDTree | None = None) -> tuple[Similarity, Matches, np.ndarray]:
    """Robust point-to-plane ICP of scan points (unit normals) onto a triangle surface.

    Returns the refined pose, the final matches and their weights (N,).
    """
    tree = cKDTree(vertices) if tree is None else tree
    for step in range(iterations + 1):
        moved = pose.apply(points)
        found = surface.match(moved, point_normals @ pose.rotation.T, vertices, tree, settings)
        w = np.zeros(len(points))
        w[found.valid] = tukey_weights(found.residual[found.valid], settings.sigma_floor_mm)[0]
        if step == iterations or w.sum() <= 0:
            return pose, found, w
        centre = (w[:, None] * moved).sum(axis=0) / w.sum()
        rows = pose_rows(moved, found.normal, centre, with_scale)
        lhs = rows.T @ (w[:, None] * rows) + 1e-6 * np.eye(rows.shape[1])
        pose = pose.then(pose_step(np.linalg.solve(lhs, -rows.T @ (w * found.residual)), centre))
    raise AssertionError("unreachable")


def least_cost_until_decisive(costs: Iterable[float], accept_mm2: float, decisive_ratio: float) -> tuple[int, int]:
    """``(index of the least cost, how many costs were drawn)``: ``costs`` (e.g. short fits, made lazily) are
    drawn in order until the least so far is under ``accept_mm2`` and the next least so far is at least
    ``decisive_ratio`` times it, or they run out. A near-symmetric head, whose orientations all fit about
    equally well, never stops early; ties go to the first."""
    drawn: list[float] = []
    for cost in costs:
        drawn.append(float(cost))
        least, runner_up = np.partition(drawn, 1)[:2] if len(drawn) > 1 else (drawn[0], np.nan)
        if least < accept_mm2 and runner_up >= decisive_ratio * least:
            break
    return int(np.argmin(drawn)), len(drawn)


def truncated_cost(found: Matches, truncation_mm: float) -> float:
    """Mean of ``min(|r|, tau)^2`` over all points, unmatched ones counted as ``tau^2``."""
    r = np.where(found.valid, np.minimum(np.abs(found.residual), truncation_mm), truncation_mm)
    return float(np.mean(r**2))


def principal_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (3,) and principal axes as rows (3, 3), largest variance first, right-handed."""
    centroid = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centroid, full_matrices=False)
    if np.linalg.det(vt) < 0:
        vt[2] *= -1
    return centroid, vt


#: the 24 proper signed permutation matrices (rotations of the cube)
CUBE_ROTATIONS = tuple(
    m for perm in itertools.permutations(range(3)) for signs in itertools.product((1.0, -1.0), repeat=3)
    if np.linalg.det(m := np.eye(3)[list(perm)] * np.array(signs)[:, None]) > 0
)


def coarse_icp(points: np.ndarray, point_normals: np.ndarray, vertices: np.ndarray, normals: np.ndarray,
               starts: list[Similarity], settings: IcpSettings, tree: cKDTree) -> list[tuple[float, Similarity]]:
    """The search's cheap ICP: :func:`icp`'s steps with each point matched to the nearest vertex's tangent
    plane (its unit ``normals`` (V, 3)) instead of the nearest triangle, from every start at once
    (``settings.coarse_iterations`` steps; one tree query and one batched solve per step for all starts):
    each start's truncated cost (5 mm, :func:`truncated_cost`) and refined pose."""
    poses = list(starts)
    active = np.ones(len(poses), dtype=bool)
    for step in range(settings.coarse_iterations + 1):
        rotation = np.stack([pose.rotation for pose in poses])
        moved = (np.array([pose.scale for pose in poses])[:, None, None] * np.einsum("sij,nj->sni", rotation, points)
                 + np.stack([pose.translation for pose in poses])[:, None])
        # points beyond max_match_mm are unmatched anyway: the bound spares the tree the far ones (a wrong
        # orientation's), which it otherwise searches long
        distance, nearest = tree.query(moved.reshape(-1, 3), distance_upper_bound=settings.max_match_mm)
        distance = distance.reshape(moved.shape[:2])
        nearest = np.minimum(nearest, len(vertices) - 1).reshape(moved.shape[:2])
        normal = normals[nearest]
        valid = (distance < settings.max_match_mm) & (
            np.einsum("sni,sic,nc->sn", normal, rotation, point_normals) > settings.min_normal_dot)
        residual = np.einsum("snc,snc->sn", normal, moved - vertices[nearest])
        w = tukey_weights(residual, settings.sigma_floor_mm, valid)[0]
        active &= w.sum(axis=1) > 0
        if step == settings.coarse_iterations or not active.any():
            break
        centre = (w[active, :, None] * moved[active]).sum(axis=1) / w[active].sum(axis=1)[:, None]
        arm = moved[active] - centre[:, None]
        rows = [np.cross(arm, normal[active]), normal[active]]
        if settings.with_scale:
            rows.append(np.einsum("snc,snc->sn", normal[active], arm)[..., None])
        rows = np.concatenate(rows, axis=2)
        lhs = np.einsum("snk,sn,snl->skl", rows, w[active], rows) + 1e-6 * np.eye(rows.shape[2])
        steps = np.linalg.solve(lhs, -np.einsum("snk,sn->sk", rows, w[active] * residual[active])[..., None])[..., 0]
        for index, delta, point in zip(np.flatnonzero(active), steps, centre):
            poses[index] = poses[index].then(pose_step(delta, point))
    cost = np.where(valid, np.minimum(np.abs(residual), 5.0), 5.0) ** 2
    return list(zip(cost.mean(axis=1).tolist(), poses))


def search_poses(points: np.ndarray, point_normals: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                 anchors: np.ndarray, settings: IcpSettings, tree: cKDTree,
                 n_best: int) -> list[tuple[float, Similarity]]:
    """The multi-start search of the module docstring: the ``n_best`` lowest-cost (truncated cost, pose) of 24
    orientations x ``anchors`` starts whose rotations differ by more than 30 degrees, best first."""
    rng = np.random.default_rng(0)
    pick = rng.choice(len(points), size=min(settings.coarse_points, len(points)), replace=False)
    sub, sub_normals = points[pick], point_normals[pick]
    scan_centroid, scan_axes = principal_axes(points)
    _, model_axes = principal_axes(vertices)
    starts = [Similarity(1.0, rotation, anchor - rotation @ scan_centroid)
              for rotation in (model_axes.T @ cube @ scan_axes for cube in CUBE_ROTATIONS) for anchor in anchors]
    found = coarse_icp(sub, sub_normals, vertices, vertex_normals(vertices, faces), starts, settings, tree)
    chosen: list[tuple[float, Similarity]] = []
    distinct = 1.0 + 2.0 * np.cos(np.radians(30.0))  # the trace of a rotation by 30 degrees
    for cost, pose in sorted(found, key=lambda item: item[0]):
        if all(np.trace(pose.rotation @ other.rotation.T) < distinct for _, other in chosen):
            chosen.append((cost, pose))
        if len(chosen) == n_best:
            break
    return chosen


def scan_samples(scan: Scan, max_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``max_points`` of the scan's used vertices (a fixed random subset): (index, points, unit normals)."""
    used = np.unique(scan.faces)
    if len(used) > max_points:
        used = np.sort(np.random.default_rng(0).choice(used, size=max_points, replace=False))
    normals = vertex_normals(scan.vertices_mm, scan.faces)
    return used, scan.vertices_mm[used], normals[used]


def template_anchors(face_model: LinearFaceModel, vertices: np.ndarray) -> np.ndarray:
    """Where the search places the scan's centroid: the template's vertex centroid and its face region's."""
    face = face_model.regions["face"]
    return np.stack([vertices.mean(axis=0)] + ([vertices[face].mean(axis=0)] if len(face) else []))


def register(scan: Scan, face_model: LinearFaceModel, template_mm: np.ndarray | None = None,
             settings: IcpSettings = IcpSettings(), max_points: int = 4000, n_hypotheses: int = 1,
             choose: Callable[[list[Similarity]], int] | None = None) -> Registration:
    """Register the face model's template (default its mean, else e.g. the image's prediction) to the scan.

    For another topology the search keeps its ``n_hypotheses`` best distinct orientations and ``choose``
    (default: the search's best) picks one, e.g. by a short fit of the shape: a near-symmetric head fits a
    wrong orientation well with the mean shape. Only the orientations within ``settings.decisive_ratio`` of
    the best's cost go to ``choose``; the best alone skips it. The chosen start is refined by ICP.

    Raises:
        ValueError: naming the scan, when less than ``settings.min_overlap`` of it matches the template after
            registration (not a face, or no overlap with the model).
    """
    template = np.asarray(face_model.mean_mm if template_mm is None else template_mm, dtype=np.float64)
    surface = TriangleSurface(face_model.faces, face_model.n_vertices)
    tree = cKDTree(template)
    _, points, point_normals = scan_samples(scan, max_points)
    if scan.has_topology_of(face_model):
        scan_landmarks = face_model.landmarks.positions(scan.vertices_mm)
        start = umeyama(scan_landmarks, face_model.landmarks.positions(template), with_scale=settings.with_scale)
        method = "face-model landmarks + ICP"
    else:
        starts = search_poses(points, point_normals, template, face_model.faces, template_anchors(face_model, template),
                              settings, tree, n_hypotheses)
        candidates = [pose for cost, pose in starts if cost < settings.decisive_ratio * starts[0][0]] or [starts[0][1]]
        if len(candidates) == 1 or choose is None:
            start, checked = candidates[0], "best taken, decisive"
        else:
            chosen = choose(candidates)
            start, checked = candidates[chosen], f"{len(candidates)} near the best, number {chosen + 1} chosen by a short fit"
        method = f"multi-start ICP ({len(CUBE_ROTATIONS)} orientations, {len(starts)} kept, {checked}) + ICP"
    pose, found, weights = icp(points, point_normals, template, surface, start, settings, settings.iterations,
                               with_scale=settings.with_scale, tree=tree)
    overlap = float((weights > 0).mean())
    if overlap < settings.min_overlap:
        raise ValueError(
            f"{scan.name}: after registration only {100 * overlap:.0f}% of the scan lies on the face model "
            f"(at least {100 * settings.min_overlap:.0f}% needed): not a face, or no overlap with the model"
        )
    rms = float(np.sqrt((weights * found.residual**2).sum() / weights.sum()))
    if not scan.has_topology_of(face_model):
        scan_landmarks = pose.inverse().apply(face_model.landmarks.positions(template))
    return Registration(pose, method, scan_landmarks, overlap, rms)
