"""Cir3D-FaIR-style data for Lightning: 2D renders of imperfect faces -> complete 3D meshes (mm).

Layout (see the project's data contract): under ``root``,
``data2D/<group>/<sample>/<sample>_<k>.png`` (image under light ``k``), ``data2D/<group>/<sample>/landmarks.npz``
(``points_px`` (L, P, 2), ``names`` (P,)), ``label/<group>/<sample>.obj`` (complete mesh),
``imperfect/<group>/<sample>.obj``, ``wound/<group>/<sample>.npz`` (``mask`` (V,) bool, ...) and
``manifest.json`` (synthetic data). Without a manifest (a real Cir3D-FaIR folder: ``data2D/`` and
``label/`` only) the folders are scanned, the identity is read from the sample name by a regex and faces
are found by ``reconstruct.py``'s default detector unless the sample folder has a ``landmarks.npz``
(:mod:`faceregen.photo`: the same photo gives the same chip here and in ``reconstruct.py``).

Everything is decoded and aligned ONCE into a cache, ``<cache_dir>/<key>/``:
``images.npy`` uint8 (N, 3, S, S), ``vertices_mm.npy`` float32 (M, V, 3), ``wound_mask.npy`` bool (M, V),
``has_wound_mask.npy`` bool (M,), ``index.npz`` (``item_sample``, ``item_light`` (N,), ``sample_identity``,
``sample_names`` (M,), ``identities``) and ``meta.json`` (written last). ``key`` hashes the input files
(paths, sizes, mtimes), the alignment, the face model's vertex count and :data:`CACHE_VERSION`; training
only memory-maps these arrays. One process builds a folder while others wait (an inter-process lock beside
it), after removing the temporary files a killed build left there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datamodules.splits import SPLIT_NAMES, load_or_create_split, ssl_identities
from faceregen.alignment import get_template, read_five_points
from faceregen.io import atomic_path, atomic_write_text, remove_temporaries
from faceregen.locking import build_lock
from faceregen.mesh_io import read_mesh
from faceregen.photo import aligned_chip

log = logging.getLogger(__name__)

#: bump when the cache's content or format changes: old caches are then rebuilt
CACHE_VERSION = 2
MANIFEST_FORMAT = "faceregen-cir3dfair"
DEFAULT_IDENTITY_PATTERN = r"^(?P<identity>CTM\d+)"


@dataclass(frozen=True)
class SampleFiles:
    """One sample (one wounded variant of one identity) and its files; ``None`` where the data has none."""

    sample: str
    identity: str
    group: str
    images: tuple[Path, ...]
    landmarks: Path | None
    label: Path
    imperfect: Path | None
    wound: Path | None


# --- finding the samples -----------------------------------------------------------------------
def read_manifest(root: Path) -> list[SampleFiles]:
    """Samples listed in ``root/manifest.json`` (format ``faceregen-cir3dfair``), paths made absolute."""
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")

    def optional(entry: dict, key: str) -> Path | None:
        return root / entry[key] if entry.get(key) else None

    try:
        return sorted(
            (
                SampleFiles(
                    sample=str(e["sample"]),
                    identity=str(e["identity"]),
                    group=str(e["group"]),
                    images=tuple(root / p for p in e["images"]),
                    landmarks=optional(e, "landmarks"),
                    label=root / e["label"],
                    imperfect=optional(e, "imperfect"),
                    wound=optional(e, "wound"),
                )
                for e in manifest["samples"]
            ),
            key=lambda s: s.sample,
        )
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: a sample entry lacks the field {err}") from err


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def scan_folder(root: Path, identity_pattern: str = DEFAULT_IDENTITY_PATTERN) -> list[SampleFiles]:
    """Samples of a folder without manifest: every ``data2D/<group>/<sample>/`` with its ``*.png`` (in
    natural order; names containing ``GT`` are skipped, as in the authors' loader), the identity from
    ``identity_pattern`` (group ``identity``, else the whole match) applied to the sample name.
    """
    data2d = root / "data2D"
    if not data2d.is_dir():
        raise FileNotFoundError(f"{data2d}: no such folder; expected {root}/data2D/<group>/<sample>/*.png and "
                                f"{root}/label/<group>/<sample>.obj (or a manifest.json)")
    pattern = re.compile(identity_pattern)
    samples = []
    for folder in sorted(p for p in data2d.glob("*/*") if p.is_dir()):
        group, sample = folder.parent.name, folder.name
        match = pattern.search(sample)
        if match is None:
            raise ValueError(f"{folder}: sample name {sample!r} does not match identity_pattern {identity_pattern!r}")
        identity = match.groupdict().get("identity") or match.group(0)
        images = tuple(sorted((p for p in folder.glob("*.png") if "GT" not in p.name), key=_natural_key))
        landmarks = folder / "landmarks.npz"
        imperfect = root / "imperfect" / group / f"{sample}.obj"
        wound = root / "wound" / group / f"{sample}.npz"
        samples.append(SampleFiles(
            sample=sample, identity=identity, group=group, images=images,
            landmarks=landmarks if landmarks.is_file() else None,
            label=root / "label" / group / f"{sample}.obj",
            imperfect=imperfect if imperfect.is_file() else None,
            wound=wound if wound.is_file() else None,
        ))
    return sorted(samples, key=lambda s: s.sample)


def find_samples(root: str | Path, identity_pattern: str = DEFAULT_IDENTITY_PATTERN) -> list[SampleFiles]:
    """The manifest's samples when ``root/manifest.json`` exists, else :func:`scan_folder`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    samples = read_manifest(root) if (root / "manifest.json").is_file() else scan_folder(root, identity_pattern)
    if not samples:
        raise ValueError(f"{root}: no samples found (expected data2D/<group>/<sample>/*.png)")
    names = [s.sample for s in samples]
    if len(set(names)) != len(names):
        raise ValueError(f"{root}: sample names repeat across groups; they must be unique")
    return samples


# --- preprocessing workers (module level: picklable) --------------------------------------------
def _load_sample(job: tuple[SampleFiles, int]) -> tuple[str, object]:
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
        wound_mask, has_wound = np.zeros(n_vertices, dtype=bool), False
        if sample.wound is not None:
            try:
                with np.load(sample.wound, allow_pickle=False) as data:
                    wound_mask = np.asarray(data["mask"], dtype=bool)
            except FileNotFoundError:
                raise FileNotFoundError(f"{sample.wound}: wound file not found") from None
            except (OSError, ValueError, KeyError) as err:
                raise ValueError(f"{sample.wound}: not a wound file with a 'mask' array ({err})") from err
            if wound_mask.shape != (n_vertices,):
                raise ValueError(f"{sample.wound}: mask has shape {wound_mask.shape}, expected ({n_vertices},)")
            has_wound = True
        points = read_five_points(sample.landmarks, len(sample.images)) if sample.landmarks else None
        return "ok", (vertices, wound_mask, has_wound, points)
    except (OSError, ValueError) as err:
        return "error", err


def _align_image(job: tuple[Path, np.ndarray | None, str]) -> tuple[str, object]:
    """Worker: one image's chip, as reconstruct.py makes it (:func:`faceregen.photo.aligned_chip`): uint8 (3, S, S)."""
    path, points, alignment = job
    try:
        return "ok", aligned_chip(path, alignment, points).transpose(2, 0, 1)
    except (OSError, ValueError) as err:
        return "error", err


# --- the cache ----------------------------------------------------------------------------------
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
    files = [_file_signature(root / "manifest.json" if (root / "manifest.json").exists() else None, root)]
    for s in samples:
        files.append([s.sample, s.identity, s.group])
        files.extend(_file_signature(p, root) for p in (*s.images, s.landmarks, s.label, s.wound))
    payload = json.dumps({"version": CACHE_VERSION, "alignment": alignment, "n_vertices": n_vertices, "files": files})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _pool(processes: int):
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn").Pool(processes)


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
    with _pool(processes) as pool:
        jobs = [(s, n_vertices) for s in samples]
        results = pool.imap(_load_sample, jobs, chunksize=8)
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
            results = pool.imap(_align_image, [(path, points, alignment) for _, _, path, points in items], chunksize=16)
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


# --- datasets -------------------------------------------------------------------------------------
def keep_batch(batch: dict) -> dict:
    """DataLoader ``collate_fn`` for datasets whose ``__getitems__`` already returns a batch of tensors."""
    return batch


class Cir3DFaIRDataset(Dataset):
    """Aligned images of chosen cache items, with their sample's mesh; served a batch at a time.

    ``__getitems__`` reads a whole batch with one fancy index into the memory maps and returns
    ``{"image": uint8 (B, 3, S, S), "vertices_mm": float32 (B, V, 3), "wound_mask": bool (B, V),
    "has_wound_mask": bool (B,), "identity": int64 (B,), "index": int64 (B,), "light": int64 (B,)}``
    (``index``: the cache item; ``light``: which of the sample's renders). With ``ssl_transform`` (uint8 (3, S, S) tensor -> list of views) it adds ``"views"``: one tensor
    (B, ...) per view. The memory maps are opened lazily, so the dataset pickles cheaply to workers.
    """

    def __init__(self, cache: PreprocessedCache, items: np.ndarray, ssl_transform: Callable | None = None) -> None:
        self.folder = cache.folder
        self.items = np.asarray(items, dtype=np.int64)
        self.item_sample = cache.item_sample
        self.item_light = cache.item_light
        self.sample_identity = cache.sample_identity
        self.wound_mask = cache.wound_mask
        self.has_wound_mask = cache.has_wound_mask
        self.ssl_transform = ssl_transform
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def _memory_maps(self) -> tuple[np.ndarray, np.ndarray]:
        if self._maps is None:
            self._maps = (np.load(self.folder / "images.npy", mmap_mode="r"),
                          np.load(self.folder / "vertices_mm.npy", mmap_mode="r"))
        return self._maps

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, indices: Sequence[int]) -> dict:
        images, vertices = self._memory_maps()
        index = self.items[np.asarray(indices, dtype=np.int64)]
        rows = self.item_sample[index]
        batch = {
            "image": torch.from_numpy(np.ascontiguousarray(images[index])),
            "vertices_mm": torch.from_numpy(np.ascontiguousarray(vertices[rows])),
            "wound_mask": torch.from_numpy(self.wound_mask[rows]),
            "has_wound_mask": torch.from_numpy(self.has_wound_mask[rows]),
            "identity": torch.from_numpy(self.sample_identity[rows]),
            "index": torch.from_numpy(index),
            "light": torch.from_numpy(self.item_light[index].astype(np.int64)),
        }
        if self.ssl_transform is not None:
            per_image = [self.ssl_transform(image) for image in batch["image"]]
            batch["views"] = [torch.stack([views[v] for views in per_image]) for v in range(len(per_image[0]))]
        return batch

    def __getitem__(self, i: int) -> dict:
        batch = self.__getitems__([i])
        return {k: [v[0] for v in value] if k == "views" else value[0] for k, value in batch.items()}


