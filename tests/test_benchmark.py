"""The benchmark that can tell good from bad: surface detail, NoW-style error, the authors' MSE, baselines,
paired bootstrap intervals, anthropometry."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from faceregen.evaluation.linear_probe import best_fit_codes, chip_features, fit_linear_probe
from faceregen.evaluation.protocol import SAMPLE_METRICS, EvaluationProtocol
from faceregen.evaluation.scan_to_mesh import now_crop_sphere, now_distance
from faceregen.evaluation.statistics import paired_bootstrap, seed_spread
from faceregen.face_model.anthropometry import ANSUR_II_MM, head_dimensions_mm, survey_mixture
from faceregen.face_model.decoder import FACE_PARTS, face_parts
from faceregen.face_model.linear import NOW_LANDMARKS
from faceregen.synthetic.surface_detail import SurfaceDetail, cotangent_laplacian, laplacian_eigenfunctions


# --- surface detail ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def detail(toy_model):
    return SurfaceDetail.for_face_model(toy_model, rms_mm=0.7, band=(4, 32))


def test_cotangent_laplacian_of_a_sphere():
    """Constants are in the kernel; the sphere's area is 4 pi r^2; the first non-zero eigenvalues are the
    l = 1 spherical harmonics' 2 / r^2 (a triple)."""
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=10.0)
    laplacian, area = cotangent_laplacian(sphere.vertices, sphere.faces)
    np.testing.assert_allclose(laplacian @ np.ones(len(area)), 0.0, atol=1e-9)
    assert area.sum() == pytest.approx(4 * np.pi * 100.0, rel=0.01)
    phi = laplacian_eigenfunctions(sphere.vertices, sphere.faces, 4)
    rayleigh = np.einsum("vk,vk->k", phi, laplacian @ phi) / np.einsum("vk,v,vk->k", phi, area, phi)
    np.testing.assert_allclose(rayleigh[1:], 2.0 / 100.0, rtol=0.02)
    assert abs(rayleigh[0]) < 1e-8


def test_detail_is_seeded_has_its_rms_and_leaves_eyeballs(toy_model, detail):
    h1 = detail.height_mm(np.random.default_rng([0, 3, 0]))
    h2 = detail.height_mm(np.random.default_rng([0, 3, 0]))
    h3 = detail.height_mm(np.random.default_rng([0, 4, 0]))
    np.testing.assert_array_equal(h1, h2)
    assert np.abs(h1 - h3).max() > 0.1
    face = toy_model.region_mask("face")
    assert np.sqrt(np.mean(h1[face] ** 2)) == pytest.approx(0.7, rel=1e-9)
    moved = detail.apply(toy_model.mean_mm, toy_model.faces, np.random.default_rng([0, 3, 0])) - toy_model.mean_mm
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), np.abs(h1), atol=1e-4)


def test_detail_is_smooth(toy_model, detail):
    """Band-limited: the height's Dirichlet energy per unit mass (h^T L h / h^T M h) lies between the band's
    lowest and highest eigenvalues; white noise on the same mesh has far more."""
    laplacian, area = cotangent_laplacian(toy_model.mean_mm, toy_model.faces)
    phi = laplacian_eigenfunctions(toy_model.mean_mm, toy_model.faces, 32)

    def rayleigh(h):
        return float((h @ (laplacian @ h)) / ((h * area) @ h))

    h = detail.height_mm(np.random.default_rng(1))
    assert rayleigh(phi[:, 4]) * 0.999 <= rayleigh(h) <= rayleigh(phi[:, 31]) * 1.001
    assert rayleigh(np.random.default_rng(2).normal(size=len(h))) > 5 * rayleigh(phi[:, 31])


