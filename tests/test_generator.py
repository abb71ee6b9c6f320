"""The synthetic Cir3D-FaIR generator: layout and manifest, contents, determinism, resume after a kill."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from face_models import toy_face_model

# imported before any render: loading torch's triton after a VTK render crashes the process
from faceregen.data_layout import find_samples
from faceregen.face_model.linear import FIVE_POINT_NAMES
from faceregen.mesh_io import read_mesh, write_mesh
from faceregen.rendering import DEFAULT_LIGHT_DIRS
from faceregen.synthetic import WOUND_TYPES, generate_dataset
from faceregen.synthetic.generator import PENDING_PARAMS_NAME, GeneratorSettings, identity_code

PARAMS = {
    "n_identities": 3,
    "wounds_per_identity": 3,
    "lights": DEFAULT_LIGHT_DIRS[:2],
    "resolution": 64,
    "seed": 5,
}


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model():
    return toy_face_model(subdivisions=4)


@pytest.fixture(scope="module")
def dataset(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    manifest_path = generate_dataset(root, model, workers=1, **PARAMS)
    return root, json.loads(manifest_path.read_text()), tree_bytes(root)


def test_manifest_schema_and_layout(dataset, model):
    root, manifest, files = dataset
    assert manifest["format"] == "faceregen-cir3dfair" and isinstance(manifest["version"], int)
    assert manifest["face_model"] == {"name": model.name, "n_vertices": model.n_vertices, "n_components": 6}
    assert manifest["generator"]["seed"] == 5 and manifest["generator"]["n_identities"] == 3
    assert manifest["lights"] == [list(d) for d in PARAMS["lights"]]
    assert manifest["camera"]["resolution"] == 64
    samples = manifest["samples"]
    assert [s["sample"] for s in samples] == [f"CTM0000{i}_{k}" for i in (1, 2, 3) for k in (0, 1, 2)]
    assert {s["wound_type"] for s in samples} == set(WOUND_TYPES)  # 9 samples cycle through all 7 types
    listed = {"manifest.json", "contact_sheet.png"}
    for s in samples:
        assert s["identity"] == s["sample"][:8] and s["group"] == "synthetic"
        assert s["images"] == [f"data2D/synthetic/{s['sample']}/{s['sample']}_{k}.png" for k in (0, 1)]
        assert s["label"] == f"label/synthetic/{s['sample']}.obj"
        listed |= {*s["images"], s["landmarks"], s["label"], s["imperfect"], s["wound"]}
    assert set(files) == listed, "exactly the listed files, no leftovers"
    assert not (root / PENDING_PARAMS_NAME).exists()


def test_sample_contents(dataset, model):
    root, manifest, _ = dataset
    for s in manifest["samples"]:
        label, faces = read_mesh(root / s["label"])
        imperfect, imperfect_faces = read_mesh(root / s["imperfect"])
        np.testing.assert_array_equal(faces, model.faces)
        np.testing.assert_array_equal(imperfect_faces, model.faces)
        with np.load(root / s["wound"]) as wound:
            assert str(wound["wound_type"]) == s["wound_type"]
            assert wound["mask"].dtype == bool and wound["depth_mm"].dtype == np.float32
            np.testing.assert_array_equal(wound["code"], identity_code(5, int(s["identity"][3:]) - 1, 6))
            np.testing.assert_array_equal(label, model.vertices_mm(wound["code"]))
            np.testing.assert_array_equal(wound["mask"], np.any(label != imperfect, axis=1))
            np.testing.assert_allclose(np.linalg.norm(label - imperfect, axis=1), wound["depth_mm"], atol=1e-4)
        with np.load(root / s["landmarks"]) as landmarks:
            points, names = landmarks["points_px"], tuple(str(n) for n in landmarks["names"])
        assert names[:5] == FIVE_POINT_NAMES
        assert points.shape == (2, len(names), 2) and points.dtype == np.float32
        assert np.all((points > 0) & (points < 64)), "landmarks must land in the image"
        for image_path in s["images"]:
            image = np.asarray(Image.open(root / image_path))
            assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        # the nose tip is bright under the frontal lights, the image corners are background
        u, v = points[0, 2].astype(int)
        assert image[v, u].mean() > 40 and image[0, 0].sum() == 0


def test_identities_differ_variants_share_the_head(dataset):
    root, manifest, files = dataset
    labels = {s["sample"]: files[s["label"]] for s in manifest["samples"]}
    assert labels["CTM00001_0"] == labels["CTM00001_1"] == labels["CTM00001_2"]
    assert labels["CTM00001_0"] != labels["CTM00002_0"]
    assert files["imperfect/synthetic/CTM00001_0.obj"] != files["imperfect/synthetic/CTM00001_1.obj"]


def test_two_workers_give_the_same_bytes(dataset, model, tmp_path):
    _, _, reference = dataset
    generate_dataset(tmp_path, model, workers=2, **PARAMS)
    assert tree_bytes(tmp_path) == reference


def test_resume_finishes_an_interrupted_run_with_the_same_bytes(dataset, model, tmp_path):
    root, manifest, reference = dataset
    shutil.copytree(root, tmp_path, dirs_exist_ok=True)
    # what a killed run leaves: no manifest, some samples without landmarks, a temporary file, the params
    (tmp_path / "manifest.json").unlink()
    (tmp_path / "contact_sheet.png").unlink()
    for s in manifest["samples"][4:]:
        (tmp_path / s["landmarks"]).unlink()
        (tmp_path / s["images"][1]).write_bytes(b"garbage from another run")
    (tmp_path / "data2D/synthetic/CTM00002_1/.CTM00002_1_0.abc123.tmp.png").write_bytes(b"partial")
    pending = json.loads((root / "manifest.json").read_text())
    pending.pop("samples")
    (tmp_path / PENDING_PARAMS_NAME).write_text(json.dumps(pending))
    generate_dataset(tmp_path, model, workers=1, **PARAMS)
    assert tree_bytes(tmp_path) == reference


def test_other_parameters_on_an_existing_root_are_refused(dataset, model):
    root, _, reference = dataset
    assert generate_dataset(root, model, workers=1, **PARAMS) == root / "manifest.json"  # finished: no-op
    with pytest.raises(ValueError, match="differing: .*generator.seed"):
        generate_dataset(root, model, workers=1, **{**PARAMS, "seed": 6})
    assert tree_bytes(root) == reference


def test_resume_after_kill_9(dataset, tmp_path):
    _, _, reference = dataset
    tests_dir, repo = Path(__file__).parent, Path(__file__).parents[1]
    script = (
        f"import sys; sys.path[:0] = [{str(tests_dir)!r}, {str(repo)!r}]\n"
        "from face_models import toy_face_model\n"
        "from faceregen.synthetic import generate_dataset\n"
        f"generate_dataset({str(tmp_path)!r}, toy_face_model(subdivisions=4), workers=1, **{PARAMS!r})\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    first_sample = tmp_path / "data2D/synthetic/CTM00001_0/landmarks.npz"
    deadline = time.monotonic() + 60.0
    while not first_sample.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert first_sample.exists() and not (tmp_path / "manifest.json").exists(), "the run was not interrupted midway"
    generate_dataset(tmp_path, toy_face_model(subdivisions=4), workers=1, **PARAMS)
    assert tree_bytes(tmp_path) == reference


def test_another_seed_gives_other_heads(model, tmp_path):
    generate_dataset(tmp_path, model, workers=1, **{**PARAMS, "n_identities": 1, "wounds_per_identity": 1, "seed": 6})
    label, _ = read_mesh(tmp_path / "label/synthetic/CTM00001_0.obj")
    assert not np.allclose(label, model.vertices_mm(identity_code(5, 0, 6)))
    np.testing.assert_array_equal(label, model.vertices_mm(identity_code(6, 0, 6)))


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_mesh_files_round_trip_exactly(model, tmp_path, suffix):
    vertices = model.vertices_mm(np.array([0.3, -1.2, 0.5, 0.0, 2.0, -0.1])) * np.float32(1.0 / 3.0)
    path = write_mesh(tmp_path / f"head{suffix}", vertices, model.faces)
    read_vertices, read_faces = read_mesh(path)
    np.testing.assert_array_equal(read_vertices, vertices)  # float32 exactly, order kept
    np.testing.assert_array_equal(read_faces, model.faces)
    assert write_mesh(tmp_path / f"again{suffix}", vertices, model.faces).read_bytes() == path.read_bytes()


def test_mesh_file_errors_name_the_file(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.obj"):
        read_mesh(tmp_path / "missing.obj")
    with pytest.raises(ValueError, match="unsupported mesh format"):
        write_mesh(tmp_path / "head.stl", model.mean_mm, model.faces)
    with pytest.raises(ValueError, match="face indices"):
        write_mesh(tmp_path / "head.obj", model.mean_mm[:10], model.faces)
    (tmp_path / "empty.obj").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.obj"):
        read_mesh(tmp_path / "empty.obj")


def test_generate_config_makes_the_dataset_it_describes(model, tmp_path):
    """`generate.py`'s config, shrunk, generates a dataset whose manifest records every setting of the config
    (the wound keywords as the wound parameters), renders at its resolution under its lights."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from training.building import with_face_model

    shrunk = {"root": str(tmp_path), "n_identities": 2, "wounds_per_identity": 1, "resolution": 48, "workers": 1,
              "contact_sheet_samples": 0, "detail_rms_mm": 0.0}
    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
        cfg = compose(config_name="generate", overrides=[f"generator.{k}={v}" for k, v in shrunk.items()])
    manifest = json.loads(with_face_model(cfg.generator)(face_model=model).read_text())
    config = OmegaConf.to_container(cfg.generator, resolve=True)
    recorded = {**manifest["generator"], **manifest["generator"]["wound_params"], "lights": manifest["lights"]}
    not_deciding_bytes = {"_target_", "root", "workers", "contact_sheet_samples"}
    at_default = {"identity_prefix", "pose_jitter_deg", "light_jitter", "detail_rms_mm", "detail_band"} - set(recorded)
    assert {k: recorded[k] for k in set(config) - not_deciding_bytes - at_default} == {
        k: config[k] for k in set(config) - not_deciding_bytes - at_default}
    defaults = {f.name: f.default for f in fields(GeneratorSettings)}  # left out of the manifest at their defaults
    assert {k: config[k] for k in at_default} == {k: list(defaults[k]) if isinstance(defaults[k], tuple) else defaults[k]
                                                  for k in at_default}
    assert [s["sample"] for s in manifest["samples"]] == ["CTM00001_0", "CTM00002_0"]
    images = manifest["samples"][0]["images"]
    assert len(images) == len(config["lights"]) and Image.open(tmp_path / images[0]).size == (48, 48)


