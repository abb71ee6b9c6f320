"""The embedded Anny face model: frame, units, determinism, cache, PCA quality, regions, landmarks.

One small model (300 heads, 40 components) is built once per module in a temporary cache; the
determinism and cache tests reuse it.
"""

import numpy as np
import pytest
import trimesh

from faceregen.face_model import FIVE_POINT_NAMES, REGION_NAMES, LinearFaceModel
from faceregen.face_model.anny_source import (
    ANNY_PCA_VERSION,
    anny_cache_path,
    anny_face_model,
    build_anny_face_model,
    principal_components,
)

SMALL = {"n_components": 40, "n_samples": 300, "seed": 0}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("face_model")


@pytest.fixture(scope="module")
def model(cache_dir) -> LinearFaceModel:
    return anny_face_model(**SMALL, cache_dir=cache_dir)


def test_shapes_units_and_frame(model):
    assert model.name == f"anny-pca-v{ANNY_PCA_VERSION}"
    assert model.mean_mm.shape == (4538, 3) and model.basis_mm.shape == (4538, 3, 40)
    assert model.faces.shape == (9014, 3)
    extent = model.mean_mm.max(0) - model.mean_mm.min(0)
    assert 180.0 < extent[1] < 280.0  # head height with the neck, mm (metres would be ~0.25)
    assert 150.0 < extent[0] < 220.0  # ear to ear
    assert np.abs(model.mean_mm.mean(0)).max() < 60.0  # origin near the head centre
    # every face model is centred the same way: ear midpoint at the origin, for any code
    z = np.random.default_rng(1).standard_normal((3, 40))
    for vertices in model.vertices_mm(z):
        ears = [vertices[model.regions[side]].mean(0) for side in ("left_ear", "right_ear")]
        np.testing.assert_allclose(0.5 * (ears[0] + ears[1]), 0.0, atol=1e-3)


def test_orientation_outward(model):
    mesh = trimesh.Trimesh(model.mean_mm, model.faces, process=False)
    nose_tip = model.landmarks.indices[model.landmarks.names.index("nose_tip"), 0]
    assert mesh.vertex_normals[nose_tip, 2] > 0.7  # the face looks toward +z, normals point out
    eyeball = trimesh.Trimesh(model.mean_mm, model.faces, process=False)
    eyeball.update_faces(np.all(model.region_mask("left_eyeball")[model.faces], axis=1))
    eyeball.remove_unreferenced_vertices()
    assert eyeball.is_watertight and eyeball.volume > 0  # counter-clockwise seen from outside
    assert 4000.0 < eyeball.volume < 20000.0  # an eyeball of ~24 mm diameter is ~7000 mm^3


def test_component_scale_is_plausible(model):
    # z ~ N(0, I): a random head differs from the mean by millimetres to centimetres, not metres
    z = np.random.default_rng(2).standard_normal((20, 40))
    offsets = np.linalg.norm(model.vertices_mm(z) - model.mean_mm, axis=-1).mean(axis=1)
    assert np.all(offsets > 1.0) and np.all(offsets < 40.0)


def test_build_is_deterministic(model):
    again = build_anny_face_model(**SMALL, progress=False)
    np.testing.assert_array_equal(again.mean_mm, model.mean_mm)
    np.testing.assert_array_equal(again.basis_mm, model.basis_mm)
    other = build_anny_face_model(**{**SMALL, "seed": 1}, progress=False)
    assert np.abs(other.mean_mm - model.mean_mm).max() > 0.1


def test_cache_round_trip_and_names(model, cache_dir):
    path = anny_cache_path(**SMALL, cache_dir=cache_dir)
    assert path.exists() and path.name.startswith(f"anny-pca-v{ANNY_PCA_VERSION}-")
    loaded = anny_face_model(**SMALL, cache_dir=cache_dir)
    np.testing.assert_array_equal(loaded.basis_mm, model.basis_mm)
    assert loaded.info == model.info and loaded.landmarks.names == model.landmarks.names
    names = {
        anny_cache_path(**{**SMALL, key: value}, cache_dir=cache_dir).name
        for key, value in [("seed", 0), ("seed", 1), ("n_samples", 301), ("n_components", 41)]
    }
    names.add(anny_cache_path(**SMALL, cache_dir=cache_dir, heldout_fraction=0.2).name)
    assert len(names) == 5