def test_decoder_best_fit_of_a_detailed_head_stays_above_a_floor(toy_model, detail):
    """G(z) itself is fitted exactly; with its detail the best fit keeps most of the detail's RMS."""
    code = np.array([1.0, -0.5, 0.3, 0.8, -1.0, 0.4])
    head = toy_model.vertices_mm(code)
    np.testing.assert_allclose(best_fit_codes(toy_model, head[None])[0], code, atol=1e-4)
    detailed = detail.apply(head, toy_model.faces, np.random.default_rng(5))
    fitted = toy_model.vertices_mm(best_fit_codes(toy_model, detailed[None])[0])
    face = toy_model.region_mask("face")
    residual_rms = np.sqrt(np.mean(np.sum((fitted - detailed)[face] ** 2, axis=1)))
    assert residual_rms > 0.5  # of the 0.7 mm: the decoder cannot reproduce the detail


def test_generated_heads_carry_their_detail(toy_model, tmp_path):
    from faceregen.mesh_io import read_mesh
    from faceregen.synthetic import generate_dataset

    common = dict(face_model=toy_model, n_identities=2, wounds_per_identity=1, wound_types=["none"], resolution=32,
                  workers=1, contact_sheet_samples=0)
    plain = generate_dataset(tmp_path / "plain", **common).parent
    detailed = generate_dataset(tmp_path / "detailed", detail_rms_mm=0.7, detail_band=[4, 32], **common).parent
    for name in ("CTM00001_0", "CTM00002_0"):
        v_plain, _ = read_mesh(plain / f"label/synthetic/{name}.obj")
        v_detail, _ = read_mesh(detailed / f"label/synthetic/{name}.obj")
        face = toy_model.region_mask("face")
        rms = np.sqrt(np.mean(np.sum((v_detail - v_plain)[face] ** 2, axis=1)))
        assert rms == pytest.approx(0.7, rel=0.01)


# --- the NoW-style error -------------------------------------------------------------------------------
def _plane(n: int = 41, half_mm: float = 60.0):
    """A square grid in z = 0 (vertices, triangles) and NoW landmarks on it."""
    grid = np.linspace(-half_mm, half_mm, n)
    x, y = np.meshgrid(grid, grid)
    vertices = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    landmarks = np.array([[-40, 20, 0], [-15, 20, 0], [15, 20, 0], [40, 20, 0], [0, -20, 0], [-25, -40, 0], [25, -40, 0]], float)
    return vertices, faces, landmarks


def test_now_crop_sphere_by_hand():
    _, _, landmarks = _plane()
    centre, radius = now_crop_sphere(landmarks)
    bridge = np.array([0.0, 20.0, 0.0])
    np.testing.assert_allclose(centre, landmarks[4] + 0.3 * (bridge - landmarks[4]))  # (0, -8, 0)
    assert radius == pytest.approx(1.4 * (80.0 + 40.0) / 2)  # 84 mm


def test_now_known_offset_is_measured_without_refinement_and_removed_with_it():
    """A scan with a 2 mm plateau under a flat mesh: without ICP the crop's distances are the plateau's
    heights; a copy moved by a known rigid motion comes back to ~0 with landmark alignment + ICP."""
    vertices, faces, landmarks = _plane()
    scan = vertices.copy()
    plateau = np.linalg.norm(scan[:, :2] - [0.0, -8.0], axis=1) < 30.0
    scan[plateau, 2] = 2.0
    result = now_distance(scan, landmarks, vertices, faces, landmarks, metrical=True, refine_iterations=0)
    centre, radius = now_crop_sphere(landmarks)
    cropped = np.linalg.norm(scan - centre, axis=1) <= radius
    assert result["n_points"] == cropped.sum()
    expected = np.where(plateau[cropped], 2.0, 0.0)
    assert result["mean_mm"] == pytest.approx(expected.mean(), abs=1e-9)
    assert result["median_mm"] == pytest.approx(np.median(expected), abs=1e-9)

    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    bumpy = vertices.copy()
    bumpy[:, 2] = 5.0 * np.exp(-(bumpy[:, 0] ** 2 + (bumpy[:, 1] + 8) ** 2) / 800.0)  # asymmetric enough to lock
    bumpy[:, 2] += 0.02 * bumpy[:, 0]
    moved = bumpy @ rotation.T + [3.0, -2.0, 4.0]
    noisy_landmarks = landmarks + np.random.default_rng(0).normal(0, 1.0, landmarks.shape)  # imperfect landmarks
    moved_landmarks = noisy_landmarks @ rotation.T + [3.0, -2.0, 4.0]
    aligned_by_landmarks = now_distance(bumpy, landmarks, moved, faces, moved_landmarks, metrical=True, refine_iterations=0)
    refined = now_distance(bumpy, landmarks, moved, faces, moved_landmarks, metrical=True, refine_iterations=30)
    assert aligned_by_landmarks["mean_mm"] > 0.3
    assert refined["mean_mm"] < 0.05


