"""Finished training runs: finding them, their histories, predicting test faces with their model.

A run directory (``python train.py``: ``logs/<task_name>/runs/<time>/`` or ``.../multiruns/<time>/<n>/``)
holds ``.hydra/config.yaml`` (the composed config: ``task_name``, the setting, ``seed``, ...), ``metrics.json``
(``{"history": [{"epoch", "<stage>/<name>": float}], "best_checkpoint", "best_score", "monitor",
"test": {"test/<name>": float}}``; see ``callbacks/metrics_json.py``), ``stages.json``
(``{"start_checkpoint", "ssl_stage_dir", "base_stage_dir"}``) and ``checkpoints/*.ckpt``. A run is
FINISHED when its ``metrics.json`` has test metrics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from faceregen.data_layout import read_wound
from faceregen.mesh_io import read_mesh
from faceregen.postprocess import export_filling, extract_filling

log = logging.getLogger(__name__)

#: the settings of the paper's Table 1, in its order; other experiment names follow alphabetically
PAPER_ORDER = ("pretrained", "transfer", "scratch", "ssl_20pct", "ssl_100pct")


@dataclass(frozen=True)
class RunRecord:
    """One finished run: its folder, setting, seed, ``metrics.json`` and ``stages.json`` (``{}`` if absent)."""

    run_dir: Path
    setting: str
    seed: int
    metrics: dict
    stages: dict

    @property
    def test(self) -> dict[str, float]:
        return self.metrics["test"]

    @property
    def history(self) -> list[dict]:
        return self.metrics.get("history", [])

    @property
    def best_checkpoint(self) -> Path | None:
        """The best checkpoint if it still exists (``metrics.json``'s, else ``checkpoints/last.ckpt``)."""
        for candidate in (self.metrics.get("best_checkpoint"), self.run_dir / "checkpoints" / "last.ckpt"):
            if candidate and Path(candidate).is_file():
                return Path(candidate)
        return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


def read_run(run_dir: str | Path) -> RunRecord | None:
    """The run in ``run_dir``, or None when it is not finished (no ``metrics.json`` or no test metrics).

    Raises:
        FileNotFoundError: a finished run without ``.hydra/config.yaml``.
        ValueError: unreadable JSON, a config without ``task_name`` / ``seed``, or a run meant to
            train (``train: true``) that trained no epoch (e.g. ``trainer.max_epochs=0``).
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = _read_json(metrics_path)
    if not metrics.get("test"):
        return None
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: the run's config is missing (expected beside {metrics_path})")
    config = OmegaConf.load(config_path)
    if "task_name" not in config or "seed" not in config:
        raise ValueError(f"{config_path}: expected the keys task_name and seed")
    if config.get("train") and not metrics.get("history"):
        raise ValueError(f"{metrics_path}: the run was to train (train: true) but trained no epoch (empty history)")
    stages_path = run_dir / "stages.json"
    stages = _read_json(stages_path) if stages_path.is_file() else {}
    return RunRecord(run_dir, str(config.task_name), int(config.seed), metrics, stages)


def readable_run(run_dir: Path) -> RunRecord | None:
    """:func:`read_run`, or None with a warning naming the problem when the run cannot be read."""
    try:
        return read_run(run_dir)
    except (OSError, ValueError) as err:
        log.warning("skipping the run %s: %s", run_dir, err)
        return None


#: a run's per-image test metrics, beside metrics.json (written by callbacks/metrics_json.py): one row per
#: test image: sample, identity, light, then :data:`faceregen.evaluation.protocol.SAMPLE_METRICS`
TEST_SAMPLES_NAME = "test_samples.csv"


def read_test_samples(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """A run's ``test_samples.csv`` as columns (``sample``, ``identity`` as str; the metrics as float, NaN
    for empty cells); None when the run has none."""
    import csv

    path = Path(run_dir) / TEST_SAMPLES_NAME
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    text = {"sample", "identity"}
    return {
        name: np.array([r[name] for r in rows]) if name in text else np.array([float(r[name] or "nan") for r in rows])
        for name in rows[0]
    }


def setting_order(names: Iterable[str]) -> list[str]:
    """Distinct setting names in the paper's order (:data:`PAPER_ORDER`), then the others alphabetically."""
    names = set(names)
    return [n for n in PAPER_ORDER if n in names] + sorted(names - set(PAPER_ORDER))


