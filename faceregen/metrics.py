"""Per-vertex distance metrics (the authors' "geometric" error), in millimetres."""

from __future__ import annotations

import numpy as np
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


def similarity_aligned_distance_mm(pred_mm: torch.Tensor, gt_mm: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """Per-vertex distance (B, V) after fitting each prediction to its ground truth by a similarity.

    The least-squares ``s R x + t`` (:func:`faceregen.geometry.umeyama`) over the ``vertices`` (V,) bool
    mask maps the prediction onto the ground truth first: what remains is the error of the shape itself,
    without size, position and orientation (which a 5-point-aligned image cannot show).
    """
    from faceregen.geometry import umeyama

    pred = pred_mm.detach().double().cpu().numpy()
    gt = gt_mm.detach().double().cpu().numpy()
    keep = vertices.cpu().numpy()
    scale, rotation, translation = umeyama(pred[:, keep], gt[:, keep])
    aligned = scale[:, None, None] * np.einsum("bij,bvj->bvi", rotation, pred) + translation[:, None, :]
    return torch.from_numpy(np.linalg.norm(aligned - gt, axis=-1)).to(pred_mm)
