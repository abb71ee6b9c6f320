"""Flip averaging: a shape code predicted from a face photo and from its mirror image, averaged.

A face flipped left to right is the mirrored head's photo (the model frame's mid-sagittal plane is
``x = 0``; :mod:`faceregen.face_model.symmetry`). So a code predictor ``f`` gives two estimates of one head,
``f(I)`` and the mirror of ``f(flip(I))``, whose errors are partly independent; their mean is

    z(I) = 1/2 ( f(I) + M f(flip(I)) + m )          (M, m: the face model's code mirror)

The same symmetry doubles the read-out's training set: every training image's flip, with its head's mirrored
code (:meth:`MICAModule.fit_readout <lightning_modules.mica_module.MICAModule.fit_readout>`); a training step
sees each image flipped or not at random, with its head mirrored to match (:meth:`FlipAveraging.random_flip`,
one pass per image, as before).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from faceregen.face_model.symmetry import CodeMirror


class FlipAveraging(nn.Module):
    """The module docstring's ``z(I)`` around a predictor ``f``: uint8 chips (B, 3, S, S) -> codes (B, K)."""

    def __init__(self, mirror: CodeMirror) -> None:
        super().__init__()
        # derived from the face model each time the module is built: not saved with the weights
        self.register_buffer("matrix", torch.from_numpy(mirror.matrix).float(), persistent=False)
        self.register_buffer("offset", torch.from_numpy(mirror.offset).float(), persistent=False)
        self.register_buffer("vertex_permutation", torch.from_numpy(mirror.vertex_permutation), persistent=False)

    def mirror(self, codes: torch.Tensor) -> torch.Tensor:
        """``M z + m`` for codes (B, K)."""
        return codes @ self.matrix.T + self.offset

    def forward(self, predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """``predict`` runs once on the images and their mirror images together."""
        codes = predict(torch.cat([images, images.flip(-1)]))
        direct, flipped = codes.chunk(2)
        return 0.5 * (direct + self.mirror(flipped))

    def random_flip(self, images: torch.Tensor, heads_mm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image (B, 3, S, S) flipped left to right with probability 1/2, and its head (B, V, 3) mirrored
        with it (x negated, vertices re-indexed by the mirror's permutation)."""
        flip = torch.rand(len(images), device=images.device) < 0.5
        mirrored = heads_mm[:, self.vertex_permutation] * heads_mm.new_tensor([-1.0, 1.0, 1.0])
        return (torch.where(flip[:, None, None, None], images.flip(-1), images),
                torch.where(flip[:, None, None], mirrored, heads_mm))