# --- the datamodule --------------------------------------------------------------------------
class Cir3DFaIRDataModule(pl.LightningDataModule):
    """Cir3D-FaIR-style data: identity-disjoint 6:2:2 split, SSL subset, cached aligned images.

    Args:
        root: the data folder (layout in the module docstring).
        face_model: the :class:`~faceregen.face_model.LinearFaceModel` the meshes are in (its vertex count
            is checked against every label mesh).
        alignment: a key of :data:`faceregen.alignment.ALIGNMENT_TEMPLATES` (``"dlib_150"``, ``"arcface_112"``).
        split_ratios: train : val : test over IDENTITIES (the paper's 6:2:2).
        split_file: JSON split, written once and reused (default ``<root>/splits/split_seed<seed>.json``).
        ssl_fraction, ssl_seed: the share of TRAIN identities whose images form ``ssl_dataset``.
        identity_pattern: regex giving the identity of a sample name (folders without manifest).
        on_error: ``"raise"`` on a missing/corrupt file, or ``"skip"`` it (listed in ``skipped``).
        cache_dir: where preprocessed arrays go (default ``<root>/cache``).
        mode: ``"supervised"`` (train on ``train_dataset``) or ``"ssl"`` (train on ``ssl_dataset``, whose
            batches add ``"views"``); val/test batches are the supervised ones in both modes.
        ssl_transform: per-image multi-view transform for ``ssl_dataset`` (uint8 (3, S, S) -> list of views).
        preprocess_workers: processes decoding and aligning images (default: all usable cores).
    """

    def __init__(
        self,
        root: str | Path,
        face_model,
        alignment: str = "dlib_150",
        batch_size: int = 50,
        num_workers: int = 2,
        split_ratios: Sequence[float] = (0.6, 0.2, 0.2),
        split_seed: int = 0,
        split_file: str | Path | None = None,
        ssl_fraction: float = 1.0,
        ssl_seed: int = 0,
        identity_pattern: str = DEFAULT_IDENTITY_PATTERN,
        on_error: str = "raise",
        cache_dir: str | Path | None = None,
        pin_memory: bool = False,
        mode: str = "supervised",
        ssl_transform: Callable | None = None,
        preprocess_workers: int | None = None,
    ) -> None:
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if mode not in ("supervised", "ssl"):
            raise ValueError(f"mode must be 'supervised' or 'ssl', got {mode!r}")
        if mode == "ssl" and ssl_transform is None:
            raise ValueError("mode='ssl' needs an ssl_transform (uint8 (3, S, S) tensor -> list of views)")
        if not 0.0 < ssl_fraction <= 1.0:
            raise ValueError(f"ssl_fraction must be in (0, 1], got {ssl_fraction}")
        get_template(alignment)
        self.save_hyperparameters(ignore=["face_model", "ssl_transform"])
        self.root = Path(root)
        self.n_vertices = int(face_model.n_vertices)
        self.alignment = alignment
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.split_ratios = tuple(float(r) for r in split_ratios)
        self.split_seed = split_seed
        self.split_file = Path(split_file) if split_file else self.root / "splits" / f"split_seed{split_seed}.json"
        self.ssl_fraction = ssl_fraction
        self.ssl_seed = ssl_seed
        self.identity_pattern = identity_pattern
        self.on_error = on_error
        self.cache_dir = Path(cache_dir) if cache_dir else self.root / "cache"
        self.pin_memory = pin_memory
        self.mode = mode
        self.ssl_transform = ssl_transform
        self.preprocess_workers = preprocess_workers or _usable_cores()
        self.cache: PreprocessedCache | None = None
        self.split: dict[str, list[str]] | None = None
        self.ssl_identities: list[str] | None = None
        self.skipped: list[tuple[str, str]] = []
        self._samples: dict[str, SampleFiles] = {}
        self.train_dataset = self.val_dataset = self.test_dataset = self.ssl_dataset = None

    def _check_manifest_face_model(self) -> None:
        path = self.root / "manifest.json"
        if path.is_file():
            face_model = json.loads(path.read_text()).get("face_model", {})
            if face_model.get("n_vertices") not in (None, self.n_vertices):
                raise ValueError(
                    f"{path}: data made with face model {face_model.get('name')!r} of {face_model['n_vertices']} "
                    f"vertices; the datamodule's face model has {self.n_vertices}"
                )

    def _prepare(self) -> None:
        """Find the samples, load or build the cache, load or create the split (idempotent)."""
        if self.cache is not None:
            return
        self._check_manifest_face_model()
        samples = find_samples(self.root, self.identity_pattern)
        folder = self.cache_dir / cache_key(samples, self.root, self.alignment, self.n_vertices)
        with build_lock(folder):  # parallel jobs: one builds the cache, the others wait and load it
            if (folder / "meta.json").is_file():
                cache = PreprocessedCache.load(folder)
                log.info("cir3dfair: using the cache %s", folder)
            else:
                for tmp in remove_temporaries(folder):
                    log.info("cir3dfair: removed %s, left by a killed run", tmp)
                log.info("cir3dfair: preprocessing %d samples into %s", len(samples), folder)
                cache = build_cache(
                    folder, samples, self.n_vertices, self.alignment, self.on_error, self.preprocess_workers
                )
        if cache.skipped:
            if self.on_error == "raise":
                raise ValueError(f"{folder} was built skipping {len(cache.skipped)} bad files: {cache.skipped[0][1]}")
            log.warning("cir3dfair: skipped %d bad files (first: %s)", len(cache.skipped), cache.skipped[0][1])
        self.skipped = cache.skipped
        self.split = load_or_create_split(
            self.split_file, sorted({s.identity for s in samples}), self.split_ratios, self.split_seed
        )
        self._samples = {s.sample: s for s in samples}
        self.cache = cache

    def prepare_data(self) -> None:
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        self._prepare()
        cache = self.cache
        item_identity = np.asarray(cache.identities)[cache.sample_identity[cache.item_sample]]
        self.ssl_identities = ssl_ids = ssl_identities(self.split["train"], self.ssl_fraction, self.ssl_seed)

        def items_of(identities: Sequence[str]) -> np.ndarray:
            return np.flatnonzero(np.isin(item_identity, list(identities)))

        self.train_dataset = Cir3DFaIRDataset(cache, items_of(self.split["train"]))
        self.val_dataset = Cir3DFaIRDataset(cache, items_of(self.split["val"]))
        self.test_dataset = Cir3DFaIRDataset(cache, items_of(self.split["test"]))
        self.ssl_dataset = Cir3DFaIRDataset(cache, items_of(ssl_ids), ssl_transform=self.ssl_transform)
        log.info("cir3dfair: %d/%d/%d train/val/test images, %d SSL images", len(self.train_dataset),
                 len(self.val_dataset), len(self.test_dataset), len(self.ssl_dataset))

    def samples_of(self, split: str) -> list[SampleFiles]:
        """The cached samples of ``split`` ("train", "val", "test" or "ssl") with their files."""
        self.setup()
        if split not in (*SPLIT_NAMES, "ssl"):
            raise ValueError(f"unknown split {split!r}; expected one of {(*SPLIT_NAMES, 'ssl')}")
        identities = set(self.ssl_identities if split == "ssl" else self.split[split])
        return [self._samples[n] for n in self.cache.sample_names if self._samples[n].identity in identities]

    def describe_items(self, items: Sequence[int]) -> dict[str, np.ndarray]:
        """``sample``, ``identity`` and ``light`` (N,) of cache items (a batch's ``index``)."""
        cache = self.cache
        samples = cache.item_sample[np.asarray(items, dtype=np.int64)]
        return {
            "sample": np.asarray(cache.sample_names)[samples],
            "identity": np.asarray(cache.identities)[cache.sample_identity[samples]],
            "light": cache.item_light[np.asarray(items, dtype=np.int64)],
        }

    def _loader(self, dataset: Cir3DFaIRDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=keep_batch, pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.ssl_dataset if self.mode == "ssl" else self.train_dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, shuffle=False)
