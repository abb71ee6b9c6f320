"""Restore the face on the patient's wounded scan: ``python restore.py scan=wounded.ply [image=photo.png ckpt=...]``.

The scan (OBJ/PLY/STL, mm or m, any topology and orientation) goes through
:class:`faceregen.restoration.Restorer` (``conf/restorer/default.yaml``): registration, the robust fit of the
face model (the photo's predicted code as its prior when ``image`` and ``ckpt`` are given), wound detection
(or ``wound_mask``) and the filling, written by :func:`faceregen.restoration.outputs.write_restoration` in the
scan's frame and units. A bad scan, mask, image or checkpoint stops the run with a message naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch  # before any VTK use: importing torch's triton after one segfaults
import hydra
from omegaconf import DictConfig, OmegaConf

from faceregen.data_layout import read_wound
from faceregen.reconstruction import Reconstructor
from faceregen.restoration import read_scan
from faceregen.restoration.outputs import write_restoration
from reconstruct import load_run_model

log = logging.getLogger(__name__)


def restore(cfg: DictConfig) -> dict:
    """Restore ``cfg.scan``; returns the paths written."""
    prior_code = None
    if (cfg.image is None) != (cfg.ckpt is None):
        raise ValueError("image=... and ckpt=... go together (the photo's code comes from the trained run)")
    if cfg.ckpt is not None:
        model, face_model = load_run_model(cfg.ckpt, OmegaConf.to_container(cfg.paths, resolve=True), cfg.device,
                                           cfg.get("trusted_targets", ()))
        reconstructor = Reconstructor(model, OmegaConf.to_container(cfg.detector, resolve=True),
                                      cfg.max_image_pixels, cfg.use_stored_landmarks, cfg.quality)
        prior_code = reconstructor(cfg.image).code
    else:
        face_model = hydra.utils.instantiate(cfg.face_model)
    scan = read_scan(cfg.scan, cfg.scan_units)
    mask = read_wound(cfg.wound_mask, len(scan.vertices_mm)).mask if cfg.wound_mask else None
    restorer = hydra.utils.instantiate(cfg.restorer, _partial_=True)(face_model=face_model)
    restoration = restorer(scan, prior_code, mask, cfg.completion)
    paths = write_restoration(Path(cfg.paths.output_dir), restoration, cfg.summary)
    report = restoration.report()
    log.info("%s: registration %s (RMS %.2f mm), wound %d vertices (%s), filling %s -> %s", cfg.scan,
             report["registration"]["method"], report["registration"]["rms_mm"], report["wound"]["vertices"],
             report["wound"]["source"], report["filling"], cfg.paths.output_dir)
    if restoration.filling is None:
        hint = "" if mask is not None else (
            " (the wound was detected; draw it and pass it as wound_mask=<file.npz> with a `mask`, one bool per"
            " scan vertex)")
        raise ValueError(f"{cfg.scan}: no filling: {restoration.filling_error}{hint}")
    return paths


@hydra.main(version_base="1.3", config_path="conf", config_name="restore")
def main(cfg: DictConfig) -> None:
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        restore(cfg)
    except (OSError, ValueError) as err:
        raise SystemExit(f"restore: {err}") from None


if __name__ == "__main__":
    main()
