"""The patient's wounded face as a 3D scan: read from OBJ/PLY/STL, in millimetres or metres, checked.

A scan may have any topology and orientation. It is kept in its own frame; only its unit is converted:
``vertices_mm = file coordinates * UNITS_TO_MM[units]``. ``units="auto"`` picks the unit under which the
scan's largest extent is a plausible face or head (:data:`HEAD_EXTENT_RANGE_MM`); a given unit is
checked against the same range. Bad scans raise ``ValueError`` naming the file and what is wrong: empty,
non-finite coordinates, edges shared by more than two triangles (non-manifold), a size that is not a
head's. Readers never execute anything: trimesh parses the geometry only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from faceregen.face_model.linear import LinearFaceModel
from faceregen.mesh_io import read_mesh
from faceregen.postprocess.printability import edge_face_counts

SCAN_SUFFIXES = (".obj", ".ply", ".stl")
UNITS_TO_MM = {"mm": 1.0, "m": 1000.0}
#: the largest bounding-box extent of a face-only scan (~120 mm) up to a whole head with neck (~350 mm)
HEAD_EXTENT_RANGE_MM = (60.0, 500.0)


@dataclass(frozen=True)
class Scan:
    """A triangle mesh in its own frame: ``vertices_mm`` (N, 3) float64, ``faces`` (F, 3) int64, the
    ``units`` of its file (``mm`` or ``m``) and its ``name`` (the file, for messages)."""

    name: str
    vertices_mm: np.ndarray
    faces: np.ndarray
    units: str

    @property
    def mm_per_unit(self) -> float:
        return UNITS_TO_MM[self.units]

    def has_topology_of(self, face_model: LinearFaceModel) -> bool:
        """The scan is a mesh of the face model's topology: same vertex count and the same triangles."""
        return len(self.vertices_mm) == face_model.n_vertices and np.array_equal(self.faces, face_model.faces)


def scan_from_arrays(vertices: np.ndarray, faces: np.ndarray, name: str, units: str = "auto") -> Scan:
    """A checked :class:`Scan` from coordinates in ``units`` (``mm``, ``m`` or ``auto``) and triangles."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if units not in (*UNITS_TO_MM, "auto"):
        raise ValueError(f"{name}: scan units {units!r}; expected one of {(*UNITS_TO_MM, 'auto')}")
    if len(vertices) == 0 or len(faces) == 0:
        raise ValueError(f"{name}: the scan is empty ({len(vertices)} vertices, {len(faces)} triangles)")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{name}: expected (N, 3) vertices and (F, 3) triangles, got {vertices.shape} and {faces.shape}")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError(f"{name}: triangle indices must lie in [0, {len(vertices)})")
    if not np.isfinite(vertices).all():
        raise ValueError(f"{name}: {int((~np.isfinite(vertices)).any(axis=1).sum())} vertices have non-finite coordinates")
    _, counts = edge_face_counts(faces)
    if (counts > 2).any():
        raise ValueError(
            f"{name}: {int((counts > 2).sum())} edges are shared by more than two triangles (a non-manifold mesh); "
            "repair the scan (e.g. remove duplicate and fin triangles) first"
        )
    used = vertices[np.unique(faces)]
    extent = float((used.max(axis=0) - used.min(axis=0)).max())
    low, high = HEAD_EXTENT_RANGE_MM
    if units == "auto":
        fitting = [u for u, mm in UNITS_TO_MM.items() if low <= extent * mm <= high]
        if not fitting:
            raise ValueError(
                f"{name}: the scan's largest extent is {extent:.4g} file units, which is a face or head "
                f"({low:g}-{high:g} mm) neither in millimetres nor in metres; is it a face scan?"
            )
        units = fitting[0]
    elif not low <= extent * UNITS_TO_MM[units] <= high:
        raise ValueError(
            f"{name}: the scan's largest extent is {extent * UNITS_TO_MM[units]:.4g} mm with units={units!r}, "
            f"but a face or head measures {low:g}-{high:g} mm: wrong units, or not a face scan?"
        )
    return Scan(name, vertices * UNITS_TO_MM[units], faces, units)


def read_scan(path: str | os.PathLike, units: str = "auto") -> Scan:
    """Read an OBJ, PLY or STL scan (STL's per-triangle corners are merged into shared vertices)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SCAN_SUFFIXES:
        raise ValueError(f"{path}: unsupported scan format {suffix!r}; expected one of {SCAN_SUFFIXES}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: scan file not found")
    if suffix == ".stl":
        try:
            mesh = trimesh.load(path, file_type="stl", process=False, force="mesh")
        except Exception as err:  # trimesh raises many types for malformed files
            raise ValueError(f"{path}: cannot read as an STL triangle mesh ({err})") from err
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            raise ValueError(f"{path}: the scan is empty (no triangles)")
        mesh.merge_vertices()
        vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    else:
        try:
            vertices, faces = read_mesh(path)
        except ValueError as err:
            raise ValueError(f"{err} (the scan is empty or not a triangle mesh)") from None
    return scan_from_arrays(vertices, faces, str(path), units)
