"""Restoration on the wounded scan, on cases known by construction (toy face model: an ellipsoid head).

A known similarity is recovered; the robust fit ignores a carved dent that pulls a least-squares fit; the
dent is found as the wound; a remeshed, moved copy of the scan gives a watertight filling of the same
volume; bad scans get messages naming the file; restore.py writes every output.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from test_experiments import ROOT
from test_postprocess import plane_grid, spherical_dent_mm

from faceregen.data_layout import MANIFEST_FORMAT
from faceregen.evaluation.scan_to_mesh import Similarity, point_to_surface_distance_mm
from faceregen.mesh_io import vertex_normals
from faceregen.postprocess import extract_filling
from faceregen.restoration import CompletionSettings, IcpSettings, Restorer, read_scan, scan_from_arrays
from faceregen.restoration.registration import register, rotation_from_vector
from faceregen.restoration.wound_detection import WoundSettings, depth_below_surface, detect_wound
from faceregen.synthetic.wounds import make_wound

MOTION = Similarity(1.08, rotation_from_vector(np.array([0.9, -1.7, 0.6])), np.array([40.0, -25.0, 310.0]))
#: a metric scan moves rigidly
RIGID = Similarity(1.0, MOTION.rotation, MOTION.translation)


@pytest.fixture(scope="module")
def face_model():
    from face_models import toy_face_model

    return toy_face_model(subdivisions=4)


@pytest.fixture(scope="module")
def wounded(face_model):
    """(complete head, wound) of a known code with a left-cheek tissue loss."""
    rng = np.random.default_rng(3)
    code = rng.normal(size=face_model.n_components).astype(np.float32)
    complete = face_model.vertices_mm(code)
    return code, complete, make_wound(complete, face_model.faces, face_model, "tissue_loss_left_cheek", rng)


def restorer(face_model, **completion):
    """The restorer with the prior weights of the toy model (exact heads of a few components: weaker pulls than
    the defaults, set for the embedded model's heads with surface detail; the refit's, the scans' noise
    variance, is ~0 for these noise-free heads)."""
    return Restorer(face_model, CompletionSettings(**{"prior_weight_mm2": 2.0, "refit_prior_weight_mm2": 1e-3,
                                                      **completion}))


def remeshed(vertices, faces):
    """Another topology of the same surface: every triangle split in four."""
    mesh = trimesh.Trimesh(vertices, faces, process=False).subdivide()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def pose_error(found: Similarity, motion: Similarity) -> tuple[float, float, float]:
    """(rotation error deg, translation error mm, |scale - 1|) of ``found`` after ``motion`` vs identity."""
    residual = motion.then(found)
    angle = np.degrees(np.arccos(np.clip((np.trace(residual.rotation) - 1) / 2, -1, 1)))
    return float(angle), float(np.linalg.norm(residual.translation)), abs(residual.scale - 1.0)


def test_nearest_surface_points_equal_a_brute_force_search_over_every_triangle():
    """On a sphere mesh of mixed valence (5 and 6 triangles per vertex, so rings are padded), the matcher's
    nearest point, distance and triangle plane equal a search over all triangles."""
    import trimesh
    from scipy.spatial import cKDTree
    from trimesh.triangles import closest_point

    from faceregen.restoration.registration import TriangleSurface

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=50.0)
    vertices, faces = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    points = np.random.default_rng(0).normal(size=(500, 3))
    points = 50.0 * points / np.linalg.norm(points, axis=1, keepdims=True) * np.random.default_rng(1).uniform(0.9, 1.1, (500, 1))
    found = TriangleSurface(faces, len(vertices)).match(points, points, vertices, cKDTree(vertices), IcpSettings())
    corners = vertices[faces]
    every = closest_point(np.tile(corners, (len(points), 1, 1)), np.repeat(points, len(faces), axis=0))
    every = every.reshape(len(points), len(faces), 3)
    triangle = np.linalg.norm(every - points[:, None], axis=2).argmin(axis=1)
    closest = every[np.arange(len(points)), triangle]
    distance = np.linalg.norm(closest - points, axis=1)
    np.testing.assert_allclose(np.linalg.norm(found.closest - points, axis=1), distance, atol=1e-9)
    np.testing.assert_allclose(found.closest, closest, atol=1e-9)
    # the same plane where the nearest point lies inside a triangle; on an edge or a vertex the triangles
    # that share it are equally near (a tie either may win)
    inside = found.barycentric.min(axis=1) > 1e-9
    assert inside.mean() > 0.5
    outward = np.einsum("nc,nc->n", found.normal, sphere.face_normals[triangle])
    np.testing.assert_allclose(outward[inside], 1.0, atol=1e-9)
    plane = np.einsum("nc,nc->n", points - closest, sphere.face_normals[triangle])  # signed, outside positive
    np.testing.assert_allclose(found.residual[inside], plane[inside], atol=1e-9)
    face_index = {tuple(face): i for i, face in enumerate(faces.tolist())}
    found_face = np.array([face_index[tuple(corners)] for corners in found.corners.tolist()])
    nearest_distance = np.linalg.norm(every - points[:, None], axis=2)[np.arange(len(points)), found_face]
    np.testing.assert_allclose(nearest_distance, distance, atol=1e-9)  # the found triangle is a nearest one


def test_closest_on_triangles_hand_computed():
    """The right triangle (0,0,0), (4,0,0), (0,3,0): a point above the inside, beyond each edge and beyond a
    corner; a degenerate triangle (a segment) falls to its edges."""
    from faceregen.restoration.registration import closest_on_triangles

    triangle = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    points = np.array([[1.0, 1.0, 2.0],    # above the inside: height 2, at (1, 1, 0)
                       [2.0, -1.0, 0.0],   # beyond edge ab: 1, at (2, 0, 0)
                       [-2.0, 1.0, 1.0],   # beyond edge ac: sqrt(4 + 1), at (0, 1, 0)
                       [4.0, 3.0, 0.0],    # beyond the hypotenuse bc: 12/5 (its distance to the line 3x + 4y = 12)
                       [6.0, -1.0, 0.0]])  # beyond corner b: sqrt(4 + 1)
    squared, barycentric = closest_on_triangles(np.repeat(triangle[None], len(points), axis=0), points)
    np.testing.assert_allclose(squared, [4.0, 1.0, 5.0, (12 / 5) ** 2, 5.0], atol=1e-12)
    # the hypotenuse's foot: (4, 3) - 12/5 (3, 4)/5, 0.36 of the way from b to c
    np.testing.assert_allclose(barycentric @ triangle, [[1, 1, 0], [2, 0, 0], [0, 1, 0], [2.56, 1.08, 0], [4, 0, 0]],
                               atol=1e-12)
    np.testing.assert_allclose(barycentric.sum(axis=1), 1.0)
    segment = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    squared, barycentric = closest_on_triangles(segment[None], np.array([[1.0, 2.0, 0.0]]))
    np.testing.assert_allclose(squared, [4.0])
    np.testing.assert_allclose(barycentric @ segment, [[1.0, 0.0, 0.0]], atol=1e-12)


def test_tukey_weights_of_rows_are_each_rows_own():
    """Rows of residuals with a mask weigh as each row's valid residuals alone (an all-masked row: the floor);
    a hand-computed row: residuals 0, 1, 2, 3, 40 have median 2 and MAD 1, so sigma 1.4826 and the 40 drops."""
    from faceregen.restoration.registration import TUKEY_K, tukey_weights

    weights, sigma = tukey_weights(np.array([0.0, 1.0, 2.0, 3.0, 40.0]), 0.3)
    assert sigma == pytest.approx(1.4826)
    u = np.array([0.0, 1.0, 2.0, 3.0]) / (TUKEY_K * 1.4826)
    np.testing.assert_allclose(weights, np.r_[(1 - u**2) ** 2, 0.0])
    rng = np.random.default_rng(0)
    residuals, valid = rng.normal(size=(4, 30)), rng.random((4, 30)) > 0.3
    valid[3] = False
    rows, sigmas = tukey_weights(residuals, 0.3, valid)
    for row, mask, w, s in zip(residuals, valid, rows, sigmas):
        alone, alone_sigma = tukey_weights(row[mask], 0.3)
        np.testing.assert_array_equal(w[mask], alone)
        assert s == alone_sigma and not w[~mask].any()
    assert sigmas[3] == 0.3


def test_the_batched_search_steps_each_start_as_if_alone(face_model):
    """:func:`coarse_icp` steps every start at once: each start's pose and cost are those of the same ICP
    from that start alone; near the truth it converges onto the scan, turned round by 1.6 rad it does not."""
    from scipy.spatial import cKDTree

    from faceregen.restoration.registration import coarse_icp

    vertices, faces = face_model.mean_mm.astype(np.float64), face_model.faces
    points = MOTION.apply(vertices[::7])
    normals = vertex_normals(vertices, faces)
    point_normals = normals[::7] @ MOTION.rotation.T
    settings, tree, truth = IcpSettings(coarse_iterations=5), cKDTree(vertices), MOTION.inverse()
    starts = [truth.then(Similarity(1.0, rotation_from_vector(np.array(w)), np.array(shift)))  # about the model's origin
              for w, shift in (([0.3, 0.0, 0.0], [5.0, 0.0, 0.0]), ([0.0, -0.4, 0.2], [0.0, 8.0, -3.0]),
                               ([1.6, 0.0, 0.0], [0.0, 0.0, 0.0]), ([0.0, 1.6, 0.0], [30.0, 0.0, 0.0]))]
    batched = coarse_icp(points, point_normals, vertices, normals, starts, settings, tree)
    for start, (cost, pose) in zip(starts, batched):
        [(alone_cost, alone)] = coarse_icp(points, point_normals, vertices, normals, [start], settings, tree)
        np.testing.assert_allclose(pose.rotation, alone.rotation, atol=1e-9)
        np.testing.assert_allclose(pose.translation, alone.translation, atol=1e-7)
        assert cost == pytest.approx(alone_cost, rel=1e-9, abs=1e-12)
    assert max(cost for cost, _ in batched[:2]) < 1e-6 and min(cost for cost, _ in batched[2:]) > 1.0


@pytest.mark.parametrize("topology", ["face model", "remeshed"])
def test_registration_recovers_a_known_rigid_motion_and_scale(face_model, topology):
    vertices, faces = face_model.mean_mm.astype(np.float64), face_model.faces
    if topology == "remeshed":
        vertices, faces = remeshed(vertices, faces)
    scan = scan_from_arrays(MOTION.apply(vertices), faces, topology, "mm")
    registration = register(scan, face_model, settings=IcpSettings(with_scale=True))
    assert registration.method.startswith("face-model landmarks" if topology == "face model" else "multi-start")
    angle, shift, scale = pose_error(registration.pose, MOTION)
    assert angle < 0.2 and shift < 0.3 and scale < 2e-3, (angle, shift, scale)
    truth = MOTION.apply(face_model.landmarks.positions(face_model.mean_mm))
    assert np.abs(registration.landmarks_scan_mm - truth).max() < 0.5


def test_only_orientations_near_the_best_are_checked(face_model):
    """Of the search's kept orientations, those costing decisive_ratio times the best's or more never reach
    the shape check: a ratio between the second and third costs offers two; an infinite ratio offers every
    kept one; the default leaves this scan's best alone, taken without the check."""
    from scipy.spatial import cKDTree

    from faceregen.restoration.registration import scan_samples, search_poses, template_anchors

    vertices, faces = remeshed(face_model.mean_mm.astype(np.float64), face_model.faces)
    scan = scan_from_arrays(MOTION.apply(vertices), faces, "remeshed", "mm")
    template = face_model.mean_mm.astype(np.float64)
    _, points, normals = scan_samples(scan, 4000)
    costs = [cost for cost, _ in search_poses(points, normals, template, face_model.faces,
                                              template_anchors(face_model, template), IcpSettings(with_scale=True),
                                              cKDTree(template), 6)]
    assert costs == sorted(costs) and costs[1] >= 2.0 * costs[0]
    offered = {}
    for ratio in (np.inf, 0.5 * (costs[1] + costs[2]) / costs[0], 2.0):
        def first(poses, ratio=ratio):
            offered[ratio] = len(poses)
            return 0

        registration = register(scan, face_model, settings=IcpSettings(with_scale=True, decisive_ratio=ratio),
                                n_hypotheses=6, choose=first)
        assert pose_error(registration.pose, MOTION)[0] < 0.2
    assert list(offered.values()) == [6, 2]  # and the default ratio's single candidate skips the check
    assert registration.method.endswith("best taken, decisive) + ICP")


