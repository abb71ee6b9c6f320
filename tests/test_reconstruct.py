"""reconstruct.py: photo -> face -> aligned chip -> mesh (+ the restoration on a scan), with clear errors for bad input.

Nothing is trained: a MICAModule on the toy face model (dlib encoder, random weights, seeded) is saved as
a Lightning-like checkpoint beside the train config composed for it, as `train.py` leaves a run folder.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

from test_experiments import ROOT, compose_train

from faceregen.image_io import read_rgb
from faceregen.mesh_io import read_mesh

#: where dlib's HOG finds the face on skimage's astronaut (512 px); a weaker false detection scores 0.12
ASTRONAUT_FACE_BOX = (175.0, 76.0, 266.0, 167.0)
#: the tests' face model: not on the allowlist of run configs, so trusted explicitly
TOY_TARGET = "face_models.toy_face_model"


def compose_reconstruct(overrides, output_dir: Path):
    """The reconstruct config as `reconstruct.py` sees it (trusting the toy face model), writing into ``output_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    overrides = [*overrides, f"trusted_targets=[{TOY_TARGET}]"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="reconstruct", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


@pytest.fixture(scope="module")
def run_ckpt(tmp_path_factory) -> Path:
    """``<run>/checkpoints/last.ckpt`` + ``<run>/.hydra/config.yaml``: toy face model, dlib encoder (random)."""
    import pytorch_lightning as pl
    from face_models import toy_face_model

    from training.building import with_face_model

    run = tmp_path_factory.mktemp("run")
    cfg = compose_train(["experiment=transfer"])
    with open_dict(cfg):
        cfg.face_model = {"_target_": TOY_TARGET, "subdivisions": 3}
        cfg.model.identity_encoder.pretrained = None
        cfg.model.base_checkpoint = None
        del cfg["hydra"]
    torch.manual_seed(0)
    model = with_face_model(cfg.model)(face_model=toy_face_model(subdivisions=3))
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "pytorch-lightning_version": pl.__version__, "epoch": 0}, ckpt)
    return ckpt


@pytest.fixture(scope="module")
def loaded(run_ckpt):
    from reconstruct import load_run_model

    return load_run_model(run_ckpt, trusted_targets=[TOY_TARGET])


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory) -> Path:
    import skimage.data

    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(path)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, toy_model) -> Path:
    """Three identities of the synthetic data, one wound each, two lights, 96 px."""
    from faceregen.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("data") / "cir3dfair"
    generate_dataset(root, toy_model, n_identities=3, wounds_per_identity=1, resolution=96, workers=1,
                     contact_sheet_samples=0, lights=[[0.0, 0.0, 1.0], [0.3, 0.3, 0.9]])
    return root


@pytest.fixture(scope="module")
def astronaut_result(run_ckpt, astronaut_png, tmp_path_factory):
    from reconstruct import reconstruct

    out = tmp_path_factory.mktemp("out")
    records = reconstruct(compose_reconstruct([f"image={astronaut_png}", f"ckpt={run_ckpt}"], out))
    return records, out / "astronaut"


