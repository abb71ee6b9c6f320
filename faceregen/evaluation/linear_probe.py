"""Baselines every accuracy figure stands beside: the mean shape, the decoder's best fit, a linear probe.

* The mean shape ``A``: what a model that learns nothing predicts.
* The decoder's best fit (the floor): ``z* = argmin_z sum_{v evaluated} |B_v z + A_v - G_v|^2``, the
  least-squares code of the ground truth itself; no image model can beat ``G(z*)``'s error on average,
  because its predictions live in the same span.
* A linear probe on the pixels: ridge regression from the aligned chip, grey and area-averaged to
  ``size x size``, standardised per pixel, to the best-fit code ``z*``:
  ``W = argmin |X W - Z|^2 + alpha |W|^2``, alpha chosen on the validation images by the face-region
  per-vertex error. What a network adds is its error below the probe's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceregen.face_model.decoder import evaluation_vertices
from faceregen.face_model.linear import LinearFaceModel

#: Ridge strengths tried, relative to the mean eigenvalue of X^T X.
RELATIVE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def best_fit_codes(model: LinearFaceModel, vertices_mm: np.ndarray) -> np.ndarray:
    """``z*`` (N, K) of the module docstring for heads (N, V, 3), over the evaluated vertices."""
    keep = evaluation_vertices(model)
    basis = model.basis_mm[keep].reshape(-1, model.n_components).astype(np.float64)
    targets = (np.asarray(vertices_mm, dtype=np.float64)[:, keep] - model.mean_mm[keep]).reshape(len(vertices_mm), -1)
    return np.linalg.lstsq(basis, targets.T, rcond=None)[0].T


def chip_features(images_uint8: np.ndarray, size: int = 48) -> np.ndarray:
    """Grey, area-averaged chips (N, size * size) float32 from aligned images (N, 3, S, S) uint8; S must be
    a multiple of ``size`` or is cropped centrally to the largest one."""
    images = np.asarray(images_uint8)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images {images.shape}: expected (N, 3, S, S) uint8")
    s = images.shape[-1] // size * size
    if s == 0:
        raise ValueError(f"images of {images.shape[-1]} px are smaller than the probe's {size} px")
    off = (images.shape[-1] - s) // 2
    grey = images[:, :, off : off + s, off : off + s].astype(np.float32).mean(axis=1)
    factor = s // size
    return grey.reshape(len(grey), size, factor, size, factor).mean(axis=(2, 4)).reshape(len(grey), -1)


@dataclass(frozen=True)
class LinearProbe:
    """Ridge regression from :func:`chip_features` to codes: ``z = ((x - mean) / std) W + b``."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    alpha: float

    def predict_codes(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float64) - self.mean) / self.std) @ self.weights + self.bias


def fit_linear_probe(
    model: LinearFaceModel,
    train_features: np.ndarray,
    train_codes: np.ndarray,
    val_features: np.ndarray,
    val_vertices_mm: np.ndarray,
) -> LinearProbe:
    """The probe with the ridge strength (:data:`RELATIVE_ALPHAS`) of least face-region per-vertex error on
    the validation images."""
    x = np.asarray(train_features, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / std
    z = np.asarray(train_codes, np.float64)
    bias = z.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x)
    projected = eigenvectors.T @ (x.T @ (z - bias))
    val_x = (np.asarray(val_features, np.float64) - mean) / std
    face = model.region_mask("face")
    basis = model.basis_mm[face].astype(np.float64)
    val_face = np.asarray(val_vertices_mm, np.float64)[:, face]
    best = None
    for relative in RELATIVE_ALPHAS:
        alpha = relative * eigenvalues.mean()
        weights = eigenvectors @ (projected / (eigenvalues + alpha)[:, None])
        codes = val_x @ weights + bias
        error = np.linalg.norm(np.einsum("vck,nk->nvc", basis, codes) + model.mean_mm[face] - val_face, axis=-1).mean()
        if best is None or error < best[0]:
            best = (error, LinearProbe(mean, std, weights, bias, float(alpha)))
    return best[1]
