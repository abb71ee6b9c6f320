"""The baselines' per-image test metrics (:mod:`faceregen.evaluation.linear_probe` says what each is)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from faceregen.evaluation.linear_probe import best_fit_codes, chip_features, fit_linear_probe
from faceregen.evaluation.protocol import EvaluationProtocol, now_images
from faceregen.face_model.linear import LinearFaceModel

#: Baseline rows of Table 1, in order, with their labels.
BASELINES = {
    "mean_shape": "Mean shape (learns nothing)",
    "linear_probe": "Linear probe on the pixels",
    "best_fit": "Decoder's best fit to the truth (floor)",
}


def _decode(model: LinearFaceModel, codes: np.ndarray) -> np.ndarray:
    return np.einsum("vck,nk->nvc", model.basis_mm, codes) + model.mean_mm


def baseline_sample_metrics(
    model: LinearFaceModel, splits: Mapping[str, Mapping[str, np.ndarray]], now_test_images: int = 60, batch: int = 64
) -> dict[str, dict[str, np.ndarray]]:
    """Per-image protocol metrics of each of :data:`BASELINES` on ``splits["test"]``.

    ``splits``: ``"train"``, ``"val"`` and ``"test"``, each ``{"image": (N, 3, S, S) uint8, "vertices_mm":
    (N, V, 3)}`` and, for the test split, ``"wound_mask"`` (N, V) bool and ``"light"`` (N,): NoW runs on the
    same images as for the models (:func:`~faceregen.evaluation.protocol.now_images`, ``now_test_images``).
    The probe learns from ``train``
    (add more complete faces there, e.g. the base stage's set) and picks its ridge strength on ``val``.
    """
    protocol = EvaluationProtocol.for_face_model(model)
    test = splits["test"]
    now = now_images(test["light"] == 0, now_test_images)
    probe = fit_linear_probe(
        model,
        chip_features(splits["train"]["image"]),
        best_fit_codes(model, splits["train"]["vertices_mm"]),
        chip_features(splits["val"]["image"]),
        splits["val"]["vertices_mm"],
    )
    predictors = {
        "mean_shape": lambda rows: np.broadcast_to(model.mean_mm, (len(rows), *model.mean_mm.shape)),
        "linear_probe": lambda rows: _decode(model, probe.predict_codes(chip_features(test["image"][rows]))),
        "best_fit": lambda rows: _decode(model, best_fit_codes(model, test["vertices_mm"][rows])),
    }
    results = {}
    for name, predict in predictors.items():
        parts = []
        for start in range(0, len(test["vertices_mm"]), batch):
            rows = np.arange(start, min(start + batch, len(test["vertices_mm"])))
            parts.append(protocol.per_sample(predict(rows), test["vertices_mm"][rows], test["wound_mask"][rows], now[rows]))
        results[name] = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return results
