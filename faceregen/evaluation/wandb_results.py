"""``make eval``'s results as a wandb run, beside the training runs: a dashboard of the study after ``wandb sync``.

The run (offline unless ``mode`` says otherwise: nothing is sent, no account is needed) holds Table 1 and the
paired comparisons as ``wandb.Table`` s (``table1``, ``comparisons``: the rows of ``table1.csv`` and
``comparisons.csv``) and the figures, each under the setting it shows: ``all_settings/loss_curves``,
``all_settings/swav_loss`` (every setting's curves), ``<setting>/error_heatmaps`` and
``<setting>/reconstructions`` (the sample figures of that setting's best run).
"""

from __future__ import annotations

import csv
from pathlib import Path

#: figures drawn over all settings, and figures of the one run the sample figures come from
STUDY_FIGURES = ("loss_curves", "swav_loss")
RUN_FIGURES = ("error_heatmaps", "reconstructions")
TABLES = ("table1", "comparisons")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_table(path: Path):
    """A ``wandb.Table`` of a CSV file's rows: a column whose filled cells are all numbers holds floats, any other
    strings (Table 1's ``seeds`` is ``"0,1"`` or ``"0"``: one type per column); empty cells are None."""
    import wandb

    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    numeric = [all(_is_number(row[i]) for row in rows if row[i]) for i in range(len(header))]
    data = [[(float(c) if numeric[i] else c) if c else None for i, c in enumerate(row)] for row in rows]
    return wandb.Table(columns=header, data=data)


def results_payload(results_dir: str | Path, setting: str) -> dict:
    """The tables and figures found in ``results_dir`` by their wandb keys (module docstring)."""
    import wandb

    results_dir = Path(results_dir)
    logged = {}
    for name in TABLES:
        if (results_dir / f"{name}.csv").is_file():
            logged[name] = csv_table(results_dir / f"{name}.csv")
    for names, group in ((STUDY_FIGURES, "all_settings"), (RUN_FIGURES, setting)):
        for name in names:
            if (results_dir / f"{name}.png").is_file():
                logged[f"{group}/{name}"] = wandb.Image(str(results_dir / f"{name}.png"))
    return logged


def log_results(results_dir: str | Path, setting: str, save_dir: str | Path, project: str, mode: str) -> Path | None:
    """Log :func:`results_payload` into a new run of ``project`` under ``save_dir`` (``job_type`` eval, group
    ``study``); returns the run's folder (None when ``results_dir`` holds nothing to log)."""
    import wandb

    logged = results_payload(results_dir, setting)
    if not logged:
        return None
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, dir=str(save_dir), mode=mode, job_type="eval", group="study", name="table1",
                     config={"results_dir": str(results_dir), "sample_figures_setting": setting})
    run.log(logged)
    folder = Path(run.dir).parent
    run.finish()
    return folder
