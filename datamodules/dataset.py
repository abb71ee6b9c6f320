"""The dataset the datamodule serves: cache items, a batch at a time, straight from the memory maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.cache import PreprocessedCache


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
