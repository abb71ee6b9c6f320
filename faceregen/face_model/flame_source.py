"""FLAME 2020 as a :class:`LinearFaceModel`, in full topology or in the Cir3D-FaIR topology.

Users bring their own licensed files: ``generic_model.pkl`` (chumpy-pickled, read here without chumpy and
through an allowlist, see :mod:`faceregen.face_model.safe_pickle`; a ``.npz`` with the same field names works
too), optionally ``FLAME_masks.pkl`` and DECA/MICA's ``landmark_embedding.npy``.

``G(z) = B z + A`` with ``A = 1000 * v_template`` and ``B = 1000 * shapedirs[:, :, :K]`` (FLAME is in metres,
the project in millimetres; FLAME's shape space already has ``z ~ N(0, I)``; columns 300..399 are
expression and never used). FLAME's frame is the project's: x toward the subject's left, y up, +z out of
the face.

FLAME topology facts used (checked on the FLAME template mesh shipped with cirmesh, on MICA's
``FLAME_masks.pkl`` / ``landmark_embedding.npy`` and on two Cir3D-FaIR sample meshes):

- 5023 vertices, 9976 faces. Vertices 0..3930 are the head (7800 faces, not contiguous in the face list);
  3931..4476 and 4477..5022 are two closed eyeballs (546 vertices, 1088 faces each); on the template the
  first has its centre at x = +32 mm (the subject's left), as ``FLAME_masks.pkl``'s ``left_eyeball`` says.
  The side is nevertheless decided here from the centre's x sign, not assumed.
- The head is open at two places, the mouth (a 32-edge loop) and the neck (30 edges); the eye sockets are
  closed. The Cir3D-FaIR topology (``topology="cir3d"``: 3933 vertices, 7862 faces, watertight) is the
  head with each of these two loops closed by a fan around its mean: vertex 3931 closes the neck, 3932 the
  mouth (:func:`faceregen.mesh_topology.close_holes_with_centre_vertices` reproduces its faces exactly).
- Vertex constants without a landmark embedding (the nearest vertex to the 68-point embedding's point):
  nose tip 3526 (0.5 mm from iBUG point 30; the template's most forward vertex is 3564, 3.1 mm lower),
  right mouth corner 2845 (x < 0, 0.6 mm from point 48), left mouth corner 1730 (x > 0, 0.5 mm from 54).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from faceregen.face_model.linear import FIVE_POINT_NAMES, REGION_NAMES, Landmarks, LinearFaceModel
from faceregen.face_model.safe_pickle import load_restricted_pickle, to_numpy
from faceregen.mesh_topology import append_loop_centres, close_holes_with_centre_vertices, keep_vertices

FLAME_N_VERTICES = 5023
FLAME_N_FACES = 9976
#: Vertices ``0 .. FLAME_N_HEAD_VERTICES - 1`` are the head; the rest are the two eyeballs.
FLAME_N_HEAD_VERTICES = 3931
#: ``[start, stop)`` of the two eyeballs (which one is left is read from the geometry).
FLAME_EYEBALL_RANGES = ((3931, 4477), (4477, 5023))
#: Shape components; ``shapedirs[:, :, 300:]`` is expression.
FLAME_N_SHAPE_COMPONENTS = 300
METRES_TO_MM = 1000.0

NOSE_TIP_VERTEX = 3526
RIGHT_MOUTH_CORNER_VERTEX = 2845
LEFT_MOUTH_CORNER_VERTEX = 1730
#: In the Cir3D-FaIR topology (no eyeballs) an eye centre is the mean of the head vertices nearest to
#: the eyeball centre on the template: the closed socket around it. On FLAME, 16 of them are within 6 mm
#: and their mean is 0.3 mm (x, y) and 4 mm (z, forward) from the eyeball centre.
EYE_SOCKET_VERTEX_COUNT = 16

#: Five-point names from the iBUG 68 scheme (0-based): nose tip 30, mouth corners 48 (subject's right) and 54.
IBUG_FIVE_POINTS = {"nose_tip": 30, "right_mouth_corner": 48, "left_mouth_corner": 54}

#: Regions approximated without ``FLAME_masks.pkl``: head vertices within a radius of a template point.
#: Radii chosen on the FLAME template against ``FLAME_masks.pkl`` (intersection over union in brackets).
FACE_RADIUS_MM = 110.0  # around the nose tip, and at most FACE_DEPTH_MM behind it (0.82)
FACE_DEPTH_MM = 95.0
NOSE_RADIUS_MM = 38.0  # around the nose tip (0.80)
LIPS_RADIUS_MM = 26.0  # around the midpoint of the mouth corners (0.66)
EYE_REGION_RADIUS_MM = 32.0  # around either eyeball centre (0.75)
#: Regions left empty without ``FLAME_masks.pkl``.
UNDERIVED_REGIONS = ("left_ear", "right_ear", "forehead", "scalp", "neck")

TOPOLOGIES = ("full", "cir3d")


def load_flame_arrays(model_path: str | Path) -> dict[str, np.ndarray]:
    """``v_template`` (5023, 3) m, ``shapedirs`` (5023, 3, K) m and ``f`` (9976, 3) from a FLAME model file.

    ``.npz``: ``np.load(allow_pickle=False)``. Otherwise FLAME's pickle, through the restricted unpickler
    (chumpy ``Ch`` fields become arrays; nothing else in the file is executed or needed).
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: FLAME model file not found (FLAME2020 generic_model.pkl or .npz)")
    if model_path.suffix == ".npz":
        with np.load(model_path, allow_pickle=False) as data:
            fields = {k: data[k] for k in ("v_template", "shapedirs", "f") if k in data.files}
    else:
        model = load_restricted_pickle(model_path)
        if not isinstance(model, dict):
            raise ValueError(f"{model_path}: expected a pickled dict of FLAME fields, got {type(model).__name__}")
        fields = {k: to_numpy(model[k]) for k in ("v_template", "shapedirs", "f") if k in model}
    missing = {"v_template", "shapedirs", "f"} - set(fields)
    if missing:
        raise ValueError(f"{model_path}: FLAME model lacks the fields {sorted(missing)}")
    expected = {"v_template": (FLAME_N_VERTICES, 3), "shapedirs": (FLAME_N_VERTICES, 3, None), "f": (FLAME_N_FACES, 3)}
    for key, shape in expected.items():
        actual = fields[key].shape
        if len(actual) != len(shape) or any(want not in (None, got) for want, got in zip(shape, actual)):
            raise ValueError(f"{model_path}: {key} has shape {actual}, expected {shape} (None: any)")
    return {
        "v_template": fields["v_template"].astype(np.float64),
        "shapedirs": fields["shapedirs"].astype(np.float64),
        "f": fields["f"].astype(np.int64),
    }


