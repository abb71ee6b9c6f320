"""Per-vertex distance metrics (the authors' "geometric" error), in millimetres."""

from __future__ import annotations

import torch


def per_vertex_distance_mm(pred_mm: torch.Tensor, gt_mm: torch.Tensor) -> torch.Tensor:
    """Euclidean distance per vertex, ``||pred_v - gt_v||_2``: (B, V, 3) x2 -> (B, V)."""
    if pred_mm.shape != gt_mm.shape:
        raise ValueError(f"prediction {tuple(pred_mm.shape)} and ground truth {tuple(gt_mm.shape)} differ")
    return torch.linalg.vector_norm(pred_mm - gt_mm, dim=-1)


def masked_mean_distance_mm(distance_mm: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and count of per-vertex distances where ``mask`` (B, V) is true.

    Returned as (sum, count) so that epoch means weight every vertex equally across batches; the mean is
    ``sum / count`` (NaN where nothing was selected).
    """
    mask = mask.to(distance_mm.dtype)
    return (distance_mm * mask).sum(), mask.sum()