# --- complete faces for the base stage: no wound, identity prefix, pose and light jitter ------------------------
def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def test_later_settings_at_their_defaults_give_the_same_bytes(dataset, model, tmp_path):
    _, manifest, reference = dataset
    defaults = {"identity_prefix": "CTM", "pose_jitter_deg": 0.0, "light_jitter": 0.0, "wound_types": WOUND_TYPES}
    generate_dataset(tmp_path, model, workers=1, **PARAMS, **defaults)
    assert tree_bytes(tmp_path) == reference
    assert not {"identity_prefix", "pose_jitter_deg", "light_jitter"} & set(manifest["generator"])


def test_complete_faces_with_a_prefix(model, tmp_path):
    params = {**PARAMS, "n_identities": 2, "wounds_per_identity": 2, "wound_types": ["none"], "seed": 11}
    manifest = json.loads(generate_dataset(tmp_path, model, workers=1, identity_prefix="BASE", **params).read_text())
    assert manifest["generator"]["identity_prefix"] == "BASE" and manifest["generator"]["wound_types"] == ["none"]
    assert [s["sample"] for s in manifest["samples"]] == ["BASE00001_0", "BASE00001_1", "BASE00002_0", "BASE00002_1"]
    assert [s["identity"] for s in manifest["samples"]] == ["BASE00001"] * 2 + ["BASE00002"] * 2
    for s in manifest["samples"]:
        assert s["wound_type"] == "none" and s["label"] == f"label/synthetic/{s['sample']}.obj"
        assert (tmp_path / s["imperfect"]).read_bytes() == (tmp_path / s["label"]).read_bytes()
        wound = _npz(tmp_path / s["wound"])
        assert not wound["mask"].any() and np.all(wound["depth_mm"] == 0.0)
        np.testing.assert_array_equal(wound["code"], identity_code(11, int(s["identity"][4:]) - 1, 6))
        assert set(_npz(tmp_path / s["landmarks"])) == {"points_px", "names"}  # no jitter: nothing else
    # the datamodule takes the identities from the manifest (its CTM pattern is for folders without one)
    assert [s.identity for s in find_samples(tmp_path)] == ["BASE00001"] * 2 + ["BASE00002"] * 2


