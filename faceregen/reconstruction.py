"""From one photo to the restored 3D face, and from the restored face to the printable filling.

Per image (paper section 2, applied to a patient's photo)::

    image --(faceregen.photo: the render's landmarks.npz, else the detector's largest central face,
             similarity onto the encoder's template)--> aligned chip (S, S, 3) uint8, its quality
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
import trimesh
from PIL import Image

from faceregen.face_model.linear import LinearFaceModel
from faceregen.face_quality import FaceQuality
from faceregen.image_io import DEFAULT_MAX_PIXELS
from faceregen.io import atomic_path, atomic_write_bytes, atomic_write_text
from faceregen.mesh_io import write_mesh
from faceregen.photo import FaceLocation, PhotoAligner
from faceregen.postprocess.filling import MM_TO_M

#: light direction of the rendered prediction in ``summary.png`` (front-left, as the dataset's first light)
SUMMARY_LIGHT_DIR = (-0.6, 0.25, 0.76)
#: face-model regions the rendered prediction frames
SUMMARY_REGIONS = ("face", "forehead", "nose", "lips", "eye_region")


@dataclass
class Reconstruction:
    """One image's result: the image, its face, the aligned chip and its quality, ``code`` z (K,), ``vertices_mm`` (V, 3),
    and ``seconds`` per step (read, detection, alignment, network)."""

    image_path: Path
    image: np.ndarray
    face: FaceLocation
    aligned: np.ndarray
    quality: FaceQuality
    code: np.ndarray
    vertices_mm: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


@torch.no_grad()
def predict_shape(model: torch.nn.Module, aligned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``z = M(E(chip))`` (K,) and ``G(z)`` (V, 3) mm for one aligned uint8 chip (S, S, 3), on the model's device."""
    device = next(model.parameters()).device
    chip = torch.from_numpy(np.ascontiguousarray(aligned.transpose(2, 0, 1)))[None].to(device)
    code = model.encode(chip)
    vertices = model.face_model_decoder(code)
    return code[0].cpu().numpy(), vertices[0].cpu().numpy()


class Reconstructor:
    """Photo -> :class:`Reconstruction` with a trained model (eval mode, any device): the photo's chip by
    :class:`~faceregen.photo.PhotoAligner` (training's path), then the network.

    Args:
        model: see the module docstring.
        detector, max_pixels, use_stored_landmarks, quality: :class:`~faceregen.photo.PhotoAligner`'s.
    """

    def __init__(self, model: torch.nn.Module, detector: dict | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 use_stored_landmarks: bool = True, quality: str = "warn") -> None:
        self.model = model.eval()
        self.photos = PhotoAligner(model.identity_encoder.alignment, detector, max_pixels, use_stored_landmarks,
                                   quality)

    def __call__(self, image_path: str | os.PathLike) -> Reconstruction:
        photo = self.photos(image_path)
        clock = time.perf_counter()
        code, vertices = predict_shape(self.model, photo.chip)
        seconds = {**photo.seconds, "network": time.perf_counter() - clock}
        return Reconstruction(Path(image_path), photo.image, photo.face, photo.chip, photo.quality, code, vertices,
                              seconds)


# --- writing one result -------------------------------------------------------------------------------
def write_reconstruction(folder: str | os.PathLike, result: Reconstruction, faces: np.ndarray) -> dict[str, Path]:
    """``mesh.obj``, ``mesh.ply`` (mm), ``mesh.glb`` (metres, glTF's unit: for 3D viewers), ``code.npy`` (z),
    ``aligned.png`` and ``face.json`` (the face used: source, box, score, number of faces, points, quality)
    under ``folder``, each atomically."""
    folder = Path(folder)
    in_metres = trimesh.Trimesh(result.vertices_mm * MM_TO_M, faces, process=False)
    paths = {"obj": write_mesh(folder / "mesh.obj", result.vertices_mm, faces),
             "ply": write_mesh(folder / "mesh.ply", result.vertices_mm, faces),
             "glb": atomic_write_bytes(folder / "mesh.glb", in_metres.export(file_type="glb"))}
    with atomic_path(folder / "code.npy") as tmp:
        np.save(tmp, result.code)
    with atomic_path(folder / "aligned.png") as tmp:
        Image.fromarray(result.aligned).save(tmp, format="PNG")
    height, width = result.image.shape[:2]
    info = {"image": str(result.image_path), "image_size_px": [width, height], **result.face.to_dict(),
            "quality": result.quality.to_dict(), "seconds": {k: round(v, 4) for k, v in result.seconds.items()}}
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
    if result.quality.problems:  # in the space the tight layout leaves at the bottom
        figure.text(0.01, 0.01, "\n".join(f"warning: {p}" for p in result.quality.problems), fontsize=8, color="red")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return Path(path)
