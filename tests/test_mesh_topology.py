"""Boundary loops, hole closing with centre vertices, vertex subsets (faceregen.mesh_topology)."""

import numpy as np
import pytest
import trimesh

from faceregen.mesh_topology import (
    append_loop_centres,
    boundary_loops,
    close_holes_with_centre_vertices,
    keep_vertices,
)


@pytest.fixture(scope="module")
def sphere_with_two_holes():
    """An icosphere with two vertices removed far apart: one hole per vertex, as long as its valence."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=50.0)
    top, bottom = int(np.argmax(sphere.vertices[:, 2])), int(np.argmin(sphere.vertices[:, 2]))
    keep = np.ones(len(sphere.vertices), dtype=bool)
    keep[[top, bottom]] = False
    faces, kept = keep_vertices(sphere.faces, keep)
    valences = [int((sphere.faces == v).any(axis=1).sum()) for v in (top, bottom)]
    return sphere.vertices[kept], faces, sphere, valences


def test_keep_vertices_reindexes_in_order():
    faces = np.array([[0, 1, 2], [2, 3, 4], [1, 3, 2]])
    new_faces, kept = keep_vertices(faces, np.array([True, True, True, False, True]))
    np.testing.assert_array_equal(kept, [0, 1, 2, 4])
    np.testing.assert_array_equal(new_faces, [[0, 1, 2]])


def test_boundary_loops_found_and_oriented(sphere_with_two_holes):
    vertices, faces, sphere, valences = sphere_with_two_holes
    loops = boundary_loops(faces)
    assert sorted(len(loop) for loop in loops) == sorted(valences)
    # Each loop's order: key edge (largest smaller index) last; loops by descending key.
    keys = [min(loop[-2:]) for loop in loops]
    assert keys == sorted(keys, reverse=True)
    for loop in loops:
        smaller = np.minimum(loop, np.roll(loop, -1))
        assert smaller.max() == min(loop[-2:])
        # Consecutive loop vertices share a boundary edge.
        edges = {tuple(sorted(e)) for e in np.stack([loop, np.roll(loop, -1)], axis=1).tolist()}
        assert len(edges) == len(loop)


def test_close_holes_makes_a_closed_consistent_mesh(sphere_with_two_holes):
    vertices, faces, sphere, _ = sphere_with_two_holes
    new_faces, loops = close_holes_with_centre_vertices(faces, len(vertices))
    new_vertices = append_loop_centres(vertices, loops)
    assert new_vertices.shape == (len(vertices) + 2, 3)
    assert len(new_faces) == len(faces) + sum(len(loop) for loop in loops)
    assert len(new_faces) == 2 * len(new_vertices) - 4
    np.testing.assert_array_equal(new_faces[: len(faces)], faces)
    mesh = trimesh.Trimesh(new_vertices, new_faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0
    # The closed sphere is a bit smaller than the original (two caps flattened), but close.
    assert 0.97 * sphere.volume < mesh.volume < sphere.volume
    # Centre vertex k is the mean of loop k.
    for k, loop in enumerate(loops):
        np.testing.assert_allclose(new_vertices[len(vertices) + k], vertices[loop].mean(axis=0))


def test_append_loop_centres_is_linear():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(10, 3, 4))
    mean = rng.normal(size=(10, 3))
    z = rng.normal(size=4)
    loops = [np.array([1, 2, 3]), np.array([7, 8, 9, 5])]
    composed = append_loop_centres(mean, loops) + np.einsum("vck,k->vc", append_loop_centres(basis, loops), z)
    direct = append_loop_centres(mean + np.einsum("vck,k->vc", basis, z), loops)
    np.testing.assert_allclose(composed, direct)


def test_closed_mesh_has_no_loops():
    sphere = trimesh.creation.icosphere(subdivisions=1)
    assert boundary_loops(sphere.faces) == []
    new_faces, loops = close_holes_with_centre_vertices(sphere.faces, len(sphere.vertices))
    assert loops == [] and len(new_faces) == len(sphere.faces)


def test_non_manifold_boundary_is_refused():
    # Two triangles touching at one vertex (a bow tie): vertex 0 starts two boundary edges.
    with pytest.raises(ValueError, match="non-manifold"):
        boundary_loops(np.array([[0, 1, 2], [0, 3, 4]]))
    with pytest.raises(ValueError, match="faces refer to vertex 4"):
        close_holes_with_centre_vertices(np.array([[0, 1, 2], [0, 3, 4]]), 4)
