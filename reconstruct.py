"""Restore faces from photos with a trained run: ``python reconstruct.py image=photo.png ckpt=<run>/checkpoints/last.ckpt``.

The model is rebuilt from the run's ``.hydra/config.yaml`` (face model + MICAModule), whose ``_target_``s
must be on an allowlist (:mod:`training.trained_run`; ``trusted_targets=[...]`` adds your own),
and the checkpoint's ``state_dict`` is loaded strictly (``torch.load(weights_only=True)``); anything but a
Lightning checkpoint of MICAModule (a SwAV checkpoint, MICA's ``mica.tar``, a random file) stops the run
with an error naming the file. Each image then goes through :class:`faceregen.reconstruction.Reconstructor`;
an image that fails (not an image, truncated, too large, no face) is reported and skipped, the others are
processed, and the exit status is 1 when any failed. Each image's folder is filled under a temporary name and
renamed when complete: a failure (a full disk) leaves no partial folder. ``<output dir>/results.json`` lists
every image's outcome.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch  # before any VTK render: importing torch's triton after one segfaults
import hydra
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from faceregen.image_io import image_files
from faceregen.data_layout import read_wound
from faceregen.io import atomic_folder, atomic_write_text
from faceregen.reconstruction import Reconstructor, write_reconstruction, write_summary
from faceregen.restoration import Scan, read_scan
from faceregen.restoration.outputs import write_restoration
from training.trained_run import load_trained_run

log = logging.getLogger(__name__)

def default_paths() -> dict:
    """``conf/paths/default.yaml`` outside a Hydra app: the root is ``$PROJECT_ROOT`` or the working folder."""
    paths = OmegaConf.load(Path(__file__).resolve().parent / "conf" / "paths" / "default.yaml")
    paths.root_dir = os.environ.get("PROJECT_ROOT", os.getcwd())
    paths.output_dir = None
    return OmegaConf.to_container(OmegaConf.create({"paths": paths}), resolve=True)["paths"]


def load_run_model(ckpt: str | os.PathLike, paths: dict | None = None, device: str = "cpu",
                   trusted_targets: Sequence[str] = ()):
    """``(MICAModule in eval mode on device, face model)`` of a training run's checkpoint
    (:func:`training.trained_run.load_trained_run`: its config checked against the allowlist).

    ``paths``: this machine's ``paths`` config (default :func:`default_paths`), replacing the run's, which
    may name another machine's folders (the face model's cache).
    """
    run = load_trained_run(ckpt, default_paths() if paths is None else paths, trusted_targets=trusted_targets,
                           device=device)
    return run.module, run.face_model


def unique_name(path: Path, used: set[str]) -> str:
    """The image's stem, with ``-2``, ``-3``... when an earlier image had the same stem."""
    name, n = path.stem, 1
    while name in used:
        n += 1
        name = f"{path.stem}-{n}"
    used.add(name)
    return name


