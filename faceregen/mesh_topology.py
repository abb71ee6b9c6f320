"""Topology edits on triangle meshes given as index arrays: keep a vertex subset, find and close holes.

Used to turn FLAME (5023 vertices) into the Cir3D-FaIR topology (3933 vertices: eyeballs removed, the two
open boundaries -- the mouth and the neck -- each closed by a fan around one new centre vertex), and again
in post-processing. Everything here is combinatorial; positions enter only through
:func:`append_loop_centres`, which is linear, so a linear face model ``G(z) = B z + A`` stays linear.
"""

from __future__ import annotations

import numpy as np


def keep_vertices(faces: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Faces whose three vertices are all kept, re-indexed to the kept vertices (order preserved).

    Args:
        faces: (F, 3) vertex indices.
        keep: (V,) bool, the vertices to keep.

    Returns:
        ``(new_faces, kept)``: (F', 3) faces in their original order, and (V',) the old index of each
        kept vertex (new index ``i`` is old vertex ``kept[i]``).
    """
    faces = np.asarray(faces, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    kept = np.flatnonzero(keep)
    new_index = np.full(keep.shape[0], -1, dtype=np.int64)
    new_index[kept] = np.arange(kept.size)
    inside = keep[faces].all(axis=1)
    return new_index[faces[inside]], kept


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The closed boundary loops of a triangle mesh, each walked against its faces' direction.

    A boundary edge is used by exactly one face. If that face runs ``u -> v``, the loop runs ``v -> u``, so a
    triangle ``(loop[i], centre, loop[i-1])`` has the orientation of the mesh around it.

    Order (deterministic, combinatorial): each loop's *key edge* is its boundary edge whose smaller vertex
    index is largest; loops are sorted by that index, descending, and each loop is rotated to end with its
    key edge. This is the order in which cirmesh's ``fixNonWatertight_1vertex`` (0.0.18) finds and walks
    the loops, so on FLAME it reproduces Cir3D-FaIR's centre vertices (3931 = neck, 3932 = mouth) and its
    fan faces exactly.

    Raises:
        ValueError: a boundary vertex with more than one outgoing boundary edge (non-manifold boundary)
            or an edge used by more than two faces.
    """
    faces = np.asarray(faces, dtype=np.int64)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected, counts = np.unique(np.sort(directed, axis=1), axis=0, return_counts=True)
    if (counts > 2).any():
        raise ValueError(f"mesh has {(counts > 2).sum()} edges used by more than two faces (non-manifold)")
    boundary = {tuple(e) for e in undirected[counts == 1]}
    # The loop goes against the face: face edge u -> v gives loop step v -> u.
    following: dict[int, int] = {}
    for u, v in directed.tolist():
        if (min(u, v), max(u, v)) in boundary:
            if v in following:
                raise ValueError(f"boundary vertex {v} starts two boundary edges (non-manifold boundary)")
            following[v] = u
    loops = []
    unvisited = set(following)
    while unvisited:
        start = min(unvisited)
        loop = [start]
        while following[loop[-1]] != start:
            loop.append(following[loop[-1]])
        unvisited -= set(loop)
        loops.append(np.array(loop, dtype=np.int64))
    return sorted((_rotate_to_key_edge(loop) for loop in loops), key=lambda loop: -min(loop[-2:]))


def _rotate_to_key_edge(loop: np.ndarray) -> np.ndarray:
    """Rotate a loop so that its last step ``loop[-2] -> loop[-1]`` is its key edge (see boundary_loops)."""
    smaller = np.minimum(loop, np.roll(loop, -1))  # edge loop[i] -> loop[i+1]
    i = int(np.argmax(smaller))
    return np.roll(loop, -(i + 2))


def close_holes_with_centre_vertices(faces: np.ndarray, n_vertices: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Close every boundary loop with a fan around one new vertex.

    Loop ``k`` (order of :func:`boundary_loops`) gets the new vertex ``c = n_vertices + k`` and the faces
    ``(loop[i], c, loop[i-1])`` for ``i = 0 .. len(loop)-1``, appended after the existing faces. A mesh of
    ``V`` vertices, ``F`` faces and boundary loops of ``b_k`` edges gains ``sum b_k`` faces; a sphere with
    holes becomes closed (``F = 2 V - 4``). The new vertices' positions are for the caller, e.g.
    :func:`append_loop_centres`.

    Returns:
        ``(new_faces, loops)``: (F + sum b_k, 3) int64 faces and the loops (vertex indices) closed.
    """
    faces = np.asarray(faces, dtype=np.int64)
    if faces.size and faces.max() >= n_vertices:
        raise ValueError(f"faces refer to vertex {faces.max()} but the mesh has {n_vertices} vertices")
    loops = boundary_loops(faces)
    fans = [
        np.stack([loop, np.full_like(loop, n_vertices + k), np.roll(loop, 1)], axis=1) for k, loop in enumerate(loops)
    ]
    return np.concatenate([faces, *fans]), loops


def append_loop_centres(values: np.ndarray, loops: list[np.ndarray]) -> np.ndarray:
    """Append, for each loop, the mean of ``values`` over its vertices: (V, ...) -> (V + len(loops), ...).

    ``values`` may be positions (V, 3) or a linear basis (V, 3, K); the centre of loop ``k`` is
    ``(1 / |loop_k|) sum_{i in loop_k} values[i]``, a linear map, so ``G(z) = B z + A`` stays linear.
    """
    centres = [values[loop].mean(axis=0) for loop in loops]
    return np.concatenate([values, np.stack(centres).astype(values.dtype)]) if centres else values
