"""Test error of the linear probe on the pixels against the number of complete-face identities it learns from.

How much does the embedded benchmark's error fall with more training identities? The ridge probe (a
linear read-out of the aligned chip, ``faceregen.evaluation.linear_probe``) learns from the imperfect
set's train split plus the first ``n`` identities of the base stage's complete faces, and is scored on the
test split (face region and parts after a rigid fit, mm; no NoW). Needs ``make train`` (or ``make data``
and the base stage) to have built both datasets. Prints one row per ``n``.

    python bench/bench_probe_identities.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from faceregen.data_layout import has_manifest  # noqa: E402
from faceregen.evaluation.linear_probe import best_fit_codes, chip_features, fit_linear_probe  # noqa: E402
from faceregen.evaluation.protocol import EvaluationProtocol  # noqa: E402
from training.building import with_face_model  # noqa: E402

COUNTS = (0, 150, 300, 600, 1200)


def arrays(datamodule, split: str) -> dict[str, np.ndarray]:
    dataset = getattr(datamodule, f"{split}_dataset")
    batch = dataset.__getitems__(list(range(len(dataset))))
    return {"image": batch["image"].numpy(), "vertices_mm": batch["vertices_mm"].numpy(),
            "wound": (batch["wound_mask"] & batch["has_wound_mask"][:, None]).numpy(), "identity": batch["identity"].numpy()}


def main() -> None:
    import hydra

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train")
    face_model = hydra.utils.instantiate(cfg.face_model)
    data = {}
    for name, root in (("imperfect", cfg.data.root), ("complete", cfg.base_stage.generator.root)):
        if not has_manifest(Path(root)):
            print(f"skipped: {root} holds no dataset; `make train` builds both")
            return
        datamodule = with_face_model(cfg.data)(face_model=face_model, alignment="dlib_150", root=root)
        datamodule.setup()
        data[name] = {split: arrays(datamodule, split) for split in ("train", "val", "test")}
    complete = {k: np.concatenate([data["complete"][s][k] for s in ("train", "val", "test")]) for k in ("image", "vertices_mm", "identity")}
    order = np.unique(complete["identity"])
    protocol = EvaluationProtocol.for_face_model(face_model)
    train, val, test = (data["imperfect"][s] for s in ("train", "val", "test"))
    features = {name: chip_features(split["image"]) for name, split in (("train", train), ("val", val), ("test", test))}
    extra_features = chip_features(complete["image"])
    extra_codes = best_fit_codes(face_model, complete["vertices_mm"])
    train_codes = best_fit_codes(face_model, train["vertices_mm"])
    print(f"{'complete ids':>12} {'train images':>12} {'face rigid':>10} {'wound':>7} " + " ".join(f"{p:>8}" for p in protocol.parts), flush=True)
    for n in COUNTS:
        started = time.perf_counter()
        keep = np.isin(complete["identity"], order[:n])
        probe = fit_linear_probe(face_model, np.concatenate([features["train"], extra_features[keep]]),
                                 np.concatenate([train_codes, extra_codes[keep]]), features["val"], val["vertices_mm"])
        codes = probe.predict_codes(features["test"])
        predicted = np.einsum("vck,nk->nvc", face_model.basis_mm, codes) + face_model.mean_mm
        metrics = protocol.per_sample(predicted, test["vertices_mm"], test["wound"], now=False)
        parts = " ".join(f"{np.nanmean(metrics[f'{p}_rigid_mm']):8.3f}" for p in protocol.parts)
        print(f"{n:>12} {len(features['train']) + keep.sum():>12} {np.nanmean(metrics['face_rigid_mm']):10.3f} "
              f"{np.nanmean(metrics['wound_rigid_mm']):7.3f} {parts}   ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
