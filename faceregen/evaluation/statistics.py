"""Comparing settings: paired differences over the same test identities, with bootstrap intervals.

A setting's result on identity ``i`` with seed ``s`` is ``x[s, i]`` (a metric averaged over the identity's
test images). For settings ``A`` (seeds ``S_A``) and ``B`` (seeds ``S_B``) on the same identities ``1..N``,
the difference is

    D = (1/N) sum_i [ mean_s a[s, i] - mean_s b[s, i] ]

and its 95% interval comes from a two-level (paired) bootstrap: each resample draws N identities with
replacement (the same ones for both settings: the pairing) and, independently, S_A seeds of A and S_B of B
with replacement, so the interval holds both the test set's and the training seeds' variation. A
difference is called significant when the interval excludes 0. The seed spread (sample SD over seeds of
the per-seed means) is reported beside it.
"""

from __future__ import annotations

import numpy as np


def _matrix(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or min(values.shape) < 1 or not np.isfinite(values).all():
        raise ValueError(f"{name}: expected a finite (seeds, identities) array, got shape {values.shape}")
    return values


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 10000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """``D`` of the module docstring for ``a`` (S_A, N) and ``b`` (S_B, N) with its bootstrap interval.

    Returns ``{"difference", "low", "high", "significant", "n_identities", "seeds_a", "seeds_b"}``.
    """
    a, b = _matrix("a", a), _matrix("b", b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} identities and b {b.shape[1]}: a paired comparison needs the same ones")
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise ValueError(f"confidence={confidence}, n_resamples={n_resamples}: expected (0, 1) and >= 1")
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    identities = rng.integers(0, n, (n_resamples, n))
    seeds_a = rng.integers(0, len(a), (n_resamples, len(a)))
    seeds_b = rng.integers(0, len(b), (n_resamples, len(b)))
    # mean over the drawn seeds of each setting, per identity: (R, N) each, then the drawn identities
    mean_a = np.einsum("rs,sn->rn", _counts(seeds_a, len(a)), a) / len(a)
    mean_b = np.einsum("rs,sn->rn", _counts(seeds_b, len(b)), b) / len(b)
    differences = np.take_along_axis(mean_a - mean_b, identities, axis=1).mean(axis=1)
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {
        "difference": float(a.mean(axis=0).mean() - b.mean(axis=0).mean()),
        "low": float(low),
        "high": float(high),
        "significant": bool(low > 0 or high < 0),
        "n_identities": int(n),
        "seeds_a": int(len(a)),
        "seeds_b": int(len(b)),
    }


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items was drawn, per resample: (R, k) indices -> (R, n) counts."""
    counts = np.zeros((len(draws), n))
    np.add.at(counts, (np.repeat(np.arange(len(draws)), draws.shape[1]), draws.ravel()), 1.0)
    return counts


def seed_spread(values: np.ndarray) -> float:
    """Sample SD over seeds of the per-seed means of ``values`` (S, N); NaN for one seed."""
    values = _matrix("values", values)
    return float(values.mean(axis=1).std(ddof=1)) if len(values) > 1 else float("nan")
