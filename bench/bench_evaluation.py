"""Speed of evaluate.py's pieces: test-split prediction (meshes/s) and the fillings of predicted test faces
(s per face, end to end: read meshes, extract predicted + true filling, export STL/PLY/GLB + report), on
the best finished run under ``logs/`` of ``--setting`` (default transfer, else any run with a
checkpoint); then, on the face model's mesh, scan-to-mesh distance (scan points/s) and one mesh figure.

    .venv/bin/python bench/bench_evaluation.py [--setting transfer] [--samples 64] [--fillings 6]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faceregen.evaluation import runs  # noqa: E402
from faceregen.evaluation.scan_to_mesh import scan_to_mesh_distance  # noqa: E402
from faceregen.plotting import mesh_image, save_figure  # noqa: E402
from training.trained_run import load_trained_run  # noqa: E402
from reconstruct import default_paths  # noqa: E402


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def chosen_run(setting: str) -> runs.RunRecord | None:
    log_dir = ROOT / "logs"
    records = runs.find_finished_runs(log_dir) if log_dir.is_dir() else []
    with_checkpoint = [r for r in records if r.best_checkpoint is not None]
    if not with_checkpoint:
        return None
    if not any(r.setting == setting for r in with_checkpoint):
        setting = with_checkpoint[0].setting
    return runs.best_run(with_checkpoint, setting)


def bench_run(run: runs.RunRecord, n_samples: int, n_fillings: int):
    print(f"run: {run.run_dir} ({run.setting}, seed {run.seed}), checkpoint {run.best_checkpoint.name}")
    dt, trained = seconds(lambda: load_trained_run(run.best_checkpoint, default_paths(), device="auto"))
    datamodule, module = trained.test_datamodule(), trained.module
    print(f"  rebuild model + data from the run's config: {dt:.1f} s (device {next(module.parameters()).device})")
    runs.predict_test_samples(module, datamodule, 8, 8)  # warm-up
    dt, predictions = seconds(lambda: runs.predict_test_samples(module, datamodule, 32, n_samples))
    n = len(predictions["sample"])
    print(f"  test prediction: {n} meshes in {dt:.2f} s = {n / dt:.1f} meshes/s (batch 32, {torch.get_num_threads()} threads)")
    subset = {key: value[:n_fillings] for key, value in predictions.items()}
    with tempfile.TemporaryDirectory() as tmp:
        dt, rows = seconds(lambda: runs.export_test_fillings(datamodule.samples_of("test"), subset, tmp))
    done = [r for r in rows if not r["error"]]
    print(f"  fillings: {len(rows)} faces in {dt:.2f} s = {dt / max(len(rows), 1):.2f} s per face ({len(done)} exported)")
    for row in rows:
        predicted, true = (f"{v:.0f}" if v != "" else "-" for v in (row["predicted_volume_mm3"], row["true_volume_mm3"]))
        print(f"    {row['sample']} {row['wound_type']}: filling {predicted} mm3 (true {true} mm3) {row['error'][:60]}")
    return predictions, trained.face_model.faces


def bench_geometry(vertices: np.ndarray, faces: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    angle = np.deg2rad(10.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    scan = vertices @ rotation.T + np.array([3.0, -2.0, 5.0]) + rng.normal(0, 0.5, vertices.shape)
    landmarks = rng.choice(len(vertices), 7, replace=False)
    dt, result = seconds(lambda: scan_to_mesh_distance(scan, scan[landmarks], vertices, faces, vertices[landmarks]))
    print(f"scan-to-mesh ({len(faces)} triangles): {len(scan)} scan points in {dt:.2f} s = {len(scan) / dt:.0f} points/s "
          f"(median {result['median_mm']:.3f} mm for 0.5 mm noise)")
    with tempfile.TemporaryDirectory() as tmp:
        dt, _ = seconds(lambda: save_figure(mesh_image(vertices, faces, values=np.linalg.norm(vertices, axis=1)), Path(tmp) / "m.png"))
    print(f"mesh figure (heat map, one view, PNG): {dt:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="transfer")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--fillings", type=int, default=6)
    args = parser.parse_args()
    run = chosen_run(args.setting)
    if run is None:
        from face_models import toy_face_model

        print("no finished run with a checkpoint under logs/ (python train.py first): geometry only, toy head")
        model = toy_face_model(subdivisions=5)
        vertices, faces = model.mean_mm.astype(np.float64), model.faces
    else:
        predictions, faces = bench_run(run, args.samples, args.fillings)
        vertices = predictions["vertices_mm"][0].astype(np.float64)
    bench_geometry(vertices, faces)


if __name__ == "__main__":
    main()
