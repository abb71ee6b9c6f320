"""Completion: the face model's code and pose fitted to the scan's intact surface, robustly, plus detail.

Iteratively reweighted least squares (IRLS), jointly over the rigid pose (the registration's scale stays: the
code's own size modes would trade with it, a near-degenerate direction along which the fit collapsed) and
the first ``n_components`` of the code ``z``. Each step
matches the moved scan points ``q_i`` to the nearest point ``m_i = sum_k b_ik G(z)_{f_ik}`` of the current
face's triangles (barycentric ``b_i`` on triangle ``f_i``, unit normal ``n_i``) and minimises

    sum_i w_i (r_i + J_i^pose dp - n_i^T sum_k b_ik B_{f_ik} dz)^2 + prior_weight_mm2 |z + dz - z_prior|^2,
    r_i = n_i . (q_i - m_i),

with Tukey weights ``w_i`` (zero beyond ``4.685 sigma``, for far or back-facing matches, and for points deeper
than ``wound_cutoff_mm`` inside the face: tissue loss lies inside, skin the model misses on both sides, so a
deep inward residual is wound whatever the current scale): the wound, holes and noise are outliers. Points
the caller marks ``excluded`` (in and near a detected wound) are left out. The robust scale is annealed: at
step ``t`` it is at least ``3 mm x 0.6^t`` (then the floor), so the first steps, far from the scan, still see
most of it. ``z_prior`` is the image's predicted code when given (then weighted by
``image_prior_weight_mm2``), else 0 (the model's mean: ``z ~ N(0, I)``).

Detail: the fitted face misses what the model cannot express. A per-vertex offset ``h`` along the vertex
normals,

    min_h sum_i w_i (sum_k b_ik h_{f_ik} - r_i)^2 + detail_smoothing |L h|^2 + detail_decay |h|^2,

(``L = I - D^-1 A`` the graph Laplacian of the mesh; ``w_i`` 1 for the points at most ``detail_reach_mm``
outside and ``wound_cutoff_mm`` inside the fitted face, else 0: skin the model misses, not the deeper wound)
follows the intact skin and continues smoothly (bi-Laplacian) across the wound and the scan's holes, where
there is no data; far from any data it decays to 0. Points in and near the detected wound are left out by the caller (``excluded``), so the
filling's rim meets the skin.

The mirrored scan (:func:`mirrored_scan_surface`) is the clinical baseline: the scan reflected across the
face model's mid-sagittal plane (``x = 0`` in the model frame) and registered to the scan by the same robust
ICP, so that its intact side covers the wound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from faceregen.evaluation.scan_to_mesh import Similarity
from faceregen.face_model.linear import LinearFaceModel
from faceregen.mesh_io import vertex_normals
from faceregen.restoration.registration import (
    IcpSettings,
    TriangleSurface,
    icp,
    pose_rows,
    pose_step,
    truncated_cost,
    tukey_weights,
)
from faceregen.restoration.scan import Scan


#: the robust scale's lower bound at IRLS step t: ANNEALING_START_MM * ANNEALING_RATE**t (then the floor)
ANNEALING_START_MM = 3.0
ANNEALING_RATE = 0.6


@dataclass(frozen=True)
class CompletionSettings:
    """See the module docstring. ``n_components``: at most this many (all of a smaller face model's);
    ``prior_weight_mm2`` pulls the code toward 0 (no image);
    ``image_prior_weight_mm2`` toward the image's code; ``detail_smoothing``/``detail_decay``: 0 smoothing
    switches the detail layer off; ``wound_cutoff_mm``: ``inf`` keeps the deep inward points."""

    n_components: int = 100
    iterations: int = 12
    prior_weight_mm2: float = 8.0
    image_prior_weight_mm2: float = 8.0
    detail_smoothing: float = 5.0
    detail_decay: float = 1e-3
    detail_reach_mm: float = 3.0
    wound_cutoff_mm: float = 2.0


@dataclass(frozen=True)
class Completion:
    """The completed face in the model's frame (``vertices_model_mm``: ``G(z)`` plus ``detail_mm`` along
    its normals), its ``code`` (all components; those beyond ``n_components`` are 0), the ``pose`` (scan
    mm -> model), the fit's robust scale ``sigma_mm`` and the share of points the detail layer used."""

    code: np.ndarray
    pose: Similarity
    vertices_model_mm: np.ndarray
    detail_mm: np.ndarray
    sigma_mm: float
    inlier_fraction: float

    def vertices_scan_mm(self) -> np.ndarray:
        return self.pose.inverse().apply(self.vertices_model_mm)


