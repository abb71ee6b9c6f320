"""The identity encoder of MICA: a face-recognition backbone whose embedding feeds the mapping network.

MICA computes ``z = M(normalize(ArcFace(I)))``. Here the backbone is either an IResNet (ArcFace layout,
112x112 chips aligned with ArcFace's five-point template) or dlib's face-recognition ResNet (150x150
chips aligned by ``dlib.get_face_chip``, shipped weights from ``face_recognition_models``).

Freezing follows MICA: with ``freeze="mica"`` the trunk (everything up to the last stage) keeps its
weights, runs under ``torch.no_grad`` and stays in eval mode (batch-norm statistics do not move); the
head (last stage, final norm and projection) trains. ``freeze="all"`` fixes everything, ``"none"``
nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FREEZE_MODES = ("none", "mica", "all")

#: ``pretrained="default"``: the backbone's shipped weights where a registry package carries them
#: (dlib: ``face_recognition_models``); IResNets have none and start from random weights.
DEFAULT_WEIGHTS = "default"


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


class IdentityEncoder(nn.Module):
    """``e = normalize(backbone(x))``: the identity embedding fed to the mapping network.

    Args:
        backbone: a :class:`FreezableBackbone` (see :func:`build_backbone`).
        normalize_embedding: L2-normalise the embedding, as MICA does (``F.normalize``).
    """

    def __init__(self, backbone: FreezableBackbone, normalize_embedding: bool = True) -> None:
        super().__init__()
        if not isinstance(backbone, FreezableBackbone):
            raise ValueError(f"backbone: expected a FreezableBackbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.normalize_embedding = normalize_embedding

    @property
    def input_size(self) -> int:
        return self.backbone.input_size

    @property
    def alignment(self) -> str:
        return self.backbone.alignment

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB chips (B, 3, S, S) -> the backbone's float input (see the backbone)."""
        if images.dtype != torch.uint8:
            raise ValueError(f"images: expected uint8 RGB chips, got dtype {images.dtype}")
        check_chip_shape(images, self.input_size, "images")
        return self.backbone.normalize_input(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float chips (B, 3, S, S) -> identity embeddings (B, feature_dim)."""
        embedding = self.backbone(images)
        return F.normalize(embedding, dim=-1) if self.normalize_embedding else embedding


def build_backbone(
    name: str = "dlib_resnet", pretrained: str | None = DEFAULT_WEIGHTS, freeze: str = "none"
) -> FreezableBackbone:
    """Build a backbone by name; usable as a Hydra ``_target_``.

    Args:
        name: ``"dlib_resnet"`` or ``"iresnet18" | "iresnet34" | "iresnet50" | "iresnet100"``.
        pretrained: ``None`` for random weights; ``"default"`` for the shipped weights (dlib) or random
            weights (IResNet, nothing ships); for dlib ``"face_recognition_models"`` or a path to a dlib
            ``.dat`` file; for IResNet a path to an insightface ``backbone.pth`` (plain state dict) or to
            MICA's ``mica.tar`` (its ``arcface`` entry).
        freeze: ``"none" | "mica" | "all"`` (see the module docstring).
    """
    # Imported here: the backbone modules import FreezableBackbone from this one.
    from faceregen.encoders.checkpoints import load_insightface_backbone, load_state_strict
    from faceregen.encoders.dlib_resnet import SHIPPED_WEIGHTS, DlibResNet, dlib_state_dict
    from faceregen.encoders.iresnet import IRESNET_LAYERS, iresnet

    depths = {f"iresnet{depth}": depth for depth in IRESNET_LAYERS}
    if name == "dlib_resnet":
        backbone = DlibResNet(freeze=freeze)
        if pretrained is not None:
            source = SHIPPED_WEIGHTS if pretrained == DEFAULT_WEIGHTS else pretrained
            load_state_strict(backbone, dlib_state_dict(source), source)
        return backbone
    if name in depths:
        backbone = iresnet(depths[name], freeze=freeze)
        if pretrained not in (None, DEFAULT_WEIGHTS):
            load_state_strict(backbone, load_insightface_backbone(pretrained), pretrained)
        return backbone
    raise ValueError(f"backbone name {name!r}: expected one of {['dlib_resnet', *depths]}")


def build_identity_encoder(
    backbone: str = "dlib_resnet",
    pretrained: str | None = DEFAULT_WEIGHTS,
    freeze: str = "none",
    normalize_embedding: bool = True,
) -> IdentityEncoder:
    """:func:`build_backbone` wrapped in an :class:`IdentityEncoder`; usable as a Hydra ``_target_``."""
    return IdentityEncoder(build_backbone(backbone, pretrained, freeze), normalize_embedding)
