"""Face detection with the user's own insightface models (SCRFD of antelopev2 / buffalo_l), read from disk.

insightface's model packs are licensed for non-commercial research and hosted outside the package registries,
so the project ships none and never downloads one: ``detector=insightface detector.models_root=<root>`` reads
``<root>/models/<pack>/<SCRFD file>`` (the layout of insightface's ``FaceAnalysis(name=pack, root=root)``).
Whatever is missing is named with the fix, including the official ``antelopev2.zip``, which unpacks into a
nested ``antelopev2/antelopev2/`` folder that insightface itself rejects with a bare ``AssertionError``
(insightface issue #1525). The detector is insightface's ``SCRFD`` class; its boxes and five points (OpenCV's
pixel centres at integers) are shifted by +0.5 to :mod:`faceregen.alignment`'s convention.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceregen.face_detection import Detection

#: the SCRFD detector file of each model pack
DETECTOR_FILES = {"antelopev2": "scrfd_10g_bnkps.onnx", "buffalo_l": "det_10g.onnx"}
#: detections scoring less are not even reported (SCRFD keeps ~all anchors below)
WEAKEST_REPORTED_SCORE = 0.1


def detector_file(models_root: str | Path, pack: str) -> Path:
    """``<models_root>/models/<pack>/<DETECTOR_FILES[pack]>``; FileNotFoundError saying what is missing and how
    to fix it, ValueError for an unknown pack."""
    if pack not in DETECTOR_FILES:
        raise ValueError(f"detector.pack={pack!r}: expected one of {sorted(DETECTOR_FILES)}")
    root = Path(models_root).expanduser()
    name = DETECTOR_FILES[pack]
    if not root.is_dir():
        raise FileNotFoundError(f"detector.models_root={root}: folder not found (insightface's model root, holding "
                                f"models/{pack}/{name})")
    folder = root / "models" / pack
    path = folder / name
    if path.is_file():
        return path
    nested = folder / pack / name
    if nested.is_file():
        raise FileNotFoundError(
            f"{path}: not found, but {nested} is: {pack}.zip unpacked into a nested {pack}/{pack}/ folder "
            f"(insightface issue #1525); move its files up: mv {folder / pack}/* {folder}/")
    archive = root / "models" / f"{pack}.zip"
    if archive.is_file():
        raise FileNotFoundError(f"{path}: not found; unpack {archive} there first (cd {root / 'models'} && unzip "
                                f"{archive.name}, then move the files of a nested {pack}/{pack}/ folder up)")
    raise FileNotFoundError(
        f"{path}: insightface's {pack} face detector not found under detector.models_root={root}; this project "
        f"never downloads models: put {pack}.zip of insightface's model zoo into {root / 'models'} and unpack it "
        f"so that {folder}/{name} exists")


class InsightFaceDetector:
    """SCRFD of a model pack -> :class:`~faceregen.face_detection.Detection` list (the pack's five points).

    Args:
        models_root: insightface's model root (holds ``models/<pack>/``).
        pack: ``antelopev2`` or ``buffalo_l``.
        det_size: the photo is fitted into a ``det_size`` square for the detector (a multiple of 32).
        min_score: detections scoring less are ignored when the face is chosen.
    """

    def __init__(self, models_root: str | Path, pack: str, det_size: int, min_score: float) -> None:
        if det_size <= 0 or det_size % 32:
            raise ValueError(f"detector.det_size={det_size}: expected a positive multiple of 32")
        path = detector_file(models_root, pack)
        try:
            from insightface.model_zoo.scrfd import SCRFD
        except ImportError as err:
            raise ImportError("detector=insightface needs insightface: pip install insightface") from err
        try:
            self._scrfd = SCRFD(model_file=str(path))
        except Exception as err:  # onnxruntime raises its own types for a file that is no ONNX model
            raise ValueError(f"{path}: not a usable SCRFD ONNX model ({type(err).__name__}: {err})") from None
        if not self._scrfd.use_kps:
            raise ValueError(f"{path}: this SCRFD model gives no five points (9 outputs expected, "
                             f"{len(self._scrfd.output_names)} found)")
        self.det_size = int(det_size)
        self.min_score = float(min_score)
        self.name = f"insightface's {pack} SCRFD detector"
        self.reach = f"the photo is fitted into {det_size} px for it"

    def detect(self, image: np.ndarray) -> list[Detection]:
        """All faces in ``image`` (H, W, 3) uint8 RGB scoring at least :data:`WEAKEST_REPORTED_SCORE`, best first."""
        image = np.ascontiguousarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"InsightFaceDetector.detect: expected a uint8 (H, W, 3) RGB image, got "
                             f"{image.dtype} {image.shape}")
        bgr = np.ascontiguousarray(image[..., ::-1])  # insightface takes OpenCV's BGR
        boxes, points = self._scrfd.detect(bgr, input_size=(self.det_size, self.det_size),
                                           det_thresh=WEAKEST_REPORTED_SCORE)
        detections = [Detection(box=tuple(float(v) + 0.5 for v in box[:4]),
                                points_px=np.asarray(kps, dtype=np.float64) + 0.5, score=float(box[4]))
                      for box, kps in zip(boxes, points)]
        return sorted(detections, key=lambda d: -d.score)
