"""FLAME source and restricted unpickling, on a synthetic FLAME-format model (tests/flame_fixture.py)."""

import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
import trimesh

from faceregen.face_model import FIVE_POINT_NAMES, REGION_NAMES, LinearFaceModel
from faceregen.face_model.flame_source import (
    FLAME_N_HEAD_VERTICES,
    flame_face_model,
    load_flame_arrays,
    load_landmark_embedding,
)
from faceregen.face_model.safe_pickle import ChumpyStandIn, load_restricted_pickle, to_numpy
from faceregen.mesh_topology import append_loop_centres, boundary_loops
from flame_fixture import (
    LEFT_MOUTH_CORNER,
    NOSE_TIP,
    RIGHT_MOUTH_CORNER,
    synthetic_flame,
    write_flame_pickle,
    write_pickle,
)

K = 10


@pytest.fixture(scope="module")
def flame(tmp_path_factory):
    """Paths and fields of a synthetic FLAME: model pickle, masks pickle, DECA-style landmark embedding."""
    root = tmp_path_factory.mktemp("flame")
    fields = synthetic_flame(seed=0)
    v_mm = fields["v_template"] * 1000
    head = np.arange(FLAME_N_HEAD_VERTICES)
    masks = {
        "face": head[v_mm[head, 2] > 30],
        "eye_region": head[np.abs(v_mm[head, 1] - 23) < 15],
        "left_eye_region": head[(np.abs(v_mm[head, 1] - 23) < 15) & (v_mm[head, 0] > 0)],
        "right_eye_region": head[(np.abs(v_mm[head, 1] - 23) < 15) & (v_mm[head, 0] < 0)],
        "left_eyeball": np.arange(3931, 4477),
        "right_eyeball": np.arange(4477, 5023),
        "left_ear": head[v_mm[head, 0] > 70],
        "right_ear": head[v_mm[head, 0] < -70],
        "nose": head[np.linalg.norm(v_mm[head] - v_mm[NOSE_TIP], axis=1) < 20],
        "lips": head[np.linalg.norm(v_mm[head] - [0, -47, 81], axis=1) < 30],
        "forehead": head[(v_mm[head, 1] > 50) & (v_mm[head, 2] > 30)],
        "scalp": head[v_mm[head, 1] > 80],
        "neck": head[v_mm[head, 1] < -90],
        "boundary": head[v_mm[head, 1] < -100],
    }
    faces = fields["f"].astype(np.int64)
    head_faces = np.flatnonzero((faces < FLAME_N_HEAD_VERTICES).all(axis=1))
    lmk_faces = np.random.default_rng(1).choice(head_faces, 68, replace=False)
    lmk_faces[[30, 48, 54]] = [
        head_faces[(faces[head_faces] == v).any(axis=1)][0] for v in (NOSE_TIP, RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER)
    ]
    bary = np.random.default_rng(2).dirichlet([1, 1, 1], 68)
    embedding = {
        "static_lmk_faces_idx": lmk_faces[17:],
        "static_lmk_bary_coords": bary[17:],
        "dynamic_lmk_faces_idx": torch.zeros(79, 17, dtype=torch.int64),  # DECA stores these as torch tensors
        "dynamic_lmk_bary_coords": torch.zeros(79, 17, 3),
        "full_lmk_faces_idx": lmk_faces[None],
        "full_lmk_bary_coords": bary[None].astype(np.float32),
    }
    np.save(root / "landmark_embedding.npy", np.array(embedding, dtype=object), allow_pickle=True)
    return {
        "fields": fields,
        "masks": masks,
        "lmk_faces": lmk_faces,
        "bary": bary,
        "model": write_flame_pickle(root / "generic_model.pkl", fields),
        "masks_path": write_pickle(root / "FLAME_masks.pkl", masks),
        "embedding_path": root / "landmark_embedding.npy",
        "root": root,
    }


@pytest.fixture(scope="module")
def full(flame):
    return flame_face_model(flame["model"], flame["masks_path"], K, "full", flame["embedding_path"])


@pytest.fixture(scope="module")
def cir3d(flame):
    return flame_face_model(flame["model"], flame["masks_path"], K, "cir3d", flame["embedding_path"])


def test_pickle_references_chumpy_and_loads_without_it(flame):
    data = flame["model"].read_bytes()
    assert b"chumpy.ch\nCh" in data and b"numpy.core.multiarray" in data and b"scipy.sparse.csc\ncsc_matrix" in data
    assert "chumpy" not in sys.modules
    model = load_restricted_pickle(flame["model"])
    assert "chumpy" not in sys.modules
    assert isinstance(model["shapedirs"], ChumpyStandIn)
    assert model["shapedirs"].chumpy_class == "chumpy.ch.Ch"
    np.testing.assert_array_equal(to_numpy(model["shapedirs"]), flame["fields"]["shapedirs"])
    np.testing.assert_array_equal(model["J_regressor"].toarray(), flame["fields"]["J_regressor"].toarray())
    assert model["f"].dtype == np.uint32 and model["bs_style"] == "lbs"


