"""Eyeball removal and hole closing: a face-model mesh (e.g. MICA's FLAME output) to a watertight face.

As the authors' cirmesh (``removeEyeBalls`` + ``fixNonWatertight1Vertex``), but by index sets instead of
recursion over the mesh: the eyeball vertices come from the face model's ``left_eyeball`` /
``right_eyeball`` regions, every face touching one is dropped, and then every boundary loop of what is
left is closed by a fan around one new centre vertex (:mod:`faceregen.mesh_topology`). On FLAME this is
exactly the Cir3D-FaIR topology (3933 vertices, 7862 faces: the eyeballs are separate spheres, and the
mouth and neck openings get centre vertices 3931 and 3932).
"""

from __future__ import annotations

import numpy as np

from faceregen.face_model.linear import LinearFaceModel
from faceregen.mesh_topology import append_loop_centres, close_holes_with_centre_vertices, keep_vertices

EYEBALL_REGIONS = ("left_eyeball", "right_eyeball")


def eyeball_indices(model_or_eyeball_indices: LinearFaceModel | np.ndarray) -> np.ndarray:
    """Sorted unique eyeball vertex indices: a face model's eyeball regions, or the given indices."""
    if isinstance(model_or_eyeball_indices, LinearFaceModel):
        indices = np.concatenate([model_or_eyeball_indices.regions[name] for name in EYEBALL_REGIONS])
    else:
        indices = np.asarray(model_or_eyeball_indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"eyeball indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    return np.unique(indices.astype(np.int64))


def remove_eyeballs(
    vertices: np.ndarray, faces: np.ndarray, model_or_eyeball_indices: LinearFaceModel | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop the eyeballs and close every hole left with one centre vertex per boundary loop.

    Args:
        vertices: (V, 3) positions (any unit).
        faces: (F, 3) triangles.
        model_or_eyeball_indices: a face model (its eyeball regions) or the eyeball vertex indices.

    Returns:
        ``(new_vertices, new_faces, old_to_new)``: the kept vertices in their original order followed by
        one centre per closed loop (the mean of the loop's vertices), the kept faces in order followed by
        the fans, and (V,) int64 the new index of each old vertex (-1 for an eyeball vertex). A mesh that
        is a closed surface apart from those loops comes out watertight.

    Raises:
        ValueError: shapes disagree, an index is out of range, or the rest is not an edge-manifold
            surface (see :func:`faceregen.mesh_topology.boundary_loops`).
    """
    vertices = np.asarray(vertices)
    faces = np.asarray(faces, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"faces must be (F, 3) indices below {len(vertices)}, got shape {faces.shape}")
    eyeballs = eyeball_indices(model_or_eyeball_indices)
    if len(eyeballs) and (eyeballs[0] < 0 or eyeballs[-1] >= len(vertices)):
        raise ValueError(f"eyeball indices must lie in [0, {len(vertices)}), got {eyeballs[0]}..{eyeballs[-1]}")
    keep = np.ones(len(vertices), dtype=bool)
    keep[eyeballs] = False
    head_faces, kept = keep_vertices(faces, keep)
    new_faces, loops = close_holes_with_centre_vertices(head_faces, len(kept))
    new_vertices = append_loop_centres(vertices[kept], loops)
    old_to_new = np.full(len(vertices), -1, dtype=np.int64)
    old_to_new[kept] = np.arange(len(kept))
    return new_vertices, new_faces, old_to_new
