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
deep inward residual is wound whatever the current scale): the wound, holes and noise are outliers. The
robust scale is annealed: at step ``t`` it is at least ``3 mm x 0.6^t`` (then the floor), so the first
steps, far from the scan, still see most of it. ``z_prior`` is the image's predicted code when given (then
weighted by ``image_prior_weight_mm2``), else 0 (the model's mean: ``z ~ N(0, I)``).

Detail: the fitted face misses what the model cannot express. A per-vertex offset ``h`` along the vertex
normals,

    min_h sum_i w_i (sum_k b_ik h_{f_ik} - r_i)^2 + detail_smoothing |L h|^2 + detail_decay |h|^2,

(``L = I - D^-1 A`` the graph Laplacian of the mesh; ``w_i`` 1 for the points at most ``detail_reach_mm``
outside and ``wound_cutoff_mm`` inside the fitted face, else 0: skin the model misses, not the deeper wound)
follows the intact skin and continues smoothly (bi-Laplacian) across the wound and the scan's holes, where
there is no data; far from any data it decays to 0.

Refit (:meth:`FaceModelFit.refit`, once the wound is known): pose, code and detail together, without the
points the caller marks ``excluded`` (in and near the wound, so the filling's rim meets the skin), over the
code's first ``refit_n_components`` (200 by default, twice the first fit's ``n_components``: measured below,
more accurate):

    min_{dp, dz, h} sum_i w_i (r_i + J_i^pose dp - n_i^T sum_k b_ik B_{f_ik} dz - sum_k b_ik h_{f_ik})^2
                    + refit_prior_weight_mm2 |z + dz - z_prior|^2 + refit_detail_smoothing |L h|^2
                    + detail_decay |h|^2,

``w_i`` Tukey weights of the residuals left after the detail (at the scale's floor, among the points the
detail layer may follow). Fitted one after the other, the code takes up the skin it cannot express as noise:
the first fit's strong prior pull (8 mm^2, the variance of that correlated residual) is what keeps it from
bending the face toward the skin's bumps, and the same pull holds it back across the wound. Fitted together,
the detail takes up the skin, the residual left is the scan's own noise, and the code's prior pull is about
that noise's variance (0.03 mm^2, a residual of ~0.17 mm; session 10 chose 0.1 for 100 components, and with
200 a weaker pull fits the wound better: measured below). The detail is eliminated by its Schur complement: with ``S`` the points'
barycentric spread (N, V), ``W`` the weights, ``R`` the rows of ``(dp, dz)`` and
``D = refit_detail_smoothing L^T L + detail_decay I + S^T W S``, ``h = D^-1 S^T W (r + R d)`` and ``d`` solves
``(R^T W R - R^T W S D^-1 S^T W R + prior) d = -R^T W r + R^T W S D^-1 S^T W r - prior term``: one sparse
factorisation a step, and ``7 + k`` solves at the refit's first step only: the later steps keep its reduced
matrix (the left-hand side above) and solve it with their own right-hand side (a chord step: two solves), for
the same fixed point. On 56 validation scans with the generator's wound mask given, the
wound-region RMSE is 0.40 mm against 0.51 fitted one after the other (fillings within 10% of the true volume:
70% against 55%). Refitting 200 components instead of the first fit's 100 (detected wounds, the same scans):
wound RMSE 0.57 mm against 0.60, wound IoU 0.73 against 0.70, the share within 10% unchanged; 200 in the
first fit too gave the same (0.56 mm, 0.73), 300 in both no more (0.57 mm, 0.73). With the ``7 + k`` solves
at every step, 200 took 1.5-2.0 s a case on one core (max 2.5 s); with the chord steps 1.3-1.7 s (max 1.9 s;
100: 1.2-1.4 s), and on the 180 test scans the same restorations as the exact steps (paired, 95% intervals:
wound RMSE -0.001 mm [-0.004, +0.001], IoU -0.002 [-0.004, +0.000]). The pull, with 200 components (wound
mask given, wound RMSE; 56 validation scans): 1 mm^2 0.47 mm, 0.1 0.36, 0.03 0.33, 0.01 0.32, 0.003 0.35.
0.03 against 0.1, paired over 180 scans (95% intervals): validation, detected, RMSE -0.013 mm [-0.023,
-0.004], IoU +0.008 [+0.001, +0.015]; test, mask given, fillings within 10% of the true volume +4.4 points
[+0.6, +8.3] (72% -> 77%); test, detected, and with 0.2 mm of scan noise, no significant change.

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
    """See the module docstring. ``n_components``, ``refit_n_components``: the code's components fitted by the
    first fit and by the refits, at most this many (all of a smaller face model's);
    ``prior_weight_mm2`` pulls the code toward 0 (no image) in the first fit, ``image_prior_weight_mm2``
    toward the image's code; ``refit_prior_weight_mm2`` toward either in the refits with the detail layer;
    ``detail_smoothing``/``detail_decay``: the first fit's detail layer, ``refit_detail_smoothing`` the
    refits' (0 switches a layer off; the refits then fit code and pose with the first fit's prior weights);
    ``wound_cutoff_mm``: ``inf`` keeps the deep inward points."""

    n_components: int = 100
    refit_n_components: int = 200
    iterations: int = 12
    prior_weight_mm2: float = 8.0
    image_prior_weight_mm2: float = 8.0
    detail_smoothing: float = 5.0
    refit_detail_smoothing: float = 1.0
    detail_decay: float = 1e-3
    detail_reach_mm: float = 3.0
    wound_cutoff_mm: float = 2.0
    refit_prior_weight_mm2: float = 0.03