@pytest.mark.parametrize("protocol", [0, 1])
def test_python2_text_protocol_pickles_of_chumpy_load(flame, tmp_path, protocol):
    """Protocols 0 and 1 write a chumpy Ch and a sparse matrix as ``copy_reg._reconstructor(cls, object, None)``
    + their state."""
    path = write_flame_pickle(tmp_path / "generic_model.pkl", flame["fields"], protocol=protocol)
    data = path.read_bytes()
    assert b"ccopy_reg\n_reconstructor" in data and b"chumpy.ch\nCh" in data and b"c__builtin__\nobject" in data
    model = load_restricted_pickle(path)
    assert type(model["shapedirs"]).__mro__[1] is ChumpyStandIn
    np.testing.assert_array_equal(to_numpy(model["shapedirs"]), flame["fields"]["shapedirs"])
    np.testing.assert_array_equal(model["J_regressor"].toarray(), flame["fields"]["J_regressor"].toarray())


@pytest.mark.parametrize(
    "arguments, refused",
    [
        (b"cnumpy\nndarray\nc__builtin__\nobject\nN", "'ndarray', 'object', None"),  # not a chumpy class
        (b"cchumpy.ch\nCh\nc__builtin__\nset\nN", "'Ch', 'set', None"),  # another base
        (b"cchumpy.ch\nCh\nc__builtin__\nobject\nI1\n", "'Ch', 'object', 1"),  # a base state
    ],
)
def test_copy_reg_reconstructor_is_allowed_for_chumpy_stand_ins_only(tmp_path, arguments, refused):
    path = tmp_path / "odd.pkl"
    path.write_bytes(b"ccopy_reg\n_reconstructor\n(" + arguments + b"tR.")
    with pytest.raises(pickle.UnpicklingError, match=rf"odd.pkl: refused copy_reg._reconstructor\({refused}\)"):
        load_restricted_pickle(path)


def test_unreadable_pickles_are_named(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"\x80\x02}q\x00Xzz")  # a truncated protocol-2 dict
    with pytest.raises(pickle.UnpicklingError, match="garbage.pkl: "):
        load_restricted_pickle(path)
    path.write_bytes(b"\xffnot a pickle")  # pickle's own UnpicklingError (invalid load key)
    with pytest.raises(pickle.UnpicklingError, match="garbage.pkl: invalid load key"):
        load_restricted_pickle(path)


