"""Grey renders: the camera's projection matches VTK's pixels, lights, determinism, visible wounds."""

import numpy as np
import pytest
import trimesh
from face_models import toy_face_model

from faceregen.rendering import DEFAULT_LIGHT_DIRS, Camera, render_grey
from faceregen.synthetic.wounds import make_wound

RESOLUTION = 96


def silhouette_box(image: np.ndarray) -> np.ndarray:
    """[u_min, v_min, u_max, v_max] of the non-black pixels, as pixel-edge coordinates."""
    rows, cols = np.nonzero(image.max(axis=-1) > 0)
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=float)


def test_projection_of_the_camera_centre_and_axes():
    camera = Camera(resolution=100, fov_deg=30.0, distance_mm=500.0, center_mm=(10.0, -5.0, 20.0))
    np.testing.assert_allclose(camera.project(np.array([10.0, -5.0, 20.0])), [50.0, 50.0])
    right_up = camera.project(np.array([[20.0, -5.0, 20.0], [10.0, 5.0, 20.0]]))
    assert right_up[0, 0] > 50.0 and right_up[1, 1] < 50.0  # +x to the image's right, +y up
    # a point at the edge of the field of view lands on the image border
    half_height = 500.0 * np.tan(np.radians(15.0))
    np.testing.assert_allclose(camera.project(np.array([10.0, -5.0 + half_height, 20.0])), [50.0, 0.0], atol=1e-9)
    assert Camera.from_dict(camera.to_dict()) == camera
    with pytest.raises(ValueError, match="behind"):
        camera.project(np.array([0.0, 0.0, 600.0]))
    with pytest.raises(ValueError, match="fov_deg"):
        Camera(fov_deg=0.0)


@pytest.mark.parametrize("offset_mm", [(0.0, 0.0, 0.0), (30.0, -20.0, 10.0)])
def test_projected_vertices_match_the_rendered_silhouette(offset_mm):
    box = trimesh.creation.box(extents=(60.0, 90.0, 40.0))
    box.apply_translation(offset_mm)
    vertices = np.asarray(box.vertices, np.float32)
    camera = Camera(resolution=RESOLUTION, fov_deg=30.0, distance_mm=450.0, center_mm=(5.0, 8.0, 0.0))
    images = render_grey(vertices, box.faces, camera, DEFAULT_LIGHT_DIRS)
    projected = camera.project(vertices)
    expected = np.concatenate([projected.min(axis=0), projected.max(axis=0)])
    np.testing.assert_allclose(silhouette_box(images[3]), expected, atol=1.5)


def test_images_are_grey_on_black_and_lit_from_the_named_side():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=60.0)
    camera = Camera.framing(sphere.vertices, resolution=RESOLUTION, fov_deg=25.0, margin=1.3)
    images = render_grey(sphere.vertices, sphere.faces, camera, DEFAULT_LIGHT_DIRS)
    assert images.shape == (len(DEFAULT_LIGHT_DIRS), RESOLUTION, RESOLUTION, 3) and images.dtype == np.uint8
    assert np.all(images[:, 0, 0] == 0), "background must be black"
    assert np.all(images[..., 0] == images[..., 2]), "the surface must be grey"
    grey = images[..., 0].astype(float)
    left, right = grey[:, :, : RESOLUTION // 2].sum(axis=(1, 2)), grey[:, :, RESOLUTION // 2 :].sum(axis=(1, 2))
    top, bottom = grey[:, : RESOLUTION // 2].sum(axis=(1, 2)), grey[:, RESOLUTION // 2 :].sum(axis=(1, 2))
    assert left[0] > 1.5 * right[0] and right[1] > 1.5 * left[1]  # lights 0 and 1: image left, image right
    assert top[2] > 1.5 * bottom[2]  # light 2: from above
    with pytest.raises(ValueError, match="zero vector"):
        render_grey(sphere.vertices, sphere.faces, camera, [(0.0, 0.0, 0.0)])


@pytest.fixture(scope="module")
def toy_scene():
    model = toy_face_model(subdivisions=4)
    head = model.vertices_mm(np.array([0.3, 0.2, -0.1, 0.5, 0.0, 0.0]))
    camera = Camera.framing(head[model.regions["face"]], resolution=RESOLUTION, fov_deg=25.0, margin=1.3)
    return model, head, camera


def test_renders_do_not_depend_on_what_was_rendered_before(toy_scene):
    model, head, camera = toy_scene
    first = render_grey(head, model.faces, camera, DEFAULT_LIGHT_DIRS[:2])
    render_grey(head * 1.05, model.faces, camera, DEFAULT_LIGHT_DIRS[2:])
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=50.0)
    render_grey(sphere.vertices, sphere.faces, camera, DEFAULT_LIGHT_DIRS[:1])
    np.testing.assert_array_equal(render_grey(head, model.faces, camera, DEFAULT_LIGHT_DIRS[:2]), first)


def test_wound_is_visible_where_it_projects(toy_scene):
    model, head, camera = toy_scene
    for kind, seed in (("circle_scar", 1), ("tissue_loss_left_cheek", 0)):
        wound = make_wound(head, model.faces, model, kind, np.random.default_rng(seed), depth_range_mm=(8.0, 8.0))
        before = render_grey(head, model.faces, camera, DEFAULT_LIGHT_DIRS).astype(float)
        after = render_grey(wound.vertices_mm, model.faces, camera, DEFAULT_LIGHT_DIRS).astype(float)
        change = np.abs(after - before).mean(axis=(0, 3))
        u, v = camera.project(head[wound.mask]).T
        inside = np.zeros(change.shape, bool)
        inside[v.astype(int), u.astype(int)] = True
        foreground = before.max(axis=(0, 3)) > 0
        assert change[inside].mean() > 5.0
        assert change[inside].mean() > 20 * change[foreground & ~inside].mean()
