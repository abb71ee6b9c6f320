"""Evaluate finished runs: ``python evaluate.py`` (``make eval``). All settings are in ``conf/eval.yaml``.

Writes ``results_dir/``: ``table1.md``/``table1.csv`` (test errors per setting over seeds beside the
baselines and the paper's, then paired comparisons with bootstrap intervals: ``comparisons.csv``),
``baselines.csv`` (the baselines' per-image metrics), ``loss_curves.png``, ``swav_loss.png``, ``error_heatmaps.png``, ``reconstructions.png`` and, with
``export.fillings=true``, ``fillings/<sample>.*`` and ``fillings.csv``; the tables and figures also go into an
offline wandb run (``wandb.enabled``, :mod:`faceregen.evaluation.wandb_results`). With ``ckpt=...`` only that
checkpoint is evaluated (``checkpoint_test.json`` + its figures and fillings), e.g. on another folder:
``python evaluate.py ckpt=<run>/checkpoints/last.ckpt data.root=/path/to/Cir3D-FaIR``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import hydra
import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from faceregen.data_layout import find_samples, has_manifest
from faceregen.evaluation import figures, runs, table, wandb_results
from faceregen.evaluation.baselines import baseline_sample_metrics
from faceregen.io import atomic_write_text
from faceregen.plotting import save_figure
from training.trained_run import evaluate_test_split, load_trained_run
from training.building import with_face_model

log = logging.getLogger(__name__)


def reevaluated(records: list[runs.RunRecord], cfg: DictConfig) -> list[runs.RunRecord]:
    """The runs with their test metrics recomputed from their best checkpoint (runs without one keep theirs)."""
    updated = []
    for run in tqdm(records, desc="re-evaluating runs"):
        checkpoint = run.best_checkpoint
        if checkpoint is None:
            log.info("%s: no checkpoint, keeping the stored test metrics", run.run_dir)
            updated.append(run)
            continue
        trained = load_trained_run(checkpoint, cfg.paths, data_overrides(cfg), cfg.trusted_targets, device="auto")
        test = evaluate_test_split(trained.module, trained.test_datamodule())
        updated.append(dataclasses.replace(run, metrics={**run.metrics, "test": test}))
    return updated


def data_overrides(cfg: DictConfig) -> dict:
    return {key: value for key, value in cfg.data.items() if value is not None}


def write_checkpoint_results(cfg: DictConfig, checkpoint: Path, results_dir: Path, test_metrics: bool) -> None:
    """Sample figures (and, when asked, the test metrics and the fillings) of one checkpoint's test split."""
    trained = load_trained_run(checkpoint, cfg.paths, data_overrides(cfg), cfg.trusted_targets, device="auto")
    datamodule, module = trained.test_datamodule(), trained.module
    if test_metrics:
        metrics = {"checkpoint": str(checkpoint), "data_root": str(datamodule.root),
                   **evaluate_test_split(module, datamodule)}
        atomic_write_text(results_dir / "checkpoint_test.json", json.dumps(metrics, indent=2) + "\n")
    n_shown = cfg.figures.samples
    predictions = runs.predict_test_samples(module, datamodule, cfg.batch_size, None if cfg.export.fillings else n_shown)
    faces = trained.face_model.faces
    mask = module.evaluation_mask.cpu().numpy()
    shown = {key: value[runs.evenly_spread(len(value), n_shown)] for key, value in predictions.items()}
    titles = [str(name) for name in shown["sample"]]
    save_figure(figures.error_heatmaps_figure(shown["prediction_mm"], shown["vertices_mm"], faces, mask, titles),
                results_dir / "error_heatmaps.png")
    save_figure(figures.reconstruction_rows_figure(shown["image"], shown["prediction_mm"], shown["vertices_mm"], faces,
                                                   mask, titles), results_dir / "reconstructions.png")
    if cfg.export.fillings:
        rows = runs.export_test_fillings(datamodule.samples_of("test"), predictions, results_dir / "fillings")
        atomic_write_text(results_dir / "fillings.csv", table.csv_text(rows))
        log.info("fillings: %d of %d test faces exported -> %s (failures: fillings.csv)",
                 sum(bool(r["stl"]) for r in rows), len(rows), results_dir / "fillings")


