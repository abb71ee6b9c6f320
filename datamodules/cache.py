"""The preprocessing cache: every sample decoded and aligned ONCE, then only memory-mapped by training.

``<cache_dir>/<key>/``: ``images.npy`` uint8 (N, 3, S, S), ``vertices_mm.npy`` float32 (M, V, 3),
``wound_mask.npy`` bool (M, V), ``has_wound_mask.npy`` bool (M,), ``index.npz`` (``item_sample``,
``item_light`` (N,), ``sample_identity``, ``sample_names`` (M,), ``identities``) and ``meta.json`` (written
last). ``key`` hashes the input files (paths, sizes, mtimes), the alignment, the face model's vertex count
and :data:`CACHE_VERSION`. One process builds a folder while others wait (an inter-process lock beside it),
after removing the temporary files a killed build left there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from datamodules.preprocessing import align_image, load_sample, worker_pool
from faceregen.alignment import get_template
from faceregen.data_layout import MANIFEST_NAME, SampleFiles
from faceregen.io import atomic_path, atomic_write_text, remove_temporaries
from faceregen.locking import build_lock

log = logging.getLogger(__name__)

#: bump when the cache's content or format changes: old caches are then rebuilt
CACHE_VERSION = 2


def _file_signature(path: Path | None, root: Path) -> list:
    if path is None:
        return [None]
    try:
        stat = path.stat()
        return [os.path.relpath(path, root), stat.st_size, stat.st_mtime_ns]
    except FileNotFoundError:
        return [os.path.relpath(path, root), "missing"]


def cache_key(samples: Sequence[SampleFiles], root: Path, alignment: str, n_vertices: int) -> str:
    """sha256 (first 16 hex digits) of the input files (path, size, mtime), alignment, vertex count, version."""
    manifest = root / MANIFEST_NAME
    files = [_file_signature(manifest if manifest.exists() else None, root)]
    for s in samples:
        files.append([s.sample, s.identity, s.group])
        files.extend(_file_signature(p, root) for p in (*s.images, s.landmarks, s.label, s.wound))
    payload = json.dumps({"version": CACHE_VERSION, "alignment": alignment, "n_vertices": n_vertices, "files": files})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


@dataclass
class PreprocessedCache:
    """The arrays of one cache folder; ``images`` and ``vertices_mm`` are read-only memory maps."""

    folder: Path
    images: np.ndarray
    vertices_mm: np.ndarray
    wound_mask: np.ndarray
    has_wound_mask: np.ndarray
    item_sample: np.ndarray
    item_light: np.ndarray
    sample_identity: np.ndarray
    sample_names: list[str]
    identities: list[str]
    skipped: list[tuple[str, str]]

    @classmethod
    def load(cls, folder: Path) -> PreprocessedCache:
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "index.npz", allow_pickle=False) as index:
            arrays = {k: index[k] for k in index.files}
        return cls(
            folder=folder,
            images=np.load(folder / "images.npy", mmap_mode="r"),
            vertices_mm=np.load(folder / "vertices_mm.npy", mmap_mode="r"),
            wound_mask=np.load(folder / "wound_mask.npy"),
            has_wound_mask=np.load(folder / "has_wound_mask.npy"),
            item_sample=arrays["item_sample"],
            item_light=arrays["item_light"],
            sample_identity=arrays["sample_identity"],
            sample_names=[str(n) for n in arrays["sample_names"]],
            identities=[str(n) for n in arrays["identities"]],
            skipped=[tuple(s) for s in meta["skipped"]],
        )


def _report(err: Exception, skipped: list[tuple[str, str]], on_error: str) -> None:
    if on_error == "raise":
        raise err
    skipped.append((str(err).split(": ", 1)[0], str(err)))


def build_cache(
    folder: Path, samples: Sequence[SampleFiles], n_vertices: int, alignment: str, on_error: str, processes: int
) -> PreprocessedCache:
    """Load every mesh, decode and align every image (``processes`` workers) and write the cache folder."""
    template = get_template(alignment)
    identities = sorted({s.identity for s in samples})
    identity_ids = {identity: i for i, identity in enumerate(identities)}
    skipped: list[tuple[str, str]] = []
    loaded = []
    with worker_pool(processes) as pool:
        jobs = [(s, n_vertices) for s in samples]
        results = pool.imap(load_sample, jobs, chunksize=8)
        for sample, (status, value) in zip(samples, tqdm(results, total=len(jobs), desc="cir3dfair: meshes")):
            if status == "error":
                _report(value, skipped, on_error)
            else:
                loaded.append((sample, *value))
        items = [(row, k, path, None if points is None else points[k])
                 for row, (sample, _, _, _, points) in enumerate(loaded)
                 for k, path in enumerate(sample.images)]
        if not items:
            raise ValueError(f"no usable samples among {len(samples)} ({len(skipped)} skipped): {skipped[:3]}")
        keep = np.zeros(len(items), dtype=bool)
        with atomic_path(folder / "images.npy") as tmp:
            images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                               shape=(len(items), 3, template.size, template.size))
            results = pool.imap(align_image, [(path, points, alignment) for _, _, path, points in items], chunksize=16)
            for i, (status, value) in enumerate(tqdm(results, total=len(items), desc="cir3dfair: images")):
                if status == "error":
                    _report(value, skipped, on_error)
                else:
                    images[i], keep[i] = value, True
            images.flush()
            if not keep.any():
                raise ValueError(f"no readable image among {len(items)}: {skipped[:3]}")
            if not keep.all():  # drop the skipped rows
                with atomic_path(tmp) as compacted:
                    np.save(compacted, images[keep])
            del images
    rows = np.array([row for row, *_ in items], dtype=np.int64)[keep]
    lights = np.array([k for _, k, *_ in items], dtype=np.int64)[keep]
    _save_npy(folder / "vertices_mm.npy", np.stack([v for _, v, _, _, _ in loaded]).astype(np.float32))
    _save_npy(folder / "wound_mask.npy", np.stack([m for _, _, m, _, _ in loaded]))
    _save_npy(folder / "has_wound_mask.npy", np.array([h for _, _, _, h, _ in loaded], dtype=bool))
    with atomic_path(folder / "index.npz") as tmp:
        np.savez(
            tmp, item_sample=rows, item_light=lights,
            sample_identity=np.array([identity_ids[s.identity] for s, *_ in loaded], dtype=np.int64),
            sample_names=np.array([s.sample for s, *_ in loaded]), identities=np.array(identities),
        )
    meta = {"version": CACHE_VERSION, "alignment": alignment, "n_vertices": n_vertices, "n_items": int(keep.sum()),
            "n_samples": len(loaded), "skipped": skipped}
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1) + "\n")
    return PreprocessedCache.load(folder)


def load_or_build_cache(
    cache_dir: Path, root: Path, samples: Sequence[SampleFiles], n_vertices: int, alignment: str, on_error: str,
    processes: int,
) -> PreprocessedCache:
    """The cache of ``samples`` under ``cache_dir``: loaded, or built by one process while the others wait."""
    folder = cache_dir / cache_key(samples, root, alignment, n_vertices)
    with build_lock(folder):
        if (folder / "meta.json").is_file():
            log.info("cir3dfair: using the cache %s", folder)
            return PreprocessedCache.load(folder)
        for tmp in remove_temporaries(folder):
            log.info("cir3dfair: removed %s, left by a killed run", tmp)
        log.info("cir3dfair: preprocessing %d samples into %s", len(samples), folder)
        return build_cache(folder, samples, n_vertices, alignment, on_error, processes)
