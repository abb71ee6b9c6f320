"""Synthetic wounds: the mask is exactly what moved, depths, regions, sites, shapes."""

import numpy as np
import pytest

from face_models import toy_face_model
from faceregen.face_model.linear import FIVE_POINT_NAMES
from faceregen.mesh_io import vertex_normals
from faceregen.synthetic.wounds import (
    NO_WOUND,
    WOUND_TYPES,
    make_wound,
    tissue_loss_site_mm,
    woundable_mask,
)

@pytest.fixture(scope="module")
def model():
    return toy_face_model(subdivisions=5)


@pytest.fixture(scope="module")
def head_mm(model):
    return model.vertices_mm(np.array([0.5, -0.3, 0.2, 1.0, -0.7, 0.4]))


@pytest.mark.parametrize("kind", WOUND_TYPES)
def test_mask_is_exactly_what_moved_by_depth(model, head_mm, kind):
    for seed in range(3):
        wound = make_wound(head_mm, model.faces, model, kind, np.random.default_rng(seed), depth_range_mm=(5.0, 9.0))
        moved = np.any(wound.vertices_mm != head_mm, axis=1)
        assert wound.kind == kind
        assert wound.vertices_mm.dtype == np.float32 and wound.depth_mm.dtype == np.float32
        np.testing.assert_array_equal(wound.mask, moved)
        assert wound.mask.sum() >= 5
        assert np.all(wound.depth_mm[wound.mask] >= 1e-3) and np.all(wound.depth_mm[~wound.mask] == 0.0)
        assert 5.0 * 0.5 <= wound.depth_mm.max() <= 9.0 + 1e-4
        displacement = (wound.vertices_mm - head_mm).astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(displacement, axis=1), wound.depth_mm, atol=1e-4)
        assert not np.any(wound.mask & ~woundable_mask(head_mm, model)), "wound outside the woundable region"
        inward = (displacement[wound.mask] * vertex_normals(head_mm, model.faces)[wound.mask]).sum(axis=1)
        assert np.all(inward < 0.0), "wound vertices must move into the head"


def test_same_generator_same_wound_and_seeds_differ(model, head_mm):
    a = make_wound(head_mm, model.faces, model, "circle_scar", np.random.default_rng(7))
    b = make_wound(head_mm, model.faces, model, "circle_scar", np.random.default_rng(7))
    c = make_wound(head_mm, model.faces, model, "circle_scar", np.random.default_rng(8))
    np.testing.assert_array_equal(a.vertices_mm, b.vertices_mm)
    assert not np.array_equal(a.mask, c.mask)


def test_eye_band_is_never_wounded(model, head_mm):
    eyes = model.landmarks.positions(head_mm, ("right_eye", "left_eye"))
    for seed in range(20):
        wound = make_wound(head_mm, model.faces, model, "circle_scar", np.random.default_rng(seed))
        distance = np.linalg.norm(head_mm[wound.mask][:, None] - eyes[None], axis=-1)
        assert distance.min() > 14.0


def test_tissue_loss_sites_are_where_named(model, head_mm):
    rng = np.random.default_rng(0)
    e_r, e_l, nose, m_r, m_l = model.landmarks.positions(head_mm, FIVE_POINT_NAMES)
    centres = {}
    for site in ("nasal_tip", "left_cheek", "right_cheek", "forehead", "chin"):
        wound = make_wound(head_mm, model.faces, model, f"tissue_loss_{site}", rng)
        centres[site] = head_mm[np.argmax(wound.depth_mm)]
        assert np.linalg.norm(centres[site][:2] - tissue_loss_site_mm(head_mm, model, site)[:2]) < 4.0
    assert np.linalg.norm(centres["nasal_tip"] - nose) < 4.0
    assert centres["left_cheek"][0] > e_l[0] > 0 > e_r[0] > centres["right_cheek"][0]  # +x = subject's left
    assert centres["forehead"][1] > e_l[1] + 15.0
    assert centres["chin"][1] < m_l[1] - 15.0
    with pytest.raises(ValueError, match="site"):
        tissue_loss_site_mm(head_mm, model, "ear")


def test_long_scar_is_elongated_circle_scar_is_round(model, head_mm):
    def axis_ratio(mask):  # longest / second principal axis of the wound's vertices (on the surface)
        points = head_mm[mask] - head_mm[mask].mean(axis=0)
        eigenvalues = np.linalg.eigvalsh(np.cov(points.T))
        return np.sqrt(eigenvalues[2] / eigenvalues[1])

    params = {"long_scar_length_range_mm": (50.0, 50.0), "long_scar_width_range_mm": (10.0, 10.0)}
    long_ratios = [
        axis_ratio(make_wound(head_mm, model.faces, model, "long_scar", np.random.default_rng(s), **params).mask)
        for s in range(6)
    ]
    circle_ratios = [
        axis_ratio(make_wound(head_mm, model.faces, model, "circle_scar", np.random.default_rng(s)).mask)
        for s in range(6)
    ]
    assert min(long_ratios) > 2.4
    assert np.median(circle_ratios) < 1.3


def test_depth_is_clamped_by_distance_to_head_centre(model, head_mm):
    rng = np.random.default_rng(0)
    wound = make_wound(
        head_mm, model.faces, model, "circle_scar", rng, depth_range_mm=(50.0, 60.0), max_depth_fraction=0.05
    )
    seed = np.argmax(wound.depth_mm)
    assert wound.depth_mm.max() <= 0.05 * np.linalg.norm(head_mm[seed] - head_mm.mean(axis=0)) + 1e-4


def test_bad_input_is_a_clear_error(model, head_mm):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="wound type"):
        make_wound(head_mm, model.faces, model, "burn", rng)
    with pytest.raises(ValueError, match="depth_range_mm"):
        make_wound(head_mm, model.faces, model, "circle_scar", rng, depth_range_mm=(5.0, 1.0))
    with pytest.raises(ValueError, match="do not match face model"):
        make_wound(head_mm[:10], model.faces, model, "circle_scar", rng)


def test_no_wound_leaves_the_head_complete_and_draws_nothing(model, head_mm):
    assert NO_WOUND == "none" and NO_WOUND not in WOUND_TYPES  # accepted, but never a default type
    rng = np.random.default_rng(3)
    wound = make_wound(head_mm, model.faces, model, "none", rng)
    assert wound.kind == "none" and wound.vertices_mm.dtype == np.float32
    np.testing.assert_array_equal(wound.vertices_mm, head_mm)
    assert wound.mask.shape == (model.n_vertices,) and not wound.mask.any()
    assert wound.depth_mm.dtype == np.float32 and np.all(wound.depth_mm == 0.0)
    assert rng.uniform() == np.random.default_rng(3).uniform(), "'none' must not consume the generator"
    with pytest.raises(ValueError, match="do not match face model"):
        make_wound(head_mm[:10], model.faces, model, "none", rng)