@pytest.mark.parametrize("costs, expected", [
    ([0.5, 9.0, 8.0, 7.0], (0, 2)),  # the right one first: decisive after the second fit
    ([9.0, 0.5, 8.0], (1, 2)),  # the right one second
    ([2.0, 3.9, 0.1, 5.0], (2, 3)),  # 3.9 < 2 x 2.0: on to 0.1, against which 2.0 is decisive
    ([4.0, 12.0, 11.0], (0, 3)),  # the best is not under accept_mm2: every one is fitted
    ([0.68, 0.65, 0.62, 0.73, 0.5], (4, 5)),  # orientations that fit about equally well: never decisive
    ([0.68, 0.65, 0.62, 0.73, 0.07, 0.07, 0.68], (4, 5)),  # the toy head's (the right one fifth)
    ([np.inf, 0.4, 1.0], (1, 2)),  # an orientation that left nothing to fit (inf) loses to any fit
    ([0.4, 0.7, 1.0, 2.0], (0, 4)),  # 0.4 against 0.7 is not decisive, and stays the least
])
def test_the_shape_check_stops_once_one_orientation_is_decisive(costs, expected):
    from faceregen.restoration.registration import least_cost_until_decisive

    drawn = []
    lazy = (drawn.append(c) or c for c in costs)
    assert least_cost_until_decisive(lazy, accept_mm2=3.0, decisive_ratio=2.0) == expected
    assert len(drawn) == expected[1]  # the later costs were never computed


