"""How much the complete faces add to the transfer run's read-out: ridges on more and more of them.

The `transfer` setting fits its linear read-out in closed form on the base stage's read-out statistics
(its complete faces' train and validation images) pooled with the imperfect train split
(``faceregen.encoders.readout``). Before, it was a ridge toward the base model's read-out (an isotropic
prior ``alpha |W - W0|^2``). This prints, on the test split (face region and inside the wound after a rigid
fit, mm): the run's own read-out, a ridge on the imperfect train split alone, and pooled ridges with more
and more of the complete faces (alpha chosen on the imperfect validation split each time). The identity
encoder is the run's (frozen), features standardised as the run standardises them. With ``--ckpt`` of an
SSL run the complete faces are read by its SwAV-trained encoder, as ``ssl_20pct`` and ``ssl_100pct`` pool
them (``training.ssl_stage.SSLStage.statistics_path``). A run with ``flip_averaging`` (the default) has every
ridge learn from the mirror images too and predict the average of each test image's and its mirror image's
code, as the run does; one with ``chip_scales`` (the default) has every ridge learn from each chip at each
scale and predict the average over the scales, as the run does
(:mod:`faceregen.encoders.scale_averaging`).

    python bench/bench_pooled_readout.py [--ckpt <transfer run>/checkpoints/<best>.ckpt]

Without ``--ckpt``: the best finished ``transfer`` run under ``logs/`` (none: skipped, ``make train`` first).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PROJECT_ROOT", str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from faceregen.encoders.readout import ReadoutStatistics, fit_ridge_readout  # noqa: E402
from faceregen.evaluation import runs  # noqa: E402
from faceregen.evaluation.linear_probe import best_fit_codes  # noqa: E402
from faceregen.evaluation.protocol import EvaluationProtocol  # noqa: E402
from training.building import with_face_model  # noqa: E402
from training.trained_run import load_trained_run  # noqa: E402
from evaluate import dataset_arrays  # noqa: E402


@torch.no_grad()
def features(module, images: np.ndarray) -> np.ndarray:
    """The standardised mid-level features the run's read-out sees (C, N, D), at each of the run's C chip
    scales (C = 1 without)."""
    encoder = module.identity_encoder
    out = []
    for s in range(0, len(images), 100):
        inputs = encoder.normalize_input(torch.from_numpy(np.ascontiguousarray(images[s:s + 100])))
        views = [inputs] if module.scale_averaging is None else module.scale_averaging.views(inputs)
        out.append(torch.stack([encoder.feature_standardizer(encoder.pooled_stages(v)) for v in views]))
    return torch.cat(out, dim=1).double().numpy()


def statistics_of(views: list[np.ndarray], targets: np.ndarray) -> ReadoutStatistics:
    """A read-out's training set: every view (N, D) of the images, each with the targets (N, K)."""
    statistics = ReadoutStatistics.of(views[0], targets)
    for view in views[1:]:
        statistics = statistics.pooled(ReadoutStatistics.of(view, targets))
    return statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, default=None, help="a transfer run's checkpoint")
    args = parser.parse_args()
    if args.ckpt is None:
        records = runs.find_finished_runs(ROOT / "logs") if (ROOT / "logs").is_dir() else []
        records = [r for r in records if r.setting == "transfer" and r.best_checkpoint is not None]
        if not records:
            print("skipped: no finished transfer run under logs/ (make train first)")
            return
        args.ckpt = runs.best_run(records, "transfer").best_checkpoint
    print(f"run: {args.ckpt}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tempfile.mkdtemp()}"])
    run = load_trained_run(args.ckpt, cfg.paths, {}, [])
    module, face_model = run.module.eval(), run.face_model
    encoder = module.identity_encoder
    if getattr(encoder, "feature_standardizer", None) is None:
        print(f"skipped: {args.ckpt} reads the backbone's final embedding, not standardised mid-level features")
        return
    imperfect = run.test_datamodule()
    imperfect.setup()
    complete = with_face_model(run.config.data)(face_model=face_model, alignment=encoder.alignment,
                                                root=cfg.base_stage.generator.root)
    complete.setup()
    data = {split: dataset_arrays(imperfect, getattr(imperfect, f"{split}_dataset")) for split in ("train", "val", "test")}
    base = {split: dataset_arrays(complete, getattr(complete, f"{split}_dataset")) for split in ("train", "val", "test")}
    mirror = module.code_mirror  # None without flip averaging
    x = {split: features(module, part["image"]) for split, part in data.items()}
    x_base = {split: features(module, part["image"]) for split, part in base.items()}
    flipped = {split: features(module, part["image"][..., ::-1]) for split, part in data.items()} if mirror else {}
    flipped_base = {split: features(module, part["image"][..., ::-1]) for split, part in base.items()} if mirror else {}
    k = module.face_model_decoder.n_components
    protocol = EvaluationProtocol.for_face_model(face_model)
    face = protocol.face
    basis, mean = face_model.basis_mm[:, :, :k], face_model.mean_mm

    def report(name: str, codes: np.ndarray) -> None:
        predicted = np.einsum("vck,nk->nvc", basis, codes) + mean
        metrics = protocol.per_sample(predicted, data["test"]["vertices_mm"], data["test"]["wound_mask"], False)
        print(f"{name:52s} face {np.nanmean(metrics['face_rigid_mm']):.3f}  wound {np.nanmean(metrics['wound_rigid_mm']):.3f}",
              flush=True)

    with torch.no_grad():
        run_codes = torch.cat([module.encode(torch.from_numpy(data["test"]["image"][s:s + 100]))
                               for s in range(0, len(data["test"]["image"]), 100)]).double().numpy()
    report("the run's read-out", run_codes)
    codes = {split: best_fit_codes(face_model, part["vertices_mm"], k) for split, part in data.items()}
    codes_base = {split: best_fit_codes(face_model, part["vertices_mm"], k) for split, part in base.items()}
    val_face = data["val"]["vertices_mm"][:, face]
    for parts in ((), ("train",), ("train", "val"), ("train", "val", "test")):
        # the views' mean feature: the linear read-out of it is the mean of the views' codes
        features_ = np.concatenate([x_base[p] for p in parts] + [x["train"]], axis=1)
        targets = np.concatenate([codes_base[p] for p in parts] + [codes["train"]])
        statistics = statistics_of(list(features_), targets)
        if mirror:
            statistics = statistics.pooled(statistics_of(
                list(np.concatenate([flipped_base[p] for p in parts] + [flipped["train"]], axis=1)), mirror(targets)))
        readout = fit_ridge_readout(statistics, x["val"].mean(0), val_face, basis[face], mean[face],
                                    val_flipped_features=flipped["val"].mean(0) if mirror else None, code_mirror=mirror)
        predicted = readout.predict_codes(x["test"].mean(0))
        if mirror:
            predicted = 0.5 * (predicted + mirror(readout.predict_codes(flipped["test"].mean(0))))
        label = "imperfect train" + "".join(f" + complete {p}" for p in parts)
        views = f" at {len(features_)} chip scales" if len(features_) > 1 else ""
        report(f"ridge on {label} ({features_.shape[1]} images{' and their mirror images' if mirror else ''}{views})", predicted)


if __name__ == "__main__":
    main()