def test_now_metrical_keeps_scale_non_metrical_removes_it(toy_model):
    head = toy_model.mean_mm.astype(np.float64)
    landmarks = toy_model.landmarks.positions(head, NOW_LANDMARKS)
    bigger = 1.1 * head
    bigger_landmarks = 1.1 * landmarks
    non_metrical = now_distance(head, landmarks, bigger, toy_model.faces, bigger_landmarks, metrical=False)
    metrical = now_distance(head, landmarks, bigger, toy_model.faces, bigger_landmarks, metrical=True)
    assert non_metrical["mean_mm"] < 0.05
    assert metrical["mean_mm"] > 1.0


# --- the protocol and the authors' MSE -----------------------------------------------------------------
def test_protocol_by_hand(toy_model):
    """A prediction offset by (1, 2, 2) mm everywhere: distance 3 mm, MSE (1 + 4 + 4) / 3 = 3 mm^2, and every
    error after a rigid fit (or NoW's alignment) is 0."""
    protocol = EvaluationProtocol.for_face_model(toy_model)
    gt = toy_model.mean_mm[None].astype(np.float64)
    pred = gt + np.array([1.0, 2.0, 2.0])
    wound = np.zeros((1, toy_model.n_vertices), bool)
    wound[0, toy_model.regions["nose"]] = True
    values = protocol.per_sample(pred, gt, wound)
    assert list(values) == list(SAMPLE_METRICS)
    assert values["distance_mm"][0] == pytest.approx(3.0)
    assert values["mse_mm2"][0] == pytest.approx(3.0)
    for name in ("face_rigid_mm", "face_similarity_mm", "wound_rigid_mm", "intact_rigid_mm", "now_mean_mm",
                 "now_metrical_mean_mm", *(f"{p}_rigid_mm" for p in FACE_PARTS if face_parts(toy_model)[p].any())):
        assert values[name][0] == pytest.approx(0.0, abs=1e-3), name
    no_wound = protocol.per_sample(pred, gt, None, now=False)
    assert np.isnan(no_wound["wound_rigid_mm"][0]) and np.isnan(no_wound["now_median_mm"][0])


def test_protocol_part_error_is_where_the_error_is(toy_model):
    """A 2 mm dent along the normals on the nose only: the nose part's error is 2 mm, the forehead's 0."""
    protocol = EvaluationProtocol.for_face_model(toy_model)
    gt = toy_model.mean_mm[None].astype(np.float64)
    pred = gt.copy()
    nose = protocol.parts["nose"]
    pred[0, nose, 2] -= 2.0
    values = protocol.per_sample(pred, gt, now=False)
    assert values["nose_rigid_mm"][0] == pytest.approx(2.0, abs=0.5)  # the rigid fit spreads a little
    assert values["forehead_rigid_mm"][0] < 0.5
    assert values["distance_mm"][0] == pytest.approx(2.0 * nose[protocol.evaluated].mean(), rel=1e-6)


