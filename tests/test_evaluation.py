"""evaluate.py and faceregen.evaluation: Table 1 from fake runs, curves, distances, scan-to-mesh, figures,
fillings of predicted faces, checkpoint loading, and the reconstruction-samples callback in a tiny fit."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import trimesh
from torch.utils.data import DataLoader

from callbacks.reconstruction_samples import ReconstructionSamples
from faceregen.data_layout import SampleFiles
from faceregen.encoders.checkpoints import load_state_strict
from faceregen.evaluation import figures, runs, table
from faceregen.evaluation.scan_to_mesh import point_to_surface_distance_mm, scan_to_mesh_distance, umeyama
from faceregen.metrics import masked_mean_distance_mm, per_vertex_distance_mm
from faceregen.mesh_io import write_mesh
from faceregen.plotting import mesh_image, save_figure
from training.trained_run import read_mica_state_dict
from test_mica_module import FaceBatches, make_module

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"transfer": 0.3642, "ssl_20pct": 0.3353, "ssl_100pct": 0.3247}


# --- fake run directories -----------------------------------------------------------------------
def fake_run(folder: Path, experiment: str, seed: int, test: dict | None, history=(), stages: dict | None = None) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"task_name: {experiment}\nseed: {seed}\n")
    metrics = {"history": list(history), "best_checkpoint": None, "best_score": None, "monitor": "val/mean_distance_mm",
               "test": test or {}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if stages is not None:
        (folder / "stages.json").write_text(json.dumps(stages))
    return folder


def distances(mean: float, wound: float, face: float) -> dict:
    return {"test/distance_mm": mean, "test/wound_rigid_mm": wound, "test/face_rigid_mm": face,
            "test/face_similarity_mm": face / 2, "test/mse_mm2": 12.0, "test/loss": 1.0}


def history(train: list[float], val: list[float]) -> list[dict]:
    return [{"epoch": e, "train/loss_epoch": t, "val/loss": v, "val/mean_distance_mm": v / 10} for e, (t, v) in enumerate(zip(train, val))]


@pytest.fixture()
def log_dir(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    for seed, (m, w, i) in enumerate([(1.0, 2.0, 0.5), (2.0, 4.0, 1.5), (3.0, 6.0, 2.5)]):
        fake_run(logs / "transfer" / "multiruns" / "2026-01-01_00-00-00" / str(seed), "transfer", seed, distances(m, w, i),
                 history([4.0 + seed, 3.0 + seed], [5.0, 4.0 - seed]))
    ssl_stage = tmp_path / "cache" / "ssl" / "abc"
    ssl_stage.mkdir(parents=True)
    (ssl_stage / "metrics.json").write_text(json.dumps({"history": [{"epoch": e, "ssl/loss_epoch": 8.0 - e} for e in range(3)]}))
    for seed, m in enumerate([0.25, 0.75]):
        fake_run(logs / "ssl_20pct" / "runs" / f"t{seed}", "ssl_20pct", seed, distances(m, m, m),
                 history([2.0, 1.0], [2.0, 1.5]), stages={"ssl_stage_dir": str(ssl_stage)})
    fake_run(logs / "zzz_ablation" / "runs" / "t", "zzz_ablation", 0, distances(9.0, 9.0, 9.0))
    fake_run(logs / "pretrained" / "runs" / "t", "pretrained", 0, {"test/distance_mm": 11.0})
    fake_run(logs / "scratch" / "runs" / "unfinished", "scratch", 0, None, history([1.0], [1.0]))  # no test: skipped
    (logs / "generate" / "runs" / "t").mkdir(parents=True)  # no metrics.json: skipped
    return logs


# --- runs and Table 1 ----------------------------------------------------------------------------
def test_finished_runs_in_paper_order(log_dir):
    found = runs.find_finished_runs(log_dir)
    assert [(r.setting, r.seed) for r in found] == [
        ("pretrained", 0), ("transfer", 0), ("transfer", 1), ("transfer", 2), ("ssl_20pct", 0), ("ssl_20pct", 1), ("zzz_ablation", 0)
    ]
    assert runs.read_run(log_dir / "scratch" / "runs" / "unfinished") is None
    with pytest.raises(FileNotFoundError, match="log folder not found"):
        runs.find_finished_runs(log_dir / "missing")


def test_unreadable_and_untrained_runs_are_reported_and_skipped(log_dir, caplog):
    """A truncated metrics.json and a run that was to train but trained nothing (trainer.max_epochs=0) are
    named in a warning and left out; the other runs still make Table 1."""
    truncated = fake_run(log_dir / "transfer" / "runs" / "killed", "transfer", 7, distances(1.0, 1.0, 1.0))
    (truncated / "metrics.json").write_text('{"history": [{"epoch": 0, "val/lo')
    untrained = fake_run(log_dir / "scratch" / "runs" / "zero_epochs", "scratch", 3, distances(5.0, 5.0, 5.0))
    (untrained / ".hydra" / "config.yaml").write_text("task_name: scratch\nseed: 3\ntrain: true\n")
    found = runs.find_finished_runs(log_dir)
    assert [(r.setting, r.seed) for r in found] == [
        ("pretrained", 0), ("transfer", 0), ("transfer", 1), ("transfer", 2), ("ssl_20pct", 0), ("ssl_20pct", 1), ("zzz_ablation", 0)
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"{truncated / 'metrics.json'}: not valid JSON" in w for w in warnings)
    assert any(f"{untrained / 'metrics.json'}: the run was to train (train: true) but trained no epoch" in w for w in warnings)


def test_table1_mean_std_over_seeds_and_paper_column(log_dir, tmp_path):
    paths = table.write_table1(runs.find_finished_runs(log_dir), PAPER, tmp_path / "results")
    rows = {row["setting"]: row for row in csv.DictReader(paths["csv"].open())}
    assert list(rows) == ["pretrained", "transfer", "ssl_20pct", "zzz_ablation"]
    transfer = rows["transfer"]
    assert transfer["n_seeds"] == "3" and transfer["seeds"] == "0 1 2"
    # seeds 1, 2, 3 mm: mean 2, sample std 1; wound 2, 4, 6: 4 +/- 2; face 0.5, 1.5, 2.5: 1.5 +/- 1
    assert float(transfer["distance_mm_mean"]) == pytest.approx(2.0)
    assert float(transfer["distance_mm_std"]) == pytest.approx(1.0)
    assert float(transfer["wound_rigid_mm_mean"]) == pytest.approx(4.0)
    assert float(transfer["wound_rigid_mm_std"]) == pytest.approx(2.0)
    assert float(transfer["face_rigid_mm_std"]) == pytest.approx(1.0)
    assert float(transfer["paper_mean_distance"]) == pytest.approx(0.3642)
    assert float(rows["ssl_20pct"]["distance_mm_std"]) == pytest.approx(math.sqrt(0.125))
    assert float(rows["ssl_20pct"]["paper_mean_distance"]) == pytest.approx(0.3353)
    # one seed: no spread; a metric the run did not report and a setting the paper lacks: empty cells
    assert rows["pretrained"]["distance_mm_std"] == "" and rows["pretrained"]["wound_rigid_mm_mean"] == ""
    assert rows["zzz_ablation"]["paper_mean_distance"] == ""
    markdown = paths["md"].read_text()
    assert "| Transfer Learning | 3 | 2.00 ± 1.00 | 12.00 ± 0.00 | 1.50 ± 1.00 | 0.75 ± 0.50 | 4.00 ± 2.00 | n/a | n/a | n/a | 0.3642 |" in markdown
    assert "| Pretrained MICA (no fine-tuning) | 1 | 11.00 | n/a | n/a | n/a | n/a | n/a | n/a | n/a |  |" in markdown


def test_baseline_rows_and_paired_comparisons(log_dir, tmp_path):
    """Per-image test metrics of two settings on the same 40 identities: ssl_20pct is 0.5 mm better on every
    identity (significant), the mean shape 1 mm worse than transfer; baselines come first in Table 1."""
    rng = np.random.default_rng(0)
    identities = np.repeat([f"CTM{i:05d}" for i in range(40)], 2)
    truth = rng.uniform(1.0, 3.0, 40).repeat(2)

    def samples(offset: float) -> dict:
        return {"sample": identities, "identity": identities, "light": np.zeros(80),
                **{m: truth + offset for m in table.COMPARED_METRICS}}

    def write(run_dir: Path, offset: float) -> None:
        table_rows = [{k: v[i] for k, v in samples(offset).items()} for i in range(80)]
        (run_dir / runs.TEST_SAMPLES_NAME).write_text(table.csv_text(table_rows))

    for seed in range(3):
        write(log_dir / "transfer" / "multiruns" / "2026-01-01_00-00-00" / str(seed), 0.0)
    for seed in range(2):
        write(log_dir / "ssl_20pct" / "runs" / f"t{seed}", -0.5)
    mean_shape = {**samples(1.0), **{m: np.full(80, 9.0) for m in (*table.TABLE1_METRICS, *table.PART_METRICS)}}
    mean_shape = {k.split("/", 1)[-1]: v for k, v in mean_shape.items()}
    mean_shape.update({m: truth + 1.0 for m in table.COMPARED_METRICS})
    paths = table.write_table1(runs.find_finished_runs(log_dir), PAPER, tmp_path / "results", {"mean_shape": mean_shape})
    rows = list(csv.DictReader(paths["csv"].open()))
    assert rows[0]["setting"] == "mean_shape" and float(rows[0]["face_rigid_mm_mean"]) == pytest.approx(truth.mean() + 1)
    compared = {(r["a"], r["b"], r["metric"]): r for r in csv.DictReader(paths["comparisons"].open())}
    ssl = compared[("ssl_20pct", "transfer", "face_rigid_mm")]
    assert float(ssl["difference"]) == pytest.approx(-0.5) and ssl["significant"] == "True"
    assert float(ssl["low"]) == pytest.approx(-0.5) and float(ssl["high"]) == pytest.approx(-0.5)
    versus_baseline = compared[("transfer", "mean_shape", "now_mean_mm")]
    assert float(versus_baseline["difference"]) == pytest.approx(-1.0)
    assert "## Paired comparisons" in paths["md"].read_text()


def test_mean_curve_over_seeds():
    histories = [history([4.0, 3.0], [5.0, 4.0]), history([6.0, 5.0, 1.0], [5.0, 2.0, 1.0])]
    epochs, mean, std, n = runs.mean_curve(histories, "train/loss_epoch")
    np.testing.assert_array_equal(epochs, [0, 1, 2])
    np.testing.assert_allclose(mean, [5.0, 4.0, 1.0])
    np.testing.assert_allclose(std[:2], [math.sqrt(2.0), math.sqrt(2.0)])
    assert math.isnan(std[2]) and list(n) == [2, 2, 1]
    assert len(runs.mean_curve(histories, "absent")[0]) == 0


def test_best_run_picks_lowest_test_distance_with_checkpoint(log_dir):
    found = runs.find_finished_runs(log_dir)
    with pytest.raises(ValueError, match="no finished 'transfer' run with a checkpoint"):
        runs.best_run(found, "transfer")
    for seed in (1, 2):
        checkpoints = log_dir / "transfer" / "multiruns" / "2026-01-01_00-00-00" / str(seed) / "checkpoints"
        checkpoints.mkdir()
        (checkpoints / "last.ckpt").write_bytes(b"x")
    best = runs.best_run(runs.find_finished_runs(log_dir), "transfer")
    assert best.seed == 1 and best.best_checkpoint.name == "last.ckpt"


# --- distances --------------------------------------------------------------------------------------
def test_per_vertex_distance_hand_computed():
    pred = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [3.0, 4.0, 12.0]]])
    gt = torch.tensor([[[3.0, 4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]])
    d = per_vertex_distance_mm(pred, gt)
    np.testing.assert_allclose(d.numpy(), [[5.0, 0.0, 13.0]])
    total, count = masked_mean_distance_mm(d, torch.tensor([[True, False, True]]))
    assert float(total / count) == pytest.approx(9.0)


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_umeyama_recovers_similarity():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(6, 3)) * 30
    rotation, translation = random_rotation(2), np.array([5.0, -3.0, 12.0])
    target = 1.2 * source @ rotation.T + translation
    fit = umeyama(source, target, with_scale=True)
    assert fit.scale == pytest.approx(1.2)
    np.testing.assert_allclose(fit.rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(fit.apply(source), target, atol=1e-9)
    assert umeyama(source, source @ rotation.T, with_scale=False).scale == 1.0
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(source[:2], target[:2])


def test_scan_that_is_a_moved_copy_is_at_zero(toy_model):
    vertices, faces = toy_model.mean_mm.astype(np.float64), toy_model.faces
    landmarks = toy_model.landmarks.positions(vertices)
    rotation, translation = random_rotation(3), np.array([20.0, -7.0, 4.0])
    scan = vertices @ rotation.T + translation
    result = scan_to_mesh_distance(scan, landmarks @ rotation.T + translation, vertices, faces, landmarks)
    assert result["median_mm"] < 1e-6 and result["mean_mm"] < 1e-6 and result["n_points"] == len(vertices)
    # a scan at 1.1x scale is met exactly only when the alignment fits the scale
    scaled = scan_to_mesh_distance(1.1 * scan, 1.1 * (landmarks @ rotation.T + translation), vertices, faces, landmarks, with_scale=True)
    assert scaled["mean_mm"] < 1e-6 and scaled["alignment"].scale == pytest.approx(1.1)


def test_plane_offset_by_d_is_at_d():
    grid = np.stack(np.meshgrid(np.linspace(0, 100, 11), np.linspace(0, 100, 11), indexing="ij"), -1).reshape(-1, 2)
    vertices = np.column_stack([grid, np.zeros(len(grid))])
    quads = np.array([[i * 11 + j, (i + 1) * 11 + j, (i + 1) * 11 + j + 1, i * 11 + j + 1] for i in range(10) for j in range(10)])
    faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    rng = np.random.default_rng(0)
    inside = np.column_stack([rng.uniform(0, 100, (500, 2)), np.full(500, 2.5)])
    np.testing.assert_allclose(point_to_surface_distance_mm(inside, vertices, faces), 2.5, atol=1e-9)
    below = inside * [1, 1, -1.6]  # 4 mm under the plane
    np.testing.assert_allclose(point_to_surface_distance_mm(below, vertices, faces), 4.0, atol=1e-9)
    # beyond the edge x = 100: 3 mm out, 4 mm up -> 5 mm to the edge
    outside = np.array([[103.0, 50.0, 4.0], [-6.0, -8.0, 0.0]])
    np.testing.assert_allclose(point_to_surface_distance_mm(outside, vertices, faces), [5.0, 10.0], atol=1e-9)
    with pytest.raises(ValueError, match="faces must be"):
        point_to_surface_distance_mm(inside, vertices, faces + 1000)


# --- figures --------------------------------------------------------------------------------------
def assert_nontrivial_png(path: Path, min_colours: int = 20) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 200
    colours = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) >= min_colours, f"{path}: only {len(colours)} colours"


def test_loss_and_swav_figures(log_dir, tmp_path):
    found = runs.find_finished_runs(log_dir)
    for name, figure in (("loss", figures.loss_curves_figure(found)), ("swav", figures.swav_loss_figure(found))):
        assert_nontrivial_png(save_figure(figure, tmp_path / f"{name}.png"))
    only_pretrained = [r for r in found if r.setting == "pretrained"]
    assert figures.loss_curves_figure(only_pretrained) is None and figures.swav_loss_figure(only_pretrained) is None


def test_mesh_figures(toy_model, tmp_path):
    gt = toy_model.vertices_mm(np.random.default_rng(0).normal(size=(2, toy_model.n_components))).astype(np.float32)
    pred = gt + np.float32(2.0) * (toy_model.mean_mm[None] / 100.0)
    mask = np.ones(toy_model.n_vertices, bool)
    mask[toy_model.regions["nose"]] = False
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 40, 40), dtype=np.uint8)
    assert_nontrivial_png(save_figure(figures.error_heatmaps_figure(pred, gt, toy_model.faces, mask), tmp_path / "h.png"))
    assert_nontrivial_png(save_figure(figures.reconstruction_rows_figure(images, pred, gt, toy_model.faces, mask), tmp_path / "r.png"))
    assert_nontrivial_png(save_figure(mesh_image(gt[0], toy_model.faces, view="left"), tmp_path / "m.png"))
    with pytest.raises(ValueError, match="view must be"):
        mesh_image(gt[0], toy_model.faces, view="top")
    with pytest.raises(ValueError, match="one per vertex"):
        mesh_image(gt[0], toy_model.faces, values=np.zeros(3))


def test_frontal_projection_culls_back_faces_and_paints_far_to_near(toy_model):
    import matplotlib.pyplot as plt

    from faceregen.plotting import draw_mesh

    mesh = trimesh.Trimesh(toy_model.mean_mm, toy_model.faces, process=False)
    fig, ax = plt.subplots()
    collection = draw_mesh(ax, toy_model.mean_mm, toy_model.faces)
    paths = collection.get_paths()
    assert len(paths) == int((mesh.face_normals[:, 2] > 0).sum())  # only the triangles facing the camera
    centres = mesh.triangles_center
    nearest = centres[centres[:, 2] > centres[:, 2].max() - 1e-4, :2]  # (a symmetric pair may tie)
    drawn_last = paths[-1].vertices[:3].mean(axis=0)
    assert np.linalg.norm(nearest - drawn_last, axis=1).min() < 1e-3
    plt.close(fig)


# --- fillings of predicted faces ------------------------------------------------------------------
def test_fillings_of_predictions(toy_model, tmp_path):
    from faceregen.synthetic.wounds import make_wound

    complete = toy_model.mean_mm.astype(np.float64)
    wound = make_wound(complete, toy_model.faces, toy_model, "tissue_loss_nasal_tip", np.random.default_rng(0))
    samples, names = [], ["CTM00001_0", "CTM00001_1"]
    for name in names:
        imperfect = write_mesh(tmp_path / "imperfect" / f"{name}.obj", wound.vertices_mm, toy_model.faces)
        label = write_mesh(tmp_path / "label" / f"{name}.obj", complete, toy_model.faces)
        np.savez(tmp_path / f"{name}.npz", mask=wound.mask, wound_type=np.array("tissue_loss_nasal_tip"))
        samples.append(SampleFiles(name, "CTM00001", "g", (), None, label, imperfect, tmp_path / f"{name}.npz"))
    # a perfect prediction, and one that is the wounded face itself (nothing to fill)
    predictions = {"sample": np.array(names), "prediction_mm": np.stack([complete, wound.vertices_mm]),
                   "vertices_mm": np.stack([complete, complete])}
    rows = runs.export_test_fillings(samples, predictions, tmp_path / "fillings")
    expected = trimesh.Trimesh(complete, toy_model.faces).volume - trimesh.Trimesh(wound.vertices_mm, toy_model.faces).volume
    assert rows[0]["true_volume_mm3"] == pytest.approx(expected, rel=1e-3)
    assert rows[0]["predicted_volume_mm3"] == pytest.approx(rows[0]["true_volume_mm3"], rel=1e-9)
    assert rows[0]["watertight"] is True and rows[0]["wound_type"] == "tissue_loss_nasal_tip" and not rows[0]["error"]
    assert trimesh.load(rows[0]["stl"]).is_watertight
    assert (tmp_path / "fillings" / f"{names[0]}_composite.glb").is_file()
    assert rows[1]["error"].startswith("predicted filling:") and rows[1]["predicted_volume_mm3"] == ""
    assert rows[1]["true_volume_mm3"] == pytest.approx(rows[0]["true_volume_mm3"])
    assert "predicted_volume_mm3" in table.csv_text(rows).splitlines()[0]


# --- checkpoints and the samples callback ----------------------------------------------------------
def test_samples_callback_in_tiny_fit_and_checkpoint_loading(toy_model, tmp_path):
    torch.manual_seed(0)
    data = DataLoader(FaceBatches(toy_model, n=4), batch_size=2)
    samples = ReconstructionSamples(str(tmp_path), every_n_epochs=2, n_samples=2)
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    module = make_module(toy_model, freeze="all")
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, callbacks=[samples, checkpoint],
                         enable_progress_bar=False, enable_model_summary=False, limit_train_batches=1)
    trainer.fit(module, data, data)
    written = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert written == ["epoch_001.png"]  # every 2nd epoch only
    assert_nontrivial_png(tmp_path / "samples" / "epoch_001.png")

    fresh = make_module(toy_model, freeze="all")
    load_state_strict(fresh, read_mica_state_dict(tmp_path / "checkpoints" / "last.ckpt"), "last.ckpt")
    fresh.eval()
    images = next(iter(data))["image"]
    with torch.no_grad():
        np.testing.assert_allclose(fresh(images).numpy(), module.eval()(images).numpy(), rtol=1e-5, atol=1e-4)
    torch.save({"state_dict": {"unexpected": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="other.ckpt: does not fit MICAModule"):
        read_mica_state_dict(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError):
        read_mica_state_dict(tmp_path / "missing.ckpt")


# --- the entry point ------------------------------------------------------------------------------
def test_evaluate_entry_point_writes_table_and_figures(log_dir, tmp_path):
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"runs_dir={log_dir}", f"results_dir={results}",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2.00 ± 1.00" in (results / "table1.md").read_text()
    for name in ("loss_curves.png", "swav_loss.png"):
        assert_nontrivial_png(results / name)
    assert "sample figures skipped" in done.stderr + done.stdout  # no run with a checkpoint


@pytest.fixture
def results_dir(tmp_path):
    from PIL import Image

    results = tmp_path / "results"
    results.mkdir()
    (results / "table1.csv").write_text("setting,seeds,mean_distance_mm_mean\ntransfer,\"0,1\",1.25\nscratch,0,\n")
    for name in ("loss_curves", "reconstructions"):
        Image.new("RGB", (8, 8), "white").save(results / f"{name}.png")
    return results


def test_results_are_logged_as_a_table_and_figures_by_setting(results_dir, tmp_path):
    import wandb

    from faceregen.evaluation.wandb_results import log_results, results_payload

    payload = results_payload(results_dir, "transfer")
    assert sorted(payload) == ["all_settings/loss_curves", "table1", "transfer/reconstructions"]
    assert isinstance(payload["table1"], wandb.Table) and isinstance(payload["transfer/reconstructions"], wandb.Image)
    assert payload["table1"].columns == ["setting", "seeds", "mean_distance_mm_mean"]
    assert payload["table1"].data == [["transfer", "0,1", 1.25], ["scratch", "0", None]]  # a type per column
    assert log_results(tmp_path / "nothing", "transfer", tmp_path / "wandb_dir", "faceregen", "offline") is None


@pytest.mark.slow
def test_results_go_into_an_offline_wandb_run(results_dir, tmp_path):
    """The offline run `wandb sync` uploads: Table 1's JSON and the figures under their setting."""
    from faceregen.evaluation.wandb_results import log_results

    folder = log_results(results_dir, "transfer", tmp_path / "wandb_dir", "faceregen", "offline")
    assert folder.name.startswith("offline-run-") and list(folder.glob("run-*.wandb"))
    media = folder / "files" / "media"
    table = json.loads(next((media / "table").glob("table1_*.table.json")).read_text())
    assert table["data"] == [["transfer", "0,1", 1.25], ["scratch", "0", None]]
    images = sorted(p.parent.name + "/" + p.name.split("_")[0] for p in (media / "images").rglob("*.png"))
    assert images == ["all_settings/loss", "transfer/reconstructions"]
