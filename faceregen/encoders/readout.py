"""The mapping network's linear read-out in closed form: ridge regression toward a prior read-out.

For identity features ``X`` (N, D), the best-fit codes ``Z`` (N, K) of the ground-truth heads and a prior
read-out ``(W0, b0)`` (zero for a fresh model; the base model's when fine-tuning):

    W = argmin_W |Xc W - Zc|^2 + alpha |W - W0|^2 = W0 + (Sxx + alpha I)^-1 (Sxz - Sxx W0)
    b = mean(Z) - mean(X) W

with ``Xc``, ``Zc`` the centred features and codes, ``Sxx = Xc^T Xc`` and ``Sxz = Xc^T Zc``: the read-out
needs only :class:`ReadoutStatistics` (count, means, scatter matrices), so two training sets pool exactly
without their images (:meth:`ReadoutStatistics.pooled`). ``alpha`` is chosen among :data:`RELATIVE_ALPHAS`
(relative to the mean eigenvalue of ``Sxx``) by the least face-region per-vertex error on held-out images
after a rigid fit of each predicted face to its truth (the error the runs monitor; the head's placement, which
an aligned chip does not show, would otherwise weigh in the choice);
the largest ones keep the prior (a fine-tuned read-out is never worse on the held-out images than the one it
started from, up to the grid).

Why: a shape read-out fitted by SGD on a few hundred identities overfits them (training loss falls 3x while
the held-out error stays flat), where the regularised least-squares solution of the same linear map
generalises (on the embedded default, 1.8 mm on the face after a rigid fit against the 2.4 mm of the
SGD-trained MLP, both from dlib's stage-1 features). It is linear probing before fine-tuning (LP-FT).
Pooling the base stage's statistics with the fine-tuning set's is the exact posterior of a linear read-out
given both data sets, where a ridge toward the base read-out approximates it by an isotropic prior.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from faceregen.geometry import umeyama
from faceregen.io import atomic_path

#: Ridge strengths tried, relative to the mean eigenvalue of Xc^T Xc.
RELATIVE_ALPHAS = (1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0, 10.0, 100.0, 1000.0)


@dataclass(frozen=True)
class Readout:
    """``z = x W + b``; ``alpha`` the chosen ridge strength and ``val_face_mm`` its held-out face error (after
    a rigid fit)."""

    weights: np.ndarray  # (D, K)
    bias: np.ndarray  # (K,)
    alpha: float
    val_face_mm: float

    def predict_codes(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float64) @ self.weights + self.bias


@dataclass(frozen=True)
class ReadoutStatistics:
    """What a linear read-out learns from a training set: ``count`` N, the means of the features (D,) and
    codes (K,), and the centred scatter matrices ``feature_scatter = Xc^T Xc`` (D, D) and
    ``cross_scatter = Xc^T Zc`` (D, K)."""

    count: int
    feature_mean: np.ndarray
    code_mean: np.ndarray
    feature_scatter: np.ndarray
    cross_scatter: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray, codes: np.ndarray) -> ReadoutStatistics:
        x = np.asarray(features, np.float64)
        z = np.asarray(codes, np.float64)
        if x.ndim != 2 or z.ndim != 2 or len(x) != len(z) or len(x) < 2:
            raise ValueError(f"features {x.shape} and codes {z.shape}: expected (N, D) and (N, K), N >= 2")
        x_mean, z_mean = x.mean(axis=0), z.mean(axis=0)
        xc = x - x_mean
        return cls(len(x), x_mean, z_mean, xc.T @ xc, xc.T @ (z - z_mean))

    @property
    def feature_dim(self) -> int:
        return len(self.feature_mean)

    def pooled(self, other: ReadoutStatistics) -> ReadoutStatistics:
        """The statistics of both training sets together (Chan et al.'s parallel update)::

            S = S_a + S_b + (n_a n_b / n) d_x d_z^T,   d = mean_b - mean_a
        """
        if (other.feature_dim, len(other.code_mean)) != (self.feature_dim, len(self.code_mean)):
            raise ValueError(f"read-out statistics of {other.feature_dim} features and {len(other.code_mean)} codes "
                             f"cannot pool with {self.feature_dim} features and {len(self.code_mean)} codes")
        n = self.count + other.count
        share = self.count * other.count / n
        dx, dz = other.feature_mean - self.feature_mean, other.code_mean - self.code_mean
        return ReadoutStatistics(
            n, self.feature_mean + dx * other.count / n, self.code_mean + dz * other.count / n,
            self.feature_scatter + other.feature_scatter + share * np.outer(dx, dx),
            self.cross_scatter + other.cross_scatter + share * np.outer(dx, dz),
        )

    def standardized(self, mean: np.ndarray, scale: np.ndarray) -> ReadoutStatistics:
        """The statistics of the features ``(x - mean) / scale``."""
        scale = np.asarray(scale, np.float64)
        return ReadoutStatistics(
            self.count, (self.feature_mean - mean) / scale, self.code_mean,
            self.feature_scatter / np.outer(scale, scale), self.cross_scatter / scale[:, None],
        )

    def save(self, path: str | os.PathLike) -> None:
        """An ``.npz`` file (written atomically); the feature scatter in float32."""
        with atomic_path(path) as tmp:
            np.savez(tmp, count=np.int64(self.count), feature_mean=self.feature_mean, code_mean=self.code_mean,
                     feature_scatter=self.feature_scatter.astype(np.float32), cross_scatter=self.cross_scatter)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReadoutStatistics:
        """Read :meth:`save`'s file (arrays only: nothing in it can execute)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in ("count", "feature_mean", "code_mean", "feature_scatter", "cross_scatter")}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: expected read-out statistics (.npz with count, feature_mean, code_mean, "
                             f"feature_scatter, cross_scatter): {err}") from err
        d, k = len(arrays["feature_mean"]), len(arrays["code_mean"])
        if arrays["feature_scatter"].shape != (d, d) or arrays["cross_scatter"].shape != (d, k) or int(arrays["count"]) < 2:
            raise ValueError(f"{path}: feature_scatter {arrays['feature_scatter'].shape}, cross_scatter "
                             f"{arrays['cross_scatter'].shape}, count {int(arrays['count'])}: expected ({d}, {d}), ({d}, {k}), >= 2")
        return cls(int(arrays["count"]), *(arrays[key].astype(np.float64) for key in
                                           ("feature_mean", "code_mean", "feature_scatter", "cross_scatter")))


