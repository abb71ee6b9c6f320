"""How much of the face error after a rigid fit is the head's SIZE, which an aligned chip does not show?

The chip is aligned by five points (a similarity transform), so a model sees the face's shape but not its
size in mm; the errors after a rigid fit (Table 1's face and part columns) still count the size. Two
oracles on the test split's ground-truth heads bound what any image model can reach:

* ``truth at the mean size``: the true head scaled about its face centroid to the mean face's RMS radius
  (perfect shape, no size information);
* ``truth, size from its shape``: the same, scaled to the size a ridge regression predicts from the
  size-normalised face shape (trained on the train split and the base stage's complete faces): the size
  that the shape itself tells.

Needs ``make train`` (both datasets and the split file). Prints the protocol's face, wound and part errors.

    python bench/bench_size_blind.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from faceregen.data_layout import find_samples, read_wound  # noqa: E402
from faceregen.evaluation.protocol import EvaluationProtocol  # noqa: E402
from faceregen.mesh_io import read_mesh  # noqa: E402

COLUMNS = ("face_rigid_mm", "wound_rigid_mm", "nose_rigid_mm", "forehead_rigid_mm", "cheeks_rigid_mm", "lips_rigid_mm",
           "chin_rigid_mm")


def heads(root: Path, identities: set[str] | None, n_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth heads (N, V, 3) of the samples of ``identities`` (None: all) and their wound masks."""
    samples = [s for s in find_samples(root, n_vertices=n_vertices) if identities is None or s.identity in identities]
    labels = np.stack([read_mesh(s.label)[0] for s in samples]).astype(np.float64)
    wounds = np.stack([read_wound(s.wound, n_vertices).mask if s.wound else np.zeros(n_vertices, bool) for s in samples])
    return labels, wounds


def size_normalised(vertices: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heads centred on their face centroid and divided by the face's RMS radius; the radii and centroids."""
    centre = vertices[:, face].mean(axis=1, keepdims=True)
    radius = np.sqrt(((vertices[:, face] - centre) ** 2).sum(-1).mean(axis=1))
    return (vertices - centre) / radius[:, None, None], radius, centre


def main() -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train.yaml")
    face_model = instantiate(cfg.face_model)
    protocol = EvaluationProtocol.for_face_model(face_model)
    face = protocol.face
    root, base_root = Path(cfg.data.root), Path(cfg.base_stage.generator.root)
    split = json.loads((root / "splits" / f"split_seed{cfg.data.split_seed}.json").read_text())
    test, test_wounds = heads(root, set(split["test"]), face_model.n_vertices)
    train = np.concatenate([heads(root, set(split["train"]), face_model.n_vertices)[0],
                            heads(base_root, None, face_model.n_vertices)[0]])
    shape, radius, _ = size_normalised(train, face)
    test_shape, test_radius, test_centre = size_normalised(test, face)
    x = shape[:, face].reshape(len(shape), -1)
    x_mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    components = vt[:100]
    features, test_features = (x - x_mean) @ components.T, (test_shape[:, face].reshape(len(test), -1) - x_mean) @ components.T
    log_radius = np.log(radius)
    weights = np.linalg.solve(features.T @ features + 1e-2 * np.trace(features.T @ features) / 100 * np.eye(100),
                              features.T @ (log_radius - log_radius.mean()))
    predicted_radius = np.exp(test_features @ weights + log_radius.mean())
    mean_radius = size_normalised(face_model.mean_mm[None].astype(np.float64), face)[1]
    explained = 1 - np.var(np.log(test_radius / predicted_radius)) / np.var(np.log(test_radius))
    print(f"test heads: {len(test)}; face size (RMS radius) {test_radius.mean():.1f} mm, SD {100 * test_radius.std() / test_radius.mean():.1f}%;"
          f" share of its log-variance the shape predicts: {explained:.2f}")
    rows = {
        "mean shape": np.broadcast_to(face_model.mean_mm, test.shape),
        "truth at the mean size": test_centre + test_shape * mean_radius[:, None, None],
        "truth, size from its shape": test_centre + test_shape * predicted_radius[:, None, None],
    }
    print(f"{'(mm, after a rigid fit)':28s}" + "".join(f"{c.replace('_rigid_mm', ''):>10s}" for c in COLUMNS))
    for name, prediction in rows.items():
        metrics = protocol.per_sample(prediction, test, test_wounds, now=False)
        print(f"{name:28s}" + "".join(f"{np.nanmean(metrics[c]):10.2f}" for c in COLUMNS))


if __name__ == "__main__":
    main()
