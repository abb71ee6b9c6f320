"""The identity encoder of MICA: a face-recognition backbone whose embedding feeds the mapping network.

MICA computes ``z = M(normalize(ArcFace(I)))``. Here the backbone is either an IResNet (ArcFace layout,
112x112 chips aligned with ArcFace's five-point template) or dlib's face-recognition ResNet (150x150
chips aligned by ``dlib.get_face_chip``, shipped weights from ``face_recognition_models``).

Freezing (``freeze``: ``none | mica | all``) is the backbone's, :mod:`faceregen.encoders.backbone`.

Mid-level features (``feature_stages``): instead of the backbone's final embedding, the identity feature
is the outputs of chosen stages, each average-pooled to a ``feature_grid x feature_grid`` grid,
concatenated and standardised per dimension (a batch norm without affine parameters, whose running
statistics travel with the encoder's weights):

    e = standardize(concat_s pool_g(stage_s(x)))

A recognition network's final embedding is trained to ignore what does not tell people apart, which
includes much of the 3D shape of a grey render; its earlier stages still see it (on the embedded
default, ridge regression from dlib stages 1-2 predicts shape far better than from the 128-d descriptor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from faceregen.encoders.backbone import FreezableBackbone, check_chip_shape
from faceregen.encoders.checkpoints import StateDict, cpu_copy, load_insightface_backbone, load_state_strict
from faceregen.encoders.dlib_resnet import SHIPPED_WEIGHTS, DlibResNet, dlib_state_dict
from faceregen.encoders.feature_cache import FeatureCache, encoder_fingerprint
from faceregen.encoders.iresnet import IRESNET_LAYERS, iresnet

#: ``pretrained="default"``: the backbone's shipped weights where a registry package carries them
#: (dlib: ``face_recognition_models``); IResNets have none and start from random weights.
DEFAULT_WEIGHTS = "default"


#: the state-dict prefix of the mid-level features' standardisation (a MICA-layout checkpoint's encoder
#: entry holds it beside the backbone's own keys)
STANDARDIZER = "feature_standardizer"


class IdentityEncoder(nn.Module):
    """The identity feature fed to the mapping network.

    ``e = normalize(backbone(x))`` (MICA) or, with ``feature_stages``, the standardised mid-level features
    (see the module docstring).

    Args:
        backbone: a :class:`FreezableBackbone` (see :func:`build_backbone`).
        normalize_embedding: L2-normalise the final embedding, as MICA does (``F.normalize``).
        feature_stages: indices of the backbone stages whose outputs form the feature (dlib: 0-4,
            IResNet: 0-3); ``None``: the final embedding. Layers after the last of them do not shape the
            feature and are fixed.
        feature_grid: side of the average-pooling grid of each tapped stage.
    """

    def __init__(
        self,
        backbone: FreezableBackbone,
        normalize_embedding: bool = True,
        feature_stages: Sequence[int] | None = None,
        feature_grid: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, FreezableBackbone):
            raise ValueError(f"backbone: expected a FreezableBackbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.normalize_embedding = normalize_embedding
        self.feature_stages = None if feature_stages is None else sorted(int(s) for s in feature_stages)
        self.feature_grid = feature_grid
        self.feature_standardizer = None
        self.feature_cache: FeatureCache | None = None
        self._feature_dim = backbone.feature_dim
        if self.feature_stages is not None:
            n_stages = len(backbone.stage_modules()) - 1
            if not self.feature_stages or not all(0 <= s < n_stages for s in self.feature_stages) or feature_grid < 1:
                raise ValueError(
                    f"feature_stages={list(feature_stages)}, feature_grid={feature_grid}: expected stage indices "
                    f"within 0..{n_stages - 1} and a grid of at least 1"
                )
            used = {id(p) for m in backbone.stage_modules()[: self.feature_stages[-1] + 2] for p in m.parameters()}
            for parameter in backbone.parameters():
                if id(parameter) not in used:
                    parameter.requires_grad_(False)
            self._feature_dim = self._mid_level_dim()
            self.feature_standardizer = nn.BatchNorm1d(self._feature_dim, affine=False)

    def _mid_level_dim(self) -> int:
        training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            size = self.input_size
            dim = self.pooled_stages(torch.zeros(1, 3, size, size)).shape[1]
        self.backbone.train(training)
        return dim

    @property
    def input_size(self) -> int:
        return self.backbone.input_size

    @property
    def alignment(self) -> str:
        return self.backbone.alignment

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    def _shaping_modules(self) -> list[nn.Module]:
        """The backbone's modules that shape the mid-level features (none without them)."""
        return self.backbone.stage_modules()[: self.feature_stages[-1] + 2] if self.feature_stages else []

    @property
    def features_fixed(self) -> bool:
        """True when nothing that shapes the mid-level features trains (their stages are frozen)."""
        return not any(p.requires_grad for m in self._shaping_modules() for p in m.parameters())

    def use_feature_cache(self, cache: FeatureCache | None) -> None:
        """Serve the mid-level features from ``cache`` (:mod:`faceregen.encoders.feature_cache`) whenever they are
        fixed, their stages' batch norms (if any) in eval mode; None: compute them every time."""
        if cache is not None and self.feature_stages is None:
            raise ValueError("a feature cache serves mid-level features: set feature_stages")
        self.feature_cache = cache

    def _features_cacheable(self) -> bool:
        shaping = self._shaping_modules()
        return self.features_fixed and not any(
            m.training for s in shaping for m in s.modules() if next(m.buffers(recurse=False), None) is not None)

    def train(self, mode: bool = True) -> IdentityEncoder:
        """Fixed features keep fixed statistics: their standardisation stays in eval mode (training then sees
        the features exactly as validation and a closed-form read-out do)."""
        super().train(mode)
        if self.feature_standardizer is not None and self.features_fixed:
            self.feature_standardizer.eval()
        return self

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB chips (B, 3, S, S) -> the backbone's float input (see the backbone)."""
        if images.dtype != torch.uint8:
            raise ValueError(f"images: expected uint8 RGB chips, got dtype {images.dtype}")
        check_chip_shape(images, self.input_size, "images")
        return self.backbone.normalize_input(images)

    def pooled_stages(self, images: torch.Tensor) -> torch.Tensor:
        """``concat_s pool_g(stage_s(x))`` (B, D) before standardisation (from the feature cache, if any, while
        the features are fixed)."""
        if self.feature_cache is not None and self._features_cacheable():
            named = ((f"{i}.{name}", t) for i, m in enumerate(self._shaping_modules()) for name, t in m.state_dict().items())
            settings = f"{type(self.backbone).__name__} stages {self.feature_stages} grid {self.feature_grid}"
            fingerprint = encoder_fingerprint(named, settings, images.device.type)
            return self.feature_cache.lookup(fingerprint, images, self._computed_pooled_stages)
        return self._computed_pooled_stages(images)

    def _computed_pooled_stages(self, images: torch.Tensor) -> torch.Tensor:
        outputs = self.backbone.stage_outputs(images, self.feature_stages[-1] + 1)
        pooled = [F.adaptive_avg_pool2d(outputs[s], self.feature_grid).flatten(1) for s in self.feature_stages]
        return torch.cat(pooled, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised float chips (B, 3, S, S) -> identity features (B, feature_dim)."""
        if self.feature_standardizer is not None:
            return self.feature_standardizer(self.pooled_stages(images))
        embedding = self.backbone(images)
        return F.normalize(embedding, dim=-1) if self.normalize_embedding else embedding

    def encoder_state_dict(self) -> StateDict:
        """The encoder entry of a MICA-layout checkpoint: the backbone's own keys (insightface / dlib) and,
        with mid-level features, ``feature_standardizer.*``."""
        prefix = "backbone."
        return cpu_copy({(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in self.state_dict().items()})

    def load_encoder_state(self, state: StateDict, source: str | Path) -> None:
        """Inverse of :meth:`encoder_state_dict`, strict (a file without the standardisation statistics
        does not fit an encoder with mid-level features, and vice versa)."""
        own = {(k if k.startswith(STANDARDIZER + ".") else "backbone." + k): v for k, v in state.items()}
        load_state_strict(self, own, source)


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
        freeze: ``"none" | "mica" | "all"`` (see :mod:`faceregen.encoders.backbone`).
    """
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
    feature_stages: Sequence[int] | None = None,
    feature_grid: int = 4,
) -> IdentityEncoder:
    """:func:`build_backbone` wrapped in an :class:`IdentityEncoder`; usable as a Hydra ``_target_``."""
    return IdentityEncoder(build_backbone(backbone, pretrained, freeze), normalize_embedding, feature_stages, feature_grid)