# --- baselines -----------------------------------------------------------------------------------------
def test_linear_probe_recovers_a_linear_image_to_code_map(toy_model):
    """Images that are a linear function of the code (plus nothing else): the probe predicts the code."""
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(toy_model.n_components, 16 * 16))

    def images(codes):
        grey = 128 + 10 * codes @ mixing
        return np.repeat(np.clip(grey, 0, 255).reshape(-1, 1, 16, 16), 3, axis=1).astype(np.uint8)

    train_codes, val_codes = rng.normal(size=(400, toy_model.n_components)), rng.normal(size=(50, toy_model.n_components))
    val_vertices = np.stack([toy_model.vertices_mm(c) for c in val_codes])
    probe = fit_linear_probe(toy_model, chip_features(images(train_codes), 16), train_codes,
                             chip_features(images(val_codes), 16), val_vertices)
    predicted = probe.predict_codes(chip_features(images(val_codes), 16))
    assert np.abs(predicted - val_codes).mean() < 0.1 * np.abs(val_codes).mean()


def test_chip_features_average_blocks():
    image = np.zeros((1, 3, 4, 4), np.uint8)
    image[0, :, :2, :2] = 200
    np.testing.assert_allclose(chip_features(image, 2), [[200.0, 0.0, 0.0, 0.0]])


# --- comparing settings --------------------------------------------------------------------------------
def test_paired_bootstrap_known_answers():
    rng = np.random.default_rng(0)
    b = np.tile(rng.normal(5.0, 1.0, 60), (3, 1))  # identities differ, seeds agree
    shifted = paired_bootstrap(b + 1.5, b)
    assert shifted["difference"] == pytest.approx(1.5) and shifted["low"] == pytest.approx(1.5)
    assert shifted["high"] == pytest.approx(1.5) and shifted["significant"]
    # the same distribution: an interval around 0 about 2 * 1.96 * sqrt(2 / N) wide (paired SD sqrt(2) / sqrt(S))
    same = paired_bootstrap(rng.normal(5.0, 1.0, (1, 400)), rng.normal(5.0, 1.0, (1, 400)))
    assert same["low"] < 0 < same["high"] and not same["significant"]
    assert same["high"] - same["low"] == pytest.approx(2 * 1.96 * np.sqrt(2 / 400), rel=0.15)
    with pytest.raises(ValueError, match="same ones"):
        paired_bootstrap(b, b[:, :10])


def test_bootstrap_counts_the_seed_spread():
    """Two settings whose seeds disagree more than their mean difference: not significant."""
    base = np.random.default_rng(1).normal(5.0, 0.01, 200)
    a = np.stack([base + 0.5, base - 0.5, base + 0.6])  # seeds spread ~0.6 mm
    b = np.stack([base + 0.1, base - 0.1, base])
    assert paired_bootstrap(a, b)["significant"] is False
    assert seed_spread(a) == pytest.approx(np.std([0.5, -0.5, 0.6], ddof=1), rel=1e-3)


# --- anthropometry -------------------------------------------------------------------------------------
def test_survey_mixture_limits_and_spread():
    men, women = survey_mixture(0.0), survey_mixture(1.0)
    assert men["head_length"] == pytest.approx(ANSUR_II_MM["male"]["head_length"])
    assert women["face_height"] == pytest.approx(ANSUR_II_MM["female"]["face_height"])
    mean, sd = survey_mixture(0.5)["head_length"]
    assert mean == pytest.approx((199.5 + 189.8) / 2)
    assert sd > max(7.0, 7.4)  # the two sexes' means differ: the mixture spreads more than either


def test_head_dimensions_follow_axis_scales(toy_model):
    head = toy_model.mean_mm.astype(np.float64)
    before = head_dimensions_mm(toy_model, head)
    after = head_dimensions_mm(toy_model, head * [1.03, 0.98, 1.02])
    assert after["head_breadth"][0] == pytest.approx(1.03 * before["head_breadth"][0], rel=1e-6)
    assert after["head_length"][0] == pytest.approx(1.02 * before["head_length"][0], rel=0.02)
    scalp = head[toy_model.regions["scalp"]]
    assert before["head_breadth"][0] == pytest.approx(np.ptp(scalp[:, 0]))  # euryon-euryon: the scalp's x-extent
