"""Scale averaging: a shape code predicted from a face chip re-framed at a few scales, averaged.

The five-point alignment fixes a chip's scale by the landmarks' spread, so where the rest of the head (the
skull's outline, the jaw, the ears) falls on the chip is seen at that one scale only, and a linear read-out
of mid-level features on a fixed grid of cells reads it cell by cell. Magnifying the chip about its centre by
each factor ``s`` of a small set ``S`` gives as many views of one head; their codes are averaged:

    z(I) = 1/|S| sum_{s in S} f(W_s I)      W_s: the chip magnified by s about its centre
                                              (bilinear, the border pixels repeated outside it)

The same views enlarge the read-out's training set |S|-fold: every training chip at every scale, with its
head's code (:meth:`MICAModule.fit_readout <lightning_modules.mica_module.MICAModule.fit_readout>`). The
read-out is linear, so ``z(I)`` is also the read-out of the views' mean feature, which is how the
validation images choose its ridge strength. A training step sees each chip at one scale of ``S`` drawn at
random (:meth:`ScaleAveraging.random_rescale`). With flip averaging
(:mod:`faceregen.encoders.flip_averaging`) each view is averaged with its mirror image's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def rescale(images: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Float images (B, C, S, S), each magnified by ``scales`` (B,) about its centre: ``W_s`` above."""
    inverse = 1.0 / scales.to(images.dtype)
    theta = torch.zeros(len(images), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = inverse
    theta[:, 1, 1] = inverse
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class ScaleAveraging(nn.Module):
    """The module docstring's ``z(I)`` around a predictor ``f`` of float chips (B, C, S, S) -> codes (B, K)."""

    def __init__(self, scales: Sequence[float]) -> None:
        super().__init__()
        scales = [float(s) for s in scales]
        if not scales or min(scales) <= 0.0:
            raise ValueError(f"chip_scales={scales}: expected one or more positive magnifications (1.0: the chip as aligned)")
        if len(set(scales)) != len(scales):
            raise ValueError(f"chip_scales={scales}: each scale once")
        # from the configuration each time the module is built: not saved with the weights
        self.register_buffer("scales", torch.tensor(scales), persistent=False)

    def views(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The chips at each scale, in the order of ``scales``."""
        return [images if s == 1.0 else rescale(images, self.scales.new_full((len(images),), s))
                for s in self.scales.tolist()]

    def forward(self, predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """``predict`` runs once on all the views together."""
        codes = predict(torch.cat(self.views(images)))
        return codes.view(len(self.scales), len(images), -1).mean(0)

    def random_rescale(self, images: torch.Tensor) -> torch.Tensor:
        """Each chip at one of ``scales``, drawn uniformly (a training step's augmentation)."""
        pick = torch.randint(len(self.scales), (len(images),), device=images.device)
        return rescale(images, self.scales.to(images.device)[pick])