def test_checkpoint_rebuilds_the_run_model(loaded, run_ckpt, toy_model):
    model, face_model = loaded
    state = torch.load(run_ckpt, weights_only=True)["state_dict"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert face_model.n_vertices == toy_model.n_vertices and not model.training
    assert model.identity_encoder.alignment == "dlib_150"


def test_astronaut_face_found_aligned_and_mesh_written(astronaut_result, loaded):
    records, folder = astronaut_result
    model, face_model = loaded
    assert [r["status"] for r in records] == ["ok"]
    face = json.loads((folder / "face.json").read_text())
    assert face["source"] == "dlib's hog detector (upsample=1)" and face["n_faces"] == 1 and face["n_weak"] == 1
    assert face["quality"]["problems"] == [] and face["quality"]["eye_distance_px"] > 40
    assert np.allclose(face["box"], ASTRONAUT_FACE_BOX, atol=2.0) and face["score"] > 1.0
    left, top, right, bottom = face["box"]
    points = np.array(face["points_px"])
    assert ((points[:, 0] > left) & (points[:, 0] < right) & (points[:, 1] > top) & (points[:, 1] < bottom)).all()
    aligned = np.asarray(Image.open(folder / "aligned.png"))
    assert aligned.shape == (150, 150, 3) and aligned.std() > 20
    vertices, faces = read_mesh(folder / "mesh.obj")
    assert vertices.shape == (face_model.n_vertices, 3) and np.array_equal(faces, face_model.faces)
    ply_vertices, _ = read_mesh(folder / "mesh.ply")
    code = np.load(folder / "code.npy")
    assert code.shape == (face_model.n_components,)
    assert np.allclose(ply_vertices, face_model.vertices_mm(code), atol=1e-3)
    with torch.no_grad():
        direct = model(torch.from_numpy(aligned.transpose(2, 0, 1).copy())[None])[0].numpy()
    assert np.abs(vertices - direct).max() < 1e-4
    summary = np.asarray(Image.open(folder / "summary.png"))
    assert summary.shape[1] > 2 * summary.shape[0] and summary.std() > 10


def test_render_uses_stored_landmarks_and_agrees_with_the_datamodule(dataset, run_ckpt, loaded, tmp_path):
    """The same render through reconstruct.py and through the datamodule's cache: same chip, same mesh."""
    from datamodules.cir3dfair import Cir3DFaIRDataModule
    from reconstruct import reconstruct

    model, face_model = loaded
    image = dataset / "data2D" / "synthetic" / "CTM00002_0" / "CTM00002_0_1.png"
    records = reconstruct(compose_reconstruct([f"image={image}", f"ckpt={run_ckpt}", "summary=false"], tmp_path))
    assert records[0]["status"] == "ok" and records[0]["face"]["source"] == "landmarks.npz"
    with np.load(image.parent / "landmarks.npz") as landmarks:
        assert np.allclose(records[0]["face"]["points_px"], landmarks["points_px"][1, :5], atol=1e-3)

    datamodule = Cir3DFaIRDataModule(dataset, face_model, alignment="dlib_150", num_workers=0, split_ratios=(1, 1, 1),
                                     cache_dir=tmp_path / "cache", preprocess_workers=1)
    datamodule.setup()
    cache = datamodule.cache
    row = cache.sample_names.index("CTM00002_0")
    item = int(np.flatnonzero((cache.item_sample == row) & (cache.item_light == 1))[0])
    cached = np.asarray(cache.images[item])
    ours = np.asarray(Image.open(tmp_path / "CTM00002_0_1" / "aligned.png")).transpose(2, 0, 1)
    assert np.array_equal(ours, cached)
    with torch.no_grad():
        expected = model(torch.from_numpy(cached.copy())[None])[0].numpy()
    vertices, _ = read_mesh(tmp_path / "CTM00002_0_1" / "mesh.obj")
    assert np.abs(vertices - expected).max() < 1e-4


def test_bad_images_give_their_messages(tmp_path, loaded):
    from faceregen.reconstruction import Reconstructor

    text = tmp_path / "notes.png"
    text.write_text("not an image")
    good = tmp_path / "good.png"
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    huge = tmp_path / "huge.png"
    Image.new("L", (1500, 1000)).save(huge)

    with pytest.raises(FileNotFoundError, match="missing.png: image not found"):
        read_rgb(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="notes.png: not an image"):
        read_rgb(text)
    with pytest.raises(ValueError, match="truncated.png: truncated or corrupt"):
        read_rgb(truncated)
    for limit in (1_000_000, 500_000):  # Pillow's warning (> limit) and its error (> 2 x limit)
        with pytest.raises(ValueError, match=f"huge.png: image too large, more than max_pixels={limit}"):
            read_rgb(huge, max_pixels=limit)
    assert read_rgb(huge, max_pixels=1_500_000).shape == (1000, 1500, 3)
    assert read_rgb(good).shape == (40, 50, 3)
    reconstructor = Reconstructor(loaded[0], max_pixels=1_000_000)
    with pytest.raises(ValueError, match="good.png: no face detected"):
        reconstructor(good)


def test_a_folder_reports_every_file_and_the_face_quality(run_ckpt, tmp_path, caplog):
    """Any format Pillow reads is restored (.ppm), other files are skipped with the reason; a face too small
    and blurred is restored with warnings (face.json, results.json, the log), and refused with quality=strict."""
    import logging

    from PIL import ImageFilter

    from reconstruct import reconstruct, report

    folder = tmp_path / "photos"
    folder.mkdir()
    photo = Image.open(ROOT / "examples" / "astronaut.png").convert("RGB")
    photo.save(folder / "astronaut.ppm")
    photo.resize((photo.width * 4 // 5,) * 2).filter(ImageFilter.GaussianBlur(1)).save(folder / "poor.jpg")
    (folder / "notes.txt").write_text("the patient's photos")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        records = reconstruct(compose_reconstruct([f"image={folder}", f"ckpt={run_ckpt}", "summary=false"], out))
        report(records, out)
    by_name = {Path(r["image"]).name: r for r in records}
    assert [by_name[n]["status"] for n in ("astronaut.ppm", "notes.txt", "poor.jpg")] == ["ok", "skipped", "ok"]
    assert by_name["notes.txt"]["reason"] == "not an image (Pillow cannot identify the format)"
    assert by_name["astronaut.ppm"]["quality"]["problems"] == []
    problems = json.loads((out / "poor" / "face.json").read_text())["quality"]["problems"]
    assert [p.split(":")[0] for p in problems] == ["face too small", "face blurred"]
    assert "2 of 2 images restored" in caplog.text and "1 with face-quality warnings" in caplog.text
    assert "1 file(s) skipped: notes.txt" in caplog.text and "SKIPPED" in caplog.text
    strict = reconstruct(compose_reconstruct([f"image={folder / 'poor.jpg'}", f"ckpt={run_ckpt}", "quality=strict"],
                                             tmp_path / "strict"))
    assert strict[0]["status"] == "failed"
    assert strict[0]["error"].startswith(f"{folder / 'poor.jpg'}: face refused (quality=strict): face too small")


def test_evaluate_rebuilds_the_run_with_the_test_split_of_another_folder(run_ckpt, dataset, loaded, tmp_path):
    """`evaluate.py ckpt=... data.root=<folder>`: the same rebuild as reconstruct.py's, plus the run's
    datamodule on that folder (the generator switched off), tested by a Lightning test loop."""
    from training.trained_run import evaluate_test_split, load_trained_run
    from reconstruct import default_paths

    paths = {**default_paths(), "cache_dir": str(tmp_path / "cache")}
    trained = load_trained_run(run_ckpt, paths, {"root": str(dataset), "split_ratios": [1, 1, 1]}, trusted_targets=[TOY_TARGET])
    for name, tensor in loaded[0].state_dict().items():
        assert torch.equal(tensor, trained.module.state_dict()[name]), name
    datamodule = trained.test_datamodule()
    assert trained.config.generator is None and Path(datamodule.root) == dataset
    assert Path(trained.config.data.cache_dir) == tmp_path / "cache" / "cir3dfair"
    metrics = evaluate_test_split(trained.module, datamodule)
    assert 0 < metrics["test/mean_distance_mm"] < 1000


def test_wrong_checkpoints_are_refused_naming_the_file(tmp_path, run_ckpt):
    from faceregen.encoders.checkpoints import save_mica_checkpoint
    from reconstruct import load_run_model

    mica = save_mica_checkpoint(tmp_path / "mica.tar", {"w": torch.zeros(1)}, {"w": torch.zeros(1)})
    random_file = tmp_path / "random.ckpt"
    random_file.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, size=256, dtype=np.uint8)))
    swav = tmp_path / "swav.ckpt"
    torch.save({"state_dict": {"identity_encoder.backbone.w": torch.zeros(1), "prototypes.weight": torch.zeros(2)}}, swav)
    elsewhere = tmp_path / "elsewhere.ckpt"
    elsewhere.write_bytes(run_ckpt.read_bytes())
    for path, message in ((mica, "mica.tar layout"), (random_file, "not a torch checkpoint"),
                          (swav, "another module"), (tmp_path / "none.ckpt", "no such checkpoint")):
        with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
            load_run_model(path)
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError, match=r"elsewhere.ckpt: no \.hydra/config\.yaml"):
        load_run_model(elsewhere)


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, str(ROOT / "reconstruct.py"), *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_processes_the_good_images_and_fails_for_the_bad(run_ckpt, dataset, astronaut_png, tmp_path):
    """One bad image does not stop the others; the exit status says something failed; a filling is written."""
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(blank)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    sample = "CTM00001_0"
    render = dataset / "data2D" / "synthetic" / sample / f"{sample}_0.png"
    out = tmp_path / "out"
    result = run_cli(f"image=[{blank},{text},{render},{astronaut_png}]", f"ckpt={run_ckpt}", f"hydra.run.dir={out}",
                     f"trusted_targets=[{TOY_TARGET}]",
                     f"imperfect_mesh={dataset / 'imperfect' / 'synthetic' / f'{sample}.obj'}",
                     f"wound_mask={dataset / 'wound' / 'synthetic' / f'{sample}.npz'}", "summary=false")
    assert result.returncode == 1, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "blank.png: no face detected" in output and "notes.png: not an image" in output
    assert "2 of 4 images failed" in output
    records = json.loads((out / "results.json").read_text())
    assert [r["status"] for r in records] == ["failed", "failed", "ok", "ok"]
    assert (out / f"{sample}_0" / "restoration" / "filling.stl").is_file() and (out / "astronaut" / "mesh.ply").is_file()


