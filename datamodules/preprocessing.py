"""The work of building a preprocessing cache, spread over worker processes: each sample's meshes, wound and
stored five points, and each image decoded and aligned onto the encoder's template.

Workers return ``("ok", value)`` or ``("error", exception)`` so one bad file does not stop the pool; the
functions are module-level (picklable). Images without stored points go through reconstruct.py's default
detector (:mod:`faceregen.photo`: the same photo gives the same chip here and in ``reconstruct.py``).
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
from faceregen.data_layout import SampleFiles, read_wound, render_five_points
from faceregen.mesh_io import read_mesh
from faceregen.photo import aligned_chip


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_pool(processes: int):
    """A pool whose workers never fork the calling process.

    The caller may be multi-threaded (a trainer, a web server, an HTTP client's thread pool); a worker
    forked from it inherits whatever locks those threads held and can hang forever. So the workers are
    forked from a fresh single-threaded server that has imported this module once ("forkserver"), or
    spawned where there is no such server (Windows, macOS without it)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
    else:
        context = multiprocessing.get_context("spawn")
    return context.Pool(processes)


def load_sample(job: tuple[SampleFiles, int]) -> tuple[str, object]:
    """Worker: (vertices_mm (V, 3), wound_mask (V,), has_wound_mask, five points (L, 5, 2) or None)."""
    sample, n_vertices = job
    try:
        if not sample.images:
            raise ValueError(f"sample {sample.sample} (group {sample.group}): no PNG images")
        vertices, _ = read_mesh(sample.label)
        if len(vertices) != n_vertices:
            raise ValueError(
                f"{sample.label}: {len(vertices)} vertices, expected {n_vertices} (the face model's); "
                "is the data made with another face model?"
            )
        has_wound = sample.wound is not None
        wound_mask = read_wound(sample.wound, n_vertices).mask if has_wound else np.zeros(n_vertices, dtype=bool)
        points = render_five_points(sample.landmarks, sample.images) if sample.landmarks else None
        return "ok", (vertices, wound_mask, has_wound, points)
    except (OSError, ValueError) as err:
        return "error", err


def align_image(job: tuple[Path, np.ndarray | None, str]) -> tuple[str, object]:
    """Worker: one image's chip, as reconstruct.py makes it (:func:`faceregen.photo.aligned_chip`): uint8 (3, S, S)."""
    path, points, alignment = job
    try:
        return "ok", aligned_chip(path, alignment, points).transpose(2, 0, 1)
    except (OSError, ValueError) as err:
        return "error", err
