"""Post-processing: eyeball removal, the filling between wounded and complete faces, printability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh

from face_models import toy_face_model
from flame_fixture import synthetic_flame
from faceregen.face_model.flame_source import flame_face_model
from faceregen.postprocess import export_filling, extract_filling, printability_report, remove_eyeballs
from faceregen.postprocess.filling import FACE_RGBA, FILLING_RGBA, grow_wound_mask
from faceregen.synthetic.wounds import WOUND_TYPES, make_wound


def plane_grid(half_size_mm: float, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A square grid in z = 0 facing +z: vertices (n*n, 3), faces (2 (n-1)^2, 3)."""
    n = int(round(2 * half_size_mm / spacing_mm)) + 1
    x = np.linspace(-half_size_mm, half_size_mm, n)
    gx, gy = np.meshgrid(x, x, indexing="xy")
    vertices = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, 1:].ravel(), i[1:, :-1].ravel()
    return vertices, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])


def spherical_dent_mm(vertices: np.ndarray, sphere_radius_mm: float, cap_height_mm: float) -> np.ndarray:
    """Depth of a sphere of radius rho pressed h deep into z = 0: ``sqrt(rho^2 - r^2) - (rho - h)``, >= 0."""
    r2 = vertices[:, 0] ** 2 + vertices[:, 1] ** 2
    rho, h = sphere_radius_mm, cap_height_mm
    return np.clip(np.sqrt(np.clip(rho**2 - r2, 0.0, None)) - (rho - h), 0.0, None)


def cap_volume_mm3(sphere_radius_mm: float, cap_height_mm: float) -> float:
    """``pi h^2 (3 rho - h) / 3``."""
    h = cap_height_mm
    return float(np.pi * h * h * (3 * sphere_radius_mm - h) / 3)


def assert_closed_solid(mesh: trimesh.Trimesh) -> None:
    report = printability_report(mesh)
    assert report["watertight"] and report["winding_consistent"] and report["edge_manifold"]
    assert report["volume_mm3"] > 0


@pytest.fixture(scope="module")
def head_model():
    return toy_face_model(subdivisions=5)


@pytest.fixture(scope="module")
def dented_plane():
    vertices, faces = plane_grid(14.0, 0.5)
    depth = spherical_dent_mm(vertices, 20.0, 3.0)
    wounded = vertices.copy()
    wounded[:, 2] -= depth
    return vertices, wounded, faces, depth > 0


# --- filling ------------------------------------------------------------------------------------


def test_filling_of_a_spherical_dent_has_the_cap_volume(dented_plane):
    complete, wounded, faces, mask = dented_plane
    filling = extract_filling(wounded, complete, faces, mask)
    assert_closed_solid(filling)
    assert filling.volume == pytest.approx(cap_volume_mm3(20.0, 3.0), rel=0.01)  # 537.2 mm3
    assert printability_report(filling)["bounding_box_mm"]["extent"][2] == pytest.approx(3.0, abs=0.05)


def test_wound_cut_by_the_mesh_border_is_closed_by_a_wall(dented_plane):
    complete, _, faces, _ = dented_plane
    shifted = complete - [14.0, 0.0, 0.0]  # the dent's axis now lies on the grid's border x = 0
    depth = spherical_dent_mm(shifted, 20.0, 3.0)
    wounded = complete.copy()
    wounded[:, 2] -= depth
    filling = extract_filling(wounded, complete, faces, depth > 0)
    assert_closed_solid(filling)
    assert filling.volume == pytest.approx(cap_volume_mm3(20.0, 3.0) / 2, rel=0.01)  # the border halves the cap


def test_prediction_sinking_into_the_wound_is_clamped_to_its_floor(dented_plane):
    complete, wounded, faces, mask = dented_plane
    sunk = complete.copy()
    sunk[:, 2] = -1.0  # below the wound floor wherever the dent is shallower than 1 mm
    filling = extract_filling(wounded, sunk, faces, mask)
    assert_closed_solid(filling)
    # inside the wound the top is max(-1, floor): at least the 2 mm cap below z = -1, at most the whole dent
    assert cap_volume_mm3(20.0, 2.0) * 0.99 < filling.volume < cap_volume_mm3(20.0, 3.0)
    assert filling.vertices[:, 2].max() <= 1e-6


