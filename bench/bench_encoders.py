"""Training throughput of the identity backbones: forward + backward images/s at batch 32.

    python bench/bench_encoders.py [--device cpu|cuda] [--batch 32] [--steps 3] [--freeze none|mica]

Each backbone (random weights; speed does not depend on them) runs one warm-up step, then ``--steps``
timed steps of forward, ``sum(embedding**2)`` backward, on random normalised chips of its own size.
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from faceregen.encoders import build_backbone

BACKBONES = ("dlib_resnet", "iresnet18", "iresnet50", "iresnet100")


def images_per_second(name: str, device: torch.device, batch: int, steps: int, freeze: str) -> float:
    model = build_backbone(name, pretrained=None, freeze=freeze).to(device).train()
    chips = torch.randn(batch, 3, model.input_size, model.input_size, device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(chips).square().sum().backward()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=name, leave=False):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--freeze", default="none", choices=("none", "mica"))
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} steps={args.steps} freeze={args.freeze}")
    for name in args.backbones:
        rate = images_per_second(name, device, args.batch, args.steps, args.freeze)
        print(f"{name:12s} forward+backward {rate:8.1f} images/s")


if __name__ == "__main__":
    main()
