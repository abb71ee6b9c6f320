"""The scan's holes: loops of its open border, the wound detected on a hole's rim, holes capped for the filling.

Cases known by construction: a 28 mm square grid (its border 112 mm long) with a spherical dent (sphere
radius 20 mm, 3 mm deep: a cap of 537.2 mm3) whose floor the "scanner" did not see (the faces within 3 mm
of the axis removed, as a face-only scan loses a wound's walls that face away from it).
"""

import numpy as np
import pytest
import trimesh

from test_postprocess import cap_volume_mm3, plane_grid, spherical_dent_mm

from faceregen.postprocess.printability import edge_face_counts, printability_report
from faceregen.restoration.scan import Scan
from faceregen.restoration.holes import border_cycles, border_loops, cap_holes, scan_end
from faceregen.restoration.restorer import scan_filling
from faceregen.restoration.wound_detection import WoundSettings, depth_below_surface, detect_wound


def without_faces_near_axis(vertices, faces, radius_mm):
    """The faces whose centroid lies at least ``radius_mm`` from the z axis (a hole around it)."""
    centroid = vertices[faces].mean(axis=1)
    return faces[np.hypot(centroid[:, 0], centroid[:, 1]) >= radius_mm]


@pytest.fixture(scope="module")
def holed_dent():
    """(plane vertices, wounded vertices with the dent, faces with a hole in the dent's floor, full faces)."""
    plane, faces = plane_grid(14.0, 0.5)
    wounded = plane.copy()
    wounded[:, 2] -= spherical_dent_mm(plane, 20.0, 3.0)
    return plane, wounded, without_faces_near_axis(plane, faces, 3.0), faces


def test_border_loops_longest_first_with_their_perimeters(holed_dent):
    plane, _, faces, full = holed_dent
    assert border_loops(plane, full)[0].perimeter_mm == pytest.approx(112.0)
    loops = border_loops(plane, faces)
    assert len(loops) == 2
    assert loops[0].perimeter_mm == pytest.approx(112.0)  # the grid's square border: where the scan ends
    radius = np.hypot(plane[loops[1].vertices, 0], plane[loops[1].vertices, 1])
    assert 2.5 < radius.min() and radius.max() < 4.0  # the hole's rim
    a, b = loops[1].half_edges.T  # directed as the faces run them: each once, in a face
    directed = {tuple(edge) for edge in faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)}
    assert all((i, j) in directed and (j, i) not in directed for i, j in zip(a, b))
    end = scan_end(plane, faces)
    assert end[loops[0].vertices].all() and not end[loops[1].vertices].any()
    assert end.sum() == 4 * 56 + 4 * 54  # the border's 224 vertices and the 216 one edge inside it
    sphere = trimesh.creation.icosphere(2)
    assert border_loops(sphere.vertices, sphere.faces) == [] and not scan_end(sphere.vertices, sphere.faces).any()


def test_a_capped_hole_closes_with_the_area_it_had(holed_dent):
    plane, _, _, full = holed_dent
    faces = without_faces_near_axis(plane, full, 0.9)  # a planar hole: the 2 x 2 grid squares around the axis
    loops = border_loops(plane, faces)
    vertices, capped = cap_holes(plane, faces, loops[1:])
    assert len(vertices) == len(plane) + 1 and np.allclose(vertices[-1], 0.0)
    assert len(border_loops(vertices, capped)) == 1  # only the scan's end is left
    _, counts = edge_face_counts(capped)
    assert set(np.unique(counts)) == {1, 2}
    mesh = trimesh.Trimesh(vertices, capped, process=False)
    assert mesh.is_winding_consistent and mesh.area == pytest.approx(28.0 * 28.0)
    assert (mesh.face_normals[-len(loops[1].half_edges):, 2] > 0.99).all()  # facing +z as the grid does


def test_a_wound_on_a_holes_rim_is_found_and_its_filling_covers_the_hole(holed_dent):
    plane, wounded, faces, full = holed_dent
    depth = depth_below_surface(wounded, plane, full)
    rim = border_loops(wounded, faces)[1].vertices
    found = detect_wound(wounded, faces, depth.depth_mm, 0.0, WoundSettings(threshold_mm=2.0, min_area_mm2=20.0))
    assert found[rim].all()
    scan = Scan("holed dent", wounded, faces, "mm")  # a patch, smaller than a head: no size check
    filling = scan_filling(scan, plane, full, depth, found)
    report = printability_report(filling)
    assert report["watertight"] and report["winding_consistent"] and report["edge_manifold"]
    # the fan over the hole sits on the floor's rim, at most the sphere's sag within 3 mm (0.23 mm) off it
    assert filling.volume == pytest.approx(cap_volume_mm3(20.0, 3.0), rel=0.01)
    uncapped = trimesh.Trimesh(wounded, faces, process=False)
    assert uncapped.area < trimesh.Trimesh(wounded, full, process=False).area - 25.0  # the hole is 28 mm2


def test_a_pinched_hole_splits_into_two_cycles_each_capped_apart(holed_dent):
    plane, _, _, full = holed_dent
    centroid = plane[full].mean(axis=1)
    in_square = lambda low: ((centroid[:, :2] > low) & (centroid[:, :2] < low + 1.0)).all(axis=1)  # noqa: E731
    faces = full[~in_square(0.0) & ~in_square(-1.0)]  # two 1 mm squares touching at the origin's corner
    loops = border_loops(plane, faces)
    assert len(loops) == 2 and loops[1].perimeter_mm == pytest.approx(8.0)  # one loop, pinched at the origin
    cycles = border_cycles(loops[1].half_edges)
    assert sorted(len(cycle) for cycle in cycles) == [8, 8]  # 1 mm sides of two 0.5 mm edges each
    assert all(np.abs(plane[cycle, :2]).max() == pytest.approx(1.0) for cycle in cycles)
    vertices, capped = cap_holes(plane, faces, loops[1:])
    assert len(vertices) == len(plane) + 2 and len(border_loops(vertices, capped)) == 1
    _, counts = edge_face_counts(capped)
    assert counts.max() == 2  # one fan per cycle: no edge gets a third face at the pinch
    mesh = trimesh.Trimesh(vertices, capped, process=False)
    assert mesh.is_winding_consistent and mesh.area == pytest.approx(28.0 * 28.0)