@pytest.mark.parametrize("kind", WOUND_TYPES)
def test_filling_of_every_wound_type_is_closed_with_the_true_missing_volume(head_model, kind):
    complete = head_model.mean_mm.astype(np.float64)
    wound = make_wound(complete, head_model.faces, head_model, kind, np.random.default_rng(WOUND_TYPES.index(kind)))
    filling = extract_filling(wound.vertices_mm, complete, head_model.faces, wound.mask)
    assert_closed_solid(filling)
    assert printability_report(filling)["n_bodies"] == 1
    true_missing = (
        trimesh.Trimesh(complete, head_model.faces, process=False).volume
        - trimesh.Trimesh(wound.vertices_mm, head_model.faces, process=False).volume
    )
    assert true_missing > 100.0
    assert filling.volume == pytest.approx(true_missing, rel=0.05)
    # a prediction that is off by ~1 mm everywhere still gives a closed solid resting on the face
    noisy = complete + np.random.default_rng(1).normal(0.0, 1.0, complete.shape)
    assert_closed_solid(extract_filling(wound.vertices_mm, noisy, head_model.faces, wound.mask))


def test_ragged_masks_are_grown_to_a_clean_border_and_stay_manifold():
    model = toy_face_model(subdivisions=4)
    complete = model.mean_mm.astype(np.float64)
    normals = trimesh.Trimesh(complete, model.faces, process=False).vertex_normals
    rng = np.random.default_rng(0)
    for _ in range(25):
        near = np.linalg.norm(complete - complete[rng.integers(len(complete))], axis=1) < rng.uniform(10, 40)
        mask = near & (rng.random(len(complete)) < rng.uniform(0.2, 0.8))  # salt-and-pepper holes and pinches
        mask[np.argmax(near)] = True
        wounded = complete - (mask * rng.uniform(0.5, 8.0, len(complete)))[:, None] * normals
        grown = grow_wound_mask(model.faces, mask)
        assert (grown >= mask).all()
        filling = extract_filling(wounded, complete + rng.normal(0, 0.5, complete.shape), model.faces, mask)
        assert_closed_solid(filling)


def test_bad_input_is_refused(dented_plane):
    complete, wounded, faces, mask = dented_plane
    with pytest.raises(ValueError, match="empty"):
        extract_filling(wounded, complete, faces, np.zeros_like(mask))
    with pytest.raises(ValueError, match="must both be"):
        extract_filling(wounded[:-1], complete, faces, mask)
    with pytest.raises(ValueError, match="bool"):
        extract_filling(wounded, complete, faces, mask.astype(int))
    with pytest.raises(ValueError, match="outward"):
        extract_filling(wounded, complete, faces[:, ::-1], mask)
    with pytest.raises(ValueError, match="order"):
        extract_filling(complete, wounded, faces, mask)


def test_export_writes_stl_report_and_coloured_composites(dented_plane, tmp_path):
    complete, wounded, faces, mask = dented_plane
    filling = extract_filling(wounded, complete, faces, mask)
    paths = export_filling(tmp_path / "case" / "filling", filling, wounded, faces)
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == [
        "filling.json", "filling.stl", "filling_composite.glb", "filling_composite.ply"
    ]
    stl = trimesh.load(paths["stl"])  # an STL reader merges vertices by position
    assert stl.is_watertight and stl.is_winding_consistent
    assert stl.volume == pytest.approx(filling.volume, rel=1e-4)
    report = json.loads(paths["report"].read_text())
    assert report["watertight"] and report["volume_mm3"] == pytest.approx(filling.volume)
    ply = trimesh.load(paths["ply"], process=False)
    assert len(ply.vertices) == len(wounded) + len(filling.vertices)
    colours = {tuple(c) for c in np.asarray(ply.visual.vertex_colors)}
    assert colours == {FACE_RGBA, FILLING_RGBA}
    glb = trimesh.load(paths["glb"], force="mesh", process=False)
    assert np.ptp(glb.vertices[:, 0]) == pytest.approx(np.ptp(wounded[:, 0]) * 1e-3, rel=1e-5)  # metres


# --- eyeballs -----------------------------------------------------------------------------------