def test_the_restorer_stops_its_shape_check_early_with_the_same_pose(face_model, monkeypatch):
    """All 6 kept orientations offered (decisive_ratio=inf for the search): with accept_fit_mm2=0 every one
    gets a short fit; with the default the check stops where the rule says on those costs, with the same
    pose."""
    from faceregen.restoration.completion import FaceModelFit
    from faceregen.restoration.registration import least_cost_until_decisive

    vertices, faces = remeshed(face_model.mean_mm.astype(np.float64), face_model.faces)
    scan = scan_from_arrays(RIGID.apply(vertices), faces, "remeshed", "mm")
    short_fits = []
    fit = FaceModelFit.fit

    def counted(self, *args, **kwargs):
        result = fit(self, *args, **kwargs)
        if kwargs.get("iterations") == 4:
            short_fits.append(result[4])
        return result

    monkeypatch.setattr(FaceModelFit, "fit", counted)
    poses, costs = {}, {}
    for accept in (0.0, 3.0):
        short_fits.clear()
        icp = IcpSettings(decisive_ratio=np.inf)
        restored = Restorer(face_model, icp=icp, n_hypotheses=6, accept_fit_mm2=accept, wound_refits=0)(scan)
        poses[accept], costs[accept] = restored.registration.pose, list(short_fits)
        assert pose_error(restored.registration.pose, RIGID)[0] < 0.2
    assert len(costs[0.0]) == 6
    stop = least_cost_until_decisive(costs[0.0], 3.0, np.inf)[1]
    assert costs[3.0] == costs[0.0][:stop]
    np.testing.assert_allclose(poses[3.0].rotation, poses[0.0].rotation, atol=1e-9)


