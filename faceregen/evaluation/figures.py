"""The paper's figures from finished runs (matplotlib, Agg): loss curves (Figs. 8-10), SwAV loss at
20% vs 100% (Fig. 9), per-vertex error heat maps (Fig. 11) and input / prediction / ground-truth rows.

Each function returns a ``Figure`` (or None when the runs hold nothing to draw); save it with
:func:`faceregen.plotting.save_figure`. Curves are the mean over seeds with a +/- one sample-std band.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from faceregen.evaluation.runs import RunRecord, group_by_setting, mean_curve, stage_history
from faceregen.evaluation.table import SETTING_LABELS
from faceregen.metrics import per_vertex_distance_mm
from faceregen.plotting import draw_mesh, plt

#: (metrics.json key, panel title) of the training-curve figure
LOSS_PANELS = (
    ("train/loss_epoch", "train loss (region-weighted L1)"),
    ("val/loss", "validation loss"),
    ("val/mean_distance_mm", "validation mean distance (mm)"),
    ("val/face_rigid_mm", "validation face error, rigid fit (mm; monitored)"),
)
SWAV_KEY = "ssl/loss_epoch"


def _plot_mean_curve(ax: plt.Axes, histories: Sequence[Sequence[dict]], key: str, label: str) -> bool:
    """Mean +/- std of ``key`` over ``histories`` on ``ax``; False when none has it."""
    epochs, mean, std, n = mean_curve(histories, key)
    if not len(epochs):
        return False
    line = ax.plot(epochs, mean, marker="o", markersize=3, label=f"{label} (n={n.max()})")[0]
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    return True


def loss_curves_figure(runs: Sequence[RunRecord]) -> plt.Figure | None:
    """Train loss, validation loss, validation mean distance and face error per epoch, one line per setting."""
    fig, axes = plt.subplots(1, len(LOSS_PANELS), figsize=(5.2 * len(LOSS_PANELS), 4.2))
    drawn = False
    for setting, group in group_by_setting(runs).items():
        for ax, (key, _) in zip(axes, LOSS_PANELS):
            drawn |= _plot_mean_curve(ax, [r.history for r in group], key, SETTING_LABELS.get(setting, setting))
    if not drawn:
        plt.close(fig)
        return None
    for ax, (_, title) in zip(axes, LOSS_PANELS):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def swav_loss_figure(runs: Sequence[RunRecord]) -> plt.Figure | None:
    """SwAV loss per epoch of the self-supervised stage, one line per setting that has one (20% vs 100%).

    Runs sharing one cached SwAV stage count it once.
    """
    fig, ax = plt.subplots(figsize=(6, 4.2))
    drawn = False
    for setting, group in group_by_setting(runs).items():
        folders = {r.stages["ssl_stage_dir"]: r for r in group if r.stages.get("ssl_stage_dir")}
        histories = [h for h in (stage_history(r, "ssl_stage_dir") for r in folders.values()) if h]
        drawn |= _plot_mean_curve(ax, histories, SWAV_KEY, SETTING_LABELS.get(setting, setting)) if histories else False
    if not drawn:
        plt.close(fig)
        return None
    ax.set(title="SwAV pre-training loss", xlabel="epoch", ylabel="SwAV loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _evaluated_faces(faces: np.ndarray, evaluation_mask: np.ndarray) -> np.ndarray:
    """The triangles whose three vertices are all evaluated (the eyeballs' are left out)."""
    faces = np.asarray(faces, dtype=np.int64)
    return faces[np.asarray(evaluation_mask, dtype=bool)[faces].all(axis=1)]


def _errors_mm(predictions_mm: np.ndarray, ground_truth_mm: np.ndarray) -> np.ndarray:
    pred, gt = (torch.as_tensor(np.asarray(vertices)) for vertices in (predictions_mm, ground_truth_mm))
    return per_vertex_distance_mm(pred, gt).numpy()


def _error_range_mm(errors_mm: np.ndarray, evaluation_mask: np.ndarray) -> float:
    """Shared top of the colour scale: the 99th percentile of the evaluated vertices' errors (>0)."""
    return float(max(np.percentile(errors_mm[:, np.asarray(evaluation_mask, bool)], 99), 1e-6))


def error_heatmaps_figure(
    predictions_mm: np.ndarray,
    ground_truth_mm: np.ndarray,
    faces: np.ndarray,
    evaluation_mask: np.ndarray,
    titles: Sequence[str] | None = None,
    views: Sequence[str] = ("front", "left"),
) -> plt.Figure:
    """Per-vertex error ``|pred_v - gt_v|`` (mm) on the ground-truth face, one row per sample, one
    column per view, on one colour scale (0 to the 99th percentile)."""
    errors = _errors_mm(predictions_mm, ground_truth_mm)
    shown = _evaluated_faces(faces, evaluation_mask)
    vmax = _error_range_mm(errors, evaluation_mask)
    n = len(errors)
    fig, axes = plt.subplots(n, len(views), figsize=(3.6 * len(views) + 0.8, 3.6 * n), squeeze=False)
    for i in range(n):
        for j, view in enumerate(views):
            draw_mesh(axes[i, j], ground_truth_mm[i], shown, values=errors[i], view=view, vmin=0.0, vmax=vmax,
                      colorbar_label="error (mm)" if j == len(views) - 1 else None)
        mean = errors[i, np.asarray(evaluation_mask, bool)].mean()
        axes[i, 0].set_title(f"{titles[i] if titles is not None else f'sample {i}'}: mean {mean:.2f} mm", fontsize=9)
    fig.tight_layout()
    return fig


def reconstruction_rows_figure(
    images: np.ndarray,
    predictions_mm: np.ndarray,
    ground_truth_mm: np.ndarray,
    faces: np.ndarray,
    evaluation_mask: np.ndarray,
    titles: Sequence[str] | None = None,
) -> plt.Figure:
    """Rows of input image (uint8 (N, 3, S, S)) / prediction / ground truth (shaded) / error heat map (mm)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(predictions_mm):
        raise ValueError(f"images must be (N, 3, S, S) for N={len(predictions_mm)} predictions, got {images.shape}")
    errors = _errors_mm(predictions_mm, ground_truth_mm)
    shown = _evaluated_faces(faces, evaluation_mask)
    vmax = _error_range_mm(errors, evaluation_mask)
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(14.5, 3.4 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(images[i].transpose(1, 2, 0))
        axes[i, 0].set_axis_off()
        axes[i, 0].set_title(titles[i] if titles is not None else f"sample {i}", fontsize=9)
        draw_mesh(axes[i, 1], predictions_mm[i], shown)
        draw_mesh(axes[i, 2], ground_truth_mm[i], shown)
        draw_mesh(axes[i, 3], ground_truth_mm[i], shown, values=errors[i], vmin=0.0, vmax=vmax)
        mean = errors[i, np.asarray(evaluation_mask, bool)].mean()
        for ax, title in zip(axes[i, 1:], ("prediction", "ground truth", f"error, mean {mean:.2f} mm")):
            ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