def test_pca_heldout_error(model):
    errors = {int(k): v for k, v in model.info["heldout_error_mm_by_components"].items()}
    assert errors[40] == model.info["heldout_error_mm"]
    # 270 training heads span ~215 dimensions; 40 components must still reconstruct unseen heads to
    # ~1-2 mm mean per-vertex error (about 1% of the head's size), better with more components
    assert errors[40] < 2.5
    assert errors[10] > errors[25] > errors[40]
    explained = model.info["variance_explained"]
    assert 0.95 < explained <= 1.0


def test_principal_components_recover_a_known_basis():
    rng = np.random.default_rng(0)
    directions = np.linalg.qr(rng.standard_normal((30, 3)))[0].T  # (3, 30) orthonormal
    codes = rng.standard_normal((500, 3)) * np.array([5.0, 2.0, 0.5])
    mean, found, variances, total = principal_components(codes @ directions + 7.0, 3)
    np.testing.assert_allclose(mean, 7.0, atol=0.5)
    np.testing.assert_allclose(np.abs(found @ directions.T), np.eye(3), atol=0.02)
    np.testing.assert_allclose(np.sqrt(variances), [5.0, 2.0, 0.5], rtol=0.1)
    np.testing.assert_allclose(variances.sum(), total, rtol=1e-9)  # rank 3: three components explain all
    with pytest.raises(ValueError, match="n_components"):
        principal_components(codes @ directions, 500)
    with pytest.raises(ValueError, match="rank"):
        principal_components(codes @ directions, 4)


def test_regions(model):
    assert set(model.regions) == set(REGION_NAMES)
    for name in REGION_NAMES:
        assert len(model.regions[name]) > 0, name
    masks = {name: model.region_mask(name) for name in REGION_NAMES}
    for inner in ("left_eyeball", "right_eyeball"):
        for outer in ("face", "nose", "eye_region", "scalp", "neck", "left_ear", "right_ear"):
            assert not (masks[inner] & masks[outer]).any(), (inner, outer)
    for part in ("left_ear", "right_ear", "neck", "scalp"):
        assert not (masks["face"] & masks[part]).any(), part
    assert not (masks["left_ear"] & masks["right_ear"]).any()
    assert (masks["forehead"] <= masks["face"]).all()
    x = model.mean_mm[:, 0]
    assert x[masks["left_ear"]].min() > 40.0 and x[masks["right_ear"]].max() < -40.0  # subject's left is +x
    assert x[masks["left_eyeball"]].mean() > 20.0 and x[masks["right_eyeball"]].mean() < -20.0
    y = model.mean_mm[:, 1]
    assert y[masks["forehead"]].mean() > y[masks["eye_region"]].mean() > y[masks["nose"]].mean()
    assert y[masks["nose"]].mean() > y[masks["lips"]].mean()


def test_landmarks(model):
    assert model.landmarks.names[:5] == FIVE_POINT_NAMES
    np.testing.assert_allclose(model.landmarks.weights.sum(1), 1.0, rtol=1e-6)
    points = dict(zip(FIVE_POINT_NAMES, model.landmarks.positions(model.mean_mm)))
    eyes_y = 0.5 * (points["right_eye"][1] + points["left_eye"][1])
    mouth_y = 0.5 * (points["right_mouth_corner"][1] + points["left_mouth_corner"][1])
    assert eyes_y > points["nose_tip"][1] > mouth_y
    assert points["right_eye"][0] < 0.0 < points["left_eye"][0]
    assert points["right_mouth_corner"][0] < 0.0 < points["left_mouth_corner"][0]
    assert 50.0 < points["left_eye"][0] - points["right_eye"][0] < 80.0  # interpupillary distance, mm
    assert points["nose_tip"][2] == max(p[2] for p in points.values())
    assert points["nose_tip"][2] == model.mean_mm[model.regions["nose"], 2].max()