def _graph_laplacian(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """``L = I - D^-1 A`` of the mesh's vertex graph (random-walk Laplacian)."""
    edges = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    adjacency = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_vertices, n_vertices))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64).tocsr()
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    return (sp.identity(n_vertices) - sp.diags(1.0 / np.maximum(degree, 1.0)) @ adjacency).tocsr()


class FaceModelFit:
    """The IRLS fit of one face model (its truncated basis and Laplacian are computed once)."""

    def __init__(self, face_model: LinearFaceModel, settings: CompletionSettings = CompletionSettings(),
                 icp_settings: IcpSettings = IcpSettings()) -> None:
        if settings.n_components < 1:
            raise ValueError(f"n_components={settings.n_components}: expected at least 1")
        self.face_model, self.settings, self.icp_settings = face_model, settings, icp_settings
        self.n_components = min(settings.n_components, face_model.n_components)
        self.surface = TriangleSurface(face_model.faces, face_model.n_vertices)
        self.mean = face_model.mean_mm.astype(np.float64)
        # (3V, k): the basis as one matrix, vertex-major (row 3 v + c is vertex v's coordinate c)
        self.basis = face_model.basis_mm[:, :, : self.n_components].astype(np.float64).reshape(-1, self.n_components)
        self.bilaplacian = None
        if settings.detail_smoothing > 0:
            laplacian = _graph_laplacian(face_model.faces, face_model.n_vertices)
            self.bilaplacian = (settings.detail_smoothing * (laplacian.T @ laplacian)
                                + settings.detail_decay * sp.identity(face_model.n_vertices)).tocsc()

    def shape(self, code: np.ndarray) -> np.ndarray:
        return self.mean + (self.basis @ code).reshape(-1, 3)

    def code_rows(self, normal: np.ndarray, barycentric: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """``n_i^T sum_k b_ik B_{f_ik}`` (N, n_components): the residuals' derivative along the code, as one
        sparse (N, 3V) matrix of the weights ``b_ik n_ic`` times the basis."""
        n = len(normal)
        columns = (3 * corners[:, :, None] + np.arange(3)).reshape(n, 9)
        weights = (barycentric[:, :, None] * normal[:, None, :]).reshape(n, 9)
        spread = sp.csr_matrix((weights.ravel(), columns.ravel(), np.arange(0, 9 * n + 1, 9)),
                               shape=(n, self.basis.shape[0]))
        return spread @ self.basis

    def fit(self, points: np.ndarray, point_normals: np.ndarray, pose: Similarity, prior_code: np.ndarray | None = None,
            iterations: int | None = None, excluded: np.ndarray | None = None,
            start_code: np.ndarray | None = None) -> tuple[np.ndarray, Similarity, np.ndarray, float, float]:
        """Code (n_components,), pose, weights (N,), robust scale (mm) and truncated cost (mm^2, 5 mm) of the
        IRLS fit (module docstring) to the points not ``excluded`` (N,) bool, from ``start_code`` (default:
        the prior)."""
        k = self.n_components
        target = np.zeros(k) if prior_code is None else np.asarray(prior_code, np.float64)[:k]
        weight = self.settings.prior_weight_mm2 if prior_code is None else self.settings.image_prior_weight_mm2
        code = target.copy() if start_code is None else np.asarray(start_code, np.float64)[:k].copy()
        iterations = self.settings.iterations if iterations is None else iterations
        for step in range(iterations + 1):
            vertices = self.shape(code)
            moved = pose.apply(points)
            found = self.surface.match(moved, point_normals @ pose.rotation.T, vertices, cKDTree(vertices),
                                       self.icp_settings)
            used = found.valid & (found.residual > -self.settings.wound_cutoff_mm)
            if excluded is not None:
                used &= ~excluded
            w = np.zeros(len(points))
            floor = max(self.icp_settings.sigma_floor_mm, ANNEALING_START_MM * ANNEALING_RATE**step)
            w[used], sigma = tukey_weights(found.residual[used], floor)
            keep = w > 0
            if step == iterations or keep.sum() < 10:  # done, or nothing left to fit (a wrong orientation)
                return code, pose, w, sigma, truncated_cost(found, 5.0) if keep.sum() >= 10 else np.inf
            centre = (w[keep, None] * moved[keep]).sum(axis=0) / w[keep].sum()
            code_rows = self.code_rows(found.normal[keep], found.barycentric[keep], found.corners[keep])
            rows = np.concatenate([pose_rows(moved[keep], found.normal[keep], centre, False), -code_rows], axis=1)
            lhs = rows.T @ (w[keep, None] * rows)
            rhs = -rows.T @ (w[keep] * found.residual[keep])
            lhs[6:, 6:] += weight * np.eye(k)
            lhs[:6, :6] += 1e-6 * np.eye(6)
            rhs[6:] -= weight * (code - target)
            delta = np.linalg.solve(lhs, rhs)
            pose = pose.then(pose_step(delta[:6], centre))
            code = code + delta[6:]
        raise AssertionError("unreachable")

    def detail(self, vertices: np.ndarray, points_model: np.ndarray, point_normals_model: np.ndarray,
               excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Normal offsets ``h`` (V,) of the detail layer, the face with them (V, 3) and the share of points
        used, from the points (already in the model frame) not ``excluded`` (N,) bool."""
        found = self.surface.match(points_model, point_normals_model, vertices, cKDTree(vertices), self.icp_settings)
        w = (found.valid & ~excluded & (found.residual < self.settings.detail_reach_mm)
             & (found.residual > -self.settings.wound_cutoff_mm)).astype(np.float64)
        if self.bilaplacian is None:
            return np.zeros(len(vertices)), vertices, float(w.mean())
        n = len(vertices)
        spread = sp.coo_matrix((found.barycentric.ravel(), (np.repeat(np.arange(len(w)), 3), found.corners.ravel())),
                               shape=(len(w), n)).tocsr()
        data = spread.T @ sp.diags(w) @ spread
        # symmetric positive definite: SuperLU in symmetric mode with a minimum-degree ordering of A + A^T
        # (a third of the time of the default column ordering, same solution)
        factor = splu((self.bilaplacian + data).tocsc(), permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
        offsets = factor.solve(spread.T @ (w * found.residual))
        return offsets, vertices + offsets[:, None] * vertex_normals(vertices, self.face_model.faces), float(w.mean())

    def completion(self, code: np.ndarray, pose: Similarity, sigma_mm: float, points: np.ndarray,
                   point_normals: np.ndarray, excluded: np.ndarray) -> Completion:
        """The fitted face with its detail layer, fitted to the points not ``excluded`` (N,) bool."""
        offsets, completed, used = self.detail(self.shape(code), pose.apply(points), point_normals @ pose.rotation.T,
                                               excluded)
        full_code = np.zeros(self.face_model.n_components, np.float32)
        full_code[: len(code)] = code
        return Completion(full_code, pose, completed, offsets, sigma_mm, used)


def mirrored_scan_surface(scan: Scan, pose: Similarity, settings: IcpSettings = IcpSettings(),
                          max_points: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """The scan reflected across the model's mid-sagittal plane and registered onto the scan by robust
    ICP: ``(vertices (N, 3) in the scan's frame, mm; faces (F, 3), outward)``."""
    reflect = np.diag([-1.0, 1.0, 1.0])
    model_frame = pose.apply(scan.vertices_mm)
    mirrored = model_frame @ reflect
    faces = scan.faces[:, ::-1]
    mirrored_normals = vertex_normals(mirrored, faces)
    used = np.unique(faces)
    if len(used) > max_points:
        used = np.sort(np.random.default_rng(0).choice(used, size=max_points, replace=False))
    identity = Similarity(1.0, np.eye(3), np.zeros(3))
    fit, _, _ = icp(mirrored[used], mirrored_normals[used], model_frame, TriangleSurface(scan.faces, len(model_frame)),
                    identity, settings, settings.iterations, with_scale=False)
    return pose.inverse().apply(fit.apply(mirrored)), faces