def test_the_robust_fit_ignores_a_dent(face_model, wounded):
    code, complete, wound = wounded
    scan = scan_from_arrays(RIGID.apply(wound.vertices_mm), face_model.faces, "dented", "mm")
    errors = {}
    # a huge Tukey scale: every weight ~1; an infinite wound cutoff: no point is wound
    for name, floor, cutoff in (("robust", 0.3, 2.0), ("Tukey only", 0.3, np.inf), ("wound cutoff only", 1e4, 2.0),
                                ("least squares", 1e4, np.inf)):
        fit = Restorer(face_model, CompletionSettings(detail_smoothing=0.0, prior_weight_mm2=0.5, wound_cutoff_mm=cutoff),
                       IcpSettings(sigma_floor_mm=floor), wound_refits=0)(scan)
        restored = RIGID.inverse().apply(fit.completed_mm)
        errors[name] = np.linalg.norm(restored - complete, axis=1)[wound.mask].mean()
    assert max(errors["robust"], errors["Tukey only"], errors["wound cutoff only"]) < 0.1, errors
    assert errors["least squares"] > 4 * errors["robust"], errors


def test_the_refit_margin_is_the_given_masks_or_the_detected_ones(face_model, wounded, monkeypatch):
    """The refit leaves out the scan points within ``given_mask_margin_mm`` of a given mask's vertices, and
    within ``wound_margin_mm`` of a detected one's; 1 mm is less than the toy mesh's spacing, so a given
    mask's margin leaves out its own vertices and nothing else."""
    from scipy.spatial import cKDTree

    import faceregen.restoration.restorer as restorer_module
    from faceregen.restoration.completion import FaceModelFit

    _, _, wound = wounded
    scan = scan_from_arrays(wound.vertices_mm, face_model.faces, "dented", "mm")
    left_out, detected = [], []
    refit, detect = FaceModelFit.refit, restorer_module.detect_wound

    def recorded_refit(self, points, normals, completion, prior_code, iterations, excluded):
        left_out.append((points, excluded))
        return refit(self, points, normals, completion, prior_code, iterations, excluded)

    monkeypatch.setattr(FaceModelFit, "refit", recorded_refit)
    monkeypatch.setattr(restorer_module, "detect_wound", lambda *args: detected.append(detect(*args)) or detected[-1])
    for given_margin, detected_margin, given in ((1.0, 50.0, True), (6.0, 50.0, True), (50.0, 6.0, False)):
        left_out.clear(), detected.clear()
        Restorer(face_model, wound_margin_mm=detected_margin, given_mask_margin_mm=given_margin, wound_refits=1,
                 rim_refit_margin_mm=None)(scan, wound_mask=wound.mask if given else None)
        [(points, excluded)] = left_out
        mask = wound.mask if given else detected[0]
        assert mask.any()
        near_mm, _ = cKDTree(scan.vertices_mm[mask]).query(points)
        np.testing.assert_array_equal(excluded, near_mm < (given_margin if given else detected_margin))
        if given_margin == 1.0:
            wound_points = cKDTree(scan.vertices_mm[wound.mask]).query(points)[0] == 0
            np.testing.assert_array_equal(excluded, wound_points)
    with pytest.raises(ValueError, match="given_mask_margin_mm=-1.0: expected a distance >= 0 mm"):
        Restorer(face_model, given_mask_margin_mm=-1.0)


def test_the_last_refit_leaves_the_grown_wound_out(face_model, wounded, monkeypatch):
    """With ``rim_refit_margin_mm``, a detected wound grown over its rim is refitted around once more: the
    last refit leaves out the scan points within that margin of the grown wound (and of every vertex
    detected before), and the rim is grown again from the DETECTED wound over the new depths, which is the
    mask returned. A given mask gets no such refit."""
    from scipy.spatial import cKDTree

    import faceregen.restoration.restorer as restorer_module
    from faceregen.restoration.completion import FaceModelFit

    _, _, wound = wounded
    scan = scan_from_arrays(wound.vertices_mm, face_model.faces, "dented", "mm")
    left_out, detected, grown = [], [], []
    refit, detect, grow = FaceModelFit.refit, restorer_module.detect_wound, restorer_module.grow_into_rim

    def recorded_refit(self, points, normals, completion, prior_code, iterations, excluded):
        left_out.append((points, excluded))
        return refit(self, points, normals, completion, prior_code, iterations, excluded)

    def recorded_grow(vertices, faces, depth, mask, settings):
        grown.append((mask.copy(), grow(vertices, faces, depth, mask, settings)))
        return grown[-1][1]

    monkeypatch.setattr(FaceModelFit, "refit", recorded_refit)
    monkeypatch.setattr(restorer_module, "detect_wound", lambda *args: detected.append(detect(*args)) or detected[-1])
    monkeypatch.setattr(restorer_module, "grow_into_rim", recorded_grow)
    # the test needs a rim beyond the detected wound: the toy head (four smooth modes) leaves one with a refit
    # pull of 0.1 mm^2; at the default 0.03 its rim growth adds nothing past the detected wound
    settings = CompletionSettings(refit_prior_weight_mm2=0.1)
    result = Restorer(face_model, settings, wound_refits=1, rim_refit_margin_mm=3.0)(scan)
    assert len(left_out) == 2 and len(grown) == 2
    (points, excluded) = left_out[1]
    first_grown = grown[0][1]
    assert (first_grown & ~detected[-1]).any()  # the rim grew past the detected wound
    near_mm, _ = cKDTree(scan.vertices_mm[first_grown | detected[0] | detected[1]]).query(points)
    np.testing.assert_array_equal(excluded, near_mm < 3.0)
    np.testing.assert_array_equal(grown[1][0], detected[-1])  # grown again from the detected wound
    np.testing.assert_array_equal(result.mask, grown[1][1])
    left_out.clear()
    Restorer(face_model, wound_refits=1, rim_refit_margin_mm=3.0)(scan, wound_mask=wound.mask)
    assert len(left_out) == 1
    with pytest.raises(ValueError, match="rim_refit_margin_mm=-1.0: expected a distance >= 0 mm"):
        Restorer(face_model, rim_refit_margin_mm=-1.0)