def test_cli_stops_on_a_wrong_checkpoint(tmp_path, astronaut_png):
    from faceregen.encoders.checkpoints import save_mica_checkpoint

    mica = save_mica_checkpoint(tmp_path / "mica.tar", {"w": torch.zeros(1)}, {"w": torch.zeros(1)})
    result = run_cli(f"image={astronaut_png}", f"ckpt={mica}", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode != 0
    assert f"{mica}: a checkpoint in MICA's mica.tar layout" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr  # one message; HYDRA_FULL_ERROR=1 shows the traceback


def test_a_failure_while_writing_leaves_no_partial_folder(run_ckpt, astronaut_png, tmp_path, monkeypatch):
    """A write that fails half-way (a full disk) leaves no folder with a mesh but no summary; a complete one
    is renamed into place and its record names the files there."""
    import reconstruct as cli

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "write_summary", full_disk)
    cfg = compose_reconstruct([f"image={astronaut_png}", f"ckpt={run_ckpt}"], tmp_path)
    records = cli.reconstruct(cfg)
    assert records[0]["status"] == "failed" and "No space left on device" in records[0]["error"]
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    records = cli.reconstruct(cfg)
    assert records[0]["status"] == "ok" and [p.name for p in tmp_path.iterdir()] == ["astronaut"]
    assert {Path(path).parent for path in records[0]["files"].values()} == {tmp_path / "astronaut"}
    assert all(Path(path).is_file() for path in records[0]["files"].values())


def test_results_json_not_written_is_reported_with_the_count(tmp_path, monkeypatch, caplog):
    import logging

    import reconstruct as cli

    records = [{"image": "a.png", "status": "ok"}, {"image": "b.png", "status": "failed", "error": "b.png: no face"}]

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(cli, "atomic_write_text", full_disk)
    with pytest.raises(SystemExit, match=r"1 of 2 images failed: b.png: no face; .*results.json: not written"):
        cli.report(records, tmp_path)
    assert "1 of 2 images restored" in caplog.text
    monkeypatch.undo()
    cli.report(records[:1], tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == records[:1]