class PhotoRestorer:
    """A trained run's model with ``cfg``'s photo settings and restorer: one image into one folder
    (``reconstruct.py``'s loop and ``app.py``'s button)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.model, self.face_model = load_run_model(
            cfg.ckpt, OmegaConf.to_container(cfg.paths, resolve=True), cfg.device, cfg.trusted_targets
        )
        self.reconstructor = Reconstructor(self.model, OmegaConf.to_container(cfg.detector, resolve=True),
                                           cfg.max_image_pixels, cfg.use_stored_landmarks, cfg.quality)
        self.restorer = hydra.utils.instantiate(cfg.restorer, _partial_=True)(face_model=self.face_model)
        self.summary = cfg.summary

    def __call__(self, path: Path, final: Path, scan: Scan | None = None, wound_mask: np.ndarray | None = None) -> dict:
        """``path``'s record (``status`` ok with face, quality and files, or failed with the error naming the
        file); its files in folder ``final``, filled under a temporary name and renamed when complete. With the
        wounded ``scan``, the face restored on it and the filling too (a scan without a filling fails)."""
        record = {"image": str(path), "status": "failed"}
        try:
            result = self.reconstructor(path)
            log.info("%s: %s", path, result.face.describe())
            for problem in result.quality.problems:
                log.warning("%s: %s", path, problem)
            with atomic_folder(final) as folder:
                files = write_reconstruction(folder, result, self.face_model.faces)
                if self.summary:
                    files["summary"] = write_summary(folder / "summary.png", result, self.face_model)
                if scan is not None:
                    restoration = self.restorer(scan, result.code, wound_mask)
                    files.update(write_restoration(folder / "restoration", restoration, self.summary))
                    if restoration.filling is None:
                        raise ValueError(f"{scan.name}: no filling: {restoration.filling_error}")
            files = {k: str(final / Path(v).relative_to(folder)) for k, v in files.items()}
            record.update(status="ok", reason=result.face.describe(), face=result.face.to_dict(),
                          quality=result.quality.to_dict(), files=files)
        except (OSError, ValueError) as err:
            record["error"] = str(err) if str(path) in str(err) else f"{path}: {err}"
            log.error("FAILED %s", record["error"])
        return record


def reconstruct(cfg: DictConfig) -> list[dict]:
    """Process every image of ``cfg.image``; returns one record per file (``status`` ok / failed / skipped)."""
    output_dir = Path(cfg.paths.output_dir)
    restorer = PhotoRestorer(cfg)
    scan = read_scan(cfg.imperfect_mesh, cfg.imperfect_mesh_units) if cfg.imperfect_mesh else None
    if cfg.wound_mask and scan is None:
        raise ValueError(f"wound_mask={cfg.wound_mask} needs imperfect_mesh (the wounded face) too")
    wound_mask = read_wound(cfg.wound_mask, len(scan.vertices_mm)).mask if cfg.wound_mask else None
    inputs = [cfg.image] if isinstance(cfg.image, str) else list(cfg.image)
    records, used = [], set()
    for entry in inputs:
        try:
            paths, skipped = image_files(entry)
        except (OSError, ValueError) as err:
            log.error("FAILED %s", err)
            records.append({"image": str(entry), "status": "failed", "error": str(err)})
            continue
        for path, reason in skipped:
            log.warning("SKIPPED %s: %s", path, reason)
            records.append({"image": str(path), "status": "skipped", "reason": reason})
        for path in tqdm(paths, desc="reconstruct", unit="image", disable=len(paths) < 2):
            records.append(restorer(path, output_dir / unique_name(path, used), scan, wound_mask))
    return records


def report(records: list[dict], output_dir: Path) -> None:
    """Log how many images were restored (with quality warnings) and files skipped, write ``results.json``;
    SystemExit (status 1) naming what failed, a ``results.json`` that could not be written included."""
    skipped = [r for r in records if r["status"] == "skipped"]
    images = [r for r in records if r["status"] != "skipped"]
    failed = [r for r in images if r["status"] == "failed"]
    warned = [r for r in images if r.get("quality", {}).get("problems")]
    log.info("%d of %d images restored into %s%s%s", len(images) - len(failed), len(images), output_dir,
             f", {len(warned)} with face-quality warnings" if warned else "",
             f"; {len(skipped)} file(s) skipped: " + ", ".join(Path(r["image"]).name for r in skipped) if skipped else "")
    problems = [r["error"] for r in failed]
    results = output_dir / "results.json"
    try:
        atomic_write_text(results, json.dumps(records, indent=1) + "\n")
    except OSError as err:
        log.error("FAILED %s: not written (%s)", results, err)
        problems.append(f"{results}: not written ({err})")
    if problems:
        raise SystemExit(f"reconstruct: {len(failed)} of {len(images)} images failed: " + "; ".join(problems))


@hydra.main(version_base="1.3", config_path="conf", config_name="reconstruct")
def main(cfg: DictConfig) -> None:
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    report(reconstruct(cfg), Path(cfg.paths.output_dir))


if __name__ == "__main__":
    main()
