"""Small geometry shared by image alignment, evaluation and the metrics."""

from __future__ import annotations

import numpy as np


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares similarity ``target ~ s R source + t`` (Umeyama 1991), batched, any dimension D.

    With centred points ``X``, ``Y`` (N x D), ``Sigma = Y^T X / N = U D V^T`` and ``S = diag(1, ..., 1,
    sign(det U det V))`` (no reflection): ``R = U S V^T``, ``s = trace(D S) / var(X)`` (1 without scale),
    ``t = mean(Y) - s R mean(X)``. Inputs ``(..., N, D)``; returns ``(s (...,), R (..., D, D), t (..., D))``.
    Callers check their inputs (at least 2 distinct points).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mean_x, mean_y = source.mean(axis=-2), target.mean(axis=-2)
    x, y = source - mean_x[..., None, :], target - mean_y[..., None, :]
    n = source.shape[-2]
    u, d, vt = np.linalg.svd(np.swapaxes(y, -1, -2) @ x / n)
    signs = np.ones_like(d)
    signs[..., -1] = np.where(np.linalg.det(u) * np.linalg.det(vt) < 0, -1.0, 1.0)
    rotation = u @ (signs[..., :, None] * vt)
    scale = (d * signs).sum(axis=-1) / ((x**2).sum(axis=(-1, -2)) / n) if with_scale else np.ones(d.shape[:-1])
    translation = mean_y - scale[..., None] * np.einsum("...ij,...j->...i", rotation, mean_x)
    return scale, rotation, translation
