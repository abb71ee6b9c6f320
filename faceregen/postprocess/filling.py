"""The filling: the solid between the wounded face and the reconstructed complete face (paper section 3.3).

The authors (``WoundFilling3D/get_filling_extraction.ipynb``) concatenate the wound faces of both meshes
and voxelise or ``fill_holes`` the result, which is neither exact nor always closed. Here the solid is
built directly, since both meshes share one topology:

* patch: the faces with ANY vertex in the (grown) wound mask. Every edge on the patch's border then joins
  two vertices outside the mask, where the wounded and the complete surface are the same point, so the
  two patches meet there exactly (a face's one-ring beyond the wound, in the authors' words).
* the wound mask is first grown (:func:`grow_wound_mask`) until the vertices outside it that the patch
  uses all lie on its border, each once: otherwise the two patches would touch along an inner edge or at
  a pinched vertex and the solid would not be manifold.
* top = the complete surface over the patch (outward, as the face), bottom = the wounded surface with the
  faces reversed (pointing into the head, outward from the filling); the two share the border vertices,
  which take the wounded face's position (for a prediction that differs slightly from the wounded face
  outside the wound, the filling so rests flush on the face; inside the wound it follows the prediction).
* where the top would lie on or below the bottom (``(t - b) . n < 0`` with ``n`` the wounded surface's
  outward vertex normal at ``b``: the prediction sinks into the wound's floor) or closer than
  ``min_gap_mm`` to it, the top vertex is set to ``b + min_gap_mm n``: a film instead of a crossing, so
  no two vertices share a position (an STL reader merges those) and the surfaces never cross at a vertex.
* a wall of quads (two triangles each) joins top and bottom along border edges that have a vertex in the
  mask, which only happens where the wound reaches the mesh's own open boundary; it collapses to single
  triangles or nothing where its vertices are shared.

The result is closed and edge-manifold by construction (checked; a ``ValueError`` otherwise). Its volume,
``vol = (1/6) sum_f (v0 x v1) . v2`` (trimesh), equals ``vol(complete) - vol(imperfect)`` for two heads that
differ only in the wound, as long as the complete surface is nowhere inside the wounded one; where it is
(a wound that bulges a vertex outward along its own normal), the film keeps only the positive part.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import trimesh

from faceregen.io import atomic_write_bytes, atomic_write_text
from faceregen.postprocess.printability import border_half_edges, edge_face_counts, is_edge_manifold, printability_report

#: Colours of paper Fig. 7 (RGBA): the wounded face grey, the filling orange.
FACE_RGBA = (160, 160, 160, 255)
FILLING_RGBA = (255, 140, 0, 255)
#: glTF's unit is the metre; the GLB export scales millimetres by this.
MM_TO_M = 1e-3


def _check_pair(imperfect_vertices_mm: np.ndarray, complete_vertices_mm: np.ndarray, faces: np.ndarray, wound_mask: np.ndarray):
    imperfect = np.asarray(imperfect_vertices_mm, dtype=np.float64)
    complete = np.asarray(complete_vertices_mm, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    mask = np.asarray(wound_mask)
    if imperfect.ndim != 2 or imperfect.shape[1] != 3 or imperfect.shape != complete.shape:
        raise ValueError(f"imperfect {imperfect.shape} and complete {complete.shape} vertices must both be (V, 3)")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= len(imperfect):
        raise ValueError(f"faces must be (F, 3) indices below {len(imperfect)}, got shape {faces.shape}")
    if mask.shape != (len(imperfect),) or mask.dtype != bool:
        raise ValueError(f"wound_mask must be a ({len(imperfect)},) bool array, got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError("wound_mask is empty: there is no wound to fill")
    return imperfect, complete, faces, mask


def grow_wound_mask(faces: np.ndarray, wound_mask: np.ndarray) -> np.ndarray:
    """The wound mask grown until the patch (faces with any vertex in it) has a clean border.

    Repeatedly adds the unmasked vertices of the patch that are not on its border exactly once: ends of a
    patch-inner edge whose two ends are both unmasked, unmasked vertices with no border edge (a hole in the
    mask), and unmasked vertices with more than two border edges (the patch pinched at one vertex). Stops
    when there are none. The added vertices are ones the wound did not move (zero depth).

    Raises:
        ValueError: an edge of the patch is used by more than two faces (the mesh is not manifold).
    """
    mask = np.asarray(wound_mask, dtype=bool).copy()
    faces = np.asarray(faces, dtype=np.int64)
    while True:
        patch_faces = faces[mask[faces].any(axis=1)]
        edges, counts = edge_face_counts(patch_faces)
        if (counts > 2).any():
            raise ValueError(f"the wound touches {(counts > 2).sum()} edges used by more than two faces (non-manifold mesh)")
        outside_edge = ~mask[edges].any(axis=1)
        bad = np.zeros_like(mask)
        bad[edges[(counts == 2) & outside_edge].ravel()] = True
        border_degree = np.bincount(edges[counts == 1].ravel(), minlength=len(mask))
        used = np.unique(patch_faces)
        bad[used[border_degree[used] != 2]] = True
        bad &= ~mask
        if not bad.any():
            return mask
        mask |= bad


def _top_positions(bottom: np.ndarray, top: np.ndarray, normals: np.ndarray, min_gap_mm: float) -> np.ndarray:
    """``t`` where ``(t - b) . n >= 0`` and ``|t - b| >= min_gap_mm``, else ``b + min_gap_mm n``."""
    offset = top - bottom
    film = (np.einsum("vc,vc->v", offset, normals) < 0) | (np.linalg.norm(offset, axis=1) < min_gap_mm)
    return np.where(film[:, None], bottom + min_gap_mm * normals, top)


def extract_filling(
    imperfect_vertices_mm: np.ndarray,
    complete_vertices_mm: np.ndarray,
    faces: np.ndarray,
    wound_mask: np.ndarray,
    min_gap_mm: float = 1e-3,
) -> trimesh.Trimesh:
    """The filling between a wounded face and its complete (ground-truth or predicted) face, in mm.

    Args:
        imperfect_vertices_mm: (V, 3) the wounded face.
        complete_vertices_mm: (V, 3) the complete face, same topology.
        faces: (F, 3) outward-facing triangles shared by both.
        wound_mask: (V,) bool, the wound's vertices (e.g. ``wound/<sample>.npz``'s ``mask``).
        min_gap_mm: the smallest distance kept between the top and bottom copy of a wound vertex.

    Returns:
        One closed, edge-manifold, consistently oriented mesh with positive volume (see the module
        docstring for the construction); its vertices are the patch's bottom copies, then its top copies.

    Raises:
        ValueError: shapes disagree, the mask is empty, the mesh is not manifold around the wound, or the
            complete surface lies inside the wounded one on balance (signed volume between them <= 0:
            inward-facing faces or swapped meshes).
    """
    imperfect, complete, faces, mask = _check_pair(imperfect_vertices_mm, complete_vertices_mm, faces, wound_mask)
    if not min_gap_mm > 0:
        raise ValueError(f"min_gap_mm must be positive, got {min_gap_mm}")
    mask = grow_wound_mask(faces, mask)
    patch_faces = faces[mask[faces].any(axis=1)]
    used = np.unique(patch_faces)
    lifted = used[mask[used]]

    normals = np.asarray(trimesh.Trimesh(imperfect, faces, process=False).vertex_normals, dtype=np.float64)
    bottom_index = np.full(len(imperfect), -1, dtype=np.int64)
    bottom_index[used] = np.arange(len(used))
    top_index = bottom_index.copy()
    top_index[lifted] = len(used) + np.arange(len(lifted))
    vertices = np.concatenate(
        [imperfect[used], _top_positions(imperfect[lifted], complete[lifted], normals[lifted], min_gap_mm)]
    )

    a, b = border_half_edges(patch_faces).T
    walls = np.concatenate(
        [np.stack([top_index[b], top_index[a], bottom_index[a]], 1), np.stack([top_index[b], bottom_index[a], bottom_index[b]], 1)]
    )
    walls = walls[(walls[:, 0] != walls[:, 1]) & (walls[:, 1] != walls[:, 2]) & (walls[:, 2] != walls[:, 0])]
    filling_faces = np.concatenate([top_index[patch_faces], bottom_index[patch_faces][:, ::-1], walls])
    filling = trimesh.Trimesh(vertices, filling_faces, process=False)
    if not (is_edge_manifold(filling.faces) and filling.is_winding_consistent):
        raise ValueError("the filling is not a closed manifold: the mesh around the wound is not an oriented manifold")
    unclamped = trimesh.Trimesh(np.concatenate([imperfect[used], complete[lifted]]), filling_faces, process=False)
    if not unclamped.volume > 0:
        raise ValueError(
            f"the complete face encloses {unclamped.volume:.4g} mm3 less than the wounded one over the wound, "
            "not more: are the faces outward-facing, and are the two meshes given in this order?"
        )
    return filling


def filling_composite(imperfect_vertices_mm: np.ndarray, faces: np.ndarray, filling: trimesh.Trimesh) -> trimesh.Trimesh:
    """The wounded face in grey and the filling in orange as one vertex-coloured mesh (paper Fig. 7)."""
    face = trimesh.Trimesh(np.asarray(imperfect_vertices_mm, dtype=np.float64), np.asarray(faces, dtype=np.int64), process=False)
    face.visual.vertex_colors = np.tile(np.array(FACE_RGBA, np.uint8), (len(face.vertices), 1))
    part = trimesh.Trimesh(filling.vertices.copy(), filling.faces.copy(), process=False)
    part.visual.vertex_colors = np.tile(np.array(FILLING_RGBA, np.uint8), (len(part.vertices), 1))
    return trimesh.util.concatenate([face, part])


def export_filling(
    stem: str | os.PathLike, filling: trimesh.Trimesh, imperfect_vertices_mm: np.ndarray, faces: np.ndarray,
    units_per_mm: float = 1.0,
) -> dict[str, Path]:
    """Write the filling for printing and viewing, each file atomically (temporary name, then rename):

    * ``<stem>.stl``: the filling, binary STL in millimetres (times ``units_per_mm``: 1e-3 writes it in
      metres, for a patient's scan given in metres).
    * ``<stem>.json``: its :func:`~faceregen.postprocess.printability.printability_report` (millimetres).
    * ``<stem>_composite.ply``: wounded face (grey) + filling (orange), vertex colours, units as the STL.
    * ``<stem>_composite.glb``: the same in metres (glTF's unit).

    Returns:
        ``{"stl": path, "report": path, "ply": path, "glb": path}``.
    """
    stem = Path(stem)
    composite = filling_composite(imperfect_vertices_mm, faces, filling)
    in_metres, in_units, filling_in_units = composite.copy(), composite.copy(), filling.copy()
    in_metres.apply_scale(MM_TO_M)
    in_units.apply_scale(units_per_mm)
    filling_in_units.apply_scale(units_per_mm)
    paths = {
        "stl": atomic_write_bytes(stem.with_name(stem.name + ".stl"), trimesh.exchange.stl.export_stl(filling_in_units)),
        "ply": atomic_write_bytes(
            stem.with_name(stem.name + "_composite.ply"), trimesh.exchange.ply.export_ply(in_units, encoding="binary")
        ),
        "glb": atomic_write_bytes(stem.with_name(stem.name + "_composite.glb"), in_metres.export(file_type="glb")),
    }
    report = printability_report(filling)
    paths["report"] = atomic_write_text(stem.with_name(stem.name + ".json"), json.dumps(report, indent=2) + "\n")
    return paths