def dataset_arrays(datamodule, dataset) -> dict[str, np.ndarray]:
    """Every item of a split as arrays: image, vertices_mm, wound_mask, light, and the items' sample/identity."""
    batch = dataset.__getitems__(list(range(len(dataset))))
    arrays = {k: batch[k].numpy() for k in ("image", "vertices_mm", "light")}
    arrays["wound_mask"] = (batch["wound_mask"] & batch["has_wound_mask"][:, None]).numpy()
    return {**arrays, **datamodule.describe_items(batch["index"].numpy())}


def test_split_baselines(cfg: DictConfig, checkpoint: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per-image test metrics of the baselines (mean shape, linear probe, decoder's best fit) on the data of
    ``checkpoint``'s run; the probe learns from its train split plus the complete faces under
    ``cfg.baselines.extra_train_root`` when that folder holds a dataset. Also ``<results>/baselines.csv``."""
    trained = load_trained_run(checkpoint, cfg.paths, data_overrides(cfg), cfg.trusted_targets)
    datamodule = trained.test_datamodule()
    datamodule.setup()
    splits = {name: dataset_arrays(datamodule, getattr(datamodule, f"{name}_dataset")) for name in ("train", "val", "test")}
    extra_root = cfg.baselines.extra_train_root
    if extra_root and has_manifest(extra_root):
        extra = with_face_model(trained.config.data)(
            face_model=trained.face_model, alignment=trained.module.identity_encoder.alignment, root=extra_root
        )
        extra.setup()
        parts = [dataset_arrays(extra, getattr(extra, f"{n}_dataset")) for n in ("train", "val", "test")]
        splits["train"] = {k: np.concatenate([splits["train"][k], *(p[k] for p in parts)]) for k in ("image", "vertices_mm")}
    log.info("baselines: the linear probe learns from %d images", len(splits["train"]["image"]))
    metrics = baseline_sample_metrics(trained.face_model, splits, trained.module.hparams.now_test_images)
    described = {k: splits["test"][k] for k in ("sample", "identity", "light")}
    results = {name: {**described, **values} for name, values in metrics.items()}
    rows = [{"baseline": name, **{k: v[i].item() for k, v in values.items()}}
            for name, values in results.items() for i in range(len(described["sample"]))]
    atomic_write_text(Path(cfg.results_dir) / "baselines.csv", table.csv_text(rows))
    return results

def write_restoration_table(cfg: DictConfig, results_dir: Path) -> None:
    """``restoration.table=true``: the restoration on the test split's scans against the clinical baselines
    (:mod:`faceregen.evaluation.restoration`), in ``results_dir/restoration/``."""
    from datamodules.splits import split_identities
    from faceregen.evaluation import restoration as measure
    from faceregen.plotting import save_figure

    settings = cfg.restoration
    root = Path(settings.data_root)
    split_file = root / "splits" / f"split_seed{cfg.seed}.json"
    if split_file.is_file():
        test = set(json.loads(split_file.read_text())["test"])
    else:  # the split the datamodule would make, computed without writing into the data folder
        identities = {s.identity for s in find_samples(root)}
        test = set(split_identities(sorted(identities), (0.6, 0.2, 0.2), cfg.seed)["test"])
    cases = measure.read_cases(root, test, settings.max_cases)
    if settings.detail_rms_mm:
        cases = [measure.with_detail(c, np.random.default_rng([cfg.seed, i]), settings.detail_rms_mm)
                 for i, c in enumerate(cases)]
    if set(settings.methods) & set(measure.IMAGE_METHODS):  # the photo's code, as restore.py image=... gets it
        if not cfg.ckpt:
            raise ValueError(f"restoration.methods {list(settings.methods)}: the image rows need ckpt=<run>/checkpoints/x.ckpt")
        from faceregen.reconstruction import Reconstructor
        from reconstruct import load_run_model

        model, face_model = load_run_model(cfg.ckpt, OmegaConf.to_container(cfg.paths, resolve=True))
        reconstructor = Reconstructor(model, max_pixels=40_000_000)
        cases = [dataclasses.replace(c, image_code=reconstructor(c.image).code) for c in cases]
    else:
        face_model = hydra.utils.instantiate(cfg.face_model)
    restorer = hydra.utils.instantiate(cfg.restorer, _partial_=True)(face_model=face_model)
    out = results_dir / "restoration"
    rows = [measure.evaluate_case(restorer, case, method, variant, cfg.seed)
            for case in tqdm(cases, desc="restoration") for variant in settings.variants for method in settings.methods]
    summary = measure.summary_rows(rows)
    title = f"restoration on {len(cases)} test cases of {root.name}" + (
        f" (+ {settings.detail_rms_mm} mm RMS detail)" if settings.detail_rms_mm else "")
    atomic_write_text(out / "cases.csv", measure.csv_text(rows))
    atomic_write_text(out / "table.csv", measure.csv_text(summary))
    atomic_write_text(out / "table.md", measure.markdown_table(summary, title))
    save_figure(measure.summary_figure(summary, title), out / "summary.png")
    log.info("restoration table -> %s\n%s", out / "table.md", (out / "table.md").read_text())


def evaluate(cfg: DictConfig) -> None:
    """One checkpoint (``cfg.ckpt``), or every finished run under ``cfg.runs_dir`` (module docstring)."""
    pl.seed_everything(cfg.seed, workers=True)
    results_dir = Path(cfg.results_dir)
    if cfg.restoration.table:
        write_restoration_table(cfg, results_dir)
        return
    if cfg.ckpt:
        write_checkpoint_results(cfg, Path(cfg.ckpt), results_dir, test_metrics=True)
        return
    records = runs.find_finished_runs(cfg.runs_dir)
    if not records:
        raise ValueError(f"{cfg.runs_dir}: no finished run (metrics.json with test metrics); run train.py first")
    if cfg.reevaluate:
        records = reevaluated(records, cfg)
    reference = next((r.best_checkpoint for r in records if r.best_checkpoint is not None), None)
    baselines = test_split_baselines(cfg, reference) if cfg.baselines.enabled and reference else None
    paths = table.write_table1(records, cfg.paper_table1, results_dir, baselines)
    log.info("Table 1 (%d runs) -> %s\n%s", len(records), paths["md"], paths["md"].read_text())
    for name, draw in (("loss_curves", figures.loss_curves_figure), ("swav_loss", figures.swav_loss_figure)):
        figure = draw(records)
        if figure is None:
            log.info("%s: the runs hold no such history; figure skipped", name)
        else:
            save_figure(figure, results_dir / f"{name}.png")
    try:
        best = runs.best_run(records, cfg.run)
    except ValueError as err:
        if cfg.export.fillings:
            raise
        log.warning("sample figures skipped: %s", err)
        return
    write_checkpoint_results(cfg, best.best_checkpoint, results_dir, test_metrics=False)


def log_to_wandb(cfg: DictConfig) -> None:
    """The results' tables and figures as a wandb run (``cfg.wandb``), when enabled."""
    if cfg.wandb.enabled:
        setting = "checkpoint" if cfg.ckpt else cfg.run  # whose sample figures these are
        folder = wandb_results.log_results(cfg.results_dir, setting, cfg.wandb.save_dir, cfg.wandb.project,
                                           cfg.wandb.mode)
        log.info("wandb (%s): %s; upload with: wandb sync %s", cfg.wandb.mode, folder, folder)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
    log_to_wandb(cfg)


if __name__ == "__main__":
    main()
