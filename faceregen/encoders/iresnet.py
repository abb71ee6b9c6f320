"""IResNet 18/34/50/100: the ArcFace backbone, key-compatible with insightface's ``arcface_torch``.

State-dict keys and shapes equal those of insightface ``recognition/arcface_torch/backbones/iresnet.py``
(and of MICA's ``Arcface``, an iresnet100), so an insightface ``backbone.pth`` or the ``arcface`` entry
of MICA's ``mica.tar`` loads unchanged:

    conv1, bn1, prelu,
    layer{1..4}.{i}.{bn1, conv1, bn2, prelu, conv2, bn3, downsample.0 (1x1 conv), downsample.1 (BN)},
    bn2, fc (512*7*7 -> 512), features (BatchNorm1d(512), weight fixed to 1).

Input: 112x112 RGB in [-1, 1] (``(x / 255 - 0.5) / 0.5``), aligned to ArcFace's five-point template.
Each stage halves the resolution in its first block: 112 -> 56 -> 28 -> 14 -> 7.
"""

from __future__ import annotations

import torch
from torch import nn

from faceregen.encoders.backbone import FreezableBackbone

#: Blocks per stage for each depth.
IRESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}

STAGE_WIDTHS = (64, 128, 256, 512)
EMBEDDING_DIM = 512
BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """Pre-activation residual block: ``y = BN(conv(PReLU(BN(conv(BN(x)))))) + shortcut(x)``.

    The second 3x3 convolution carries the stride; the shortcut is a strided 1x1 convolution + BN when
    the width or resolution changes, the identity otherwise.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(FreezableBackbone):
    """ArcFace IResNet: 112x112 chip in [-1, 1] -> 512-d embedding (not normalised).

    Args:
        layers: blocks per stage, e.g. ``IRESNET_LAYERS[100]``.
        dropout: dropout before ``fc`` (insightface's default 0).
        freeze: ``"none" | "mica" | "all"``; ``"mica"`` fixes conv1, bn1, prelu and layer1-3 (MICA's
            ``Arcface``). ``features.weight`` is always fixed to 1, as in insightface.
    """

    input_size = 112
    alignment = "arcface_112"
    feature_dim = EMBEDDING_DIM

    def __init__(self, layers: tuple[int, ...], dropout: float = 0.0, freeze: str = "none") -> None:
        super().__init__(freeze)
        if len(layers) != len(STAGE_WIDTHS) or min(layers) < 1:
            raise ValueError(f"layers={layers}: expected {len(STAGE_WIDTHS)} positive block counts")
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0], eps=BN_EPS)
        self.prelu = nn.PReLU(STAGE_WIDTHS[0])
        in_channels = STAGE_WIDTHS[0]
        for index, (channels, n_blocks) in enumerate(zip(STAGE_WIDTHS, layers), start=1):
            blocks = [IBasicBlock(in_channels, channels, stride=2)]
            blocks += [IBasicBlock(channels, channels) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(STAGE_WIDTHS[-1], eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        final_side = self.input_size // 2 ** len(STAGE_WIDTHS)
        self.fc = nn.Linear(STAGE_WIDTHS[-1] * final_side * final_side, EMBEDDING_DIM)
        self.features = nn.BatchNorm1d(EMBEDDING_DIM, eps=BN_EPS)
        self.reset_parameters()
        self.features.weight.requires_grad_(False)
        self.apply_freeze()

    def reset_parameters(self) -> None:
        """insightface's initialisation: convolutions N(0, 0.1), batch norms weight 1 bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def trunk_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1, self.prelu, self.layer1, self.layer2, self.layer3]

    def stage_modules(self) -> list[nn.Module]:
        return [nn.Sequential(self.conv1, self.bn1, self.prelu), self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2(self.layer4(x))
        x = self.dropout(torch.flatten(x, 1))
        return self.features(self.fc(x))

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB -> ``(x / 255 - 0.5) / 0.5`` in [-1, 1] (MICA's ``blobFromImages`` preprocessing)."""
        return (images.float() / 255.0 - 0.5) / 0.5


def iresnet(depth: int, dropout: float = 0.0, freeze: str = "none") -> IResNet:
    """IResNet of the given depth (18, 34, 50 or 100)."""
    if depth not in IRESNET_LAYERS:
        raise ValueError(f"iresnet depth {depth}: expected one of {sorted(IRESNET_LAYERS)}")
    return IResNet(IRESNET_LAYERS[depth], dropout=dropout, freeze=freeze)