def load_flame_masks(masks_path: str | Path) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl as ``{region: sorted vertex indices}`` for the keys in :data:`REGION_NAMES`.

    The file's other keys (``left_eye_region``, ``right_eye_region``, ``boundary``) are not regions of the
    project and are dropped.
    """
    masks = load_restricted_pickle(masks_path, allow_chumpy=False)
    if not isinstance(masks, dict):
        raise ValueError(f"{masks_path}: expected a pickled dict of vertex-index arrays, got {type(masks).__name__}")
    missing = set(REGION_NAMES) - set(masks)
    if missing:
        raise ValueError(f"{masks_path}: FLAME masks lack {sorted(missing)}")
    regions = {name: np.unique(np.asarray(masks[name], dtype=np.int64)) for name in REGION_NAMES}
    for name, idx in regions.items():
        if idx.size and (idx.min() < 0 or idx.max() >= FLAME_N_VERTICES):
            raise ValueError(f"{masks_path}: region {name!r} has vertex indices outside 0..{FLAME_N_VERTICES - 1}")
    return regions


def load_landmark_embedding(path: str | Path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """iBUG-68 landmarks as barycentric points on FLAME faces: ``(names, face_indices (L,), bary (L, 3))``.

    Accepted files (``.npz`` read with ``allow_pickle=False``, anything else through the restricted
    unpickler, ``.npy`` included):

    - DECA/MICA ``landmark_embedding.npy``: ``full_lmk_faces_idx`` (1, 68) and ``full_lmk_bary_coords``
      (1, 68, 3) give ``ibug_00 .. ibug_67``; without them ``static_lmk_faces_idx`` (51,) /
      ``static_lmk_bary_coords`` (51, 3) give ``ibug_17 .. ibug_67`` (no jaw contour).
    - FLAME's ``flame_static_embedding.pkl``: ``lmk_face_idx`` (or ``lmk_faces_idx``) and ``lmk_b_coords``
      (51 points, ``ibug_17 .. ibug_67``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: landmark embedding not found")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            table = {k: data[k] for k in data.files}
    else:
        loaded = load_restricted_pickle(path, allow_chumpy=False)
        table = loaded.item() if isinstance(loaded, np.ndarray) and loaded.dtype == object else loaded
        if not isinstance(table, dict):
            raise ValueError(f"{path}: expected a dict of landmark arrays, got {type(table).__name__}")
    for faces_key, bary_key in (
        ("full_lmk_faces_idx", "full_lmk_bary_coords"),
        ("static_lmk_faces_idx", "static_lmk_bary_coords"),
        ("lmk_face_idx", "lmk_b_coords"),
        ("lmk_faces_idx", "lmk_b_coords"),
    ):
        if faces_key in table and bary_key in table:
            face_idx = to_numpy(table[faces_key]).reshape(-1).astype(np.int64)
            bary = to_numpy(table[bary_key]).reshape(-1, 3).astype(np.float64)
            break
    else:
        raise ValueError(
            f"{path}: no landmark table (full_lmk_*, static_lmk_* or lmk_face_idx/lmk_b_coords) in {sorted(table)}"
        )
    if len(face_idx) not in (68, 51) or len(bary) != len(face_idx):
        raise ValueError(
            f"{path}: {faces_key} has {len(face_idx)} landmarks and {bary_key} {len(bary)}; expected 68 or 51 each"
        )
    if face_idx.min() < 0 or face_idx.max() >= FLAME_N_FACES:
        raise ValueError(f"{path}: {faces_key} has face indices outside 0..{FLAME_N_FACES - 1}")
    first = 68 - len(face_idx)
    names = tuple(f"ibug_{i:02d}" for i in range(first, 68))
    return names, face_idx, bary


def eyeball_regions(template_m: np.ndarray) -> dict[str, np.ndarray]:
    """``left_eyeball`` / ``right_eyeball`` from :data:`FLAME_EYEBALL_RANGES`; left is the one at larger x."""
    balls = [np.arange(start, stop) for start, stop in FLAME_EYEBALL_RANGES]
    centres_x = [template_m[ball, 0].mean() for ball in balls]
    if np.sign(centres_x[0]) == np.sign(centres_x[1]):
        raise ValueError(f"FLAME eyeball centres at x = {centres_x} m are on one side: not FLAME's topology")
    left, right = (balls[0], balls[1]) if centres_x[0] > centres_x[1] else (balls[1], balls[0])
    return {"left_eyeball": left, "right_eyeball": right}


def derived_regions(template_mm: np.ndarray, eyeballs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Regions without ``FLAME_masks.pkl``: eyeballs exact, face / nose / lips / eye_region approximate.

    On the head vertices (``< FLAME_N_HEAD_VERTICES``): ``face`` within :data:`FACE_RADIUS_MM` of the nose
    tip and less than :data:`FACE_DEPTH_MM` behind it; ``nose`` within :data:`NOSE_RADIUS_MM` of the nose
    tip; ``lips`` within :data:`LIPS_RADIUS_MM` of the mouth corners' midpoint; ``eye_region`` within
    :data:`EYE_REGION_RADIUS_MM` of either eyeball centre. :data:`UNDERIVED_REGIONS` are empty.
    """
    head = template_mm[:FLAME_N_HEAD_VERTICES]
    nose_tip = template_mm[NOSE_TIP_VERTEX]
    mouth = (template_mm[RIGHT_MOUTH_CORNER_VERTEX] + template_mm[LEFT_MOUTH_CORNER_VERTEX]) / 2

    def within(centre: np.ndarray, radius_mm: float) -> np.ndarray:
        return np.linalg.norm(head - centre, axis=1) < radius_mm

    eye_region = np.zeros(len(head), dtype=bool)
    for ball in eyeballs.values():
        eye_region |= within(template_mm[ball].mean(axis=0), EYE_REGION_RADIUS_MM)
    masks = {
        "face": within(nose_tip, FACE_RADIUS_MM) & (head[:, 2] > nose_tip[2] - FACE_DEPTH_MM),
        "nose": within(nose_tip, NOSE_RADIUS_MM),
        "lips": within(mouth, LIPS_RADIUS_MM),
        "eye_region": eye_region,
    }
    regions = {name: np.flatnonzero(mask) for name, mask in masks.items()}
    regions.update(eyeballs)
    regions.update({name: np.zeros(0, dtype=np.int64) for name in UNDERIVED_REGIONS})
    return regions


def _landmarks(rows: list[tuple[str, np.ndarray, np.ndarray]]) -> Landmarks:
    """Landmarks from ``(name, vertex indices, weights)`` rows, padded to one width with zero weights."""
    width = max(len(idx) for _, idx, _ in rows)
    indices = np.zeros((len(rows), width), dtype=np.int64)
    weights = np.zeros((len(rows), width), dtype=np.float32)
    for r, (_, idx, w) in enumerate(rows):
        indices[r, : len(idx)] = idx
        weights[r, : len(idx)] = w
    return Landmarks(tuple(name for name, _, _ in rows), indices, weights)


def flame_landmarks(
    template_mm: np.ndarray,
    faces: np.ndarray,
    eyeballs: dict[str, np.ndarray],
    topology: str,
    embedding: tuple[tuple[str, ...], np.ndarray, np.ndarray] | None,
) -> Landmarks:
    """FIVE_POINT_NAMES first, then the embedding's ``ibug_XX`` points (FLAME vertex indices, all < 3931).

    Eye centres: the eyeball's vertex mean (``full``) or the mean of the :data:`EYE_SOCKET_VERTEX_COUNT`
    head vertices nearest to it on the template (``cir3d``, which has no eyeballs). Nose tip and mouth
    corners: iBUG points 30, 48, 54 of the embedding when given, else the vertex constants.
    """
    rows: list[tuple[str, np.ndarray, np.ndarray]] = []
    for side in ("right", "left"):
        ball = eyeballs[f"{side}_eyeball"]
        if topology == "full":
            socket = ball
        else:
            distance = np.linalg.norm(template_mm[:FLAME_N_HEAD_VERTICES] - template_mm[ball].mean(axis=0), axis=1)
            socket = np.sort(np.argsort(distance)[:EYE_SOCKET_VERTEX_COUNT])
        rows.append((f"{side}_eye", socket, np.full(len(socket), 1.0 / len(socket))))
    ibug_rows = []
    if embedding is not None:
        names, face_idx, bary = embedding
        ibug_rows = [(name, faces[fi], b) for name, fi, b in zip(names, face_idx, bary)]
    by_name = {name: (idx, w) for name, idx, w in ibug_rows}
    constants = {
        "nose_tip": NOSE_TIP_VERTEX,
        "right_mouth_corner": RIGHT_MOUTH_CORNER_VERTEX,
        "left_mouth_corner": LEFT_MOUTH_CORNER_VERTEX,
    }
    for name in FIVE_POINT_NAMES[2:]:
        ibug = f"ibug_{IBUG_FIVE_POINTS[name]:02d}"
        idx, w = by_name.get(ibug, (np.array([constants[name]]), np.array([1.0])))
        rows.append((name, idx, w))
    landmarks = _landmarks(rows + ibug_rows)
    used = landmarks.indices[landmarks.weights > 0]
    if topology == "cir3d" and used.max() >= FLAME_N_HEAD_VERTICES:
        raise ValueError(f"a landmark uses vertex {used.max()}, which the cir3d topology (no eyeballs) removes")
    return landmarks


def _cir3d_regions(regions: dict[str, np.ndarray], loops: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Regions on the cir3d topology: head vertices keep their index; loop ``k``'s centre vertex
    (``3931 + k``) joins every region holding more than half of that loop's vertices."""
    out = {}
    for name, idx in regions.items():
        idx = idx[idx < FLAME_N_HEAD_VERTICES]
        centres = [FLAME_N_HEAD_VERTICES + k for k, loop in enumerate(loops) if np.isin(loop, idx).mean() > 0.5]
        out[name] = np.concatenate([idx, np.array(centres, dtype=np.int64)])
    return out


def flame_face_model(
    model_path: str | Path,
    masks_path: str | Path | None = None,
    n_components: int = 300,
    topology: str = "full",
    landmark_embedding_path: str | Path | None = None,
) -> LinearFaceModel:
    """FLAME's shape space as ``G(z) = B z + A`` in millimetres.

    Args:
        model_path: FLAME2020 ``generic_model.pkl`` (or a ``.npz`` with ``v_template``, ``shapedirs``, ``f``).
        masks_path: ``FLAME_masks.pkl``; without it regions are derived (see :func:`derived_regions`) and a
            warning names the approximate and the empty ones.
        n_components: shape components ``K`` (1..300).
        topology: ``"full"`` (5023 vertices, 9976 faces) or ``"cir3d"`` (3933 vertices, 7862 faces:
            no eyeballs, neck and mouth closed by centre vertices 3931 and 3932; watertight).
        landmark_embedding_path: DECA/MICA ``landmark_embedding.npy`` (or FLAME's static embedding) for
            the iBUG-68 points and better nose tip / mouth corners.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}, got {topology!r}")
    arrays = load_flame_arrays(model_path)
    available = min(arrays["shapedirs"].shape[2], FLAME_N_SHAPE_COMPONENTS)
    if not 1 <= n_components <= available:
        raise ValueError(f"n_components must be in 1..{available} for {model_path}, got {n_components}")
    mean_mm = arrays["v_template"] * METRES_TO_MM
    basis_mm = arrays["shapedirs"][:, :, :n_components] * METRES_TO_MM
    faces = arrays["f"]
    eyeballs = eyeball_regions(arrays["v_template"])
    if masks_path is not None:
        regions = load_flame_masks(masks_path)
        regions_source = Path(masks_path).name
    else:
        regions = derived_regions(mean_mm, eyeballs)
        regions_source = f"derived (approximate face, nose, lips, eye_region; empty {', '.join(UNDERIVED_REGIONS)})"
        warnings.warn(
            f"no FLAME_masks.pkl given: regions face, nose, lips and eye_region are approximated from the "
            f"template and {', '.join(UNDERIVED_REGIONS)} are empty",
            stacklevel=2,
        )
    embedding = load_landmark_embedding(landmark_embedding_path) if landmark_embedding_path is not None else None
    landmarks = flame_landmarks(mean_mm, faces, eyeballs, topology, embedding)
    if topology == "cir3d":
        keep = np.arange(FLAME_N_VERTICES) < FLAME_N_HEAD_VERTICES
        head_faces, _ = keep_vertices(faces, keep)
        faces, loops = close_holes_with_centre_vertices(head_faces, FLAME_N_HEAD_VERTICES)
        mean_mm = append_loop_centres(mean_mm[keep], loops)
        basis_mm = append_loop_centres(basis_mm[keep], loops)
        regions = _cir3d_regions(regions, loops)
    info = {
        "source": "FLAME2020",
        "model_file": Path(model_path).name,
        "topology": topology,
        "units": "mm",
        "regions": regions_source,
        "landmarks": "landmark embedding" if embedding is not None else "FLAME vertex constants",
    }
    return LinearFaceModel(
        name="flame2020" if topology == "full" else "flame2020-cir3d",
        mean_mm=mean_mm.astype(np.float32),
        basis_mm=basis_mm.astype(np.float32),
        faces=faces,
        landmarks=landmarks,
        regions={name: np.sort(idx).astype(np.int64) for name, idx in regions.items()},
        info=info,
    )
