"""The scan's open border, split into loops: the longest is where the scan ends, the others are holes.

A face-only scan (a structured-light scanner's single view) ends in one long border around the face, and
has holes wherever the scanner did not see the skin: nostrils, the eyes, and the steep walls of a deep
wound, which face away from the camera. A wound on a cheek can so become mostly a hole whose rim is the
wound's floor. The scan's end is no evidence of a wound (the completed face goes on beyond it); a hole's
rim is ordinary scan surface. :func:`cap_holes` closes the holes the wound touches, so that the filling
covers the part of the wound the scanner missed.

A loop is a connected set of border edges (edges of one triangle); its ``half_edges`` are directed
``a -> b`` as the scan's faces run them. Where the scan is pinched (a vertex with two border edges in and
two out), one loop holds several cycles; :func:`border_cycles` splits it into simple ones. The cap of a
cycle is a fan from a new vertex ``c`` at the mean of its vertices, one triangle ``(b, a, c)`` per
half-edge: oriented as the faces beside it, so the capped surface stays consistently oriented and every
border edge of the hole gets its second face (and each fan edge ``(a, c)`` two).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from faceregen.postprocess.printability import border_half_edges


@dataclass(frozen=True)
class BorderLoop:
    """One loop of the open border: its directed ``half_edges`` (E, 2), ``vertices`` and ``perimeter_mm``."""

    half_edges: np.ndarray
    vertices: np.ndarray
    perimeter_mm: float


def border_loops(vertices_mm: np.ndarray, faces: np.ndarray) -> list[BorderLoop]:
    """The open border's loops, longest first (the first is where the scan ends; empty for a closed mesh)."""
    half_edges = border_half_edges(faces)
    n = len(vertices_mm)
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


def border_cycles(half_edges: np.ndarray) -> list[np.ndarray]:
    """Simple cycles (each its vertices in order, ``v_i -> v_(i+1)`` and back to the first) that together
    use every half-edge once; half-edges that close no cycle (an inconsistently oriented border) are left."""
    outgoing: dict[int, list[int]] = {}
    for a, b in np.asarray(half_edges, dtype=np.int64).tolist():
        outgoing.setdefault(a, []).append(b)
    cycles = []
    for start in list(outgoing):
        path, position = [start], {start: 0}
        while outgoing.get(path[-1]):
            following = outgoing[path[-1]].pop()
            if following not in position:
                position[following] = len(path)
                path.append(following)
                continue
            cut = position[following]  # a cycle closes at a vertex already on the path: keep it, walk on
            cycles.append(np.array(path[cut:]))
            for vertex in path[cut + 1:]:
                del position[vertex]
            path = path[: cut + 1]
    return cycles


def cap_holes(vertices_mm: np.ndarray, faces: np.ndarray, holes: list[BorderLoop]) -> tuple[np.ndarray, np.ndarray]:
    """``(vertices, faces)`` with each cycle of the ``holes`` closed by a fan (module docstring); the new
    vertices, one per cycle, come after the scan's own."""
    vertices = [np.asarray(vertices_mm, dtype=np.float64)]
    faces = [np.asarray(faces, dtype=np.int64)]
    n = len(vertices[0])
    for cycle in (cycle for hole in holes for cycle in border_cycles(hole.half_edges)):
        faces.append(np.stack([np.roll(cycle, -1), cycle, np.full(len(cycle), n + len(vertices) - 1)], axis=1))
        vertices.append(vertices[0][cycle].mean(axis=0, keepdims=True))
    return np.concatenate(vertices), np.concatenate(faces)