def test_full_model_is_flame_in_millimetres(flame, full):
    fields = flame["fields"]
    assert full.name == "flame2020" and full.info["topology"] == "full"
    assert full.mean_mm.shape == (5023, 3) and full.basis_mm.shape == (5023, 3, K) and full.faces.shape == (9976, 3)
    np.testing.assert_allclose(full.mean_mm, fields["v_template"] * 1000, atol=1e-4)
    np.testing.assert_allclose(full.basis_mm, fields["shapedirs"][:, :, :K] * 1000, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(full.faces, fields["f"].astype(np.int64))
    z = np.random.default_rng(3).normal(size=K)
    expected = (fields["v_template"] + fields["shapedirs"][:, :, :K] @ z) * 1000
    np.testing.assert_allclose(full.vertices_mm(z), expected, atol=1e-3)


def test_regions_come_from_the_masks_file(flame, full):
    assert set(full.regions) == set(REGION_NAMES)
    for name in REGION_NAMES:
        np.testing.assert_array_equal(full.regions[name], np.sort(flame["masks"][name]))
    assert full.mean_mm[full.regions["left_eyeball"], 0].mean() > 0


def test_landmarks_from_the_embedding(flame, full):
    names = full.landmarks.names
    assert names[:5] == FIVE_POINT_NAMES and names[5:] == tuple(f"ibug_{i:02d}" for i in range(68))
    triangles = full.mean_mm[full.faces[flame["lmk_faces"]]]
    expected = np.einsum("lkc,lk->lc", triangles, flame["bary"])
    np.testing.assert_allclose(full.landmarks.positions(full.mean_mm, names[5:]), expected, atol=1e-3)
    five = full.landmarks.positions(full.mean_mm, FIVE_POINT_NAMES)
    np.testing.assert_allclose(five[2:], expected[[30, 48, 54]], atol=1e-3)
    # Eye centres: eyeball means; the subject's right eye is at x < 0.
    np.testing.assert_allclose(five[0], full.mean_mm[4477:].mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(five[1], full.mean_mm[3931:4477].mean(axis=0), atol=1e-3)
    assert five[0, 0] < 0 < five[1, 0] and five[3, 0] < 0 < five[4, 0]


def test_landmark_constants_without_embedding_and_derived_regions(flame):
    with pytest.warns(UserWarning, match="left_ear, right_ear, forehead, scalp, neck are empty"):
        model = flame_face_model(flame["model"], n_components=K)
    mean = model.mean_mm
    assert model.landmarks.names == FIVE_POINT_NAMES
    five = model.landmarks.positions(mean)
    np.testing.assert_allclose(five[2:], mean[[NOSE_TIP, RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER]], atol=1e-4)
    # The constants agree with the geometry: most forward head vertex, mouth corners on their sides.
    assert np.argmax(mean[:FLAME_N_HEAD_VERTICES, 2]) == NOSE_TIP
    assert mean[RIGHT_MOUTH_CORNER, 0] < 0 < mean[LEFT_MOUTH_CORNER, 0]
    regions = model.regions
    np.testing.assert_array_equal(regions["left_eyeball"], np.arange(3931, 4477))
    for name in ("left_ear", "right_ear", "forehead", "scalp", "neck"):
        assert regions[name].size == 0
    assert NOSE_TIP in regions["face"] and NOSE_TIP in regions["nose"] and LEFT_MOUTH_CORNER in regions["lips"]
    assert regions["face"].max() < FLAME_N_HEAD_VERTICES and not np.isin(regions["nose"], regions["lips"]).all()
    assert "derived" in model.info["regions"]


def test_eyeball_sides_come_from_the_geometry(tmp_path):
    path = write_flame_pickle(tmp_path / "swapped.pkl", synthetic_flame(seed=0, swap_eyeballs=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = flame_face_model(path, n_components=2)
    np.testing.assert_array_equal(model.regions["left_eyeball"], np.arange(4477, 5023))
    np.testing.assert_array_equal(model.regions["right_eyeball"], np.arange(3931, 4477))
    left_eye = model.landmarks.positions(model.mean_mm, ("left_eye",))[0]
    assert left_eye[0] > 0


def test_cir3d_topology_is_closed_and_linear(flame, full, cir3d):
    assert cir3d.name == "flame2020-cir3d"
    assert cir3d.n_vertices == FLAME_N_HEAD_VERTICES + 2 == 3933
    assert cir3d.faces.shape == (7862, 3) and len(cir3d.faces) == 2 * cir3d.n_vertices - 4
    head_faces = full.faces[(full.faces < FLAME_N_HEAD_VERTICES).all(axis=1)]
    np.testing.assert_array_equal(cir3d.faces[:7800], head_faces)
    mesh = trimesh.Trimesh(cir3d.mean_mm, cir3d.faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    # Vertex 3931 closes the neck (30 edges), 3932 the mouth (32 edges), at each loop's mean.
    loops = boundary_loops(head_faces)
    assert [len(loop) for loop in loops] == [30, 32]
    assert cir3d.mean_mm[3931, 1] < cir3d.mean_mm[3932, 1]
    # G stays linear: the cir3d model's vertices are the full model's head plus the loop means.
    z = np.random.default_rng(4).normal(size=K)
    expected = append_loop_centres(full.vertices_mm(z)[:FLAME_N_HEAD_VERTICES], loops)
    np.testing.assert_allclose(cir3d.vertices_mm(z), expected, atol=1e-3)
    # Regions: eyeballs gone, others carried over; landmarks identical except the eye centres.
    assert cir3d.regions["left_eyeball"].size == 0 and cir3d.regions["right_eyeball"].size == 0
    np.testing.assert_array_equal(cir3d.regions["scalp"], full.regions["scalp"])
    assert 3932 in cir3d.regions["lips"] and 3931 not in cir3d.regions["lips"]
    names = cir3d.landmarks.names
    assert names == full.landmarks.names
    np.testing.assert_allclose(
        cir3d.landmarks.positions(cir3d.mean_mm, names[2:]),
        full.landmarks.positions(full.mean_mm, names[2:]),
        atol=1e-4,
    )
    eyes = cir3d.landmarks.positions(cir3d.mean_mm, ("right_eye", "left_eye"))
    balls = full.landmarks.positions(full.mean_mm, ("right_eye", "left_eye"))
    assert (cir3d.landmarks.indices[:2][cir3d.landmarks.weights[:2] > 0] < FLAME_N_HEAD_VERTICES).all()
    for eye, ball in zip(eyes, balls):  # the mean of the 16 head vertices nearest to the eyeball centre
        nearest = np.argsort(np.linalg.norm(full.mean_mm[:FLAME_N_HEAD_VERTICES] - ball, axis=1))[:16]
        np.testing.assert_allclose(eye, full.mean_mm[nearest].mean(axis=0), atol=1e-3)
    assert eyes[0, 0] < 0 < eyes[1, 0]


def test_model_saves_and_loads(tmp_path, cir3d):
    loaded = LinearFaceModel.load(cir3d.save(tmp_path / "flame_cir3d.npz"))
    np.testing.assert_array_equal(loaded.faces, cir3d.faces)
    np.testing.assert_array_equal(loaded.landmarks.indices, cir3d.landmarks.indices)
    assert loaded.info["topology"] == "cir3d"


def test_npz_conversion_gives_the_same_model(flame, full, tmp_path):
    fields = flame["fields"]
    path = tmp_path / "generic_model.npz"
    np.savez(path, v_template=fields["v_template"], shapedirs=fields["shapedirs"], f=fields["f"])
    model = flame_face_model(path, flame["masks_path"], K, "full", flame["embedding_path"])
    np.testing.assert_array_equal(model.mean_mm, full.mean_mm)
    np.testing.assert_array_equal(model.basis_mm, full.basis_mm)
    np.testing.assert_array_equal(model.landmarks.weights, full.landmarks.weights)


def test_static_embedding_gives_51_points(flame, tmp_path):
    path = write_pickle(
        tmp_path / "flame_static_embedding.pkl",
        {"lmk_face_idx": flame["lmk_faces"][17:], "lmk_b_coords": flame["bary"][17:]},
        protocol=2,
    )
    names, face_idx, bary = load_landmark_embedding(path)
    assert names == tuple(f"ibug_{i:02d}" for i in range(17, 68))
    np.testing.assert_array_equal(face_idx, flame["lmk_faces"][17:])
    np.testing.assert_allclose(bary, flame["bary"][17:])


def test_bad_inputs_are_named(flame, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        flame_face_model(tmp_path / "missing.pkl")
    with pytest.raises(ValueError, match="topology"):
        flame_face_model(flame["model"], topology="cir3D")
    with pytest.raises(ValueError, match="n_components must be in 1..12"):
        flame_face_model(flame["model"], flame["masks_path"], n_components=13)
    small = tmp_path / "small.npz"
    np.savez(small, v_template=np.zeros((10, 3)), shapedirs=np.zeros((10, 3, 2)), f=np.zeros((4, 3), np.uint32))
    with pytest.raises(ValueError, match=r"small.npz: v_template has shape \(10, 3\), expected \(5023, 3\)"):
        load_flame_arrays(small)
    masks = write_pickle(tmp_path / "masks.pkl", {"face": np.arange(3)})
    with pytest.raises(ValueError, match="masks.pkl: FLAME masks lack"):
        flame_face_model(flame["model"], masks, n_components=2)


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize(
    "name, payload",
    [
        ("os.system", lambda m: f"cos\nsystem\n(S'touch {m}'\ntR.".encode()),
        ("subprocess.Popen", lambda m: f"csubprocess\nPopen\n((S'touch'\nS'{m}'\nltR.".encode()),
        ("builtins.eval", lambda m: pickle.dumps(_Eval(m), protocol=4)),
        ("__builtin__.eval", lambda m: pickle.dumps(_Eval(m), protocol=2)),
    ],
)
def test_dangerous_globals_are_refused_before_running(tmp_path, name, payload):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload(marker))
    with pytest.raises(pickle.UnpicklingError, match=rf"evil.pkl: refused global '{name}'"):
        load_restricted_pickle(path)
    with pytest.raises(pickle.UnpicklingError, match=name):
        flame_face_model(path)
    assert not marker.exists()


def test_allowlist_is_the_only_source_of_globals(flame, tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="numpy.core.multiarray._reconstruct"):
        load_restricted_pickle(flame["masks_path"], allowed={})
    with pytest.raises(pickle.UnpicklingError, match="chumpy.ch.Ch"):
        load_restricted_pickle(flame["model"], allow_chumpy=False)
    path = tmp_path / "codec.pkl"
    path.write_bytes(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
    with pytest.raises(pickle.UnpicklingError, match="only latin1"):
        load_restricted_pickle(path)


def test_chumpy_expressions_and_torch_tensors_are_not_evaluated(flame):
    expression = ChumpyStandIn()
    expression.__setstate__({"a": np.ones(3), "b": np.ones(3)})
    with pytest.raises(ValueError, match="chumpy expression"):
        to_numpy(expression)
    table = load_restricted_pickle(flame["embedding_path"])[()]
    with pytest.raises(ValueError, match="torch tensor"):
        to_numpy(table["dynamic_lmk_faces_idx"])
    np.testing.assert_array_equal(table["full_lmk_faces_idx"][0], flame["lmk_faces"])
