"""A synthetic FLAME-format model for tests: FLAME's counts and layout, no FLAME data.

The head is a convex hull of 3933 points on an ellipsoid (so a closed sphere), from which the centres of
two caps are removed: a 32-edge hole at the mouth and a 30-edge hole at the neck, as in FLAME. That leaves
3931 head vertices and 7800 faces. Two closed UV-sphere eyeballs (546 vertices, 1088 faces each) follow at
3931..4476 and 4477..5022; the faces of all three are shuffled together, as FLAME's are interleaved. A nose
bump puts the most forward vertex at FLAME's nose-tip index 3526, and the mouth hole's leftmost and
rightmost vertices are FLAME's mouth corners 1730 (x > 0) and 2845 (x < 0). Units are metres.

The pickle is written as FLAME's is: protocol 2, numpy 1 module names (``numpy.core.multiarray``), a
chumpy ``Ch`` for ``shapedirs`` (a throwaway class registered as ``chumpy.ch.Ch`` only while pickling), a
scipy sparse ``J_regressor`` and uint32 faces.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.spatial import ConvexHull

HEAD_SEMI_AXES_MM = np.array([78.0, 110.0, 95.0])
MOUTH = {"direction": (0.0, -0.45, 0.9), "angle": 0.3, "n_ring": 32}
NECK = {"direction": (0.0, -1.0, -0.45), "angle": 0.25, "n_ring": 30}
NOSE_DIRECTION = (0.0, -0.05, 1.0)
NOSE_BUMP_MM, NOSE_SIGMA_MM = 18.0, 10.0
EYEBALL_CENTRE_MM = np.array([32.0, 23.0, 62.0])  # the left one; the right one mirrors x
EYEBALL_RADIUS_MM = 12.0
N_HEAD, N_VERTICES, N_FACES = 3931, 5023, 9976
NOSE_TIP, RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER = 3526, 2845, 1730


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _ring(direction, angle: float, n: int) -> np.ndarray:
    """``n`` unit vectors at ``angle`` from ``direction`` (a planar circle on the unit sphere)."""
    d = _unit(direction)
    e1 = _unit(np.cross(d, [1.0, 0.0, 0.0]))
    e2 = np.cross(d, e1)
    t = 2 * np.pi * np.arange(n) / n
    return np.cos(angle) * d + np.sin(angle) * (np.cos(t)[:, None] * e1 + np.sin(t)[:, None] * e2)


def _head(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Head vertices (mm, FLAME order) and outward faces; also the index of named points before ordering."""
    mouth_ring = _ring(MOUTH["direction"], MOUTH["angle"], MOUTH["n_ring"])
    neck_ring = _ring(NECK["direction"], NECK["angle"], NECK["n_ring"])
    n_free = N_HEAD - len(mouth_ring) - len(neck_ring) - 1
    golden = np.pi * (3 - np.sqrt(5))
    m = 2 * n_free
    k = np.arange(m) + 0.5
    y = 1 - 2 * k / m
    free = np.stack([np.sqrt(1 - y**2) * np.cos(golden * k), y, np.sqrt(1 - y**2) * np.sin(golden * k)], axis=1)
    away = np.ones(m, dtype=bool)
    for cap in (MOUTH, NECK):
        away &= free @ _unit(cap["direction"]) < np.cos(cap["angle"] + 0.04)
    away &= free @ _unit(NOSE_DIRECTION) < np.cos(0.04)
    free = free[rng.choice(np.flatnonzero(away), n_free, replace=False)]
    points = np.concatenate(
        [mouth_ring, neck_ring, [_unit(NOSE_DIRECTION)], free, [_unit(MOUTH["direction"]), _unit(NECK["direction"])]]
    )
    hull = ConvexHull(points)
    if len(hull.vertices) != len(points):
        raise RuntimeError("fixture: some points are not on the convex hull")
    faces = hull.simplices.copy()
    normals = np.cross(points[faces[:, 1]] - points[faces[:, 0]], points[faces[:, 2]] - points[faces[:, 0]])
    inward = (normals * points[faces].mean(axis=1)).sum(axis=1) < 0
    faces[inward] = faces[inward][:, ::-1]
    caps = (len(points) - 2, len(points) - 1)
    faces = faces[~np.isin(faces, caps).any(axis=1)]
    vertices = points[:N_HEAD] * HEAD_SEMI_AXES_MM
    nose = len(mouth_ring) + len(neck_ring)
    xy = vertices[:, :2] - vertices[nose, :2]
    vertices[:, 2] += NOSE_BUMP_MM * np.exp(-(xy**2).sum(axis=1) / (2 * NOSE_SIGMA_MM**2))
    named = {
        "nose_tip": nose,
        "left_mouth_corner": int(np.argmax(vertices[: len(mouth_ring), 0])),
        "right_mouth_corner": int(np.argmin(vertices[: len(mouth_ring), 0])),
    }
    return vertices, faces, named