def test_the_refit_leaves_the_given_wound_out(face_model, wounded):
    """A least-squares fit follows the dent; refitted without the (given) wound it restores the face."""
    _, complete, wound = wounded
    scan = scan_from_arrays(wound.vertices_mm, face_model.faces, "dented", "mm")
    errors = {}
    for refits in (0, 1):
        fit = Restorer(face_model, CompletionSettings(detail_smoothing=0.0, refit_detail_smoothing=0.0, prior_weight_mm2=0.5,
                                                      wound_cutoff_mm=np.inf),
                       IcpSettings(sigma_floor_mm=1e4), wound_refits=refits)(scan, wound_mask=wound.mask)
        errors[refits] = np.linalg.norm(fit.completed_mm - complete, axis=1)[wound.mask].mean()
    assert errors[1] < 0.1 and errors[0] > 4 * errors[1], errors


def test_the_refit_fits_code_pose_and_detail_together(face_model):
    """Refitted with the detail layer, a moved head of known code comes back exactly, and a skin the model
    cannot express (a smooth bump pattern, 0.5 mm RMS) is followed on the intact face; without the layer the
    same refit leaves that skin as residual. The code's pull toward the mean is weak here (1e-3 mm^2): the
    toy model's modes are as smooth as the detail layer's cheapest fields, and a stronger pull hands part of
    them to the detail."""
    rng = np.random.default_rng(5)
    code = rng.normal(size=face_model.n_components)
    complete = face_model.vertices_mm(code).astype(np.float64)
    x, y, _ = face_model.mean_mm.T.astype(np.float64)
    skin = complete + (np.cos(x / 12.0) * np.cos(y / 15.0))[:, None] * vertex_normals(complete, face_model.faces)
    wound = make_wound(skin.astype(np.float32), face_model.faces, face_model, "tissue_loss_left_cheek", rng)
    intact = np.flatnonzero((face_model.mean_mm[:, 2] > 40.0) & ~wound.mask)  # the front of the face
    for head, truth, smoothing in ((complete, complete, 1.0), (wound.vertices_mm, skin, 1.0), (wound.vertices_mm, skin, 0.0)):
        scan = scan_from_arrays(RIGID.apply(head), face_model.faces, "known", "mm")
        fit = Restorer(face_model, CompletionSettings(prior_weight_mm2=0.1, refit_prior_weight_mm2=1e-3,
                                                      refit_detail_smoothing=smoothing),
                       wound_refits=1)(scan, wound_mask=wound.mask)
        errors_mm = point_to_surface_distance_mm(RIGID.apply(truth[intact]), fit.completed_mm, face_model.faces)
        intact_rms_mm = np.sqrt(np.mean(errors_mm**2))
        assert (intact_rms_mm < 0.05) if smoothing else (intact_rms_mm > 0.3), (smoothing, intact_rms_mm)
        if head is complete:
            angle_deg, shift_mm, _ = pose_error(fit.completion.pose, RIGID)
            assert angle_deg < 0.05 and shift_mm < 0.1, (angle_deg, shift_mm)
            np.testing.assert_allclose(fit.completion.code, code, atol=0.02)

def test_the_refits_fit_more_of_the_code_than_the_first_fit(face_model):
    """The first fit finds the wound with the code's first ``n_components``; the refits fit the first
    ``refit_n_components``. A head whose code fills all of the toy model's components comes back exactly
    (code and intact surface) when the refits fit them all, and not when they fit as few as the first fit
    (the rest stays 0, and the surface misses it by about a millimetre). No detail layer here, so only the
    code can take the shape up."""
    rng = np.random.default_rng(11)
    code = rng.normal(size=face_model.n_components)
    complete = face_model.vertices_mm(code).astype(np.float64)
    wound = make_wound(complete.astype(np.float32), face_model.faces, face_model, "tissue_loss_left_cheek", rng)
    intact = np.flatnonzero((face_model.mean_mm[:, 2] > 40.0) & ~wound.mask)
    scan = scan_from_arrays(RIGID.apply(wound.vertices_mm), face_model.faces, "known", "mm")
    few = face_model.n_components - 3
    for refit_n_components in (face_model.n_components, few):
        settings = CompletionSettings(n_components=few, refit_n_components=refit_n_components, prior_weight_mm2=1e-3,
                                      detail_smoothing=0.0, refit_detail_smoothing=0.0)
        fit = Restorer(face_model, settings, wound_refits=1, refit_iterations=4)(scan, wound_mask=wound.mask)
        errors_mm = point_to_surface_distance_mm(RIGID.apply(complete[intact]), fit.completed_mm, face_model.faces)
        intact_rms_mm = np.sqrt(np.mean(errors_mm**2))
        if refit_n_components == face_model.n_components:
            np.testing.assert_allclose(fit.completion.code, code, atol=0.02)
            assert intact_rms_mm < 0.02, intact_rms_mm
        else:
            assert not fit.completion.code[few:].any()
            assert intact_rms_mm > 0.3, intact_rms_mm


