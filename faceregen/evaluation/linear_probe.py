"""Baselines every accuracy figure stands beside: the mean shape, the decoder's best fit, a linear probe.

* The mean shape ``A``: what a model that learns nothing predicts.
* The decoder's best fit (the floor): ``z* = argmin_z sum_{v evaluated} |B_v z + A_v - G_v|^2``, the
  least-squares code of the ground truth itself; no image model can beat ``G(z*)``'s error on average,
  because its predictions live in the same span.
* A linear probe on the pixels: ridge regression from the aligned chip, grey and area-averaged to
  ``size x size``, standardised per pixel, to the best-fit code ``z*``:
  ``W = argmin |X W - Z|^2 + alpha |W|^2`` (:mod:`faceregen.encoders.readout`), alpha chosen on the
  validation images by the face-region per-vertex error. What a network adds is its error below the probe's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceregen.encoders.readout import ReadoutStatistics, fit_ridge_readout
from faceregen.face_model.decoder import evaluation_vertices
from faceregen.face_model.linear import LinearFaceModel

def best_fit_codes(model: LinearFaceModel, vertices_mm: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """``z*`` (N, K) of the module docstring for heads (N, V, 3), over the evaluated vertices, in the first
    ``n_components`` components (None: all)."""
    keep = evaluation_vertices(model)
    k = model.n_components if n_components is None else n_components
    basis = model.basis_mm[keep][:, :, :k].reshape(-1, k).astype(np.float64)
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
    """The probe on standardised features with the ridge strength of least face-region per-vertex error on
    the validation images (:func:`~faceregen.encoders.readout.fit_ridge_readout`, no prior)."""
    x = np.asarray(train_features, np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    face = model.region_mask("face")
    readout = fit_ridge_readout(
        ReadoutStatistics.of((x - mean) / std, train_codes), (np.asarray(val_features, np.float64) - mean) / std,
        np.asarray(val_vertices_mm)[:, face], model.basis_mm[face], model.mean_mm[face],
    )
    return LinearProbe(mean, std, readout.weights, readout.bias, readout.alpha)