def _uv_sphere(centre_mm: np.ndarray, radius_mm: float, n_rings: int = 17, n_segments: int = 32):
    """A closed UV sphere: ``n_rings * n_segments + 2`` vertices, ``2 * n_rings * n_segments`` outward faces."""
    theta = np.pi * np.arange(1, n_rings + 1) / (n_rings + 1)
    phi = 2 * np.pi * np.arange(n_segments) / n_segments
    t, p = np.meshgrid(theta, phi, indexing="ij")
    body = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], axis=-1).reshape(-1, 3)
    vertices = np.concatenate([[[0, 1, 0]], body, [[0, -1, 0]]]) * radius_mm + centre_mm
    top, bottom = 0, len(vertices) - 1

    def at(ring, seg):
        return 1 + ring * n_segments + seg % n_segments

    faces = []
    for s in range(n_segments):
        faces.append([top, at(0, s + 1), at(0, s)])
        for r in range(n_rings - 1):
            faces.append([at(r, s), at(r, s + 1), at(r + 1, s)])
            faces.append([at(r, s + 1), at(r + 1, s + 1), at(r + 1, s)])
        faces.append([bottom, at(n_rings - 1, s), at(n_rings - 1, s + 1)])
    return vertices, np.array(faces)


def synthetic_flame(seed: int = 0, n_shapedirs: int = 12, swap_eyeballs: bool = False) -> dict[str, np.ndarray]:
    """FLAME's fields (metres): ``v_template`` (5023, 3), ``shapedirs`` (5023, 3, n), ``f`` (9976, 3) uint32,
    ``J_regressor`` (5, 5023) csc, ``weights``, ``posedirs``, ``kintree_table``, ``bs_style``, ``bs_type``.

    ``swap_eyeballs`` puts the right (x < 0) eyeball first, to test that sides come from the geometry.
    """
    rng = np.random.default_rng(seed)
    head, head_faces, named = _head(rng)
    order = np.full(N_HEAD, -1)
    pinned = {named["nose_tip"]: NOSE_TIP, named["left_mouth_corner"]: LEFT_MOUTH_CORNER,
              named["right_mouth_corner"]: RIGHT_MOUTH_CORNER}
    for old, new in pinned.items():
        order[old] = new
    rest = np.setdiff1d(np.arange(N_HEAD), list(pinned.values()))
    order[order < 0] = rng.permutation(rest)
    vertices = np.zeros((N_VERTICES, 3))
    vertices[order] = head
    faces = [order[head_faces]]
    sides = (1.0, -1.0) if not swap_eyeballs else (-1.0, 1.0)
    for start, side in zip((N_HEAD, N_HEAD + 546), sides):
        ball, ball_faces = _uv_sphere(EYEBALL_CENTRE_MM * [side, 1, 1], EYEBALL_RADIUS_MM)
        vertices[start : start + len(ball)] = ball
        faces.append(ball_faces + start)
    faces = np.concatenate(faces)[rng.permutation(N_FACES)]
    features = np.concatenate([np.ones((N_VERTICES, 1)), vertices / 100, (vertices / 100) ** 2], axis=1)
    shapedirs = np.einsum("vf,fck->vck", features, rng.normal(0, 1.0, (features.shape[1], 3, n_shapedirs)))
    return {
        "v_template": vertices / 1000,
        "shapedirs": shapedirs / 1000,
        "f": faces.astype(np.uint32),
        "J_regressor": scipy.sparse.random(5, N_VERTICES, density=0.01, format="csc", random_state=seed),
        "weights": np.full((N_VERTICES, 5), 0.2),
        "posedirs": np.zeros((N_VERTICES, 3, 36), dtype=np.float32),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


@contextlib.contextmanager
def fake_chumpy():
    """A throwaway ``chumpy.ch.Ch`` (with chumpy's pickled state) registered in ``sys.modules`` meanwhile."""
    chumpy = types.ModuleType("chumpy")
    ch = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x
            self._dirty_vars = {"x"}
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    ch.Ch = Ch
    chumpy.ch = ch
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch})
    try:
        yield Ch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def as_numpy1_pickle(data: bytes) -> bytes:
    """Old module names in a protocol <= 2 pickle (text globals), as FLAME's Python-2 files have them:
    numpy 1's ``numpy.core`` for ``numpy._core``, old scipy's ``scipy.sparse.csc`` for ``scipy.sparse._csc``."""
    return data.replace(b"cnumpy._core.", b"cnumpy.core.").replace(b"cscipy.sparse._csc\n", b"cscipy.sparse.csc\n")


def write_flame_pickle(path: Path, fields: dict, protocol: int = 2) -> Path:
    """Write ``fields`` as FLAME's generic_model.pkl (``shapedirs`` as a chumpy Ch); at protocols 0 and 1 the
    Ch goes through ``copy_reg._reconstructor``, as Python 2 wrote such files."""
    with fake_chumpy() as Ch:
        data = pickle.dumps({**fields, "shapedirs": Ch(fields["shapedirs"])}, protocol=protocol)
    path.write_bytes(as_numpy1_pickle(data))
    return path


def write_pickle(path: Path, obj, protocol: int = 0) -> Path:
    """Pickle ``obj`` as FLAME's side files are (protocol 0, numpy 1 names)."""
    path.write_bytes(as_numpy1_pickle(pickle.dumps(obj, protocol=protocol)))
    return path
