"""Multi-crop views of ALIGNED face chips for SwAV (Caron et al. 2020, section 3.2 "multi-crop").

One aligned chip (uint8 (3, S, S), S = the identity encoder's input size) gives::

    n_high_resolution crops: RandomResizedCrop(S,                   scale=high_resolution_scale)
    n_low_resolution  crops: RandomResizedCrop(round(f * S),        scale=low_resolution_scale)
    each then: horizontal flip (p) -> brightness/contrast jitter (p) -> grayscale (p) -> gaussian blur (p)

The chips are already aligned, so the crops keep most of the face (scale >= 0.6 for the high-resolution
crops instead of SwAV's 0.14). Lighting is what varies in renders of untextured meshes, so the colour
jitter changes only brightness and contrast. The blur kernel spans +-3 sigma of the largest sigma.

The views stay uint8 (3, s, s) tensors: the encoder's own ``normalize_input`` turns them into its float
input, exactly as for the supervised chips. Built on torchvision's transforms v2 (uint8 tensors), which
draw from torch's global generator, so the views are reproducible under ``torch.manual_seed``.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import v2


def _check_scale(name: str, scale: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(s) for s in scale)
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"{name}={tuple(scale)}: expected 0 < min <= max <= 1 (share of the chip area)")
    return low, high


def _check_probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name}={p}: expected a probability in [0, 1]")
    return float(p)


class FaceMultiCrop:
    """Aligned face chip uint8 (3, S, S) -> [high-resolution views..., low-resolution views...], uint8.

    Args:
        input_size: the identity encoder's chip side S in px (dlib 150, ArcFace 112); the high-resolution
            crops have this size, the input chips must too.
        n_high_resolution: number of crops of size S (SwAV: 2; they are the ones assigned codes).
        n_low_resolution: number of small crops (0: only high-resolution crops).
        low_resolution_factor: low-resolution crop side as a fraction of S (0.6: 150 -> 90).
        high_resolution_scale, low_resolution_scale: (min, max) share of the chip area each crop covers.
        flip_probability: horizontal flip.
        jitter_strength: brightness and contrast factors are drawn from [1 - s, 1 + s].
        jitter_probability: probability of applying the jitter.
        grayscale_probability: probability of converting to grey (3 equal channels).
        blur_probability: probability of a gaussian blur with sigma drawn from ``blur_sigma``.
        blur_sigma: (min, max) blur sigma in px.
    """

    def __init__(
        self,
        input_size: int = 150,
        n_high_resolution: int = 2,
        n_low_resolution: int = 4,
        low_resolution_factor: float = 0.6,
        high_resolution_scale: tuple[float, float] = (0.6, 1.0),
        low_resolution_scale: tuple[float, float] = (0.25, 0.6),
        flip_probability: float = 0.5,
        jitter_strength: float = 0.4,
        jitter_probability: float = 0.8,
        grayscale_probability: float = 0.2,
        blur_probability: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        if input_size < 8:
            raise ValueError(f"input_size={input_size}: expected the encoder's chip side in px (e.g. 150 or 112)")
        if n_high_resolution < 1 or n_low_resolution < 0:
            raise ValueError(
                f"n_high_resolution={n_high_resolution}, n_low_resolution={n_low_resolution}: "
                "expected at least one high-resolution crop and a non-negative number of low-resolution crops"
            )
        if not 0.0 < low_resolution_factor <= 1.0:
            raise ValueError(f"low_resolution_factor={low_resolution_factor}: expected a fraction in (0, 1]")
        if jitter_strength < 0.0 or not 0.0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(
                f"jitter_strength={jitter_strength}, blur_sigma={tuple(blur_sigma)}: expected a strength >= 0 "
                "and 0 < min sigma <= max sigma"
            )
        self.input_size = int(input_size)
        self.low_resolution_size = max(1, round(low_resolution_factor * input_size))
        self.n_high_resolution, self.n_low_resolution = int(n_high_resolution), int(n_low_resolution)
        blur_kernel = 2 * math.ceil(3.0 * blur_sigma[1]) + 1
        appearance = [
            v2.RandomHorizontalFlip(_check_probability("flip_probability", flip_probability)),
            v2.RandomApply(
                [v2.ColorJitter(brightness=jitter_strength, contrast=jitter_strength)],
                p=_check_probability("jitter_probability", jitter_probability),
            ),
            v2.RandomGrayscale(_check_probability("grayscale_probability", grayscale_probability)),
            v2.RandomApply(
                [v2.GaussianBlur(blur_kernel, sigma=tuple(float(s) for s in blur_sigma))],
                p=_check_probability("blur_probability", blur_probability),
            ),
        ]
        self.high_resolution = v2.Compose(
            [v2.RandomResizedCrop(self.input_size, scale=_check_scale("high_resolution_scale", high_resolution_scale), antialias=True)]
            + appearance
        )
        self.low_resolution = v2.Compose(
            [v2.RandomResizedCrop(self.low_resolution_size, scale=_check_scale("low_resolution_scale", low_resolution_scale), antialias=True)]
            + appearance
        )

    @property
    def view_sizes(self) -> list[int]:
        """Side in px of each returned view, in order."""
        return [self.input_size] * self.n_high_resolution + [self.low_resolution_size] * self.n_low_resolution

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (3, S, S) aligned chip -> list of uint8 views (3, s, s), high-resolution ones first."""
        if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or tuple(image.shape) != (3, self.input_size, self.input_size):
            found = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"multi-crop input: expected a uint8 (3, {self.input_size}, {self.input_size}) chip, got {found}")
        return [self.high_resolution(image) for _ in range(self.n_high_resolution)] + [
            self.low_resolution(image) for _ in range(self.n_low_resolution)
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(views={self.n_high_resolution}x{self.input_size} + "
            f"{self.n_low_resolution}x{self.low_resolution_size})"
        )
