"""SwAV training throughput with the dlib identity encoder: images/s, every crop counted.

One training step = SwAVModule.training_step (encoder + projection head + prototypes + Sinkhorn + swapped
loss) + backward + Adam, on a batch of B images with 2 x 150 px + 4 x 96 px views (B * 6 crops), views
made beforehand (in training the datamodule's workers make them). Low-resolution views are either
resized up to 150 px (``resize_low_resolution=True``, what the encoder's size check allows today) or fed
at 96 px (only if the encoder accepts chips of other sizes). Also prints the multi-crop augmentation rate
of one CPU thread.

    .venv/bin/python bench/bench_swav.py [--batch-size 32] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from faceregen.encoders.identity_encoder import build_identity_encoder
from faceregen.ssl.multicrop import FaceMultiCrop
from lightning_modules.swav_module import SwAVModule

INPUT_SIZE = 150
LOW_RESOLUTION_FACTOR = 96 / INPUT_SIZE


class FixedViews(Dataset):
    """The same pre-made views for every step (augmentation is not part of the timed step)."""

    def __init__(self, views: list[torch.Tensor], steps: int) -> None:
        self.views, self.steps = views, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> dict:
        return {"views": self.views}


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self.start)


def make_views(batch_size: int, transform: FaceMultiCrop) -> list[torch.Tensor]:
    chips = torch.randint(0, 256, (batch_size, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8)
    per_image = [transform(chip) for chip in chips]
    return [torch.stack([views[v] for views in per_image]) for v in range(len(per_image[0]))]


def training_rate(views: list[torch.Tensor], steps: int, device: str, resize_low_resolution: bool) -> float:
    """Crops per second over ``steps`` timed steps after one warm-up step."""
    # the SSL stage's default encoder: dlib, mid-level features of stages 1-2, nothing frozen, backbone at 1e-5
    encoder = build_identity_encoder("dlib_resnet", freeze="none", feature_stages=(1, 2))
    module = SwAVModule(encoder, resize_low_resolution=resize_low_resolution, backbone_lr=1e-5)
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator=device, devices=1, max_steps=steps + 1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    # batch_size=None: the dataset item is already the whole batch
    trainer.fit(module, DataLoader(FixedViews(views, steps + 1), batch_size=None))
    crops = sum(len(v) for v in views)
    return crops * steps / sum(timer.seconds[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = parser.parse_args()
    torch.manual_seed(0)
    transform = FaceMultiCrop(INPUT_SIZE, n_low_resolution=4, low_resolution_factor=LOW_RESOLUTION_FACTOR)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    views = make_views(args.batch_size, transform)
    print(f"multi-crop augmentation ({transform}): {args.batch_size / (time.perf_counter() - start):.1f} images/s on 1 thread")
    torch.set_num_threads(threads)

    device_name = torch.cuda.get_device_name() if args.device == "gpu" else f"CPU, {threads} threads"
    print(f"SwAV training, dlib_resnet, batch {args.batch_size} x {transform.view_sizes} px views, {device_name}:")
    for resize in (True, False):
        label = "low-resolution views resized to 150" if resize else "low-resolution views at 96 (native)"
        try:
            rate = training_rate(views, args.steps, args.device, resize)
        except ValueError as error:
            print(f"  {label}: not possible with this encoder ({error})")
            continue
        print(f"  {label}: {rate:.1f} crops/s = {rate / len(views):.1f} images/s")


if __name__ == "__main__":
    main()
