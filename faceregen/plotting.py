"""Mesh figures with matplotlib only (no VTK: a VTK render in a process that later imports triton crashes).

A mesh is drawn by orthographic projection and the painter's algorithm: the triangles facing the camera
are sorted far to near and drawn as one ``PolyCollection``. Colour per triangle:

* shape: Lambert shading, ``c = base * (ambient + (1 - ambient) * max(n . l, 0))`` with ``n`` the unit
  face normal and ``l`` the unit direction toward the light;
* values (e.g. per-vertex error in mm): the colour map of the mean of the triangle's three vertex values,
  lightly shaded the same way so the shape stays readable, with a colour bar in the values' unit.

Views: ``front`` looks along -z (camera on +z, y up), ``left`` from the subject's left (+x), ``right``
from the subject's right (-x). Figures are saved atomically (:func:`save_figure`).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402

from faceregen.io import atomic_path  # noqa: E402

#: (screen x, screen y, toward the camera) as rows of a rotation applied to vertices (mm)
VIEWS = {
    "front": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
    "left": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
    "right": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
}
#: direction toward the light in camera coordinates (upper left, in front)
LIGHT_DIRECTION = np.array([-0.35, 0.45, 0.82]) / np.linalg.norm([-0.35, 0.45, 0.82])
SKIN_RGB = np.array([0.85, 0.72, 0.62])


def _check_mesh(vertices_mm: np.ndarray, faces: np.ndarray, values: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices_mm, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices_mm must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"faces must be a non-empty (F, 3) array of indices below {len(vertices)}, got {faces.shape}")
    if values is not None and np.shape(values) != (len(vertices),):
        raise ValueError(f"values must be one per vertex ({len(vertices)},), got {np.shape(values)}")
    return vertices, faces


def lambert(normals: np.ndarray, ambient: float) -> np.ndarray:
    """``ambient + (1 - ambient) * max(n . l, 0)`` per unit normal (F, 3) -> (F,)."""
    return ambient + (1.0 - ambient) * np.clip(normals @ LIGHT_DIRECTION, 0.0, None)


def draw_mesh(
    ax: plt.Axes,
    vertices_mm: np.ndarray,
    faces: np.ndarray,
    values: np.ndarray | None = None,
    cmap: str = "inferno",
    view: str = "front",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar_label: str | None = "error (mm)",
) -> PolyCollection:
    """Draw a triangle mesh on ``ax`` (orthographic ``view``, painter's algorithm, back faces culled).

    Args:
        vertices_mm: (V, 3) positions.
        faces: (F, 3) outward-facing triangles (counter-clockwise seen from outside).
        values: optional (V,) per-vertex values shown with ``cmap`` over ``[vmin, vmax]`` (default: their
            range); None: Lambert-shaded skin colour.
        colorbar_label: label of the colour bar drawn beside ``ax`` when ``values`` are given (None: no bar).

    Returns:
        The ``PolyCollection`` of the visible triangles.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {sorted(VIEWS)}, got {view!r}")
    vertices, faces = _check_mesh(vertices_mm, faces, values)
    camera = vertices @ VIEWS[view].T
    triangles = camera[faces]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    visible = (normals[:, 2] > 0) & (lengths > 0)
    order = np.flatnonzero(visible)[np.argsort(triangles[visible, :, 2].mean(axis=1))]
    unit_normals = normals[order] / lengths[order, None]
    if values is None:
        colours = np.clip(SKIN_RGB * lambert(unit_normals, ambient=0.25)[:, None], 0.0, 1.0)
        norm = None
    else:
        values = np.asarray(values, dtype=np.float64)
        norm = Normalize(vmin=np.min(values) if vmin is None else vmin, vmax=np.max(values) if vmax is None else vmax)
        rgb = plt.get_cmap(cmap)(norm(values[faces[order]].mean(axis=1)))[:, :3]
        colours = np.clip(rgb * lambert(unit_normals, ambient=0.65)[:, None], 0.0, 1.0)
    collection = PolyCollection(triangles[order, :, :2], facecolors=colours, edgecolors="none", antialiased=False)
    ax.add_collection(collection)
    lo, hi = camera[:, :2].min(axis=0), camera[:, :2].max(axis=0)
    margin = 0.03 * (hi - lo).max()
    ax.set_xlim(lo[0] - margin, hi[0] + margin)
    ax.set_ylim(lo[1] - margin, hi[1] + margin)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if norm is not None and colorbar_label is not None:
        mappable = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
        ax.figure.colorbar(mappable, ax=ax, label=colorbar_label, fraction=0.046, pad=0.02)
    return collection


def mesh_image(
    vertices_mm: np.ndarray,
    faces: np.ndarray,
    values: np.ndarray | None = None,
    cmap: str = "inferno",
    view: str = "front",
    title: str | None = None,
    size_inches: float = 4.0,
) -> plt.Figure:
    """A one-panel figure of :func:`draw_mesh` (close it with ``plt.close(fig)`` when done)."""
    fig, ax = plt.subplots(figsize=(size_inches * (1.25 if values is not None else 1.0), size_inches))
    draw_mesh(ax, vertices_mm, faces, values=values, cmap=cmap, view=view)
    if title:
        ax.set_title(title)
    return fig


def save_figure(fig: plt.Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temporary name, then rename) and close it."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: figures are written as .png")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
