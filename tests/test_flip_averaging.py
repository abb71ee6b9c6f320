"""Flip averaging: the face model's code mirror on modes whose mirror is known, a model that is not
symmetric, the averaged prediction on a hand-computed case, and MICAModule's equivariance under a flip."""

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch

from faceregen.encoders.flip_averaging import FlipAveraging
from faceregen.encoders.identity_encoder import build_identity_encoder
from faceregen.encoders.mapping_network import MappingNetwork
from faceregen.face_model.symmetry import CodeMirror, code_mirror, mirrored_vertices
from lightning_modules.mica_module import MICAModule


def mirror_pair_model(toy_model):
    """The toy head with three modes whose mirror images are known: a width scaling (symmetric: its own
    mirror), the nose moved sideways (antisymmetric: mirrored, it moves the other way) and a bump on the
    right cheek (mirrored: the fourth mode, the same bump on the left cheek)."""
    mean = toy_model.mean_mm.astype(np.float64)
    nose = np.exp(-((mean[:, 0] / 12.0) ** 2 + ((mean[:, 1] + 5.0) / 22.0) ** 2)) * (mean[:, 2] > 0)

    def cheek(x_mm):
        return np.exp(-(((mean[:, 0] - x_mm) / 15.0) ** 2 + ((mean[:, 1] + 15.0) / 15.0) ** 2)) * (mean[:, 2] > 0)

    columns = [
        mean * np.array([0.05, 0.0, 0.0]),
        np.stack([4.0 * nose, 0 * nose, 0 * nose], axis=1),
        np.stack([0 * nose, 0 * nose, 3.0 * cheek(-40.0)], axis=1),
        np.stack([0 * nose, 0 * nose, 3.0 * cheek(40.0)], axis=1),
    ]
    return dataclasses.replace(toy_model, name="toy-mirror-pairs", basis_mm=np.stack(columns, -1).astype(np.float32))


def test_the_code_mirror_of_known_modes(toy_model):
    model = mirror_pair_model(toy_model)
    mirror = code_mirror(model)
    # symmetric mode -> itself, antisymmetric -> its negative, right cheek <-> left cheek; the mean is its own mirror
    expected = np.array([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], float)
    np.testing.assert_allclose(mirror.matrix, expected, atol=1e-3)
    np.testing.assert_allclose(mirror.offset, 0.0, atol=1e-3)
    # the vertex map swaps the eyes
    eyes = [model.landmarks.indices[model.landmarks.names.index(n), 0] for n in ("right_eye", "left_eye")]
    assert mirror.vertex_permutation[eyes[0]] == eyes[1] and mirror.vertex_permutation[eyes[1]] == eyes[0]
    # a head's mirror image is the head of the mirrored code
    z = np.array([[0.7, -1.2, 2.0, 0.3]])
    np.testing.assert_allclose(model.vertices_mm(mirror(z))[0],
                               mirrored_vertices(model.vertices_mm(z)[0], mirror.vertex_permutation), atol=1e-3)


def test_a_model_not_symmetric_about_x_zero_is_refused(toy_model):
    shifted = dataclasses.replace(toy_model, name="toy-shifted", mean_mm=toy_model.mean_mm + np.float32([10.0, 0, 0]))
    with pytest.raises(ValueError, match="toy-shifted.*not symmetric about x = 0"):
        code_mirror(shifted)


def test_flip_averaging_on_a_hand_computed_case():
    """A predictor reading the mean of the image's left and right halves; the mirror swaps the two codes and
    adds (1, 0). Flipped, the image's halves swap, so the mirrored flipped code is the direct one plus
    (1, 0): the average adds (0.5, 0)."""
    def predict(images):
        x = images.float()
        return torch.stack([x[..., :2].mean(dim=(1, 2, 3)), x[..., 2:].mean(dim=(1, 2, 3))], dim=1)

    averaging = FlipAveraging(CodeMirror(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1.0, 0.0]), np.arange(1)))
    images = torch.zeros(1, 3, 2, 4, dtype=torch.uint8)
    images[..., :2] = 10
    images[..., 2:] = 30
    np.testing.assert_allclose(averaging(predict, images).numpy(), [[10.5, 30.0]])


def test_the_module_is_equivariant_under_a_flip(toy_model):
    """With flip averaging, the code predicted from a flipped photo is the mirror of the photo's code (the
    mirror is an involution here), whatever the read-out; without it, it is not."""
    def module(flip_averaging):
        torch.manual_seed(0)
        return MICAModule(
            identity_encoder=build_identity_encoder("dlib_resnet", pretrained=None, freeze="all", feature_stages=[0], feature_grid=2),
            mapping_network=partial(MappingNetwork, hidden_dim=None, hidden_layers=0),
            face_model=mirror_pair_model(toy_model), region_weights={"face": 1.0},
            optimizer=partial(torch.optim.Adam, lr=1e-3), flip_averaging=flip_averaging,
        ).eval()

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 3, 150, 150), dtype=np.uint8))
    averaged, plain = module(True), module(False)
    with torch.no_grad():
        for m in (averaged, plain):
            m.mapping_network.output.weight.normal_(0.0, 1.0)
        z, z_flipped = averaged.encode(images), averaged.encode(images.flip(-1))
        np.testing.assert_allclose(z_flipped.numpy(), averaged.code_mirror(z.numpy()), atol=1e-3 * z.abs().max().item())
        p, p_flipped = plain.encode(images), plain.encode(images.flip(-1))
        assert np.abs(p_flipped.numpy() - averaged.code_mirror(p.numpy())).max() > 0.1 * p.abs().max().item()


def test_a_training_batch_flips_images_with_their_heads(toy_model):
    """Each item comes back either as it was, or with its image flipped left to right and its head mirrored
    (x negated, vertices re-indexed); both happen in a batch of 32."""
    model = mirror_pair_model(toy_model)
    mirror = code_mirror(model)
    averaging = FlipAveraging(mirror)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (32, 3, 6, 6), dtype=np.uint8))
    heads = torch.from_numpy(model.vertices_mm(rng.normal(size=(32, 4))).astype(np.float32))
    torch.manual_seed(0)
    out_images, out_heads = averaging.random_flip(images, heads)
    flipped = [not torch.equal(out_images[i], images[i]) for i in range(32)]
    assert 0 < sum(flipped) < 32
    for i, was_flipped in enumerate(flipped):
        expected_image = images[i].flip(-1) if was_flipped else images[i]
        expected_head = mirrored_vertices(heads[i].numpy(), mirror.vertex_permutation) if was_flipped else heads[i].numpy()
        assert torch.equal(out_images[i], expected_image)
        np.testing.assert_allclose(out_heads[i].numpy(), expected_head, atol=1e-5)