def test_eyeball_removal_on_the_flame_layout_gives_the_cir3d_topology(tmp_path):
    fields = synthetic_flame()
    path = tmp_path / "flame.npz"
    np.savez(path, v_template=fields["v_template"], shapedirs=fields["shapedirs"], f=fields["f"])
    with pytest.warns(UserWarning):
        full = flame_face_model(path, n_components=4, topology="full")
        cir3d = flame_face_model(path, n_components=4, topology="cir3d")
    vertices, faces, old_to_new = remove_eyeballs(full.mean_mm, full.faces, full)
    assert vertices.shape == (3933, 3) and faces.shape == (7862, 3)
    np.testing.assert_array_equal(faces, cir3d.faces)
    np.testing.assert_allclose(vertices, cir3d.mean_mm, atol=1e-4)
    assert (old_to_new[:3931] == np.arange(3931)).all() and (old_to_new[3931:] == -1).all()
    head = trimesh.Trimesh(vertices, faces, process=False)
    assert_closed_solid(head)
    assert len(trimesh.Trimesh(full.mean_mm, full.faces, process=False).split(only_watertight=False)) == 3


def test_eyeball_removal_closes_a_socket_cut_into_a_closed_head():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=80.0)
    eyes = [np.flatnonzero(sphere.vertices @ d / 80.0 > 0.97) for d in ([0.4, 0.3, 0.87], [-0.4, 0.3, 0.87])]
    eyeballs = np.concatenate([trimesh.creation.icosphere(subdivisions=2, radius=12.0).vertices + c for c in ([30, 20, 60], [-30, 20, 60])])
    ball_faces = trimesh.creation.icosphere(subdivisions=2).faces
    vertices = np.concatenate([sphere.vertices, eyeballs])
    n = len(sphere.vertices)
    faces = np.concatenate([sphere.faces, ball_faces + n, ball_faces + n + 162])
    # both eyeballs (separate spheres) and two head patches (sockets cut into the head) are removed
    removed = np.concatenate([*eyes, np.arange(n, n + 324)])
    new_vertices, new_faces, old_to_new = remove_eyeballs(vertices, faces, removed)
    head = trimesh.Trimesh(new_vertices, new_faces, process=False)
    assert_closed_solid(head)
    assert len(new_faces) == 2 * len(new_vertices) - 4  # a closed genus-0 surface
    assert len(new_vertices) == n - sum(len(e) for e in eyes) + 2  # one centre vertex per socket
    assert (old_to_new[removed] == -1).all()
    assert head.volume == pytest.approx(4 / 3 * np.pi * 80.0**3, rel=0.02)


def test_eyeball_removal_refuses_bad_indices():
    sphere = trimesh.creation.icosphere(subdivisions=1)
    with pytest.raises(ValueError, match="eyeball indices"):
        remove_eyeballs(sphere.vertices, sphere.faces, np.array([0, 1000]))
    with pytest.raises(ValueError, match="integer"):
        remove_eyeballs(sphere.vertices, sphere.faces, np.array([0.5]))


# --- printability -------------------------------------------------------------------------------


def test_printability_of_two_slabs():
    thin = trimesh.creation.box(extents=(10.0, 20.0, 0.5))
    thick = trimesh.creation.box(extents=(4.0, 4.0, 4.0))
    thick.apply_translation((30.0, 0.0, 0.0))
    report = printability_report(trimesh.util.concatenate([thin, thick]))
    json.dumps(report)
    assert report["watertight"] and report["edge_manifold"] and report["n_bodies"] == 2
    assert report["volume_mm3"] == pytest.approx(10 * 20 * 0.5 + 64)
    assert report["bounding_box_mm"]["extent"] == pytest.approx([37.0, 20.0, 4.0])
    assert report["min_thickness_mm"] == pytest.approx(0.5)
    assert report["thickness_percentiles_mm"]["p50"] == pytest.approx(4.0)


def test_printability_of_an_open_surface():
    vertices, faces = plane_grid(5.0, 1.0)
    report = printability_report(trimesh.Trimesh(vertices, faces, process=False))
    assert not report["watertight"] and not report["edge_manifold"]
    assert report["min_thickness_mm"] is None and report["volume_mm3"] == pytest.approx(0.0)
