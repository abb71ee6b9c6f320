"""A run folder is rebuilt only through the allowlist of `_target_`s: a shared folder cannot run code.

The attack: a run folder whose `.hydra/config.yaml` names `numpy.load(allow_pickle=True)` on a pickle
shipped beside it; unpickling it opens (creates) a marker file. Both entry points must refuse it naming
the key and the file, and the marker must not appear.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image

from test_experiments import ROOT, SETTINGS, compose_train

from training.trained_run import MICA_STATE_KEY, check_targets, checked_groups


class MarkerPayload:
    """Unpickled, it calls ``open(marker, "w")``: the file appearing shows that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture()
def shared_run(tmp_path) -> tuple[Path, Path]:
    """``(run folder, marker)``: a `transfer` run as train.py leaves it (config, checkpoint), except that its
    face model is ``numpy.load(<run>/payload.pkl, allow_pickle=True)``."""
    run = tmp_path / "logs" / "transfer" / "runs" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    marker = tmp_path / "MARKER"
    (run / "payload.pkl").write_bytes(pickle.dumps(MarkerPayload(marker), protocol=2))
    cfg = compose_train(["experiment=transfer"])
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.face_model = {"_target_": "numpy.load", "file": str(run / "payload.pkl"), "allow_pickle": True}
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    torch.save({"state_dict": {MICA_STATE_KEY: torch.zeros(3)}}, run / "checkpoints" / "last.ckpt")
    return run, marker


def test_the_payload_runs_code_when_loaded_as_the_config_asks(tmp_path):
    """The attack is real: ``numpy.load(..., allow_pickle=True)`` on such a pickle creates the marker."""
    marker = tmp_path / "control"
    (tmp_path / "payload.pkl").write_bytes(pickle.dumps(MarkerPayload(marker), protocol=2))
    np.load(tmp_path / "payload.pkl", allow_pickle=True)
    assert marker.is_file()


def run_entry_point(script: str, *overrides: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    done = subprocess.run([sys.executable, str(ROOT / script), *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout + done.stderr


def test_both_entry_points_refuse_a_run_folder_that_would_run_code(shared_run, tmp_path):
    run, marker = shared_run
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(image)
    refusal = f"{run / '.hydra' / 'config.yaml'}: refused face_model._target_='numpy.load'"

    output = run_entry_point("reconstruct.py", f"image={image}", f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
                             f"hydra.run.dir={tmp_path / 'reconstruct'}", cwd=tmp_path)
    assert refusal in output
    assert not marker.exists()
    output = run_entry_point("evaluate.py", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", f"results_dir={tmp_path / 'results'}",
                             f"hydra.run.dir={tmp_path / 'evaluate'}", cwd=tmp_path)
    assert refusal in output
    assert not marker.exists()


@pytest.mark.parametrize("target", [
    "lightning_modules.mica_module.MICAModule", "faceregen.synthetic.generate_dataset", "functools.partial",
    "torch.optim.AdamW", "torch.optim.lr_scheduler.CosineAnnealingLR", "torch.optim.lr_scheduler.ReduceLROnPlateau",
])
def test_the_allowlist_accepts_the_projects_classes_and_torchs_optimisers(target):
    check_targets({"model": {"optimizer": {"_target_": target}}}, "cfg", "run.yaml")


@pytest.mark.parametrize("target", [
    "numpy.load", "builtins.eval", "os.system", "torch.load",
    "faceregen.evaluation.runs.np.load",          # numpy.load, reached through a project module's import
    "torch.optim.lr_scheduler.torch.load",        # torch.load, reached through a scheduler module
    "torch.optim.Optimizer.load_state_dict",      # a method, not a class of torch.optim
    "torch.optim.lr_scheduler.warnings",          # a module, not a scheduler
    "datamodules.cir3dfair.Cir3DFaIRDataModule.evil",  # exact names, not prefixes
    42,
])
def test_the_allowlist_refuses_anything_else_naming_the_key_and_the_file(target):
    with pytest.raises(ValueError, match=r"run\.yaml: refused cfg\.model\._args_\[1\]\._target_="):
        check_targets({"model": {"_target_": "functools.partial", "_args_": [1, {"_target_": target}]}}, "cfg", "run.yaml")


def test_trusted_targets_extend_the_allowlist():
    node = {"face_model": {"_target_": "face_models.toy_face_model"}}
    with pytest.raises(ValueError, match="refused cfg.face_model._target_='face_models.toy_face_model'"):
        check_targets(node, "cfg", "run.yaml")
    check_targets(node, "cfg", "run.yaml", trusted_targets=["face_models.toy_face_model"])


def test_targets_are_checked_after_interpolation_and_escapes_are_refused():
    """A target hidden behind an interpolation is resolved, then refused; an escaped interpolation (which
    instantiation would resolve again, after the check) is refused as such."""
    cfg = OmegaConf.create({"evil": "numpy.load", "face_model": {"_target_": "${evil}"}, "model": None})
    with pytest.raises(ValueError, match=r"run\.yaml: refused face_model\._target_='numpy\.load'"):
        checked_groups(cfg, "run.yaml")
    cfg = OmegaConf.create({"face_model": {"_target_": "faceregen.face_model.anny_source.anny_face_model",
                                           "seed": r"\${oc.create:{_target_: numpy.load}}"}})
    with pytest.raises(ValueError, match=r"run\.yaml: refused face_model\.seed=.*an interpolation left"):
        checked_groups(cfg, "run.yaml")


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("face_model", ["anny", "flame", "flame_cir3d"])
def test_every_shipped_setting_passes_the_allowlist(setting, face_model):
    groups = checked_groups(compose_train([f"experiment={setting}", f"face_model={face_model}"]), "train.yaml")
    assert groups.model._target_ == "lightning_modules.mica_module.MICAModule"
