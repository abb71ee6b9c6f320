"""From one photo to the restored 3D face, and from the restored face to the printable filling.

Per image (paper section 2, applied to a patient's photo)::

    image --(five points: the render's landmarks.npz, else dlib's largest central face)--> points (5, 2) px
    points --(similarity onto the encoder's template, faceregen.alignment)--> aligned chip (S, S, 3) uint8
    chip --identity_encoder--> mapping_network --> z (K,) --face_model G(z) = B z + A--> vertices (V, 3) mm

With the patient's wounded face as a scan, the face is restored on it with the image's code as the prior and
the filling cut against it (:mod:`faceregen.restoration`, the path ``restore.py`` uses).

The model is anything with ``encode(uint8 chips (B, 3, S, S)) -> z (B, K)``, ``face_model_decoder(z) ->
(B, V, 3)`` and ``identity_encoder.alignment`` (:class:`~lightning_modules.mica_module.MICAModule`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from faceregen.alignment import align_face, get_template
from faceregen.data_layout import LANDMARKS_NAME, render_five_points, render_light
from faceregen.face_detection import Detection, FaceDetector, largest_central
from faceregen.face_model.linear import LinearFaceModel
from faceregen.image_io import read_rgb
from faceregen.io import atomic_path, atomic_write_text
from faceregen.mesh_io import write_mesh

#: light direction of the rendered prediction in ``summary.png`` (front-left, as the dataset's first light)
SUMMARY_LIGHT_DIR = (-0.6, 0.25, 0.76)
#: face-model regions the rendered prediction frames
SUMMARY_REGIONS = ("face", "forehead", "nose", "lips", "eye_region")


@dataclass(frozen=True)
class FaceLocation:
    """The face used for alignment: ``points_px`` (5, 2) in FIVE_POINT_NAMES order and where they came from.

    ``source`` is ``"landmarks.npz"`` (the render's stored points) or ``"dlib"``; for dlib ``box``
    (left, top, right, bottom) px and ``score`` are the chosen detection's, ``n_faces`` how many faces were
    found and ``n_weak`` how many further detections scored below the threshold.
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
        return (f"largest central of {self.n_faces} face(s){weak}: box {tuple(round(b) for b in self.box)} px, "
                f"score {self.score:.2f}")

    def to_dict(self) -> dict:
        return {"source": self.source, "n_faces": self.n_faces, "n_weak": self.n_weak,
                "box": None if self.box is None else list(self.box), "score": self.score,
                "points_px": np.asarray(self.points_px).round(3).tolist()}


@dataclass
class Reconstruction:
    """One image's result: the image, its face, the aligned chip, ``code`` z (K,), ``vertices_mm`` (V, 3),
    and ``seconds`` per step (read, detection, alignment, network)."""

    image_path: Path
    image: np.ndarray
    face: FaceLocation
    aligned: np.ndarray
    code: np.ndarray
    vertices_mm: np.ndarray
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


def chosen_face(detections: list[Detection], image_shape: tuple[int, ...], min_score: float) -> FaceLocation:
    """The largest central (:func:`faceregen.face_detection.largest_central`) of the detections scoring at
    least ``min_score`` (weak HOG detections are mostly false: on the astronaut photo a patch of the suit
    scores 0.01-0.12, the face 1.2-1.5); ``n_faces`` counts them. ValueError when none is left."""
    faces = [d for d in detections if d.score >= min_score]
    if not faces:
        scores = ", ".join(f"{d.score:.2f}" for d in detections)
        raise ValueError(f"no face detected with score >= {min_score}" + (f" (weaker detections: {scores})" if scores else ""))
    best = largest_central(faces, image_shape)
    return FaceLocation(points_px=best.points_px, source="dlib", n_faces=len(faces),
                        n_weak=len(detections) - len(faces), box=best.box, score=best.score)


@torch.no_grad()
def predict_shape(model: torch.nn.Module, aligned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``z = M(E(chip))`` (K,) and ``G(z)`` (V, 3) mm for one aligned uint8 chip (S, S, 3), on the model's device."""
    device = next(model.parameters()).device
    chip = torch.from_numpy(np.ascontiguousarray(aligned.transpose(2, 0, 1)))[None].to(device)
    code = model.encode(chip)
    vertices = model.face_model_decoder(code)
    return code[0].cpu().numpy(), vertices[0].cpu().numpy()


class Reconstructor:
    """Photo -> :class:`Reconstruction` with a trained model (eval mode, any device).

    Args:
        model: see the module docstring.
        max_pixels: larger images are refused (:func:`faceregen.image_io.read_rgb`).
        use_stored_landmarks: take a render's ``landmarks.npz`` points instead of detecting.
        detector, upsample: dlib's face detector (:class:`~faceregen.face_detection.FaceDetector`), built on
            first use (loading its 68-point predictor takes about a second).
        min_detection_score: detections scoring less are ignored (:func:`chosen_face`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        max_pixels: int,
        use_stored_landmarks: bool = True,
        detector: str = "hog",
        upsample: int = 1,
        min_detection_score: float = 0.3,
    ) -> None:
        self.model = model.eval()
        self.template = get_template(model.identity_encoder.alignment)
        self.max_pixels = int(max_pixels)
        self.use_stored_landmarks = use_stored_landmarks
        self.detector_name, self.upsample = detector, int(upsample)
        self.min_detection_score = float(min_detection_score)
        self._detector: FaceDetector | None = None

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.detector_name, self.upsample)
        return self._detector

    def locate(self, image: np.ndarray, image_path: Path) -> FaceLocation:
        """The stored points of a render, else the largest central dlib face (ValueError if none)."""
        points = stored_five_points(image_path) if self.use_stored_landmarks else None
        if points is not None:
            return FaceLocation(points_px=points, source=LANDMARKS_NAME, n_faces=1)
        try:
            return chosen_face(self.detector.detect(image), image.shape, self.min_detection_score)
        except ValueError as err:
            raise ValueError(
                f"{image_path}: {err} by dlib's {self.detector_name} detector (upsample={self.upsample}; "
                f"it finds frontal faces of at least ~{80 // 2 ** self.upsample} px)"
            ) from None

    def __call__(self, image_path: str | os.PathLike) -> Reconstruction:
        image_path = Path(image_path)
        clock = time.perf_counter()
        seconds = {}

        def lap(step: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[step], clock = now - clock, now

        image = read_rgb(image_path, self.max_pixels)
        lap("read")
        face = self.locate(image, image_path)
        lap("detection")
        aligned = align_face(image, face.points_px, self.template)
        lap("alignment")
        code, vertices = predict_shape(self.model, aligned)
        lap("network")
        return Reconstruction(image_path, image, face, aligned, code, vertices, seconds)


# --- writing one result -------------------------------------------------------------------------------
def write_reconstruction(folder: str | os.PathLike, result: Reconstruction, faces: np.ndarray) -> dict[str, Path]:
    """``mesh.obj``, ``mesh.ply`` (mm), ``code.npy`` (z), ``aligned.png`` and ``face.json`` (the face used:
    source, box, score, number of faces, points) under ``folder``, each atomically."""
    folder = Path(folder)
    paths = {"obj": write_mesh(folder / "mesh.obj", result.vertices_mm, faces),
             "ply": write_mesh(folder / "mesh.ply", result.vertices_mm, faces)}
    with atomic_path(folder / "code.npy") as tmp:
        np.save(tmp, result.code)
    with atomic_path(folder / "aligned.png") as tmp:
        Image.fromarray(result.aligned).save(tmp, format="PNG")
    height, width = result.image.shape[:2]
    info = {"image": str(result.image_path), "image_size_px": [width, height], **result.face.to_dict(),
            "seconds": {k: round(v, 4) for k, v in result.seconds.items()}}
    paths.update(code=folder / "code.npy", aligned=folder / "aligned.png",
                 face=atomic_write_text(folder / "face.json", json.dumps(info, indent=1) + "\n"))
    return paths


def render_prediction(vertices_mm: np.ndarray, face_model: LinearFaceModel, resolution: int = 256) -> np.ndarray:
    """A grey render (H, W, 3) uint8 of the predicted face, framed on its front regions, lit front-left.

    Uses VTK (:func:`faceregen.rendering.render_grey`): torch must already be imported (it is, here).
    """
    from faceregen.rendering import Camera, render_grey

    front = np.unique(np.concatenate([face_model.regions.get(r, np.zeros(0, np.int64)) for r in SUMMARY_REGIONS]))
    framed = vertices_mm[front] if len(front) else vertices_mm
    camera = Camera.framing(framed, resolution=resolution, margin=1.3)
    return render_grey(vertices_mm, face_model.faces, camera, np.array([SUMMARY_LIGHT_DIR]))[0]


def write_summary(path: str | os.PathLike, result: Reconstruction, face_model: LinearFaceModel) -> Path:
    """``summary.png``: the input with the face's box and five points, the aligned chip, the rendered prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    face = result.face
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.8), dpi=100)
    axes[0].imshow(result.image)
    if face.box is not None:
        left, top, right, bottom = face.box
        axes[0].add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, color="lime", lw=1.5))
    # the project's pixel centres are at +0.5, matplotlib's at integers
    axes[0].scatter(face.points_px[:, 0] - 0.5, face.points_px[:, 1] - 0.5, s=12, c="red")
    chosen = "stored landmarks" if face.box is None else f"1 of {face.n_faces} face(s), score {face.score:.2f}"
    axes[0].set_title(f"input: {chosen}", fontsize=9)
    axes[1].imshow(result.aligned)
    axes[1].set_title(f"aligned {result.aligned.shape[1]}x{result.aligned.shape[0]}", fontsize=9)
    axes[2].imshow(render_prediction(result.vertices_mm, face_model))
    axes[2].set_title(f"restored face ({len(result.vertices_mm)} vertices)", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    figure.suptitle(result.image_path.name, fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return Path(path)
