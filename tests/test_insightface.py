"""detector=insightface: SCRFD of the user's antelopev2 / buffalo_l read from disk (never downloaded), tested
with a small ONNX model of SCRFD's interface (tests/scrfd_fixture.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from scrfd_fixture import BOX_DISTANCE, POINT_OFFSETS, write_scrfd_model

from faceregen.insightface_models import DETECTOR_FILES, InsightFaceDetector


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    for pack, name in DETECTOR_FILES.items():
        write_scrfd_model(root / "models" / pack / name)
    return root


def red_square(height: int, width: int, row: int, col: int, size: int) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[row:row + size, col:col + size, 0] = 255
    return image


@pytest.mark.parametrize("pack", sorted(DETECTOR_FILES))
def test_scrfd_finds_the_face_in_photo_pixels_and_the_project_convention(models_root, pack):
    """A 1280 x 960 photo is fitted into 640 px (half size): the model's stride-32 cell (row 2, col 4) of the
    fitted photo is the photo's (128, 256) px; box and points come back in photo pixels, centres at +0.5.
    Blue instead of red is no face: the photo goes to insightface as BGR."""
    detector = InsightFaceDetector(models_root, pack, det_size=640, min_score=0.5)
    detections = detector.detect(red_square(960, 1280, 128, 256, 64))
    assert len(detections) == 1 and detections[0].score > 0.99
    anchor = np.array([4 * 32, 2 * 32]) * 2.0  # the fitted photo's anchor, in photo pixels
    reach = BOX_DISTANCE * 32 * 2.0
    np.testing.assert_allclose(detections[0].box, [*(anchor - reach + 0.5), *(anchor + reach + 0.5)], atol=1e-3)
    np.testing.assert_allclose(detections[0].points_px, anchor + POINT_OFFSETS * 32 * 2.0 + 0.5, atol=1e-3)
    assert detector.detect(red_square(960, 1280, 128, 256, 64)[..., ::-1].copy()) == []


def test_the_reconstruct_path_chooses_the_insightface_face(models_root, tmp_path):
    from faceregen.photo import PhotoAligner, detector_config

    path = tmp_path / "photo.png"
    Image.fromarray(red_square(480, 640, 192, 288, 32)).save(path)
    config = {**detector_config("insightface"), "models_root": str(models_root)}
    photo = PhotoAligner("dlib_150", config)(path)
    assert photo.face.source == "insightface's antelopev2 SCRFD detector" and photo.face.n_faces == 1
    assert photo.chip.shape == (150, 150, 3)
    with pytest.raises(ValueError, match=r"blank.png: no face detected with score >= 0.5 by insightface's"):
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "blank.png")
        PhotoAligner("dlib_150", config)(tmp_path / "blank.png")


def test_what_is_missing_is_named_with_the_fix(models_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"models_root=.*nowhere: folder not found"):
        InsightFaceDetector(tmp_path / "nowhere", "antelopev2", 640, 0.5)
    with pytest.raises(FileNotFoundError, match=r"never downloads models: put antelopev2.zip"):
        InsightFaceDetector(tmp_path, "antelopev2", 640, 0.5)
    nested = tmp_path / "nested"
    write_scrfd_model(nested / "models" / "antelopev2" / "antelopev2" / "scrfd_10g_bnkps.onnx")
    with pytest.raises(FileNotFoundError, match=r"nested antelopev2/antelopev2/ folder \(insightface issue #1525\); "
                                                r"move its files up"):
        InsightFaceDetector(nested, "antelopev2", 640, 0.5)
    zipped = tmp_path / "zipped" / "models"
    zipped.mkdir(parents=True)
    (zipped / "buffalo_l.zip").write_bytes(b"PK")
    with pytest.raises(FileNotFoundError, match=r"unpack .*buffalo_l.zip there first"):
        InsightFaceDetector(zipped.parent, "buffalo_l", 640, 0.5)
    broken = tmp_path / "broken" / "models" / "buffalo_l" / "det_10g.onnx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"det_10g.onnx: not a usable SCRFD ONNX model"):
        InsightFaceDetector(broken.parents[2], "buffalo_l", 640, 0.5)
    with pytest.raises(ValueError, match=r"detector.pack='buffalo_s': expected one of"):
        InsightFaceDetector(models_root, "buffalo_s", 640, 0.5)
    with pytest.raises(ValueError, match=r"det_size=600: expected a positive multiple of 32"):
        InsightFaceDetector(models_root, "antelopev2", 600, 0.5)
