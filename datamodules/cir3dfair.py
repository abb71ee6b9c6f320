"""Cir3D-FaIR-style data for Lightning: 2D renders of imperfect faces -> complete 3D meshes (mm).

The files are found and read as :mod:`faceregen.data_layout` says (a manifest's samples, or a scanned real
Cir3D-FaIR folder), decoded and aligned once into a cache (:mod:`datamodules.cache`, the work spread over
processes by :mod:`datamodules.preprocessing`), split over identities (:mod:`datamodules.splits`) and
served by :class:`~datamodules.dataset.Cir3DFaIRDataset`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from datamodules.cache import PreprocessedCache, load_or_build_cache
from datamodules.dataset import Cir3DFaIRDataset, keep_batch
from datamodules.preprocessing import usable_cores
from datamodules.splits import SPLIT_NAMES, load_or_create_split, ssl_identities
from faceregen.alignment import get_template
from faceregen.data_layout import DEFAULT_IDENTITY_PATTERN, SampleFiles, find_samples

log = logging.getLogger(__name__)


class Cir3DFaIRDataModule(pl.LightningDataModule):
    """Cir3D-FaIR-style data: identity-disjoint 6:2:2 split, SSL subset, cached aligned images.

    Args:
        root: the data folder (:mod:`faceregen.data_layout`).
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

    #: the arguments that change how the data is served, never what: stages trained on it leave them out of their keys
    RUNTIME_OPTIONS = frozenset({"num_workers", "pin_memory", "preprocess_workers", "cache_dir"})

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
        self.preprocess_workers = preprocess_workers or usable_cores()
        self.cache: PreprocessedCache | None = None
        self.split: dict[str, list[str]] | None = None
        self.ssl_identities: list[str] | None = None
        self.skipped: list[tuple[str, str]] = []
        self._samples: dict[str, SampleFiles] = {}
        self.train_dataset = self.val_dataset = self.test_dataset = self.ssl_dataset = None

    def _prepare(self) -> None:
        """Find the samples, load or build the cache, load or create the split (idempotent)."""
        if self.cache is not None:
            return
        samples = find_samples(self.root, self.identity_pattern, self.n_vertices)
        cache = load_or_build_cache(self.cache_dir, self.root, samples, self.n_vertices, self.alignment, self.on_error,
                                    self.preprocess_workers)
        if cache.skipped:
            if self.on_error == "raise":
                raise ValueError(f"{cache.folder} was built skipping {len(cache.skipped)} bad files: {cache.skipped[0][1]}")
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
