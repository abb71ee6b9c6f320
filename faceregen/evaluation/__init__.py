"""Evaluation of finished runs (``evaluate.py``): Table 1, the paper's figures, fillings of the test split,
and a NoW-style scan-to-mesh distance for predictions of another topology."""

from faceregen.evaluation.runs import RunRecord, best_run, find_finished_runs, predict_test_samples
from faceregen.evaluation.scan_to_mesh import point_to_surface_distance_mm, scan_to_mesh_distance, umeyama
from faceregen.evaluation.table import table1_rows, write_table1

__all__ = [
    "RunRecord",
    "best_run",
    "find_finished_runs",
    "point_to_surface_distance_mm",
    "predict_test_samples",
    "scan_to_mesh_distance",
    "table1_rows",
    "umeyama",
    "write_table1",
]