def fit_ridge_readout(
    statistics: ReadoutStatistics,
    val_features: np.ndarray,
    val_face_mm: np.ndarray,
    face_basis_mm: np.ndarray,
    face_mean_mm: np.ndarray,
    prior_weights: np.ndarray | None = None,
    val_flipped_features: np.ndarray | None = None,
    code_mirror: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Readout:
    """The read-out of the module docstring.

    Args:
        statistics: the training set's (:meth:`ReadoutStatistics.of` features (N, D) and their heads'
            best-fit codes (N, K), possibly pooled).
        val_features / val_face_mm: held-out features (M, D) and the face regions (M, F, 3) of their heads.
        face_basis_mm / face_mean_mm: the decoder over the face region, (F, 3, K) and (F, 3).
        prior_weights: ``W0`` (D, K); None: zero.
        val_flipped_features / code_mirror: with flip averaging
            (:mod:`faceregen.encoders.flip_averaging`), the held-out images' flipped features (M, D) and the
            face model's code mirror: ``alpha`` is chosen on the averaged codes the model will predict.
    """
    if (val_flipped_features is None) != (code_mirror is None):
        raise ValueError("flip averaging needs both the flipped validation features and the code mirror")
    d, k = statistics.cross_scatter.shape
    prior = np.zeros((d, k)) if prior_weights is None else np.asarray(prior_weights, np.float64)
    if prior.shape != (d, k):
        raise ValueError(f"prior weights {prior.shape}: expected {(d, k)}")
    eigenvalues, eigenvectors = np.linalg.eigh(statistics.feature_scatter)
    projected = eigenvectors.T @ (statistics.cross_scatter - statistics.feature_scatter @ prior)
    mean_eigenvalue = max(float(np.trace(statistics.feature_scatter)) / d, np.finfo(float).tiny)
    val_x = np.asarray(val_features, np.float64)
    val_face = np.asarray(val_face_mm, np.float64)
    basis = np.asarray(face_basis_mm, np.float64)
    best = None
    for relative in RELATIVE_ALPHAS:
        alpha = relative * mean_eigenvalue
        weights = prior + eigenvectors @ (projected / (np.maximum(eigenvalues, 0.0) + alpha)[:, None])
        bias = statistics.code_mean - statistics.feature_mean @ weights
        codes = val_x @ weights + bias
        if code_mirror is not None:
            codes = 0.5 * (codes + code_mirror(np.asarray(val_flipped_features, np.float64) @ weights + bias))
        predicted = np.einsum("fck,nk->nfc", basis, codes) + face_mean_mm
        _, rotation, translation = umeyama(predicted, val_face, with_scale=False)
        fitted = np.einsum("nij,nfj->nfi", rotation, predicted) + translation[:, None]
        error = float(np.linalg.norm(fitted - val_face, axis=-1).mean())
        if best is None or error < best.val_face_mm:
            best = Readout(weights, bias, float(alpha), error)
    return best
