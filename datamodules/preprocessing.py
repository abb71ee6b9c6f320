"""The work of building a preprocessing cache, spread over worker processes: each sample's meshes, wound and
stored five points, and each image decoded and aligned onto the encoder's template.

Workers return ``("ok", value)`` or ``("error", exception)`` so one bad file does not stop the pool; the
functions are module-level (picklable). Images without stored points go through dlib's face detector, one
per worker process.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
from PIL import Image

from faceregen.alignment import align_face, get_template
from faceregen.data_layout import SampleFiles, read_wound, render_five_points
from faceregen.image_io import rgb_array
from faceregen.mesh_io import read_mesh


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_pool(processes: int):
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(processes)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) from an image file; FileNotFoundError / ValueError naming the file."""
    try:
        with Image.open(path) as image:
            return rgb_array(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image not found") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from err


def load_sample(job: tuple[SampleFiles, int]) -> tuple[str, object]:
    """Worker: (vertices_mm (V, 3), wound_mask (V,), has_wound_mask, five points (L, 5, 2) or None)."""
    sample, n_vertices = job
    try:
        if not sample.images:
            raise ValueError(f"sample {sample.sample} (group {sample.group}): no PNG images")
        vertices, _ = read_mesh(sample.label)
        if len(vertices) != n_vertices:
            raise ValueError(
                f"{sample.label}: {len(vertices)} vertices, expected {n_vertices} (the face model's); "
                "is the data made with another face model?"
            )
        has_wound = sample.wound is not None
        wound_mask = read_wound(sample.wound, n_vertices).mask if has_wound else np.zeros(n_vertices, dtype=bool)
        points = render_five_points(sample.landmarks, sample.images) if sample.landmarks else None
        return "ok", (vertices, wound_mask, has_wound, points)
    except (OSError, ValueError) as err:
        return "error", err


_DETECTOR = None


def _detected_points(image: np.ndarray, path: Path) -> np.ndarray:
    """Five points of the largest central face dlib finds (one detector per worker process)."""
    from faceregen.face_detection import FaceDetector, largest_central

    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = FaceDetector()
    try:
        return largest_central(_DETECTOR.detect(image), image.shape).points_px
    except ValueError:
        raise ValueError(f"{path}: no face detected (provide a landmarks.npz in its sample folder)") from None


def align_image(job: tuple[Path, np.ndarray | None, str]) -> tuple[str, object]:
    """Worker: decode one image and align it: uint8 (3, S, S)."""
    path, points, alignment = job
    try:
        image = read_image(path)
        if points is None:
            points = _detected_points(image, path)
        return "ok", align_face(image, points, get_template(alignment)).transpose(2, 0, 1)
    except (OSError, ValueError) as err:
        return "error", err
