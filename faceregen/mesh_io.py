"""Triangle meshes as arrays: OBJ and PLY files (millimetres, vertex order kept) and vertex normals.

Writers go through :func:`faceregen.io.atomic_path` (a temporary name, then rename) and are byte-for-byte
deterministic: OBJ is plain text ``v x y z`` / ``f i j k`` (1-based), coordinates written with ``%.9g``,
enough digits for every float32 to read back exactly; PLY is trimesh's binary little-endian export.
Readers use trimesh without processing (no merging, no reordering), so vertex ``i`` of the file is
vertex ``i`` of the face model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import trimesh

from faceregen.io import atomic_path

MESH_SUFFIXES = (".obj", ".ply")


def _check_mesh(vertices_mm: np.ndarray, faces: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    vertices_mm = np.asarray(vertices_mm)
    faces = np.asarray(faces)
    if vertices_mm.ndim != 2 or vertices_mm.shape[1] != 3:
        raise ValueError(f"{path}: vertices must be (V, 3), got {vertices_mm.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"{path}: faces must be (F, 3) triangles, got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices_mm)):
        raise ValueError(f"{path}: face indices must lie in [0, {len(vertices_mm)})")
    return vertices_mm, faces


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    return suffix


def obj_text(vertices_mm: np.ndarray, faces: np.ndarray) -> str:
    """The OBJ text of a triangle mesh: ``v x y z`` lines (``%.9g``), then ``f i j k`` lines (1-based)."""
    v = np.asarray(vertices_mm, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64) + 1
    vertex_lines = ("v %.9g %.9g %.9g\n" * len(v)) % tuple(v.ravel())
    face_lines = ("f %d %d %d\n" * len(f)) % tuple(f.ravel())
    return vertex_lines + face_lines


def write_mesh(path: str | os.PathLike, vertices_mm: np.ndarray, faces: np.ndarray) -> Path:
    """Write a triangle mesh to ``.obj`` or ``.ply`` (chosen by the suffix), atomically."""
    path = Path(path)
    suffix = _suffix(path)
    vertices_mm, faces = _check_mesh(vertices_mm, faces, path)
    with atomic_path(path) as tmp:
        if suffix == ".obj":
            tmp.write_text(obj_text(vertices_mm, faces), encoding="ascii")
        else:
            mesh = trimesh.Trimesh(vertices_mm, faces, process=False)
            tmp.write_bytes(trimesh.exchange.ply.export_ply(mesh, encoding="binary", include_attributes=False))
    return path


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an ``.obj`` or ``.ply`` triangle mesh: vertices (V, 3) float32 in the file's order, faces (F, 3) int64."""
    path = Path(path)
    _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mesh file not found")
    try:
        mesh = trimesh.load(path, process=False, maintain_order=True, force="mesh")
    except Exception as err:  # trimesh raises many types for malformed files
        raise ValueError(f"{path}: cannot read as a triangle mesh ({err})") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0:
        raise ValueError(f"{path}: no triangle mesh in the file")
    return np.asarray(mesh.vertices, dtype=np.float32), np.asarray(mesh.faces, dtype=np.int64)


def vertex_normals(vertices_mm: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit vertex normals (V, 3): adjacent face normals averaged with trimesh's angle weighting."""
    return np.asarray(trimesh.Trimesh(vertices_mm, faces, process=False).vertex_normals)
