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

from faceregen.evaluation.runs import RunRecord, group_by_setting, sample_std
from faceregen.io import atomic_write_text

#: test metrics of Table 1, as ``metrics.json`` names them, with their column titles
TABLE1_METRICS = {
    "test/mean_distance_mm": "mean distance (mm)",
    "test/wound_distance_mm": "wound distance (mm)",
    "test/intact_distance_mm": "intact distance (mm)",
    "test/aligned_distance_mm": "after a similarity fit (mm)",
    "test/mean_shape_distance_mm": "mean shape baseline (mm)",
}
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


def table1_rows(runs: Sequence[RunRecord], paper_table1: Mapping[str, float]) -> list[dict]:
    """One row per setting (paper order): ``setting, label, n_seeds, seeds, <metric>_mean, <metric>_std``
    for each of :data:`TABLE1_METRICS` (over the runs that report it; NaN where none / one does) and
    ``paper_mean_distance`` (NaN where the paper has no such row)."""
    rows = []
    for setting, group in group_by_setting(runs).items():
        row = {"setting": setting, "label": SETTING_LABELS.get(setting, setting), "n_seeds": len(group),
               "seeds": " ".join(str(r.seed) for r in group)}
        for metric in TABLE1_METRICS:
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


def table1_markdown(rows: Sequence[dict], digits: int = 3) -> str:
    """Markdown table of :func:`table1_rows`: ``mean ± std`` (``mean`` alone for one seed)."""
    header = ["setting", "seeds", *TABLE1_METRICS.values(), PAPER_COLUMN]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], str(row["n_seeds"])]
        cells += [_mean_std(row[f"{_column(m)}_mean"], row[f"{_column(m)}_std"], digits) for m in TABLE1_METRICS]
        cells.append("" if math.isnan(row["paper_mean_distance"]) else f"{row['paper_mean_distance']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        "\nmean ± sample std over seeds (test split). The paper's column is its Table 1 on the real "
        "Cir3D-FaIR with FLAME (units not stated); this project's numbers come from other data and models "
        "and are not comparable in absolute terms.\n"
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


def write_table1(runs: Sequence[RunRecord], paper_table1: Mapping[str, float], out_dir: str | Path) -> dict[str, Path]:
    """``<out_dir>/table1.md`` and ``<out_dir>/table1.csv`` (atomic); returns ``{"md": path, "csv": path}``."""
    if not runs:
        raise ValueError("Table 1 needs at least one finished run (metrics.json with test metrics)")
    rows = table1_rows(runs, paper_table1)
    out_dir = Path(out_dir)
    return {
        "md": atomic_write_text(out_dir / "table1.md", f"# Table 1: test mean per-vertex distance\n\n{table1_markdown(rows)}"),
        "csv": atomic_write_text(out_dir / "table1.csv", csv_text(rows)),
    }
