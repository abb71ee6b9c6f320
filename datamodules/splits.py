"""Identity-disjoint train/val/test splits (the paper's 6:2:2, "images of different individuals are
allocated to each dataset") and the seeded self-supervised subset of the training identities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faceregen.io import atomic_write_text

SPLIT_NAMES = ("train", "val", "test")


def split_counts(n_identities: int, ratios: Sequence[float]) -> tuple[int, int, int]:
    """Identities per split: ``n_val = round(n r_val / sum r)``, ``n_test`` likewise, ``n_train`` the rest,
    each at least 1 (so every split is non-empty). 50 identities, 6:2:2 -> 30/10/10.

    ValueError when a split's share ``n r / sum r`` (for a ratio ``r > 0``) is under one identity: the
    split could not follow the ratios (3 identities at 6:2:2 would split 1/1/1); 6:2:2 needs ``n >= 5``.
    """
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"split ratios must be three non-negative numbers (train, val, test), got {ratios}")
    if n_identities < 3:
        raise ValueError(
            f"an identity-disjoint train/val/test split needs >= 3 identities, the data has {n_identities}"
        )
    total = sum(ratios)
    smallest = min(r for r in ratios if r > 0)
    if n_identities * smallest / total < 1:
        needed = math.ceil(total / smallest - 1e-9)
        raise ValueError(
            f"{n_identities} identities cannot be split {':'.join(f'{r:g}' for r in ratios)} (train:val:test) "
            f"without a split of less than one identity's share; these ratios need at least {needed} identities "
            "(synthetic data: generator.n_identities)"
        )
    n_val = max(1, round(n_identities * ratios[1] / total))
    n_test = max(1, round(n_identities * ratios[2] / total))
    while n_identities - n_val - n_test < 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_identities - n_val - n_test, n_val, n_test


def split_identities(identities: Sequence[str], ratios: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Shuffle the sorted identities with ``default_rng(seed)`` and cut them by :func:`split_counts`."""
    ordered = sorted(set(identities))
    n_train, n_val, _ = split_counts(len(ordered), ratios)
    shuffled = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def load_or_create_split(
    path: str | Path, identities: Sequence[str], ratios: Sequence[float], seed: int
) -> dict[str, list[str]]:
    """The split stored at ``path``, or a new one written there (JSON, atomically).

    File format: ``{"seed": int, "ratios": [train, val, test], "train": [ids], "val": [...], "test": [...]}``.
    A stored split must cover exactly ``identities`` and have the same ratios, else ValueError.
    """
    path = Path(path)
    ratios = [float(r) for r in ratios]
    if not path.exists():
        split = split_identities(identities, ratios, seed)
        atomic_write_text(path, json.dumps({"seed": seed, "ratios": ratios, **split}, indent=1) + "\n")
        return split
    try:
        stored = json.loads(path.read_text())
        split = {name: [str(i) for i in stored[name]] for name in SPLIT_NAMES}
        stored_ratios = [float(r) for r in stored["ratios"]]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(
            f"{path}: not a split file ({err}); expected JSON with seed, ratios, train, val, test"
        ) from err
    if not all(math.isclose(a, b) for a, b in zip(stored_ratios, ratios)):
        raise ValueError(
            f"{path}: made with ratios {stored_ratios}, asked for {ratios}; delete it or pass another split_file"
        )
    listed = [i for name in SPLIT_NAMES for i in split[name]]
    if len(listed) != len(set(listed)):
        raise ValueError(f"{path}: an identity appears in more than one split")
    unknown, unlisted = sorted(set(listed) - set(identities)), sorted(set(identities) - set(listed))
    if unknown or unlisted:
        raise ValueError(
            f"{path}: the split does not match the data: {len(unknown)} identities in the file are not in the "
            f"data (e.g. {unknown[:3]}), {len(unlisted)} in the data are not in the file (e.g. {unlisted[:3]}); "
            "delete the file to make a new split or pass another split_file"
        )
    return split


def ssl_identities(train_identities: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The self-supervised subset: the first ``max(1, round(fraction n))`` of the train identities shuffled
    by ``default_rng(seed)`` (so with one seed the 20 % subset lies inside the 40 % one, and so on).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"ssl_fraction must be in (0, 1], got {fraction}")
    ordered = sorted(train_identities)
    if not ordered:
        raise ValueError("ssl subset: there are no train identities")
    n = max(1, round(fraction * len(ordered)))
    order = np.random.default_rng(seed).permutation(len(ordered))
    return sorted(ordered[i] for i in order[:n])