def test_wound_detected_on_a_known_dent(face_model, wounded):
    _, complete, wound = wounded
    depth = depth_below_surface(wound.vertices_mm.astype(np.float64), complete, face_model.faces)
    assert np.abs(depth.depth_mm[~wound.mask]).max() < 1e-3
    found = detect_wound(wound.vertices_mm, face_model.faces, depth.depth_mm, sigma_mm=0.0)
    assert not (found & ~wound.mask).any() and found[wound.depth_mm > 0.5].all()
    scan = scan_from_arrays(wound.vertices_mm, face_model.faces, "dented", "mm")
    detected = restorer(face_model)(scan).mask  # the same, from the fit alone
    assert (detected & wound.mask).sum() / (detected | wound.mask).sum() > 0.8
    assert detected[wound.depth_mm > 1.0].all()


def test_a_wound_facing_away_from_an_unnamed_surface_is_on_the_face(face_model):
    """The regions leave some surfaces unnamed (the toy head's sides; Anny's mouth cavity, inside the head).
    A scan vertex on such a surface (facing its way) is off the face; at the same place facing the other way,
    as the floor of a wound carved in from the face does, it is on the face when its nearest named vertex is
    the face's (by the nearest vertex alone it was not, and deep scars beside the mouth went undetected)."""
    from scipy.spatial import cKDTree

    fitter = restorer(face_model)
    template = face_model.mean_mm.astype(np.float64)
    normals = vertex_normals(template, face_model.faces)
    unnamed = np.flatnonzero(~fitter.named)
    face = face_model.regions["face"]
    beside_face = unnamed[np.argmin(cKDTree(template[face]).query(template[unnamed])[0])]
    front = face[np.argmax(template[face, 2])]

    def triangle(centre, normal):
        """A 1 mm triangle at ``centre`` whose normal is ``normal``."""
        u = np.cross(normal, [0.0, 1.0, 0.0] if abs(normal[1]) < 0.9 else [1.0, 0.0, 0.0])
        u /= np.linalg.norm(u)
        v = np.cross(normal, u)
        return centre + 0.5 * np.stack([u, -0.5 * u + 0.87 * v, -0.5 * u - 0.87 * v])

    n = normals[beside_face]
    corners = [triangle(template[front], normals[front]), triangle(template[beside_face], n),
               triangle(template[beside_face] - 0.5 * n, -n)]
    scan = scan_from_arrays(np.concatenate(corners), np.arange(9).reshape(3, 3), "three triangles", "mm")
    np.testing.assert_allclose(vertex_normals(scan.vertices_mm, scan.faces)[[0, 3, 6]], [normals[front], n, -n],
                               atol=1e-9)
    identity = Similarity(1.0, np.eye(3), np.zeros(3))
    facial = fitter.facial(scan, identity, None).reshape(3, 3)
    assert facial.tolist() == [[True] * 3, [False] * 3, [True] * 3]


def test_a_shallow_dent_is_the_wound_only_when_no_region_reaches_the_threshold():
    plane, faces = plane_grid(30.0, 1.0)
    dent = lambda x_mm, depth: spherical_dent_mm(plane - [x_mm, 0.0, 0.0], 20.0, depth)  # noqa: E731
    shallow, shallower, deep = dent(15.0, 2.5), dent(-15.0, 2.2), dent(-15.0, 4.0)  # radii 9.7, 8.8, 12 mm
    scan = plane.copy()
    found = lambda depth, **settings: detect_wound(scan, faces, depth, 0.0, WoundSettings(**settings))  # noqa: E731
    assert np.array_equal(found(shallow), shallow > 0.2)  # the default fallback: 2 mm
    assert not found(shallow, fallback_threshold_mm=None).any() and not found(shallow, fallback_threshold_mm=2.6).any()
    assert np.array_equal(found(shallow + deep), deep > 0.2)  # a region reaches 3 mm: no fallback
    assert np.array_equal(found(shallow + shallower), shallow > 0.2)  # the deepest region only