@pytest.fixture(scope="module")
def jittered(model, tmp_path_factory):
    """The reference dataset's settings with head pose and light jitter, each on its own."""
    roots = {}
    for name, jitter in {"pose": {"pose_jitter_deg": 12.0}, "light": {"light_jitter": 0.3}}.items():
        roots[name] = tmp_path_factory.mktemp(f"jittered_{name}")
        generate_dataset(roots[name], model, workers=1, **PARAMS, **jitter)
    return roots


def test_pose_jitter_moves_the_rendered_head_and_landmarks_not_the_meshes(dataset, jittered, model):
    from scipy.spatial.transform import Rotation

    from faceregen.rendering import Camera, render_grey

    root, manifest, reference = dataset
    posed_root = jittered["pose"]
    files = tree_bytes(posed_root)
    camera = Camera.from_dict(manifest["camera"])
    poses = []
    for s in manifest["samples"]:
        for key in ("label", "imperfect", "wound"):
            assert files[s[key]] == reference[s[key]], "the meshes stay in the face model's frame"
        assert all(files[p] != reference[p] for p in s["images"])
        landmarks, before = _npz(posed_root / s["landmarks"]), _npz(root / s["landmarks"])
        pose_deg = landmarks["pose_deg"]
        assert pose_deg.shape == (3,) and np.all(np.abs(pose_deg) <= 12.0)
        poses.append(pose_deg)
        # an independent rotation (scipy, extrinsic y then x then z) of the imperfect head about the label's centroid
        label, _ = read_mesh(posed_root / s["label"])
        imperfect, _ = read_mesh(posed_root / s["imperfect"])
        centre = label.mean(axis=0, dtype=np.float64)
        rotation = Rotation.from_euler("yxz", pose_deg.astype(np.float64), degrees=True).as_matrix()
        posed = ((imperfect - centre) @ rotation.T + centre).astype(np.float32)
        expected = camera.project(model.landmarks.positions(posed, landmarks["names"]))
        np.testing.assert_allclose(landmarks["points_px"], np.broadcast_to(expected, (2, *expected.shape)), atol=1e-3)
        assert np.abs(landmarks["points_px"] - before["points_px"]).max() > 1.0, "landmarks follow the pose"
        images = np.stack([np.asarray(Image.open(posed_root / p)) for p in s["images"]])
        rendered = render_grey(posed, model.faces, camera, np.asarray(PARAMS["lights"]))
        assert np.abs(images.astype(int) - rendered).mean() < 0.05, "the images show the posed head"
        u, v = landmarks["points_px"][0, 2].astype(int)  # the nose tip of the posed head is lit
        assert images[0, v, u].mean() > 40
    poses = np.stack(poses)
    assert poses.std(axis=0).min() > 2.0, "every angle varies over the samples"
    assert (posed_root / "contact_sheet.png").read_bytes() != reference["contact_sheet.png"]


