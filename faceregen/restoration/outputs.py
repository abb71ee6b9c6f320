"""One restoration's files, in the scan's frame and units, each written atomically:

* ``completed.ply`` / ``completed.obj``: the completed face.
* ``wound_mask.npy`` (per scan vertex, bool) and ``scan_wound.ply``: the scan, grey with the wound red.
* ``filling.stl`` (+ ``filling.json``: the printability report, ``filling_composite.ply`` / ``.glb``).
* ``restoration.json``: :meth:`~faceregen.restoration.restorer.Restoration.report` plus the files.
* ``summary.png``: the scan with the wound coloured, the completed face, the filling on the scan, and the
  scan's depth below the completed face, all seen from the front of the face model's frame.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import trimesh

from faceregen.io import atomic_path, atomic_write_bytes, atomic_write_text
from faceregen.mesh_io import write_mesh
from faceregen.postprocess import export_filling
from faceregen.restoration.restorer import Restoration

SCAN_RGBA = (170, 170, 170, 255)
WOUND_RGBA = (220, 40, 40, 255)


def write_restoration(folder: str | os.PathLike, restoration: Restoration, summary: bool = True) -> dict[str, Path]:
    """Write the module's files under ``folder``; returns their paths by name."""
    folder = Path(folder)
    scan = restoration.scan
    per_unit = 1.0 / scan.mm_per_unit
    paths = {"completed_ply": write_mesh(folder / "completed.ply", restoration.completed_mm * per_unit,
                                         restoration.completed_faces),
             "completed_obj": write_mesh(folder / "completed.obj", restoration.completed_mm * per_unit,
                                         restoration.completed_faces)}
    with atomic_path(folder / "wound_mask.npy") as tmp:
        np.save(tmp, restoration.mask)
    paths["wound_mask"] = folder / "wound_mask.npy"
    coloured = trimesh.Trimesh(scan.vertices_mm * per_unit, scan.faces, process=False)
    coloured.visual.vertex_colors = np.where(restoration.mask[:, None], WOUND_RGBA, SCAN_RGBA).astype(np.uint8)
    paths["scan_wound"] = atomic_write_bytes(folder / "scan_wound.ply",
                                             trimesh.exchange.ply.export_ply(coloured, encoding="binary"))
    if restoration.filling is not None:
        filling_paths = export_filling(folder / "filling", restoration.filling, scan.vertices_mm, scan.faces, per_unit)
        paths.update({f"filling_{k}": v for k, v in filling_paths.items()})
    if summary:
        paths["summary"] = write_summary(folder / "summary.png", restoration)
    report = {**restoration.report(), "files": {k: str(v) for k, v in paths.items()}}
    paths["report"] = atomic_write_text(folder / "restoration.json", json.dumps(report, indent=1) + "\n")
    return paths


def write_summary(path: str | os.PathLike, restoration: Restoration) -> Path:
    """``summary.png`` (module docstring)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from faceregen.plotting import draw_mesh, save_figure

    pose = restoration.registration.pose
    scan = restoration.scan
    scan_model = pose.apply(scan.vertices_mm)
    figure, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    wound_colours = ListedColormap([(0.78, 0.78, 0.78), (0.86, 0.16, 0.16)])
    draw_mesh(axes[0], scan_model, scan.faces, restoration.mask.astype(float), cmap=wound_colours, vmin=0, vmax=1,
              colorbar_label=None)
    axes[0].set_title(f"scan, wound ({restoration.mask_source}): {int(restoration.mask.sum())} vertices", fontsize=9)
    draw_mesh(axes[1], pose.apply(restoration.completed_mm), restoration.completed_faces)
    axes[1].set_title(f"completed face ({restoration.completion_method})", fontsize=9)
    if restoration.filling is not None:
        filling = pose.apply(np.asarray(restoration.filling.vertices))
        both = np.concatenate([scan_model, filling])
        faces = np.concatenate([scan.faces, np.asarray(restoration.filling.faces) + len(scan_model)])
        values = np.r_[np.zeros(len(scan_model)), np.ones(len(filling))]
        draw_mesh(axes[2], both, faces, values, cmap=ListedColormap([(0.78, 0.78, 0.78), (1.0, 0.55, 0.0)]),
                  vmin=0, vmax=1, colorbar_label=None)
        axes[2].set_title(f"filling: {restoration.filling.volume / 1000:.2f} cm3, "
                          f"watertight {restoration.filling.is_watertight}", fontsize=9)
    else:
        axes[2].text(0.5, 0.5, f"no filling:\n{restoration.filling_error}", ha="center", va="center", wrap=True,
                     fontsize=8, transform=axes[2].transAxes)
        axes[2].set_axis_off()
    depth = np.clip(restoration.depth.depth_mm, -2.0, None)
    draw_mesh(axes[3], scan_model, scan.faces, depth, cmap="viridis", vmin=-2.0, vmax=max(2.0, float(depth.max())),
              colorbar_label="depth below completed face (mm)")
    axes[3].set_title("distance map", fontsize=9)
    figure.suptitle(f"{Path(scan.name).name}: registration {restoration.registration.method}, "
                    f"RMS {restoration.registration.rms_mm:.2f} mm", fontsize=10)
    return save_figure(figure, path)