def test_the_wound_grows_over_its_shallow_rim_and_no_further():
    """On a plane: a wound of radius 4 mm, a shallow rim (0.5 mm) out to 10 mm, intact skin (0 mm) to 12.5 mm,
    then a shallow ring (0.5 mm) again to 13.5 mm, within reach (10 mm) but not connected: the grown mask is
    the disc of radius 10 mm."""
    from faceregen.restoration.wound_detection import grow_into_rim

    plane, faces = plane_grid(30.0, 1.0)
    radius = np.linalg.norm(plane[:, :2], axis=1)
    wound = radius <= 4.0
    depth = np.where(wound, 3.0, np.where((radius <= 10.0) | ((radius > 12.5) & (radius <= 13.5)), 0.5, 0.0))
    grown = grow_into_rim(plane, faces, depth, wound)
    np.testing.assert_array_equal(grown, radius <= 10.0)
    near = grow_into_rim(plane, faces, depth, wound, WoundSettings(rim_mm=3.0))  # reach: 3 mm from the wound
    assert near.sum() < grown.sum()
    to_wound_mm = np.linalg.norm(plane[:, None, :2] - plane[None, wound, :2], axis=2).min(axis=1)
    np.testing.assert_array_equal(near, to_wound_mm < 3.0)
    assert np.array_equal(grow_into_rim(plane, faces, depth, wound, WoundSettings(rim_mm=0.0)), wound)
    assert np.array_equal(grow_into_rim(plane, faces, depth, wound, WoundSettings(rim_floor_mm=0.6)), wound)
    at_the_end = np.abs(plane[:, :2]).max(axis=1) >= 29.0  # a rim reaching the scan's end stops short of it
    wide = grow_into_rim(plane, faces, np.where(wound, 3.0, 0.5), wound, WoundSettings(rim_mm=40.0))
    np.testing.assert_array_equal(wide, ~at_the_end)



def test_the_rims_floor_rises_with_the_depths_scatter_outside_the_wound():
    """The same plane with 0.1 mm of Gaussian scatter on the intact skin beyond the rim: the robust scale of the
    depth is 0.1 mm, the rim's floor rises from 0.15 to 3 x that, the rim (0.5 mm) still comes in and none of
    the scatter does; a fixed floor of 0.15 mm (``rim_sigmas=0``) grows into it."""
    from faceregen.restoration.wound_detection import depth_scale_mm, grow_into_rim

    plane, faces = plane_grid(30.0, 1.0)
    radius = np.linalg.norm(plane[:, :2], axis=1)
    wound = radius <= 4.0
    scatter = np.random.default_rng(0).normal(0.0, 0.1, len(plane))
    assert abs(depth_scale_mm(scatter) - 0.1) < 0.005
    assert depth_scale_mm(np.array([0.0, 0.0, 0.0, 5.0])) == 0.0  # an outlier does not move it
    depth = np.where(wound, 3.0, np.where(radius <= 10.0, 0.5, scatter))
    np.testing.assert_array_equal(grow_into_rim(plane, faces, depth, wound), radius <= 10.0)
    fixed = grow_into_rim(plane, faces, depth, wound, WoundSettings(rim_sigmas=0.0))
    assert fixed[radius <= 10.0].all() and fixed[radius > 10.0].any()

def test_a_remeshed_scan_gives_a_watertight_filling_of_the_same_volume(face_model, wounded):
    _, complete, wound = wounded
    true_volume = extract_filling(wound.vertices_mm, complete, face_model.faces, wound.mask).volume
    same = restorer(face_model)(scan_from_arrays(wound.vertices_mm, face_model.faces, "same", "mm"))
    vertices, faces = remeshed(wound.vertices_mm, face_model.faces)
    other = restorer(face_model)(scan_from_arrays(RIGID.apply(vertices) / 1000.0, faces, "remeshed", "m"))
    assert other.registration.method.startswith("multi-start") and other.scan.units == "m"
    for result in (same, other):
        assert result.filling is not None and result.filling.is_watertight and result.filling.is_winding_consistent
    volumes = same.filling.volume, other.filling.volume
    assert abs(volumes[1] - volumes[0]) < 0.05 * volumes[0] and abs(volumes[0] - true_volume) < 0.05 * true_volume


def write_obj(path, vertices, faces):
    path.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in vertices) + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces))
    return path


def test_each_bad_scan_gives_its_message(face_model, tmp_path):
    head = face_model.mean_mm.astype(np.float64)
    (tmp_path / "empty.obj").write_text("# nothing\n")
    write_obj(tmp_path / "fin.obj", np.r_[head, [[0.0, 0.0, 200.0]]],
                    np.r_[face_model.faces, [[*face_model.faces[0][:2], len(head)]]])
    tiny = write_obj(tmp_path / "tiny.obj", head / 100.0, face_model.faces)
    plate = trimesh.creation.box(extents=(300.0, 300.0, 4.0)).subdivide().subdivide()
    write_obj(tmp_path / "plate.obj", plate.vertices, plate.faces)
    (tmp_path / "notes.stl").write_text("solid nothing\nendsolid nothing\n")
    (tmp_path / "scan.xyz").write_text("1 2 3\n")
    cases = {"empty.obj": "empty", "fin.obj": "shared by more than two triangles", "notes.stl": "empty",
             "tiny.obj": "neither in millimetres nor in metres", "scan.xyz": "unsupported scan format",
             "missing.ply": "scan file not found"}
    for name, message in cases.items():
        with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
            read_scan(tmp_path / name)
        assert str(tmp_path / name) in str(error.value)
    with pytest.raises(ValueError, match=r"tiny.obj: .* units='mm'.*wrong units"):
        read_scan(tiny, units="mm")
    with pytest.raises(ValueError, match="plate.obj: after registration only .* not a face, or no overlap"):
        register(read_scan(tmp_path / "plate.obj"), face_model)
    with pytest.raises(ValueError, match="nan.obj: 1 vertices have non-finite"):
        scan_from_arrays(np.r_[head[:-1], [[np.nan, 0, 0]]], face_model.faces, "nan.obj")
    metres = read_scan(write_obj(tmp_path / "metres.obj", head / 1000.0, face_model.faces))
    assert metres.units == "m" and np.allclose(metres.vertices_mm, head, atol=1e-3)