def test_light_jitter_changes_only_the_images(dataset, jittered, model):
    from faceregen.rendering import Camera, render_grey

    root, manifest, reference = dataset
    lit_root = jittered["light"]
    files = tree_bytes(lit_root)
    camera = Camera.from_dict(manifest["camera"])
    nominal = np.asarray(PARAMS["lights"]) / np.linalg.norm(PARAMS["lights"], axis=1, keepdims=True)
    angles = []
    for s in manifest["samples"]:
        for key in ("label", "imperfect", "wound"):
            assert files[s[key]] == reference[s[key]]
        assert all(files[p] != reference[p] for p in s["images"])
        landmarks, before = _npz(lit_root / s["landmarks"]), _npz(root / s["landmarks"])
        np.testing.assert_array_equal(landmarks["points_px"], before["points_px"])
        light_dirs = landmarks["light_dirs"]
        assert light_dirs.shape == (2, 3) and np.all(light_dirs[:, 2] >= 0.0)
        np.testing.assert_allclose(np.linalg.norm(light_dirs, axis=1), 1.0, atol=1e-6)
        angles += list(np.degrees(np.arccos(np.clip((light_dirs * nominal).sum(axis=1), -1.0, 1.0))))
        imperfect, _ = read_mesh(lit_root / s["imperfect"])
        images = np.stack([np.asarray(Image.open(lit_root / p)) for p in s["images"]])
        np.testing.assert_array_equal(images, render_grey(imperfect, model.faces, camera, light_dirs))
    # N(0, 0.3^2) per component: the directions turn by ~0.3 * sqrt(2) rad ~ 24 degrees on average
    assert 8.0 < np.mean(angles) < 40.0 and min(angles) > 0.0


def test_jittered_roots_refuse_other_jitter(dataset, jittered, model):
    root, _, _ = dataset
    with pytest.raises(ValueError, match="differing: .*generator.pose_jitter_deg"):
        generate_dataset(jittered["pose"], model, workers=1, **PARAMS)  # a later setting back at its default
    with pytest.raises(ValueError, match="differing: .*generator.light_jitter"):
        generate_dataset(root, model, workers=1, **PARAMS, light_jitter=0.1)


def test_bad_later_settings_are_clear_errors(model, tmp_path):
    for bad, match in [
        ({"identity_prefix": "CT_M"}, "identity_prefix"),
        ({"identity_prefix": ""}, "identity_prefix"),
        ({"pose_jitter_deg": -1.0}, "pose_jitter_deg"),
        ({"pose_jitter_deg": 90.0}, "pose_jitter_deg"),
        ({"light_jitter": -0.1}, "light_jitter"),
        ({"wound_types": ["none", "burn"]}, "wound_types"),
    ]:
        with pytest.raises(ValueError, match=match):
            generate_dataset(tmp_path, model, workers=1, **{**PARAMS, **bad})
    assert not any(tmp_path.iterdir()), "nothing written for bad settings"