@dataclass(frozen=True)
class Completion:
    """The completed face in the model's frame (``vertices_model_mm``: ``G(z)`` plus ``detail_mm`` along
    its normals), its ``code`` (all components; those beyond the fitted ones are 0), the ``pose`` (scan
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
        for name in ("n_components", "refit_n_components"):
            if getattr(settings, name) < 1:
                raise ValueError(f"{name}={getattr(settings, name)}: expected at least 1")
        self.face_model, self.settings, self.icp_settings = face_model, settings, icp_settings
        #: the code's components fitted by the first fit and by the refits
        self.n_components = min(settings.n_components, face_model.n_components)
        self.refit_n_components = min(settings.refit_n_components, face_model.n_components)
        k = max(self.n_components, self.refit_n_components)
        self.surface = TriangleSurface(face_model.faces, face_model.n_vertices)
        self.mean = face_model.mean_mm.astype(np.float64)
        # (3V, k): the basis as one matrix, vertex-major (row 3 v + c is vertex v's coordinate c)
        self.basis = face_model.basis_mm[:, :, :k].astype(np.float64).reshape(-1, k)
        laplacian = _graph_laplacian(face_model.faces, face_model.n_vertices)
        #: ``smoothing L^T L + detail_decay I`` of the first fit's detail layer and of the refits' (None: off)
        self.bilaplacian, self.refit_bilaplacian = (
            (smoothing * (laplacian.T @ laplacian) + settings.detail_decay * sp.identity(face_model.n_vertices)).tocsc()
            if smoothing > 0 else None for smoothing in (settings.detail_smoothing, settings.refit_detail_smoothing))

    def shape(self, code: np.ndarray) -> np.ndarray:
        """``G(z)`` (V, 3) of the code's first ``len(code)`` components."""
        return self.mean + (self.basis[:, : len(code)] @ code).reshape(-1, 3)

    def code_rows(self, normal: np.ndarray, barycentric: np.ndarray, corners: np.ndarray, k: int) -> np.ndarray:
        """``n_i^T sum_k b_ik B_{f_ik}`` (N, k): the residuals' derivative along the code's first ``k``
        components, as one sparse (N, 3V) matrix of the weights ``b_ik n_ic`` times the basis."""
        n = len(normal)
        columns = (3 * corners[:, :, None] + np.arange(3)).reshape(n, 9)
        weights = (barycentric[:, :, None] * normal[:, None, :]).reshape(n, 9)
        spread = sp.csr_matrix((weights.ravel(), columns.ravel(), np.arange(0, 9 * n + 1, 9)),
                               shape=(n, self.basis.shape[0]))
        return spread @ self.basis[:, :k]

    def _prior(self, prior_code: np.ndarray | None, refit: bool) -> tuple[np.ndarray, float]:
        """The code's prior mean (0, or the image's code) and its weight (mm^2) in the first fit or a refit."""
        settings = self.settings
        k = self.refit_n_components if refit else self.n_components
        if refit and self.refit_bilaplacian is not None:
            weight = settings.refit_prior_weight_mm2
        else:
            weight = settings.prior_weight_mm2 if prior_code is None else settings.image_prior_weight_mm2
        return (np.zeros(k) if prior_code is None else np.asarray(prior_code, np.float64)[:k]), weight

    def _normal_equations(self, moved: np.ndarray, found, w: np.ndarray, code: np.ndarray, target: np.ndarray,
                          weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(lhs, rhs, rows, centre)`` of one step over (pose, code) with the weights ``w`` (N,): ``rows``
        (N, 6 + k) the residuals' derivatives (zero where ``w`` is), the prior's terms included."""
        keep = w > 0
        centre = (w[keep, None] * moved[keep]).sum(axis=0) / w[keep].sum()
        k = len(code)
        rows = np.zeros((len(w), 6 + k))
        rows[keep] = np.concatenate([pose_rows(moved[keep], found.normal[keep], centre, False),
                                     -self.code_rows(found.normal[keep], found.barycentric[keep], found.corners[keep], k)],
                                    axis=1)
        lhs = rows.T @ (w[:, None] * rows)
        rhs = -rows.T @ (w * found.residual)
        lhs[6:, 6:] += weight * np.eye(k)
        lhs[:6, :6] += 1e-6 * np.eye(6)
        rhs[6:] -= weight * (code - target)
        return lhs, rhs, rows, centre

    def fit(self, points: np.ndarray, point_normals: np.ndarray, pose: Similarity, prior_code: np.ndarray | None = None,
            iterations: int | None = None) -> tuple[np.ndarray, Similarity, np.ndarray, float, float]:
        """Code (n_components,), pose, weights (N,), robust scale (mm) and truncated cost (mm^2, 5 mm) of the
        IRLS fit (module docstring) from the prior's code."""
        target, weight = self._prior(prior_code, refit=False)
        code = target.copy()
        iterations = self.settings.iterations if iterations is None else iterations
        for step in range(iterations + 1):
            vertices = self.shape(code)
            moved = pose.apply(points)
            found = self.surface.match(moved, point_normals @ pose.rotation.T, vertices, cKDTree(vertices),
                                       self.icp_settings)
            used = found.valid & (found.residual > -self.settings.wound_cutoff_mm)
            w = np.zeros(len(points))
            floor = max(self.icp_settings.sigma_floor_mm, ANNEALING_START_MM * ANNEALING_RATE**step)
            w[used], sigma = tukey_weights(found.residual[used], floor)
            keep = w > 0
            if step == iterations or keep.sum() < 10:  # done, or nothing left to fit (a wrong orientation)
                return code, pose, w, sigma, truncated_cost(found, 5.0) if keep.sum() >= 10 else np.inf
            lhs, rhs, _, centre = self._normal_equations(moved, found, w, code, target, weight)
            delta = np.linalg.solve(lhs, rhs)
            pose = pose.then(pose_step(delta[:6], centre))
            code = code + delta[6:]
        raise AssertionError("unreachable")

    @staticmethod
    def _detail_factor(bilaplacian: sp.csc_matrix, spread: sp.csr_matrix, w: np.ndarray):
        """The factorised ``bilaplacian + S^T W S`` (symmetric positive definite: SuperLU in symmetric mode
        with a minimum-degree ordering of A + A^T, a third of the time of the default column ordering, same
        solution)."""
        return splu((bilaplacian + spread.T @ sp.diags(w) @ spread).tocsc(), permc_spec="MMD_AT_PLUS_A",
                    options={"SymmetricMode": True})

    def _spread(self, found, n_points: int) -> sp.csr_matrix:
        """``S`` (N, V): each point's barycentric weights on its triangle's corners."""
        return sp.csr_matrix((found.barycentric.ravel(), (np.repeat(np.arange(n_points), 3), found.corners.ravel())),
                             shape=(n_points, self.face_model.n_vertices))

    def _with_detail(self, code: np.ndarray, pose: Similarity, offsets: np.ndarray, sigma_mm: float,
                     used: float) -> Completion:
        vertices = self.shape(code)
        full_code = np.zeros(self.face_model.n_components, np.float32)
        full_code[: len(code)] = code
        completed = vertices + offsets[:, None] * vertex_normals(vertices, self.face_model.faces)
        return Completion(full_code, pose, completed, offsets, sigma_mm, used)

    def completion(self, code: np.ndarray, pose: Similarity, sigma_mm: float, points: np.ndarray,
                   point_normals: np.ndarray) -> Completion:
        """The first fit's face with its detail layer fitted to every point afterwards (module docstring)."""
        found = self.surface.match(pose.apply(points), point_normals @ pose.rotation.T, self.shape(code),
                                   cKDTree(self.shape(code)), self.icp_settings)
        w = (found.valid & (found.residual < self.settings.detail_reach_mm)
             & (found.residual > -self.settings.wound_cutoff_mm)).astype(np.float64)
        offsets = np.zeros(self.face_model.n_vertices)
        if self.bilaplacian is not None:
            spread = self._spread(found, len(points))
            offsets = self._detail_factor(self.bilaplacian, spread, w).solve(spread.T @ (w * found.residual))
        return self._with_detail(code, pose, offsets, sigma_mm, float(w.mean()))

    def refit(self, points: np.ndarray, point_normals: np.ndarray, completion: Completion,
              prior_code: np.ndarray | None, iterations: int, excluded: np.ndarray) -> Completion:
        """``iterations`` IRLS steps of code, pose and detail together (module docstring, "Refit") from
        ``completion``'s, without the points ``excluded`` (N,) bool; without a detail layer, of code and pose."""
        target, weight = self._prior(prior_code, refit=True)
        code, pose = np.asarray(completion.code, np.float64)[: self.refit_n_components].copy(), completion.pose
        offsets = np.zeros(self.face_model.n_vertices)
        reduced_lhs = None  # the first step's (pose, code) system with the detail eliminated, kept for the later steps
        for step in range(iterations + 1):
            vertices = self.shape(code)
            moved = pose.apply(points)
            found = self.surface.match(moved, point_normals @ pose.rotation.T, vertices, cKDTree(vertices),
                                       self.icp_settings)
            spread = self._spread(found, len(points))
            used = (found.valid & ~excluded & (found.residual > -self.settings.wound_cutoff_mm)
                    & (found.residual < (self.settings.detail_reach_mm if self.refit_bilaplacian is not None else np.inf)))
            w = np.zeros(len(points))
            w[used], sigma = tukey_weights((found.residual - spread @ offsets)[used], self.icp_settings.sigma_floor_mm)
            if (w > 0).sum() < 10:  # nothing left to fit: the wound and its margin cover the scan
                return self._with_detail(code, pose, offsets, sigma, float((w > 0).mean()))
            factor = (self._detail_factor(self.refit_bilaplacian, spread, w) if self.refit_bilaplacian is not None
                      else None)
            to_detail = spread.T @ (w * found.residual)  # S^T W r
            if step == iterations:
                if factor is not None:
                    offsets = factor.solve(to_detail)
                return self._with_detail(code, pose, offsets, sigma, float((w > 0).mean()))
            lhs, rhs, rows, centre = self._normal_equations(moved, found, w, code, target, weight)
            if factor is not None:  # the detail eliminated: its Schur complement, h = D^-1 (S^T W r + S^T W R delta)
                coupling = spread.T @ (w[:, None] * rows)  # S^T W R (V, 6 + k)
                detail_of_residual = factor.solve(to_detail)
                if reduced_lhs is None:
                    reduced_lhs = lhs - coupling.T @ factor.solve(coupling)
                lhs = reduced_lhs
                rhs += coupling.T @ detail_of_residual
            delta = np.linalg.solve(lhs, rhs)
            if factor is not None:
                offsets = detail_of_residual + factor.solve(coupling @ delta)
            pose = pose.then(pose_step(delta[:6], centre))
            code = code + delta[6:]
        raise AssertionError("unreachable")


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
