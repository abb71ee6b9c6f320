"""The face model's bilateral symmetry: a head's mirror image, as a code.

The model frame's mid-sagittal plane is ``x = 0``. Reflecting the mean head ``A`` across it and taking each
reflected vertex's nearest vertex gives the vertex permutation ``pi`` (left eye corner <-> right eye corner).
A head ``V`` mirrored is ``S(V) = P R V`` (``R`` negates x, ``P`` permutes by ``pi``); for the linear model
``G(z) = B z + A`` the least-squares code of ``S(G(z))`` over the evaluated vertices (``Bk``: ``B`` on them) is

    z' = Bk^+ (S(B z + A) - A) = M z + m,   M = Bk^+ S(B),   m = Bk^+ (S(A) - A)

with ``S`` acting on each basis column as on a displacement (``R`` negates its x). It is what a face seen in
a horizontally flipped photo looks like, which the identity encoder's test-time flip averaging needs
(:class:`~faceregen.encoders.flip_averaging.FlipAveraging`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from faceregen.face_model.decoder import evaluation_vertices
from faceregen.face_model.linear import LinearFaceModel

#: The mirrored mean's vertices must each lie within this share of the head's size (RMS radius) of a vertex
#: of the mean: Anny's lie within 0.05 mm (median) of a vertex, FLAME's on its symmetric template.
SYMMETRY_TOLERANCE = 0.02


@dataclass(frozen=True)
class CodeMirror:
    """``z' = z M^T + m`` (codes as rows): ``matrix`` (K, K), ``offset`` (K,); ``vertex_permutation`` (V,)."""

    matrix: np.ndarray
    offset: np.ndarray
    vertex_permutation: np.ndarray

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, np.float64) @ self.matrix.T + self.offset


def mirrored_vertices(vertices: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Heads or displacements (..., V, 3) reflected across ``x = 0`` and re-indexed by ``permutation``."""
    return (np.asarray(vertices) * np.array([-1.0, 1.0, 1.0]))[..., permutation, :]


def code_mirror(model: LinearFaceModel, n_components: int | None = None) -> CodeMirror:
    """The module docstring's ``(M, m)`` for ``model``'s first ``n_components`` components (None: all).

    Raises ValueError when the model is not symmetric about ``x = 0`` (the mirrored mean's median vertex
    is farther than :data:`SYMMETRY_TOLERANCE` of the head's RMS radius from any vertex of the mean)."""
    k = model.n_components if n_components is None else n_components
    mean = np.asarray(model.mean_mm, np.float64)
    radius = float(np.sqrt(((mean - mean.mean(axis=0)) ** 2).sum(axis=1).mean()))
    distance, permutation = cKDTree(mean).query(mirrored_vertices(mean, np.arange(len(mean))))
    if np.median(distance) > SYMMETRY_TOLERANCE * radius:
        raise ValueError(f"face model {model.name!r} is not symmetric about x = 0: its mirrored mean's vertices lie a "
                         f"median {np.median(distance):.2f} mm from the mean's (head radius {radius:.1f} mm); "
                         "flip averaging needs the mid-sagittal plane at x = 0")
    keep = evaluation_vertices(model)
    basis = np.asarray(model.basis_mm[:, :, :k], np.float64)
    mirrored_basis = mirrored_vertices(np.moveaxis(basis, -1, 0), permutation)  # (K, V, 3)
    design = basis[keep].reshape(-1, k)
    matrix = np.linalg.lstsq(design, np.moveaxis(mirrored_basis[:, keep], 0, -1).reshape(-1, k), rcond=None)[0]
    offset = np.linalg.lstsq(design, (mirrored_vertices(mean, permutation) - mean)[keep].reshape(-1), rcond=None)[0]
    return CodeMirror(matrix, offset, permutation)
