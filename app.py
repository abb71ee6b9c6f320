"""A local web app for the lab: ``make app`` (``python app.py ckpt=<run>/checkpoints/last.ckpt``).

Upload a photo of the patient and, optionally, the wounded face as a scan (OBJ/PLY/STL, mm or m): the app shows
the aligned crop, the restored face and the filling in 3D views (GLB), the printability report, and offers the
STL, the meshes and the reports for download. Each request goes through :class:`reconstruct.PhotoRestorer`:
``reconstruct.py``'s settings (``conf/app.yaml`` includes ``conf/reconstruct.yaml``), files and error messages.

Nothing leaves the machine: the app listens on ``host`` (127.0.0.1: this machine only), Gradio's telemetry and
version check are off, its scripts and fonts are served from the installed wheel, and no share link is made.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no telemetry, no version check

import itertools
import json
import logging
from pathlib import Path

import torch  # before any VTK render: importing torch's triton after one segfaults
import gradio as gr
import hydra
from omegaconf import DictConfig

from faceregen.restoration import read_scan
from reconstruct import PhotoRestorer

log = logging.getLogger(__name__)

#: the files offered for download, in this order, when written
DOWNLOADS = ("filling_stl", "filling_report", "filling_ply", "completed_ply", "completed_obj", "report", "obj", "ply",
             "face")
SCAN_TYPES = [".obj", ".ply", ".stl"]


def describe(record: dict) -> str:
    """The face chosen (and why), its quality warnings and the files' folder, as Markdown."""
    lines = [f"**Face:** {record['reason']}"]
    lines += [f"**Warning:** {problem}" for problem in record["quality"]["problems"]]
    lines.append(f"**Files:** `{Path(record['files']['aligned']).parent}`")
    return "\n\n".join(lines)


def build_app(cfg: DictConfig) -> gr.Blocks:
    """The app's page; its button (API name ``/restore``) runs one photo (and scan) through :class:`PhotoRestorer`."""
    restorer = PhotoRestorer(cfg)
    output_dir = Path(cfg.paths.output_dir)
    numbers = itertools.count(1)

    def restore(photo: str | None, scan: str | None):
        if photo is None:
            raise gr.Error("no photo: upload a photo of the patient's face")
        try:
            wounded = read_scan(scan, cfg.imperfect_mesh_units) if scan else None
        except (OSError, ValueError) as err:
            raise gr.Error(str(err)) from None
        record = restorer(Path(photo), output_dir / f"{next(numbers):03d}-{Path(photo).stem}", wounded)
        if record["status"] != "ok":
            raise gr.Error(record["error"])
        files = record["files"]
        report = json.loads(Path(files["filling_report"]).read_text()) if "filling_report" in files else None
        return (files["aligned"], files["glb"], files.get("filling_glb"), report,
                [files[k] for k in DOWNLOADS if k in files], describe(record))

    with gr.Blocks(title="Face restoration", analytics_enabled=False) as app:
        gr.Markdown("## Face restoration from a photo\nUpload a photo of the patient and, for a filling, the wounded "
                    "face as a scan (OBJ, PLY or STL, in mm or m). Everything runs on this machine.")
        with gr.Row():
            # a file, not gr.Image: the photo reaches read_rgb as uploaded (EXIF, size limit, reconstruct.py's messages)
            photo = gr.File(label="photo of the patient (any image format)")
            scan = gr.File(file_types=SCAN_TYPES, label="wounded scan (optional)")
        button = gr.Button("Restore", variant="primary")
        notes = gr.Markdown()
        with gr.Row():
            aligned = gr.Image(label="aligned crop (the network's input)", interactive=False)
            face = gr.Model3D(label="restored face", clear_color=(1, 1, 1, 1))
            filling = gr.Model3D(label="filling on the wounded scan", clear_color=(1, 1, 1, 1))
        report = gr.JSON(label="printability report of the filling")
        downloads = gr.File(file_count="multiple", label="downloads: STL, meshes, reports")
        button.click(restore, [photo, scan], [aligned, face, filling, report, downloads, notes], api_name="restore")
    return app


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg: DictConfig) -> None:
    if cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    log.info("the app: http://%s:%d (Ctrl+C stops it); files in %s", cfg.host, cfg.port, cfg.paths.output_dir)
    build_app(cfg).launch(server_name=cfg.host, server_port=cfg.port, share=False, ssr_mode=False, mcp_server=False,
                          pwa=False, enable_monitoring=False, allowed_paths=[cfg.paths.output_dir])


if __name__ == "__main__":
    main()
