"""The evaluation protocol: each predicted head against its ground truth, the field's way and ours.

For a prediction ``P`` and ground truth ``G`` (V, 3) in mm, in the face model's topology, over the
evaluated vertices (all but the eyeballs), per sample:

* ``distance_mm``: mean per-vertex Euclidean distance ``|P_v - G_v|``, as predicted (no alignment: the head's
  position in the ear-centred frame counts). The authors' "geometric" error.
* ``mse_mm2``: the authors' quantity, their code's ``nn.MSELoss`` on vertices in mm: the per-COORDINATE mean
  squared error ``mean_{v,c} (P_vc - G_vc)^2`` in mm^2 (not a distance).
* ``face_rigid_mm`` / ``face_similarity_mm``: mean per-vertex distance over the ``face`` region after the
  least-squares rigid / similarity fit (Umeyama) of ``P``'s face region onto ``G``'s.
* ``wound_rigid_mm`` / ``intact_rigid_mm``: after the same rigid fit, inside the wound (vertices the wound
  moved) and on the face outside it; NaN for samples without a wound.
* ``<part>_rigid_mm`` for :data:`~faceregen.face_model.decoder.FACE_PARTS` (nose, forehead, cheeks, lips,
  chin): after the same rigid fit.
* ``now_{median,mean,std}_mm`` and ``now_metrical_{median,mean,std}_mm``: the NoW protocol
  (:func:`~faceregen.evaluation.scan_to_mesh.now_distance`): ``G``'s vertices as the scan, cropped to NoW's
  sphere around the nose, ``P`` aligned by the seven NoW landmarks and refined by ICP (similarity;
  metrical: rigid), then scan-to-SURFACE distances, so a prediction that slides along the surface is not
  penalised as it is per vertex.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceregen import geometry
from faceregen.evaluation.scan_to_mesh import now_distance
from faceregen.face_model.decoder import FACE_PARTS, evaluation_vertices, face_parts
from faceregen.face_model.linear import NOW_LANDMARKS, Landmarks, LinearFaceModel

#: Per-sample metrics, in the order of :meth:`EvaluationProtocol.per_sample`'s dictionary.
SAMPLE_METRICS = (
    "distance_mm", "mse_mm2", "face_rigid_mm", "face_similarity_mm", "wound_rigid_mm", "intact_rigid_mm",
    *(f"{part}_rigid_mm" for part in FACE_PARTS),
    "now_median_mm", "now_mean_mm", "now_std_mm", "now_metrical_median_mm", "now_metrical_mean_mm",
    "now_metrical_std_mm",
)  # fmt: skip
NOW_METRICS = tuple(name for name in SAMPLE_METRICS if name.startswith("now_"))


def now_images(first_render: np.ndarray, budget: int, seen: int = 0) -> np.ndarray:
    """Which images (B,) of a batch get the NoW protocol: those that are their sample's first render, while
    fewer than ``budget`` such images came before (``seen`` in earlier batches). The same images for every
    run over the same split order, so runs compare pairwise."""
    first = np.asarray(first_render, dtype=bool)
    return first & (np.cumsum(first) + seen <= budget)


def _fitted(pred: np.ndarray, gt: np.ndarray, on: np.ndarray, with_scale: bool) -> np.ndarray:
    """``P`` (B, V, 3) moved by the least-squares rigid / similarity fit of ``P[:, on]`` onto ``G[:, on]``."""
    scale, rotation, translation = geometry.umeyama(pred[:, on], gt[:, on], with_scale)
    return scale[:, None, None] * np.einsum("bij,bvj->bvi", rotation, pred) + translation[:, None, :]


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row means of ``values`` (B, V) over ``mask`` (B, V) or (V,); NaN for an empty row."""
    mask = np.broadcast_to(mask, values.shape)
    count = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (values * mask).sum(axis=1) / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class EvaluationProtocol:
    """What the metrics need of the face model: vertex masks, triangles and the NoW landmarks."""

    evaluated: np.ndarray  # (V,) bool: all but the eyeballs
    face: np.ndarray  # (V,) bool
    parts: dict  # part -> (V,) bool
    faces: np.ndarray  # (F, 3) triangles
    now_landmarks: Landmarks | None  # None: the face model lacks NOW_LANDMARKS, NoW metrics are NaN

    @classmethod
    def for_face_model(cls, model: LinearFaceModel) -> EvaluationProtocol:
        has_now = all(name in model.landmarks.names for name in NOW_LANDMARKS)
        return cls(
            evaluated=evaluation_vertices(model),
            face=model.region_mask("face"),
            parts=face_parts(model),
            faces=np.asarray(model.faces, dtype=np.int64),
            now_landmarks=model.landmarks.subset(NOW_LANDMARKS) if has_now else None,
        )

    def per_sample(
        self, pred_mm: np.ndarray, gt_mm: np.ndarray, wound_mask: np.ndarray | None = None, now: bool | np.ndarray = True
    ) -> dict[str, np.ndarray]:
        """Every :data:`SAMPLE_METRICS` entry (B,) for predictions and ground truths (B, V, 3) in mm.

        ``wound_mask`` (B, V) bool marks the wound's vertices (None: no sample has one); ``now`` (a bool, or
        (B,) bools) says which samples get the NoW protocol (the others' NoW entries are NaN): it costs
        ~0.1 s a sample where the rest costs ~1 ms.
        """
        pred = np.asarray(pred_mm, dtype=np.float64)
        gt = np.asarray(gt_mm, dtype=np.float64)
        if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (len(self.evaluated), 3):
            raise ValueError(f"predictions {pred.shape} and ground truths {gt.shape}: expected (B, {len(self.evaluated)}, 3) each")
        n = len(pred)
        wound = np.zeros((n, len(self.evaluated)), bool) if wound_mask is None else np.asarray(wound_mask, bool)
        distance = np.linalg.norm(pred - gt, axis=-1)
        rigid = np.linalg.norm(_fitted(pred, gt, self.face, with_scale=False) - gt, axis=-1)
        similarity = np.linalg.norm(_fitted(pred, gt, self.face, with_scale=True) - gt, axis=-1)
        has_wound = (wound & self.evaluated).any(axis=1)
        metrics = {
            "distance_mm": _masked_mean(distance, self.evaluated),
            "mse_mm2": _masked_mean(((pred - gt) ** 2).mean(axis=-1), self.evaluated),
            "face_rigid_mm": _masked_mean(rigid, self.face),
            "face_similarity_mm": _masked_mean(similarity, self.face),
            "wound_rigid_mm": _masked_mean(rigid, wound & self.evaluated),
            "intact_rigid_mm": np.where(has_wound, _masked_mean(rigid, self.face & ~wound), np.nan),
            **{f"{part}_rigid_mm": _masked_mean(rigid, mask) for part, mask in self.parts.items()},
        }
        metrics.update({name: np.full(n, np.nan) for name in NOW_METRICS})
        if self.now_landmarks is not None:
            for b in np.flatnonzero(np.broadcast_to(now, (n,))):
                scan = gt[b][self.evaluated]
                scan_landmarks = self.now_landmarks.positions(gt[b])
                mesh_landmarks = self.now_landmarks.positions(pred[b])
                for prefix, metrical in (("now", False), ("now_metrical", True)):
                    result = now_distance(scan, scan_landmarks, pred[b], self.faces, mesh_landmarks, metrical=metrical)
                    for stat in ("median", "mean", "std"):
                        metrics[f"{prefix}_{stat}_mm"][b] = result[f"{stat}_mm"]
        return {name: metrics[name] for name in SAMPLE_METRICS}
