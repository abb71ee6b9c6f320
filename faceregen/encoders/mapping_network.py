"""MICA's mapping network ``M``: identity embedding -> shape code ``z`` of the face model.

    h_0 = e
    h_i = LeakyReLU_0.2(W_i h_{i-1} + b_i),   i = 0..hidden_layers   (input_dim -> hidden_dim -> ...)
    z   = W_out h + b_out                     (hidden_dim -> output_dim)

or, with ``hidden_dim=None``, the linear read-out ``z = W_out e + b_out`` (input_dim -> output_dim), which
:mod:`faceregen.encoders.readout` can fit in closed form.

Initialisation: Kaiming normal (fan-in, leaky ReLU with a=0.2) for every hidden linear layer, PyTorch's
default for ``output`` then its weights scaled by 0.25, so the initial codes stay small.

State-dict keys equal those of MICA's ``MappingNetwork`` (``flameModel.regressor`` in ``mica.tar``, with
the ``regressor.`` prefix removed): ``network.{0..hidden_layers}.{weight,bias}``, ``output.{weight,bias}``.
MICA's release uses input 512 (ArcFace), hidden 300, output 300 (FLAME shape), 3 hidden layers.
(MICA adds skip connections only for more than 5 hidden layers; this module has none and refuses that.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
OUTPUT_WEIGHT_SCALE = 0.25
MAX_HIDDEN_LAYERS = 5


class MappingNetwork(nn.Module):
    """``z = M(e)``: an MLP with LeakyReLU(0.2) from the identity embedding to the shape code.

    Args:
        input_dim: embedding size (512 for ArcFace, 128 for dlib).
        hidden_dim: width of the hidden layers (MICA: 300); None: no hidden layer (a linear read-out).
        output_dim: number of shape components ``K`` of the face model (MICA: 300).
        hidden_layers: number of hidden ``hidden_dim -> hidden_dim`` layers after the first (MICA: 3); 0
            with ``hidden_dim=None``.
    """

    def __init__(
        self, input_dim: int = 512, hidden_dim: int | None = 300, output_dim: int = 300, hidden_layers: int = 3
    ) -> None:
        super().__init__()
        linear = hidden_dim is None
        if min(input_dim, output_dim, 1 if linear else hidden_dim) < 1 or not 0 <= hidden_layers <= MAX_HIDDEN_LAYERS \
                or (linear and hidden_layers):
            raise ValueError(
                f"mapping network: dims ({input_dim}, {hidden_dim}, {output_dim}) must be positive and "
                f"hidden_layers={hidden_layers} within 0..{MAX_HIDDEN_LAYERS} (0 for hidden_dim=null, a linear read-out)"
            )
        self.input_dim, self.output_dim = input_dim, output_dim
        widths = [] if linear else [input_dim] + [hidden_dim] * (hidden_layers + 1)
        self.network = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output = nn.Linear(input_dim if linear else hidden_dim, output_dim)
        for layer in self.network:
            nn.init.kaiming_normal_(layer.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
        with torch.no_grad():
            self.output.weight.mul_(OUTPUT_WEIGHT_SCALE)

    @property
    def is_linear(self) -> bool:
        """True for the linear read-out ``z = W_out e + b_out``."""
        return len(self.network) == 0

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, input_dim) -> shape codes (B, output_dim)."""
        if embedding.ndim != 2 or embedding.shape[1] != self.input_dim:
            raise ValueError(f"embedding: expected (B, {self.input_dim}), got {tuple(embedding.shape)}")
        h = embedding
        for layer in self.network:
            h = F.leaky_relu(layer(h), negative_slope=LEAKY_SLOPE)
        return self.output(h)
