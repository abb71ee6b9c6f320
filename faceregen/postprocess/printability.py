"""Is a mesh printable? Watertightness, orientation, manifoldness, volume, size and thickness, as JSON.

A slicer needs a closed, consistently oriented, edge-manifold solid; the clinician also needs its size and
how thin it gets (a filling feathers out to zero thickness at its rim, so the minimum is always small; the
low percentiles say how much of it is thinner than a printer's nozzle).
"""

from __future__ import annotations

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

def edge_face_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges ``(E, 2)`` (sorted pairs) of a triangle list and how many faces use each ``(E,)``."""
    faces = np.asarray(faces, dtype=np.int64)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return np.unique(edges, axis=0, return_counts=True)


def border_half_edges(faces: np.ndarray) -> np.ndarray:
    """Directed edges ``a -> b`` (as the faces run them) of the edges used by one face only: the open border."""
    faces = np.asarray(faces, dtype=np.int64)
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    n = int(faces.max()) + 1 if len(faces) else 0
    key = directed.min(axis=1) * n + directed.max(axis=1)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    return directed[counts[inverse.ravel()] == 1]


def is_edge_manifold(faces: np.ndarray) -> bool:
    """Every edge is used by exactly two faces (a closed surface with no fins or slits)."""
    _, counts = edge_face_counts(faces)
    return bool(len(counts)) and bool((counts == 2).all())


def body_count(faces: np.ndarray) -> int:
    """Number of connected pieces of the surface (faces linked through shared vertices)."""
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        return 0
    n = int(faces.max()) + 1
    rows = faces[:, [0, 1, 2]].ravel()
    cols = faces[:, [1, 2, 0]].ravel()
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    used = np.unique(faces)
    _, labels = connected_components(graph, directed=False)
    return int(len(np.unique(labels[used])))


def face_thickness_mm(mesh: trimesh.Trimesh) -> np.ndarray:
    """Local wall thickness (F,) in mm: from each face's centroid along its inward normal ``-n`` to the
    nearest other face the ray crosses (VTK's static cell locator); ``inf`` where the ray leaves the mesh
    (an open or inside-out surface)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkIdList, vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData, vtkStaticCellLocator

    faces = np.asarray(mesh.faces, dtype=np.int64)
    points = vtkPoints()
    points.SetData(numpy_to_vtk(np.ascontiguousarray(mesh.vertices, dtype=np.float64), deep=True))
    cells = vtkCellArray()
    cells.SetData(
        numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(faces) + 1, 3, dtype=np.int64), deep=True),
        numpy_to_vtkIdTypeArray(faces.ravel(), deep=True),
    )
    surface = vtkPolyData()
    surface.SetPoints(points)
    surface.SetPolys(cells)
    locator = vtkStaticCellLocator()
    locator.SetDataSet(surface)
    locator.BuildLocator()

    centroids = np.asarray(mesh.triangles_center, dtype=np.float64)
    inward = -np.asarray(mesh.face_normals, dtype=np.float64)
    reach = 2.0 * float(np.linalg.norm(mesh.extents)) + 1.0
    hits, hit_faces = vtkPoints(), vtkIdList()
    thickness = np.full(len(faces), np.inf)
    for f in range(len(faces)):
        locator.IntersectWithLine(centroids[f], centroids[f] + reach * inward[f], 0.0, hits, hit_faces)
        others = [k for k in range(hit_faces.GetNumberOfIds()) if hit_faces.GetId(k) != f]
        if others:
            at = np.array([hits.GetPoint(k) for k in others])
            thickness[f] = np.linalg.norm(at - centroids[f], axis=1).min()
    return thickness


def printability_report(mesh: trimesh.Trimesh) -> dict:
    """A JSON-able summary of whether ``mesh`` (mm) can be printed as a solid.

    Keys: ``watertight`` (every edge shared by exactly two faces with opposite directions: trimesh),
    ``winding_consistent``, ``edge_manifold`` (every edge used by exactly two faces), ``volume_mm3``
    (signed; positive for an outward-facing solid), ``area_mm2``, ``bounding_box_mm`` (``min``, ``max``,
    ``extent``), ``n_vertices``, ``n_faces``, ``n_bodies``, ``degenerate_faces`` (zero area), and the
    thickness from :func:`face_thickness_mm`: ``min_thickness_mm`` (the smallest over faces whose inward
    ray hits the surface again) and ``thickness_percentiles_mm`` (5th, 50th; per face, unweighted), all
    ``None`` when no ray hits (no closed solid).
    """
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"printability_report: expected a non-empty trimesh.Trimesh, got {mesh!r}")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    thickness = face_thickness_mm(mesh)
    hits = thickness[np.isfinite(thickness)]
    with np.errstate(divide="ignore", invalid="ignore"):  # trimesh divides by the volume for the centre of mass
        volume_mm3 = float(mesh.volume)
    return {
        "watertight": bool(mesh.is_watertight),
        "winding_consistent": bool(mesh.is_winding_consistent),
        "edge_manifold": is_edge_manifold(mesh.faces),
        "volume_mm3": volume_mm3,
        "area_mm2": float(mesh.area),
        "bounding_box_mm": {"min": lo.tolist(), "max": hi.tolist(), "extent": (hi - lo).tolist()},
        "n_vertices": int(len(vertices)),
        "n_faces": int(len(mesh.faces)),
        "n_bodies": body_count(mesh.faces),
        "degenerate_faces": int((np.asarray(mesh.area_faces) <= 0.0).sum()),
        "min_thickness_mm": float(hits.min()) if len(hits) else None,
        "thickness_percentiles_mm": (
            {"p5": float(np.percentile(hits, 5)), "p50": float(np.percentile(hits, 50))} if len(hits) else None
        ),
    }
