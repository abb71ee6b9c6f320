"""Table 1: test distances per setting, mean +/- std over seeds, beside the paper's numbers.

Per setting ``s`` with runs (seeds) ``r = 1..n`` and test metric ``m_r`` (mm):
``mean = (1/n) sum_r m_r``, ``std = sqrt(sum_r (m_r - mean)^2 / (n - 1))`` (blank for one seed), for the
mean per-vertex distance over the face and separately inside / outside the wound, after a similarity
fit of the prediction to the ground truth (shape alone: head size and position removed), and of the
face model's mean shape (the baseline a model that learns nothing reaches). The paper's column is
its Table 1 "mean distance" on the real Cir3D-FaIR (units not stated): other data, shown for reference.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from faceregen.evaluation.baselines import BASELINES
from faceregen.evaluation.runs import RunRecord, group_by_setting, read_test_samples, sample_std
from faceregen.evaluation.statistics import paired_bootstrap
from faceregen.face_model.decoder import FACE_PARTS
from faceregen.io import atomic_write_text

#: test metrics of Table 1 (the evaluation protocol's, :mod:`faceregen.evaluation.protocol`), as
#: ``metrics.json`` names them, with their column titles
TABLE1_METRICS = {
    "test/distance_mm": "whole head, as predicted (mm)",
    "test/mse_mm2": "authors' MSE (mm^2)",
    "test/face_rigid_mm": "face, rigid fit (mm)",
    "test/face_similarity_mm": "face, similarity fit (mm)",
    "test/wound_rigid_mm": "inside the wound, rigid fit (mm)",
    "test/now_median_mm": "NoW-style median (mm)",
    "test/now_mean_mm": "NoW-style mean (mm)",
    "test/now_metrical_mean_mm": "NoW-style metrical mean (mm)",
}
#: the per-part errors (after the face region's rigid fit), Table 1's second part
PART_METRICS = {f"test/{part}_rigid_mm": f"{part} (mm)" for part in FACE_PARTS}
#: the metrics settings are compared on, pairwise, with bootstrap intervals
COMPARED_METRICS = ("face_rigid_mm", "wound_rigid_mm", "now_mean_mm")
#: how the paper names the settings
SETTING_LABELS = {
    "pretrained": "Pretrained MICA (no fine-tuning)",
    "transfer": "Transfer Learning",
    "scratch": "From scratch",
    "ssl_20pct": "SSL 20%",
    "ssl_100pct": "SSL 100%",
}
PAPER_COLUMN = "paper Table 1 mean distance (real Cir3D-FaIR, other data)"


def _column(metric: str) -> str:
    return metric.split("/", 1)[1]


def table1_rows(
    runs: Sequence[RunRecord], paper_table1: Mapping[str, float], baselines: Mapping[str, Mapping[str, np.ndarray]] | None = None
) -> list[dict]:
    """One row per baseline (:data:`~faceregen.evaluation.baselines.BASELINES`: the mean over its test
    images), then per setting (paper order): ``setting, label, n_seeds, seeds, <metric>_mean, <metric>_std``
    for each of :data:`TABLE1_METRICS` and :data:`PART_METRICS` (over the runs that report it; NaN where
    none / one does) and ``paper_mean_distance`` (NaN where the paper has no such row)."""
    rows = []
    for name, values in (baselines or {}).items():
        row = {"setting": name, "label": BASELINES.get(name, name), "n_seeds": 0, "seeds": ""}
        for metric in (*TABLE1_METRICS, *PART_METRICS):
            column = values[_column(metric)]
            row[f"{_column(metric)}_mean"] = float(np.nanmean(column)) if np.isfinite(column).any() else math.nan
            row[f"{_column(metric)}_std"] = math.nan
        row["paper_mean_distance"] = math.nan
        rows.append(row)
    for setting, group in group_by_setting(runs).items():
        row = {"setting": setting, "label": SETTING_LABELS.get(setting, setting), "n_seeds": len(group),
               "seeds": " ".join(str(r.seed) for r in group)}
        for metric in (*TABLE1_METRICS, *PART_METRICS):
            values = [r.test[metric] for r in group if metric in r.test]
            row[f"{_column(metric)}_mean"] = float(np.mean(values)) if values else math.nan
            row[f"{_column(metric)}_std"] = sample_std(values)
        row["paper_mean_distance"] = float(paper_table1.get(setting, math.nan))
        rows.append(row)
    return rows


def _mean_std(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def table1_markdown(rows: Sequence[dict], digits: int = 2) -> str:
    """Markdown of :func:`table1_rows`: the main metrics (with the paper's column), then the per-part errors;
    ``mean ± std`` over seeds (``mean`` alone for one seed or a baseline)."""
    def table(metrics: Mapping[str, str], paper: bool) -> list[str]:
        header = ["setting", "seeds", *metrics.values(), *([PAPER_COLUMN] if paper else [])]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [row["label"], str(row["n_seeds"] or "-")]
            cells += [_mean_std(row[f"{_column(m)}_mean"], row[f"{_column(m)}_std"], digits) for m in metrics]
            if paper:
                cells.append("" if math.isnan(row["paper_mean_distance"]) else f"{row['paper_mean_distance']:.4f}")
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    note = (
        "\nTest split, mean over test images; settings: mean ± sample std over seeds. Baselines: the face "
        "model's mean shape, a ridge probe from the aligned chip's pixels, and the decoder's best fit to the "
        "truth (the floor no decoder output beats). NoW-style: on each sample's first render. The paper's "
        "column is its Table 1 on the real Cir3D-FaIR with FLAME (most likely the authors' MSE in mm^2); "
        "other data and models, not comparable in absolute terms.\n"
    )
    parts = "\n\nPer face part, after the face region's rigid fit:\n\n"
    return "\n".join(table(TABLE1_METRICS, True)) + parts + "\n".join(table(PART_METRICS, False)) + "\n" + note


def identity_matrix(samples: Sequence[Mapping[str, np.ndarray]], metric: str) -> tuple[list[str], np.ndarray]:
    """Per-identity means of ``metric`` for each run's (seed's) per-image test metrics: identities common
    to every run (sorted), and a (runs, identities) array; images where the metric is NaN are left out."""
    per_run = []
    for columns in samples:
        values = np.asarray(columns[metric], dtype=np.float64)
        identities = np.asarray(columns["identity"]).astype(str)
        keep = np.isfinite(values)
        per_run.append({i: values[keep & (identities == i)].mean() for i in np.unique(identities[keep])})
    common = sorted(set.intersection(*(set(r) for r in per_run))) if per_run else []
    return common, np.array([[r[i] for i in common] for r in per_run])


def comparison_rows(
    runs: Sequence[RunRecord], baselines: Mapping[str, Mapping[str, np.ndarray]] | None = None, seed: int = 0
) -> list[dict]:
    """Paired differences ``A - B`` over the same test identities with two-level bootstrap 95% intervals
    (:func:`faceregen.evaluation.statistics.paired_bootstrap`) on :data:`COMPARED_METRICS`: every setting
    against ``transfer``, SSL 20% against SSL 100%, and every setting against each baseline. Runs without
    ``test_samples.csv`` are left out."""
    samples = {}
    for setting, group in group_by_setting(runs).items():
        found = [read_test_samples(r.run_dir) for r in group]
        if any(f is not None for f in found):
            samples[setting] = [f for f in found if f is not None]
    samples.update({name: [values] for name, values in (baselines or {}).items()})
    settings = [s for s in group_by_setting(runs) if s in samples]
    pairs = [(s, "transfer") for s in settings if s != "transfer" and "transfer" in samples]
    pairs += [("ssl_20pct", "ssl_100pct")] if {"ssl_20pct", "ssl_100pct"} <= set(samples) else []
    pairs += [(s, b) for b in (baselines or {}) for s in settings]
    rows = []
    for a, b in pairs:
        for metric in COMPARED_METRICS:
            identities, matrix_a = identity_matrix(samples[a], metric)
            common, matrix_b = identity_matrix(samples[b], metric)
            shared = sorted(set(identities) & set(common))
            if not shared:
                continue
            pick_a = [identities.index(i) for i in shared]
            pick_b = [common.index(i) for i in shared]
            result = paired_bootstrap(matrix_a[:, pick_a], matrix_b[:, pick_b], seed=seed)
            rows.append({"a": a, "b": b, "metric": metric, **result})
    return rows


def comparison_markdown(rows: Sequence[dict]) -> str:
    """Markdown of :func:`comparison_rows`."""
    lines = ["| A | B | metric | A - B (mm) | 95% interval | identities | seeds A / B | significant |", "|" + "---|" * 8]
    for r in rows:
        label = lambda s: SETTING_LABELS.get(s, BASELINES.get(s, s))  # noqa: E731
        lines.append(
            f"| {label(r['a'])} | {label(r['b'])} | {r['metric']} | {r['difference']:+.3f} | "
            f"[{r['low']:+.3f}, {r['high']:+.3f}] | {r['n_identities']} | {r['seeds_a']} / {r['seeds_b']} | "
            f"{'yes' if r['significant'] else 'no'} |"
        )
    note = (
        "\nPaired over the same test identities (each identity's mean over its test images and, for a setting, "
        "over its seeds); 95% interval from 10,000 bootstrap resamples of identities and, independently, of "
        "each setting's seeds. Significant: the interval excludes 0. Negative: A's error is lower.\n"
    )
    return "\n".join(lines) + "\n" + note


def csv_text(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """CSV (header + rows) of dictionaries; NaN written as an empty cell."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if isinstance(row[k], float) and math.isnan(row[k]) else row[k] for k in columns})
    return buffer.getvalue()


def write_table1(
    runs: Sequence[RunRecord], paper_table1: Mapping[str, float], out_dir: str | Path,
    baselines: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict[str, Path]:  # fmt: skip
    """``<out_dir>/table1.md`` (Table 1 and the paired comparisons), ``table1.csv`` and ``comparisons.csv``
    (atomic); returns their paths (``md``, ``csv``, ``comparisons``)."""
    if not runs:
        raise ValueError("Table 1 needs at least one finished run (metrics.json with test metrics)")
    rows = table1_rows(runs, paper_table1, baselines)
    comparisons = comparison_rows(runs, baselines)
    out_dir = Path(out_dir)
    text = f"# Table 1: test errors on the embedded benchmark\n\n{table1_markdown(rows)}"
    if comparisons:
        text += f"\n## Paired comparisons\n\n{comparison_markdown(comparisons)}"
    return {
        "md": atomic_write_text(out_dir / "table1.md", text),
        "csv": atomic_write_text(out_dir / "table1.csv", csv_text(rows)),
        "comparisons": atomic_write_text(out_dir / "comparisons.csv", csv_text(comparisons)),
    }
