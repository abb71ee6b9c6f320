"""Five-point similarity alignment of face images (the crop the identity encoder sees).

Pixel convention (the project's, as in ``faceregen.rendering.Camera.project``): x right, y down, origin
at the top-left CORNER of the image, so the centre of pixel ``(row r, column c)`` is ``(c + 0.5, r + 0.5)``.
OpenCV/insightface and dlib put pixel centres at integer coordinates; their template points are
shifted by +0.5 here so that one convention holds everywhere.

``arcface_112`` is insightface's ArcFace crop, MICA's input: its template is ``face_align.arcface_dst`` and the
crop is ``face_align.norm_crop``'s (what MICA itself calls); insightface is imported on first use (~2 s).

Points are in :data:`faceregen.face_model.linear.FIVE_POINT_NAMES` order: right eye, left eye, nose tip,
right mouth corner, left mouth corner (the subject's right eye is on the image's left).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from faceregen.geometry import umeyama


@dataclass(frozen=True)
class AlignmentTemplate:
    """Where the five points go in a square ``size x size`` crop: ``points_px`` (5, 2) float64; ``arcface``:
    insightface's ArcFace crop, warped by ``face_align.norm_crop``."""

    size: int
    points_px: np.ndarray
    arcface: bool = False

    def __post_init__(self) -> None:
        if self.size <= 0 or np.shape(self.points_px) != (5, 2):
            raise ValueError(f"alignment template: size {self.size} must be > 0 and points (5, 2), got "
                             f"{np.shape(self.points_px)}")


#: dlib's mean face shape, points 17-67 of the iBUG 68-point layout, in [0, 1] units
#: (``mean_face_shape_x/y`` of ``get_face_chip_details`` in davisking/dlib,
#: dlib/image_transforms/interpolation.h).
_DLIB_MEAN_FACE_SHAPE_X = np.array([
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
])
_DLIB_MEAN_FACE_SHAPE_Y = np.array([
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
])


def five_points_from_68(points_68: np.ndarray) -> np.ndarray:
    """The five alignment points (5, 2) from iBUG 68-point landmarks (68, 2).

    Eye centres = mean of points 36-41 (image-left eye = subject's right) and 42-47, nose tip = 30,
    mouth corners = 48 (subject's right) and 54.
    """
    points_68 = np.asarray(points_68, dtype=np.float64)
    if points_68.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks of shape (68, 2), got {points_68.shape}")
    return np.stack([
        points_68[36:42].mean(axis=0),
        points_68[42:48].mean(axis=0),
        points_68[30],
        points_68[48],
        points_68[54],
    ])


def dlib_chip_template(size: int = 150, padding: float = 0.25) -> AlignmentTemplate:
    """The five-point equivalent of dlib's ``get_face_chip(img, shape, size, padding)``.

    dlib maps its mean face shape ``p`` (points 17-67, in [0, 1]) to chip pixels by
    ``(p + padding) / (1 + 2 padding) * size`` (davisking/dlib, dlib/image_transforms/interpolation.h,
    ``get_face_chip_details``) and fits a similarity to 33 of those points; here the five points are taken
    from the same mean shape (:func:`five_points_from_68`), then shifted by +0.5 to this module's
    pixel convention. ``dlib_150`` (size 150, padding 0.25) is the input of dlib's face-recognition ResNet.
    """
    mean_68 = np.full((68, 2), np.nan)
    mean_68[17:, 0] = _DLIB_MEAN_FACE_SHAPE_X
    mean_68[17:, 1] = _DLIB_MEAN_FACE_SHAPE_Y
    chip = (five_points_from_68(mean_68) + padding) / (1.0 + 2.0 * padding) * size
    return AlignmentTemplate(size=size, points_px=chip + 0.5)


def _face_align():
    """insightface's ``utils.face_align`` (imported on first use: insightface loads onnxruntime and OpenCV)."""
    from insightface.utils import face_align

    return face_align


def arcface_template() -> AlignmentTemplate:
    """insightface's ArcFace crop (``face_align.arcface_dst``, 112x112; pixel centres +0.5)."""
    return AlignmentTemplate(size=112, points_px=_face_align().arcface_dst.astype(np.float64) + 0.5, arcface=True)


#: name -> how to make the template; ``arcface_112`` is insightface's ArcFace crop (MICA's input), ``dlib_150``
#: dlib's.
ALIGNMENT_TEMPLATES = {
    "arcface_112": arcface_template,
    "dlib_150": functools.partial(dlib_chip_template, size=150, padding=0.25),
}


@functools.cache
def get_template(name: str) -> AlignmentTemplate:
    """The template called ``name`` (a key of :data:`ALIGNMENT_TEMPLATES`)."""
    if name not in ALIGNMENT_TEMPLATES:
        raise ValueError(f"unknown alignment {name!r}; expected one of {sorted(ALIGNMENT_TEMPLATES)}")
    return ALIGNMENT_TEMPLATES[name]()


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``dst ~ s R src + t`` of image points (:func:`faceregen.geometry.umeyama`).

    Returns the (2, 3) matrix ``[s R | t]``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"similarity_transform: need matching (N >= 2, 2) points, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("similarity_transform: points must be finite")
    if ((src - src.mean(axis=0)) ** 2).sum() / len(src) <= 1e-12:
        raise ValueError("similarity_transform: source points all coincide")
    scale, rotation, translation = umeyama(src, dst)
    return np.concatenate([scale * rotation, translation[:, None]], axis=1)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected a uint8 image (H, W), (H, W, 3) or (H, W, 4); got {image.dtype} {image.shape}")
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    return image[..., :3]


def align_face(image: np.ndarray, points_px: np.ndarray, template: AlignmentTemplate) -> np.ndarray:
    """Warp ``image`` (H, W, 3) uint8 so that ``points_px`` (5, 2) land on the template: (S, S, 3) uint8.

    The similarity image -> crop is :func:`similarity_transform`. When the crop shrinks the face by more than
    2x the image is first box-averaged by the integer factor ``f = floor(1 / scale)`` (a point ``x`` becomes
    ``x / f``) so that bilinear sampling does not alias. The ArcFace crop is then insightface's
    ``face_align.norm_crop`` (OpenCV's bilinear ``warpAffine``); any other, PIL's bilinear sampling (pixel
    centres at +0.5 on both sides, as here). Outside the image is black.
    """
    rgb = _as_rgb(image)
    points = np.asarray(points_px, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"align_face: expected five points (5, 2), got {points.shape}")
    to_crop = similarity_transform(points, template.points_px)
    pil = Image.fromarray(rgb)
    scale = math.sqrt(abs(np.linalg.det(to_crop[:, :2])))
    factor = math.floor(1.0 / scale)
    if factor >= 2:
        pil, points = pil.reduce(factor), points / factor
        to_crop = similarity_transform(points, template.points_px)
    if template.arcface:
        with warnings.catch_warnings():  # scikit-image 0.26 deprecates the estimate() norm_crop calls
            warnings.simplefilter("ignore", FutureWarning)
            return _face_align().norm_crop(np.asarray(pil), points - 0.5, template.size)
    linear = np.linalg.inv(to_crop[:, :2])
    offset = -linear @ to_crop[:, 2]
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    crop = pil.transform(
        (template.size, template.size), Image.Transform.AFFINE, coefficients,
        resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0),
    )
    return np.asarray(crop)
