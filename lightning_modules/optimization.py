"""The optimiser set-up MICAModule and SwAVModule share: the identity encoder in a parameter group of its
own, so a pre-trained backbone can move more slowly than the freshly initialised layers on top of it
(MICA's release: 1e-5 for the backbone)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn


def trainable(module: nn.Module | None) -> list[nn.Parameter]:
    return [] if module is None else [p for p in module.parameters() if p.requires_grad]


def encoder_parameter_groups(
    heads: Mapping[str, nn.Module | None], identity_encoder: nn.Module, backbone_lr: float | None
) -> list[dict]:
    """One named group per head module with trainable parameters, then ``identity_encoder`` (at
    ``backbone_lr`` when given, else the optimiser's ``lr``); modules without trainable parameters are left out."""
    groups = [{"params": params, "name": name} for name, m in heads.items() if (params := trainable(m))]
    if encoder := trainable(identity_encoder):
        groups.append({"params": encoder, "name": "identity_encoder"})
        if backbone_lr is not None:
            groups[-1]["lr"] = backbone_lr
    return groups


def optimizer_with_scheduler(
    groups: list[dict],
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None,
):
    """Lightning's ``configure_optimizers`` value: the optimiser, with the scheduler stepped every epoch."""
    built = optimizer(groups)
    if scheduler is None:
        return built
    return {"optimizer": built, "lr_scheduler": {"scheduler": scheduler(built), "interval": "epoch"}}
