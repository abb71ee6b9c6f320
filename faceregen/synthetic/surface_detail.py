"""Per-identity surface detail: a smooth displacement that no linear face model reproduces.

Real faces never lie in a face model's span (a FLAME fit leaves roughly 0.5-1 mm RMS on real scans). The
synthetic ground truth gets the same property: each identity's complete head is ``G(z)`` plus a smooth,
band-limited random displacement along the vertex normals,

    v_i' = v_i + h_i n_i,      h = s * sum_{k in band} a_k phi_k,      a_k ~ N(0, 1)

where ``phi_k`` are the eigenfunctions of the mesh Laplacian of the face model's MEAN head (``L phi = lambda
M phi``, cotangent stiffness ``L``, lumped mass ``M``, ``phi_k^T M phi_k = 1``), ordered by frequency, and
``band = [k_low, k_high)`` keeps the displacement smooth (no sharper than eigenfunction ``k_high``) and
free of the low frequencies the face model already spans (``k < k_low``: size, global proportions). The
scale ``s`` makes the RMS of ``h`` over the ``face`` region exactly ``rms_mm``. The eyeball vertices never
move. The coefficients come from the generator seeded by ``(seed, identity, 0)``, a stream of their own.

The displacement is computed on the mean head's Laplacian (one eigen-decomposition per face model, not
per head), applied along each head's own normals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from faceregen.face_model.linear import LinearFaceModel
from faceregen.mesh_io import vertex_normals

#: The random stream of an identity's detail: ``default_rng([seed, identity, DETAIL_STREAM])`` (wound
#: variants use ``[seed, identity, k + 1]`` with ``k >= 0``; the code ``[seed, identity]``).
DETAIL_STREAM = 0


def cotangent_laplacian(vertices: np.ndarray, faces: np.ndarray) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Cotangent stiffness ``L`` (V, V), positive semi-definite, and lumped (barycentric) vertex areas (V,).

    ``L_ij = -(cot a_ij + cot b_ij) / 2`` for an edge ``ij`` (angles opposite it), ``L_ii = -sum_j L_ij``;
    vertex area = a third of the adjacent triangles' areas. Cotangents are clipped to ``[-10, 10]`` (slivers).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    n = len(v)
    rows, cols, values = [], [], []
    area = np.zeros(n)
    corners = v[f]  # (F, 3, 3)
    double_area = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    for corner in range(3):
        i, j, k = f[:, corner], f[:, (corner + 1) % 3], f[:, (corner + 2) % 3]
        a, b = v[j] - v[i], v[k] - v[i]  # the angle at i is opposite the edge jk
        cot = np.einsum("fc,fc->f", a, b) / np.maximum(np.linalg.norm(np.cross(a, b), axis=1), 1e-12)
        weight = 0.5 * np.clip(cot, -10.0, 10.0)
        rows += [j, k]
        cols += [k, j]
        values += [-weight, -weight]
        np.add.at(area, i, double_area / 6.0)
    off = scipy.sparse.coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    off = off.tocsr()
    laplacian = off - scipy.sparse.diags(np.asarray(off.sum(axis=1)).ravel())
    return laplacian.tocsr(), np.maximum(area, 1e-12)


def laplacian_eigenfunctions(vertices: np.ndarray, faces: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` lowest-frequency eigenfunctions (V, n) of ``L phi = lambda M phi``, M-orthonormal.

    Shift-invert Lanczos around a small negative shift (``L`` is singular: one zero mode per connected
    component). Each eigenfunction's sign makes its largest-magnitude entry positive (deterministic).
    """
    laplacian, area = cotangent_laplacian(vertices, faces)
    if not 0 < n < len(area) - 1:
        raise ValueError(f"n={n} eigenfunctions: expected 0 < n < {len(area) - 1} (the mesh's vertex count - 1)")
    mass = scipy.sparse.diags(area)
    rng = np.random.default_rng(0)  # Lanczos' start vector: fixed, so the result is reproducible
    eigenvalues, eigenvectors = scipy.sparse.linalg.eigsh(
        laplacian, k=n, M=mass, sigma=-1e-6, which="LM", v0=rng.standard_normal(len(area))
    )
    order = np.argsort(eigenvalues)
    eigenvectors = eigenvectors[:, order]
    eigenvectors *= np.sign(eigenvectors[np.abs(eigenvectors).argmax(axis=0), np.arange(n)])
    return eigenvectors


@dataclass(frozen=True)
class SurfaceDetail:
    """The detail field's basis for one face model: eigenfunctions ``band`` (V, n_band) and where they apply."""

    basis: np.ndarray  # (V, n_band) float64, zero on the eyeballs
    face: np.ndarray  # (V,) bool, the region whose RMS is ``rms_mm``
    rms_mm: float

    @classmethod
    def for_face_model(cls, model: LinearFaceModel, rms_mm: float, band: tuple[int, int]) -> SurfaceDetail:
        k_low, k_high = (int(b) for b in band)
        if not 0 <= k_low < k_high:
            raise ValueError(f"detail band {list(band)}: expected 0 <= low < high (eigenfunction indices)")
        if rms_mm < 0:
            raise ValueError(f"detail rms_mm={rms_mm}: expected >= 0 mm")
        basis = laplacian_eigenfunctions(model.mean_mm, model.faces, k_high)[:, k_low:]
        frozen = np.zeros(model.n_vertices, bool)
        frozen[model.regions["left_eyeball"]] = frozen[model.regions["right_eyeball"]] = True
        basis[frozen] = 0.0
        face = model.region_mask("face")
        if not np.abs(basis[face]).sum() > 0:
            raise ValueError(f"face model {model.name!r}: the detail band {list(band)} is zero on the face region")
        return cls(basis, face, float(rms_mm))

    def height_mm(self, rng: np.random.Generator) -> np.ndarray:
        """One identity's normal displacement ``h`` (V,) in mm, RMS ``rms_mm`` over the face region."""
        height = self.basis @ rng.standard_normal(self.basis.shape[1])
        return height * (self.rms_mm / np.sqrt(np.mean(height[self.face] ** 2)))

    def apply(self, vertices_mm: np.ndarray, faces: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The detailed head ``v + h n`` (V, 3) float32, ``n`` the head's own unit vertex normals."""
        v = np.asarray(vertices_mm, dtype=np.float64)
        return (v + self.height_mm(rng)[:, None] * vertex_normals(v, faces)).astype(np.float32)