def run_restore(*overrides):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, str(ROOT / "restore.py"), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_restore_cli_writes_every_output_in_the_scans_frame_and_units(face_model, wounded, tmp_path):
    _, complete, wound = wounded
    vertices, faces = remeshed(wound.vertices_mm, face_model.faces)
    scan = tmp_path / "scan.stl"
    trimesh.Trimesh(RIGID.apply(vertices) / 1000.0, faces, process=False).export(scan)
    out = tmp_path / "out"
    result = run_restore(f"scan={scan}", f"hydra.run.dir={out}", "~face_model",
                         "+face_model._target_=face_models.toy_face_model", "+face_model.subdivisions=4")
    assert result.returncode == 0, result.stderr[-3000:]
    names = {"completed.ply", "completed.obj", "wound_mask.npy", "scan_wound.ply", "filling.stl", "filling.json",
             "filling_composite.ply", "filling_composite.glb", "restoration.json", "summary.png"}
    assert names <= {p.name for p in out.iterdir()}
    report = json.loads((out / "restoration.json").read_text())
    printability = json.loads((out / "filling.json").read_text())
    assert report["scan_units"] == "m" and printability["watertight"] and printability["edge_manifold"]
    stl = trimesh.load(out / "filling.stl")
    assert np.allclose(stl.volume * 1e9, report["filling"]["volume_mm3"], rtol=1e-3)  # metres, as the scan
    assert report["filling"]["lift"] == "rays"  # along the wound's direction (a cheek: a height field)
    wounded_part = RIGID.apply(wound.vertices_mm[wound.mask]) / 1000.0
    assert np.linalg.norm(stl.vertices.mean(axis=0) - wounded_part.mean(axis=0)) < 0.01  # on the wound, in the scan's frame
    bad = run_restore(f"scan={tmp_path / 'missing.obj'}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and f"{tmp_path / 'missing.obj'}: scan file not found" in bad.stderr
    intact = tmp_path / "intact.ply"  # no wound to find: the message says how to give one
    trimesh.Trimesh(complete, face_model.faces, process=False).export(intact)
    unfound = run_restore(f"scan={intact}", f"hydra.run.dir={tmp_path / 'intact'}", "~face_model",
                          "+face_model._target_=face_models.toy_face_model", "+face_model.subdivisions=4")
    assert unfound.returncode != 0 and f"{intact}: no filling: the wound mask is empty" in unfound.stderr
    assert "pass it as wound_mask=<file.npz>" in unfound.stderr


def test_evaluation_rows_on_a_known_case(face_model, wounded):
    """The scan fit recovers the toy case in every scan variant; the image rows use the given code."""
    from faceregen.evaluation import restoration as measure

    code, complete, wound = wounded
    case = measure.Case("toy_0", "tissue_loss_left_cheek", wound.vertices_mm.astype(np.float64),
                        complete.astype(np.float64), face_model.faces, wound.mask, image_code=code)
    rows = [measure.evaluate_case(restorer(face_model), case, method, variant)
            for variant in ("clean", "moved", "metres") for method in ("scan_fit", "image_similarity", "image_only")]
    for row in rows:
        assert row["error"] == "" and row["built"] and row["watertight"], row
        assert row["wound_rmse_mm"] < 0.1 and abs(row["volume_error"]) < 0.05 and row["iou"] > 0.7, row
    summary = measure.summary_rows(rows)
    assert {(r["method"], r["variant"]) for r in summary if r["wound_type"] == "all"} == {
        (m, v) for v in ("clean", "moved", "metres") for m in ("scan_fit", "image_similarity", "image_only")}
    assert "| scan_fit | moved | 1 |" in measure.markdown_table(summary, "toy")
    with pytest.raises(ValueError, match="toy_0: method 'scan_fit_image_prior' needs the image's predicted code"):
        measure.evaluate_case(restorer(face_model), dataclasses.replace(case, image_code=None), "scan_fit_image_prior", "clean")


def test_a_subset_of_cases_holds_every_wound_type(tmp_path):
    """``max_cases`` thins each wound type evenly, so a small evaluation still sees every type."""
    from faceregen.evaluation import restoration as measure

    solid = trimesh.creation.icosphere(subdivisions=0)
    samples = []
    for i, wound_type in enumerate(["long_scar"] * 6 + ["circle_scar"] * 2 + ["tissue_loss_chin"] * 2):
        mesh = write_obj(tmp_path / f"s{i}.obj", solid.vertices, solid.faces)
        np.savez(tmp_path / f"s{i}.npz", mask=np.zeros(len(solid.vertices), bool), wound_type=wound_type)
        samples.append({"sample": f"s{i}", "identity": f"id{i}", "group": "synthetic", "label": mesh.name,
                        "imperfect": mesh.name, "wound": f"s{i}.npz", "images": [f"s{i}.png"]})
    (tmp_path / "manifest.json").write_text(json.dumps({"format": MANIFEST_FORMAT, "samples": samples}))
    cases = measure.read_cases(tmp_path, None, max_cases=6)
    assert [c.sample for c in cases] == ["s0", "s5", "s6", "s7", "s8", "s9"]
    assert len(measure.read_cases(tmp_path, {"id0", "id6"}, max_cases=6)) == 2