def find_finished_runs(log_dir: str | Path) -> list[RunRecord]:
    """Every finished run under ``log_dir`` (any depth), ordered by setting (paper order), seed, folder;
    runs that cannot be read (truncated ``metrics.json``, missing config, nothing trained) are skipped
    with a warning."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"{log_dir}: log folder not found (expected the runs of train.py under it)")
    runs = [run for path in sorted(log_dir.rglob("metrics.json")) if (run := readable_run(path.parent)) is not None]
    order = {name: i for i, name in enumerate(setting_order(r.setting for r in runs))}
    return sorted(runs, key=lambda r: (order[r.setting], r.seed, str(r.run_dir)))


def group_by_setting(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """``setting -> runs`` in the paper's order."""
    return {name: [r for r in runs if r.setting == name] for name in setting_order(r.setting for r in runs)}


def history_curve(history: Sequence[dict], key: str) -> dict[int, float]:
    """``epoch -> value`` of ``key`` over a ``metrics.json`` history (epochs without it are left out)."""
    return {int(row["epoch"]): float(row[key]) for row in history if key in row}


def mean_curve(histories: Sequence[Sequence[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch, the mean and sample std (``ddof=1``; NaN for one run) of ``key`` over the runs that have
    it, and how many do.

    Returns:
        ``(epochs, mean, std, n_runs)``, each (E,), over the union of the runs' epochs (sorted).
    """
    curves = [history_curve(h, key) for h in histories]
    epochs = np.array(sorted(set().union(*curves)), dtype=np.int64)
    values = [[c[e] for c in curves if e in c] for e in epochs]
    return (
        epochs,
        np.array([np.mean(v) for v in values]),
        np.array([sample_std(v) for v in values]),
        np.array([len(v) for v in values], dtype=np.int64),
    )


def sample_std(values: Sequence[float]) -> float:
    """``sqrt(sum (x - mean)^2 / (n - 1))``; NaN for fewer than two values (one seed has no spread)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def stage_history(run: RunRecord, stage: str) -> list[dict]:
    """The history of the run's ``stage`` (``"ssl_stage_dir"`` or ``"base_stage_dir"``) from its own
    ``metrics.json``; ``[]`` when the run has no such stage or its folder has no metrics."""
    folder = run.stages.get(stage)
    path = Path(folder) / "metrics.json" if folder else None
    return _read_json(path).get("history", []) if path and path.is_file() else []


def best_run(runs: Sequence[RunRecord], setting: str) -> RunRecord:
    """The run of ``setting`` with the lowest test face-region error (after a rigid fit) among those
    with a checkpoint."""
    candidates = [r for r in runs if r.setting == setting and r.best_checkpoint is not None]
    if not candidates:
        available = sorted({r.setting for r in runs if r.best_checkpoint is not None})
        raise ValueError(f"no finished {setting!r} run with a checkpoint; settings with one: {available}")
    return min(candidates, key=lambda r: r.test.get("test/face_rigid_mm", float("inf")))


# --- predictions on the test split -----------------------------------------------------------------
def first_image_positions(dataset, item_light: np.ndarray) -> np.ndarray:
    """Positions in a ``Cir3DFaIRDataset`` of each sample's first image (lowest light index ``item_light``
    of the cache items), ordered by sample."""
    rows = dataset.item_sample[dataset.items]
    order = np.lexsort((item_light[dataset.items], rows))
    _, first = np.unique(rows[order], return_index=True)
    return order[first]


@torch.no_grad()
def predict_dataset(module, dataset, positions: Sequence[int], batch_size: int = 32) -> dict[str, np.ndarray]:
    """Run ``module`` on the dataset items at ``positions`` (tqdm progress).

    Returns:
        The dataset's batch fields as numpy arrays (``image`` uint8 (N, 3, S, S), ``vertices_mm`` the
        ground truth (N, V, 3), ``wound_mask``, ``has_wound_mask``, ``index``, ...) plus ``prediction_mm``
        (N, V, 3) and ``sample_row`` (N,) (the cache row of each item's sample).
    """
    device = next(module.parameters()).device
    parts: dict[str, list] = {}
    positions = np.asarray(positions, dtype=np.int64)
    for start in tqdm(range(0, len(positions), batch_size), desc="predict", unit="batch"):
        batch = dataset.__getitems__(positions[start : start + batch_size])
        batch["prediction_mm"] = module(batch["image"].to(device)).float().cpu()
        batch["sample_row"] = torch.from_numpy(dataset.item_sample[batch["index"].numpy()])
        for key, value in batch.items():
            if key != "views":
                parts.setdefault(key, []).append(value.numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def evenly_spread(n_total: int, n: int) -> np.ndarray:
    """``min(n, n_total)`` indices spread evenly over ``0 .. n_total - 1`` (first and last included)."""
    return np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(np.int64))


def predict_test_samples(module, datamodule, batch_size: int = 32, n_samples: int | None = None) -> dict[str, np.ndarray]:
    """:func:`predict_dataset` on the first image of every test sample (or of ``n_samples`` of them, evenly
    spread over the split), plus ``sample`` (N,) names."""
    dataset = datamodule.test_dataset
    positions = first_image_positions(dataset, datamodule.cache.item_light)
    if n_samples is not None:
        positions = positions[evenly_spread(len(positions), n_samples)]
    predictions = predict_dataset(module, dataset, positions, batch_size)
    predictions["sample"] = np.array([datamodule.cache.sample_names[row] for row in predictions["sample_row"]])
    return predictions


# --- fillings of the test split -----------------------------------------------------------------------
def export_test_fillings(samples: Sequence, predictions: dict[str, np.ndarray], out_dir: str | Path) -> list[dict]:
    """For each predicted test sample with an imperfect mesh and a wound mask: the filling between the
    imperfect face and the PREDICTED complete face, exported for printing
    (:func:`faceregen.postprocess.export_filling`: ``<out_dir>/<sample>.stl``, ``.json``, ``_composite.ply``,
    ``_composite.glb``), and the true missing volume (the filling up to the ground-truth label).

    Args:
        samples: the split's ``SampleFiles`` (``datamodule.samples_of("test")``).
        predictions: :func:`predict_test_samples`'s output (``sample``, ``prediction_mm``, ``vertices_mm``).

    Returns:
        One row per sample: ``sample, wound_type, predicted_volume_mm3, true_volume_mm3, volume_error_mm3,
        watertight, stl, error`` (``error``: why a filling did not come out, e.g. a prediction lying inside
        the wounded face over the wound; its volume is then empty).
    """
    by_name = {s.sample: s for s in samples}
    rows = []
    for name, predicted, label in tqdm(
        list(zip(predictions["sample"], predictions["prediction_mm"], predictions["vertices_mm"])), desc="fillings"
    ):
        sample = by_name[str(name)]
        if sample.imperfect is None or sample.wound is None:
            continue
        imperfect, faces = read_mesh(sample.imperfect)
        wound = read_wound(sample.wound, len(imperfect))
        row = {"sample": str(name), "wound_type": wound.wound_type, "predicted_volume_mm3": "", "true_volume_mm3": "",
               "volume_error_mm3": "", "watertight": "", "stl": "", "error": ""}
        rows.append(row)
        errors = []
        try:
            row["true_volume_mm3"] = float(extract_filling(imperfect, label, faces, wound.mask).volume)
        except ValueError as err:
            errors.append(f"true filling: {err}")
        try:
            filling = extract_filling(imperfect, predicted, faces, wound.mask)
        except ValueError as err:
            row["error"] = "; ".join([*errors, f"predicted filling: {err}"])
            continue
        paths = export_filling(Path(out_dir) / str(name), filling, imperfect, faces)
        row.update(predicted_volume_mm3=float(filling.volume), watertight=bool(filling.is_watertight),
                   stl=str(paths["stl"]), error="; ".join(errors))
        if not errors:
            row["volume_error_mm3"] = row["predicted_volume_mm3"] - row["true_volume_mm3"]
    return rows
