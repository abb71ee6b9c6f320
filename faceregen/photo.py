"""One path from a photo to the aligned chip: training's preprocessing cache and ``reconstruct.py`` both take it.

::

    photo --read_rgb (EXIF rotation, size limit)--> image (H, W, 3) uint8
    image --(given five points | a render's landmarks.npz | the detector's largest central face
             among detections scoring >= min_score)--> FaceLocation
    image, points --align_face onto the encoder's template--> chip (S, S, 3) uint8, FaceQuality

so the same photo gives the same chip in training (:func:`aligned_chip`, the detector of
``conf/detector/hog.yaml``) and in ``reconstruct.py`` with its default detector (:class:`PhotoAligner`).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from faceregen.alignment import align_face, get_template
from faceregen.data_layout import LANDMARKS_NAME, render_five_points, render_light
from faceregen.face_detection import Detection, FaceDetector, largest_central
from faceregen.face_quality import QUALITY_MODES, FaceQuality, assess_face
from faceregen.image_io import DEFAULT_MAX_PIXELS, read_rgb

#: the detector configs (``conf/detector/<name>.yaml``)
DETECTOR_CONFIGS = Path(__file__).resolve().parents[1] / "conf" / "detector"
#: the detector training's cache uses for dataset photos without landmarks (reconstruct.py's default)
TRAINING_DETECTOR = "hog"


def detector_config(name: str) -> dict:
    """``conf/detector/<name>.yaml`` as a dict (ValueError naming the choices for an unknown name)."""
    path = DETECTOR_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in DETECTOR_CONFIGS.glob("*.yaml"))
        raise ValueError(f"detector={name!r}: expected one of {choices}")
    return OmegaConf.to_container(OmegaConf.load(path))


def make_detector(name: str, **options) -> object:
    """The detector of ``conf/detector/<name>.yaml``: ``hog`` / ``cnn`` (:class:`~faceregen.face_detection.FaceDetector`) or
    ``insightface`` (:class:`~faceregen.insightface_models.InsightFaceDetector`). Each has ``detect(image)``
    -> :class:`~faceregen.face_detection.Detection` list, ``min_score``, ``name`` and ``reach`` (what it can find)."""
    if name in ("hog", "cnn"):
        return FaceDetector(name, **options)
    if name == "insightface":
        from faceregen.insightface_models import InsightFaceDetector

        return InsightFaceDetector(**options)
    raise ValueError(f"detector={name!r}: expected hog, cnn or insightface")


@dataclass(frozen=True)
class FaceLocation:
    """The face used for alignment: ``points_px`` (5, 2) in FIVE_POINT_NAMES order and where they came from.

    ``source`` is ``"landmarks.npz"`` (the render's stored points), ``"given"`` (the dataset's landmarks) or
    the detector's name; for a detector ``box`` (left, top, right, bottom) px and ``score`` are the chosen
    detection's, ``n_faces`` how many faces were found and ``n_weak`` how many further detections scored
    below the threshold.
    """

    points_px: np.ndarray
    source: str
    n_faces: int
    n_weak: int = 0
    box: tuple[float, float, float, float] | None = None
    score: float | None = None

    def describe(self) -> str:
        if self.box is None:
            return f"stored five points ({self.source})"
        weak = f", {self.n_weak} weaker detection(s) ignored" if self.n_weak else ""
        return (f"largest central of {self.n_faces} face(s) found by {self.source}{weak}: "
                f"box {tuple(round(b) for b in self.box)} px, score {self.score:.2f}")

    def to_dict(self) -> dict:
        return {"source": self.source, "n_faces": self.n_faces, "n_weak": self.n_weak,
                "box": None if self.box is None else list(self.box), "score": self.score,
                "points_px": np.asarray(self.points_px).round(3).tolist()}


@dataclass
class PhotoFace:
    """A photo's ``image``, the ``face`` used, the aligned ``chip`` (S, S, 3) uint8, its ``quality`` and
    ``seconds`` per step (read, detection, alignment)."""

    image: np.ndarray
    face: FaceLocation
    chip: np.ndarray
    quality: FaceQuality
    seconds: dict[str, float] = field(default_factory=dict)


def stored_five_points(image_path: str | os.PathLike) -> np.ndarray | None:
    """The five points of render ``<sample>/<sample>_<k>.png`` from its ``<sample>/landmarks.npz``
    (:func:`faceregen.data_layout.render_five_points`); None when the image is not named so or the folder
    has no landmark file."""
    path = Path(image_path)
    landmarks = path.parent / LANDMARKS_NAME
    if render_light(path) is None or not landmarks.is_file():
        return None
    return render_five_points(landmarks, (path,))[0]


def chosen_face(detections: list[Detection], image_shape: tuple[int, ...], min_score: float,
                source: str) -> FaceLocation:
    """The largest central (:func:`faceregen.face_detection.largest_central`) of the detections scoring at
    least ``min_score`` (weak HOG detections are mostly false: on the astronaut photo a patch of the suit
    scores 0.01-0.12, the face 1.2-1.5); ``n_faces`` counts them. ValueError when none is left."""
    faces = [d for d in detections if d.score >= min_score]
    if not faces:
        scores = ", ".join(f"{d.score:.2f}" for d in detections)
        raise ValueError(f"no face detected with score >= {min_score}" + (f" (weaker detections: {scores})" if scores else ""))
    best = largest_central(faces, image_shape)
    return FaceLocation(points_px=best.points_px, source=source, n_faces=len(faces),
                        n_weak=len(detections) - len(faces), box=best.box, score=best.score)


class PhotoAligner:
    """Photo -> :class:`PhotoFace` (module docstring).

    Args:
        alignment: a key of :data:`faceregen.alignment.ALIGNMENT_TEMPLATES` (the encoder's).
        detector: ``conf/detector/<name>.yaml`` as a dict (``name`` + options); default
            :data:`TRAINING_DETECTOR`'s. Built on first use (dlib's predictor loads in about a second).
        max_pixels: larger photos are refused (:func:`faceregen.image_io.read_rgb`).
        use_stored_landmarks: take a render's ``landmarks.npz`` points instead of detecting.
        quality: ``warn`` (the problems are recorded) or ``strict`` (a face with problems is refused).
    """

    def __init__(self, alignment: str, detector: dict | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 use_stored_landmarks: bool = True, quality: str = "warn") -> None:
        if quality not in QUALITY_MODES:
            raise ValueError(f"quality={quality!r}: expected one of {QUALITY_MODES}")
        self.template = get_template(alignment)
        self.detector_config = dict(detector_config(TRAINING_DETECTOR) if detector is None else detector)
        self.max_pixels = int(max_pixels)
        self.use_stored_landmarks = use_stored_landmarks
        self.quality = quality
        self._detector = None

    @property
    def detector(self):
        if self._detector is None:
            self._detector = make_detector(**self.detector_config)
        return self._detector

    def locate(self, image: np.ndarray, image_path: Path, points: np.ndarray | None = None) -> FaceLocation:
        """``points`` when given, else a render's stored points, else the detector's choice (ValueError if none)."""
        if points is not None:
            return FaceLocation(points_px=np.asarray(points, dtype=np.float64), source="given", n_faces=1)
        stored = stored_five_points(image_path) if self.use_stored_landmarks else None
        if stored is not None:
            return FaceLocation(points_px=stored, source=LANDMARKS_NAME, n_faces=1)
        detector = self.detector
        try:
            return chosen_face(detector.detect(image), image.shape, detector.min_score, detector.name)
        except ValueError as err:
            raise ValueError(f"{image_path}: {err} by {detector.name}; {detector.reach}") from None

    def __call__(self, image_path: str | os.PathLike, points: np.ndarray | None = None) -> PhotoFace:
        image_path = Path(image_path)
        clock, seconds = time.perf_counter(), {}

        def lap(step: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[step], clock = now - clock, now

        image = read_rgb(image_path, self.max_pixels)
        lap("read")
        face = self.locate(image, image_path, points)
        lap("detection")
        chip = align_face(image, face.points_px, self.template)
        quality = assess_face(image, face.points_px)
        lap("alignment")
        if quality.problems and self.quality == "strict":
            raise ValueError(f"{image_path}: face refused (quality=strict): " + "; ".join(quality.problems))
        return PhotoFace(image, face, chip, quality, seconds)


@functools.lru_cache(maxsize=None)
def _training_aligner(alignment: str) -> PhotoAligner:
    return PhotoAligner(alignment, use_stored_landmarks=False)


def aligned_chip(image_path: str | os.PathLike, alignment: str, points: np.ndarray | None = None) -> np.ndarray:
    """Training's chip (S, S, 3) uint8 of a dataset photo: its ``points`` when the sample has landmarks, else the
    face :data:`TRAINING_DETECTOR` chooses (one detector per process)."""
    return _training_aligner(alignment)(image_path, points).chip
