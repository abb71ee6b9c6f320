"""Is the face in a photo good enough to restore? Size, sharpness and pose, from the photo and the five points.

A face too small for the encoder's chip is upscaled into it (a 53-pixel background face became a distorted
head), a blurred one loses the shape cues, and a face turned far from the camera hides half of itself.
:func:`assess_face` measures the three; with ``quality=warn`` (default) a face that fails a limit is restored
with a warning, with ``quality=strict`` it is refused. The limits (:data:`MIN_EYE_DISTANCE_PX`,
:data:`MIN_SHARPNESS`, :data:`MAX_YAW_DEG`) are set so that the astronaut photo of examples/ passes and the
same photo shrunk by 0.8 or blurred (Gaussian, sigma 1 px) does not; on insightface's t1.jpg (six people)
the two faces turned furthest away (about 40 deg by the estimate) are far from frontal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from faceregen.alignment import align_face, dlib_chip_template
#: the photo's eyes must be at least this far apart (a face box of about 60 px); the astronaut's are 27 px
MIN_EYE_DISTANCE_PX = 25.0
#: the face is measured at one scale, eyes MIN_EYE_DISTANCE_PX apart: dlib's chip without padding, 48 px
SHARPNESS_TEMPLATE = dlib_chip_template(size=48, padding=0.0)
#: variance of the Laplacian of that grey face (0..255 levels): below is blurred
MIN_SHARPNESS = 150.0
#: the head's turn away from the camera (yaw), estimated from the five points: beyond is far from frontal
MAX_YAW_DEG = 35.0
#: the nose tip's depth in front of the eyes, in eye distances (an adult's ~35 mm in front, eyes ~63 mm apart)
NOSE_DEPTH_PER_EYE_DISTANCE = 0.55
#: quality=warn: restore with a warning; strict: refuse the face
QUALITY_MODES = ("warn", "strict")


@dataclass(frozen=True)
class FaceQuality:
    """``eye_distance_px`` in the photo, ``sharpness`` (:func:`sharpness`), ``yaw_deg`` (estimated turn) and the
    ``problems`` found (empty when all pass)."""

    eye_distance_px: float
    sharpness: float
    yaw_deg: float
    problems: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"eye_distance_px": round(self.eye_distance_px, 1), "min_eye_distance_px": MIN_EYE_DISTANCE_PX,
                "sharpness": round(self.sharpness, 1), "min_sharpness": MIN_SHARPNESS,
                "yaw_deg": round(self.yaw_deg, 1), "max_yaw_deg": MAX_YAW_DEG, "problems": list(self.problems)}


def eye_distance(points_px: np.ndarray) -> float:
    """Distance of the two eye centres (rows 0 and 1 of the five points)."""
    return float(np.linalg.norm(points_px[1] - points_px[0]))


def estimated_yaw_deg(points_px: np.ndarray) -> float:
    """The head's turn (degrees, signed) from the five points.

    In the eyes' frame the nose tip sits ``d sin(yaw)`` beside the face's midline (the mean of the eye and
    mouth midpoints) while the eyes appear ``e cos(yaw)`` apart, so ``offset / eye distance = (d / e) tan(yaw)``
    with ``d / e`` = :data:`NOSE_DEPTH_PER_EYE_DISTANCE`.
    """
    points = np.asarray(points_px, dtype=np.float64)
    across = points[1] - points[0]
    distance = np.linalg.norm(across)
    if distance == 0:
        return 90.0
    midline = (points[:2].mean(axis=0) + points[3:].mean(axis=0)) / 2.0
    offset = float((points[2] - midline) @ across) / distance
    return math.degrees(math.atan(offset / distance / NOSE_DEPTH_PER_EYE_DISTANCE))


def sharpness(image: np.ndarray, points_px: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey face, aligned onto :data:`SHARPNESS_TEMPLATE` (the face
    alone, eyes :data:`MIN_EYE_DISTANCE_PX` apart: one scale for every photo)."""
    grey = align_face(image, points_px, SHARPNESS_TEMPLATE).astype(np.float64).mean(axis=2)
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(laplacian.var())


def assess_face(image: np.ndarray, points_px: np.ndarray) -> FaceQuality:
    """The face's size (eye distance), sharpness and estimated yaw, with the limits they fail."""
    eyes, sharp, yaw = eye_distance(points_px), sharpness(image, points_px), estimated_yaw_deg(points_px)
    problems = []
    if eyes < MIN_EYE_DISTANCE_PX:
        problems.append(f"face too small: eyes {eyes:.0f} px apart, at least {MIN_EYE_DISTANCE_PX:g} px wanted")
    if sharp < MIN_SHARPNESS:
        problems.append(f"face blurred: sharpness {sharp:.0f} < {MIN_SHARPNESS:g}")
    if abs(yaw) > MAX_YAW_DEG:
        problems.append(f"face far from frontal: turned about {abs(yaw):.0f} deg (more than {MAX_YAW_DEG:g})")
    return FaceQuality(eyes, sharp, yaw, tuple(problems))
