"""The face-recognition backbone an identity encoder wraps: a trunk and a head, frozen as MICA freezes it.

With ``freeze="mica"`` the trunk (everything up to the last stage) keeps its weights, runs under
``torch.no_grad`` and stays in eval mode (batch-norm statistics do not move); the head (last stage, final
norm and projection) trains. ``freeze="all"`` fixes everything, ``"none"`` nothing. The backbones
(:mod:`faceregen.encoders.iresnet`, :mod:`faceregen.encoders.dlib_resnet`) subclass
:class:`FreezableBackbone`; :mod:`faceregen.encoders.identity_encoder` builds them by name.
"""

from __future__ import annotations

import torch
from torch import nn

FREEZE_MODES = ("none", "mica", "all")


class FreezableBackbone(nn.Module):
    """A backbone made of a trunk and a head, ``embedding = head(trunk(images))``.

    Subclasses set ``input_size`` (square chip side, px), ``alignment`` (the chip convention),
    ``feature_dim`` and implement :meth:`trunk_modules`, :meth:`forward_trunk`, :meth:`forward_head`
    and :meth:`normalize_input`; they call :meth:`apply_freeze` at the end of ``__init__``.
    """

    input_size: int
    alignment: str
    feature_dim: int

    def __init__(self, freeze: str = "none") -> None:
        super().__init__()
        if freeze not in FREEZE_MODES:
            raise ValueError(f"freeze={freeze!r}: expected one of {FREEZE_MODES}")
        self.freeze = freeze

    def trunk_modules(self) -> list[nn.Module]:
        """The modules that ``freeze="mica"`` fixes."""
        raise NotImplementedError

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB chips (B, 3, S, S) -> the float input this backbone was trained on."""
        raise NotImplementedError

    def stage_modules(self) -> list[nn.Module]:
        """The stem, then each stage, in forward order (mid-level features tap the stages' outputs)."""
        raise NotImplementedError

    def stage_outputs(self, images: torch.Tensor, n_stages: int) -> list[torch.Tensor]:
        """Normalised float chips (B, 3, S, S) -> the outputs of the first ``n_stages`` stages.

        Like :meth:`forward`, the leading frozen modules run without gradient.
        """
        check_chip_shape(images, self.input_size, "images")
        grad, needs_grad = torch.is_grad_enabled(), False
        x, outputs = images, []
        for index, module in enumerate(self.stage_modules()[: n_stages + 1]):
            needs_grad = needs_grad or any(p.requires_grad for p in module.parameters())
            with torch.set_grad_enabled(grad and needs_grad):
                x = module(x)
            if index:
                outputs.append(x)
        return outputs

    def frozen_modules(self) -> list[nn.Module]:
        return {"none": [], "mica": self.trunk_modules(), "all": [self]}[self.freeze]

    def apply_freeze(self) -> None:
        """Fix the parameters of the frozen modules (``requires_grad=False``) and put them in eval mode."""
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> FreezableBackbone:
        super().train(mode)
        for module in self.frozen_modules():
            nn.Module.train(module, False)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float chips (B, 3, S, S) -> embeddings (B, feature_dim)."""
        check_chip_shape(images, self.input_size, "images")
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and self.freeze == "none"):
            x = self.forward_trunk(images)
        with torch.set_grad_enabled(grad and self.freeze != "all"):
            return self.forward_head(x)


def check_chip_shape(images: torch.Tensor, size: int, what: str) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
        raise ValueError(f"{what}: expected a (B, 3, {size}, {size}) batch of RGB chips, got {tuple(images.shape)}")
