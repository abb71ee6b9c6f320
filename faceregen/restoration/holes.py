"""The scan's open border, split into loops: the longest is where the scan ends, the others are holes.

A face-only scan (a structured-light scanner's single view) ends in one long border around the face, and
has holes wherever the scanner did not see the skin: nostrils, the eyes, and the steep walls of a deep
wound, which face away from the camera. A wound on a cheek can so become mostly a hole whose rim is the
wound's floor. The scan's end is no evidence of a wound (the completed face goes on beyond it); a hole's
rim is ordinary scan surface. :func:`cap_holes` closes the holes the wound touches, so that the filling
covers the part of the wound the scanner missed.

A loop is a connected set of border edges (edges of one triangle); its ``half_edges`` are directed
``a -> b`` as the scan's faces run them. The cap of a loop is a fan from a new vertex ``c`` at the mean of
the loop's vertices, one triangle ``(b, a, c)`` per half-edge: oriented as the faces beside it, so the
capped surface stays consistently oriented and every border edge of the hole gets its second face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


@dataclass(frozen=True)
class BorderLoop:
    """One loop of the open border: its directed ``half_edges`` (E, 2), ``vertices`` and ``perimeter_mm``."""

    half_edges: np.ndarray
    vertices: np.ndarray
    perimeter_mm: float


def border_loops(vertices_mm: np.ndarray, faces: np.ndarray) -> list[BorderLoop]:
    """The open border's loops, longest first (the first is where the scan ends; empty for a closed mesh)."""
    faces = np.asarray(faces, dtype=np.int64)
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    n = len(vertices_mm)
    key = directed.min(axis=1) * n + directed.max(axis=1)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    half_edges = directed[counts[inverse.ravel()] == 1]
    if not len(half_edges):
        return []
    graph = sp.coo_matrix((np.ones(len(half_edges)), (half_edges[:, 0], half_edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    lengths = np.linalg.norm(vertices_mm[half_edges[:, 0]] - vertices_mm[half_edges[:, 1]], axis=1)
    edge_label = labels[half_edges[:, 0]]
    loops = [BorderLoop(half_edges[edge_label == label], np.unique(half_edges[edge_label == label]),
                        float(lengths[edge_label == label].sum()))
             for label in np.unique(edge_label)]
    return sorted(loops, key=lambda loop: -loop.perimeter_mm)


def scan_end(vertices_mm: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Vertices (N,) on the longest border loop or one edge away from it (none for a closed mesh)."""
    loops = border_loops(vertices_mm, faces)
    near = np.zeros(len(vertices_mm), dtype=bool)
    if not loops:
        return near
    near[loops[0].vertices] = True
    edges = np.asarray(faces, dtype=np.int64)[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    near[edges[near[edges].any(axis=1)].ravel()] = True
    return near


def cap_holes(vertices_mm: np.ndarray, faces: np.ndarray, holes: list[BorderLoop]) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices, faces)`` with each loop of ``holes`` closed by a fan (module docstring); the new vertices,
    one per hole, come after the scan's own."""
    vertices = [np.asarray(vertices_mm, dtype=np.float64)]
    faces = [np.asarray(faces, dtype=np.int64)]
    n = len(vertices[0])
    for number, hole in enumerate(holes):
        vertices.append(vertices[0][hole.vertices].mean(axis=0, keepdims=True))
        a, b = hole.half_edges.T
        faces.append(np.stack([b, a, np.full(len(a), n + number)], axis=1))
    return np.concatenate(vertices), np.concatenate(faces)
