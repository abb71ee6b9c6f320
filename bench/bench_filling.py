"""Speed of post-processing: filling extraction per face, printability report and export, and meshes/s of
the per-vertex distance evaluation.

Face model: the embedded Anny model when its default cache exists (``cache/face_model``), else the
test suite's 10242-vertex ellipsoid head (``--face-model ellipsoid`` forces it). Every wound type is
carved ``--repeats`` times; each filling is extracted from the ground truth and from a "prediction"
(the complete head plus 1 mm Gaussian noise per coordinate). Target: under 1 s per face on CPU.

    .venv/bin/python bench/bench_filling.py [--face-model anny|ellipsoid] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faceregen.face_model.anny_source import anny_cache_path, anny_face_model  # noqa: E402
from faceregen.metrics import per_vertex_distance_mm  # noqa: E402
from faceregen.postprocess import export_filling, extract_filling, printability_report  # noqa: E402
from faceregen.synthetic.wounds import WOUND_TYPES, make_wound  # noqa: E402


def load_face_model(choice: str):
    if choice == "anny" or (choice == "auto" and anny_cache_path(cache_dir=ROOT / "cache" / "face_model").exists()):
        return anny_face_model(cache_dir=ROOT / "cache" / "face_model")
    from face_models import toy_face_model

    return toy_face_model(subdivisions=5)


def seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_fillings(model, repeats: int) -> None:
    complete = model.mean_mm.astype(np.float64)
    rng = np.random.default_rng(0)
    timings = {"extract (ground truth)": [], "extract (prediction)": [], "printability_report": [], "export (stl+json+ply+glb)": []}
    faces_per_filling = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in tqdm(range(repeats * len(WOUND_TYPES)), desc="fillings"):
            wound = make_wound(complete, model.faces, model, WOUND_TYPES[i % len(WOUND_TYPES)], rng)
            prediction = complete + rng.normal(0.0, 1.0, complete.shape)
            dt, filling = seconds(lambda: extract_filling(wound.vertices_mm, complete, model.faces, wound.mask))
            timings["extract (ground truth)"].append(dt)
            dt, _ = seconds(lambda: extract_filling(wound.vertices_mm, prediction, model.faces, wound.mask))
            timings["extract (prediction)"].append(dt)
            timings["printability_report"].append(seconds(lambda: printability_report(filling))[0])
            out = Path(tmp) / f"case{i}" / "filling"
            timings["export (stl+json+ply+glb)"].append(seconds(lambda: export_filling(out, filling, wound.vertices_mm, model.faces))[0])
            faces_per_filling.append(len(filling.faces))
    print(f"face model {model.name}: {model.n_vertices} vertices, {len(model.faces)} faces; "
          f"{len(faces_per_filling)} fillings of {int(np.median(faces_per_filling))} faces (median)")
    for name, values in timings.items():
        v = np.array(values)
        print(f"  {name:28s} median {np.median(v):.3f} s  max {v.max():.3f} s per face")


def bench_distance(model, batch: int = 64, iterations: int = 50) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gt = torch.as_tensor(model.mean_mm, device=device).expand(batch, -1, -1).contiguous()
    pred = gt + torch.randn_like(gt)
    per_vertex_distance_mm(pred, gt)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        per_vertex_distance_mm(pred, gt).mean(dim=1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = batch * iterations / (time.perf_counter() - start)
    print(f"per-vertex distance on {device.type}: {rate:,.0f} meshes/s ({model.n_vertices} vertices, batch {batch})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--face-model", choices=("auto", "anny", "ellipsoid"), default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="fillings per wound type")
    args = parser.parse_args()
    model = load_face_model(args.face_model)
    bench_fillings(model, args.repeats)
    bench_distance(model)


if __name__ == "__main__":
    main()
