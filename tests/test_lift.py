"""The filling's top lifted along the wound's direction (faceregen.restoration.lift), on cases known by
construction: planes (a ray's exit by hand) and a prolate ellipsoid whose tip is flattened (the lost cap's
volume analytic: ``pi a^2 h^2 (3c - h) / (3 c^2)``), where the nearest points of the flat cut fold onto the
tip's sides and lose 70% of it."""

import numpy as np
import pytest
import trimesh

from test_postprocess import cap_volume_mm3, plane_grid, spherical_dent_mm

from faceregen.postprocess import extract_filling
from faceregen.restoration import restorer as restorer_module
from faceregen.restoration.lift import lift_onto_surface, ray_exits, wound_direction
from faceregen.restoration.restorer import scan_filling
from faceregen.restoration.scan import Scan
from faceregen.restoration.wound_detection import depth_below_surface


def test_a_ray_leaves_a_plane_where_a_hand_computation_puts_it():
    plane, faces = plane_grid(10.0, 1.0)  # z = 0, facing +z, x and y in [-10, 10]
    points = np.array([[0.0, 0.0, -2.0], [3.3, -4.1, -0.5], [9.5, 0.0, -2.0]])
    direction = np.array([0.6, 0.0, 0.8])
    exits, hit = ray_exits(points, direction * 5.0, plane, faces)  # any length: the direction counts
    # t = -z / 0.8 along d: (0 + 0.6 t, y, 0)
    assert hit.tolist() == [True, True, False]  # the third leaves at x = 11, beyond the grid
    np.testing.assert_allclose(exits[:2], [[1.5, 0.0, 0.0], [3.675, -4.1, 0.0]], atol=1e-9)
    np.testing.assert_array_equal(exits[2], points[2])  # a miss keeps its start


def test_many_rays_in_chunks_leave_a_plane_where_the_hand_computation_puts_them():
    plane, faces = plane_grid(10.0, 1.0)
    rng = np.random.default_rng(0)
    points = np.column_stack([rng.uniform(-6.0, 6.0, (1500, 2)), rng.uniform(-3.0, -0.1, 1500)])  # 3 chunks
    direction = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
    exits, hit = ray_exits(points, direction, plane, faces)
    assert hit.all()
    np.testing.assert_allclose(exits, points + (-points[:, 2] / direction[2])[:, None] * direction, atol=1e-9)


def test_the_first_exit_is_taken_and_triangles_facing_away_are_ignored():
    plane, faces = plane_grid(5.0, 1.0)
    upper = plane + [0.0, 0.0, 5.0]
    two, two_faces = np.concatenate([plane, upper]), np.concatenate([faces, faces + len(plane)])
    points = np.array([[0.2, 0.3, -1.0], [0.2, 0.3, 2.0], [0.2, 0.3, 6.0]])
    exits, hit = ray_exits(points, np.array([0.0, 0.0, 1.0]), two, two_faces)
    assert hit.tolist() == [True, True, False]  # nothing above z = 6
    np.testing.assert_allclose(exits[:2, 2], [0.0, 5.0], atol=1e-12)
    _, hit = ray_exits(points[:1], np.array([0.0, 0.0, 1.0]), plane, faces[:, ::-1])  # the plane facing -z
    assert not hit.any()


def test_the_wound_direction_is_the_mean_displacement_to_the_nearest_points():
    points = np.zeros((3, 3))
    closest = np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]])
    np.testing.assert_allclose(wound_direction(points, closest), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(wound_direction(points, closest[1:2] * 3), [2 ** -0.5, 0.0, 2 ** -0.5])
    with pytest.raises(ValueError, match="cancel"):
        wound_direction(points[:2], closest[1:] * [1.0, 0.0, 0.0])


@pytest.fixture(scope="module")
def flattened_tip():
    """(complete ellipsoid (semi-axes 10, 10, 30 mm), the same with its tip beyond z = 18 pressed flat along
    -z, faces, the moved vertices)."""
    sphere = trimesh.creation.icosphere(subdivisions=5)
    complete = sphere.vertices * [10.0, 10.0, 30.0]
    wounded = complete.copy()
    moved = complete[:, 2] > 18.0
    wounded[moved, 2] = 18.0
    return complete, wounded, np.asarray(sphere.faces), moved


def test_a_flattened_tip_is_filled_with_the_cap_it_lost(flattened_tip):
    complete, wounded, faces, moved = flattened_tip
    a, c, h = 10.0, 30.0, 12.0
    lost_mm3 = np.pi * a**2 * h**2 * (3 * c - h) / (3 * c**2)  # 1306.9
    depth = depth_below_surface(wounded, complete, faces)
    filling = scan_filling(Scan("tip", wounded, faces, "mm"), complete, faces, depth, moved)
    assert filling.is_watertight and filling.metadata["lift"] == "rays"
    assert filling.volume == pytest.approx(lost_mm3, rel=0.005)  # the mesh's own cap: 1306.2
    nearest = wounded.copy()
    nearest[moved] = depth.closest_mm[moved]
    assert extract_filling(wounded, nearest, faces, moved).volume < 0.5 * lost_mm3  # what the fold loses


def test_every_vertex_below_a_plane_is_lifted_onto_it_along_the_mean_direction():
    plane, faces = plane_grid(10.0, 1.0)
    points = np.array([[1.0, 1.0, -3.0], [-2.0, 0.5, -1.0]])
    lifted = lift_onto_surface(points, points * [1.0, 1.0, 0.0], plane, faces)  # nearest points: straight up
    np.testing.assert_allclose(lifted, points * [1.0, 1.0, 0.0], atol=1e-12)


def test_where_the_rays_give_no_solid_the_nearest_points_do(monkeypatch):
    plane, faces = plane_grid(14.0, 0.5)
    wounded = plane.copy()
    wounded[:, 2] -= spherical_dent_mm(plane, 20.0, 3.0)
    depth = depth_below_surface(wounded, plane, faces)
    mask = depth.depth_mm > 1e-6
    # a lift that sinks the top 1 mm below the floor: no positive volume between them
    monkeypatch.setattr(restorer_module, "lift_onto_surface", lambda points, *_: points - [0.0, 0.0, 1.0])
    filling = scan_filling(Scan("dent", wounded, faces, "mm"), plane, faces, depth, mask)
    assert filling.volume == pytest.approx(cap_volume_mm3(20.0, 3.0), rel=0.01)
    assert filling.metadata["lift"] == "nearest points"
