"""Throughput of the Cir3D-FaIR datamodule: cache building (decode + align) and serving from the cache.

Uses data/synthetic_cir3dfair when a generated dataset is there, else writes (once) a placeholder folder
in the same layout under cache/bench/cir3dfair_placeholder: 300 identities x 3 variants x 4 lights =
3600 smooth random 256 px PNGs with landmarks, meshes of a 2562-vertex ellipsoid. The cache is built
afresh in a temporary folder each run. Prints images/s of cache building and samples/s served by the
train dataloader with 0 and 2 worker processes.

    .venv/bin/python bench/bench_datamodule.py [--alignment dlib_150] [--epochs 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's stand-in face model and folder writer

from datamodules.cir3dfair import Cir3DFaIRDataModule  # noqa: E402
from faceregen.data_layout import has_manifest, read_manifest  # noqa: E402
from face_models import toy_face_model  # noqa: E402
from test_datamodule import write_cir3dfair_folder  # noqa: E402


def dataset_folder() -> tuple[Path, object]:
    """(root, face model or a stand-in with ``n_vertices``): the generated data if present, else the placeholder."""
    generated = ROOT / "data" / "synthetic_cir3dfair"
    if has_manifest(generated):
        n_vertices = read_manifest(generated)["face_model"]["n_vertices"]
        return generated, SimpleNamespace(n_vertices=n_vertices)
    face_model = toy_face_model(subdivisions=4)
    placeholder = ROOT / "cache" / "bench" / "cir3dfair_placeholder"
    if not has_manifest(placeholder):
        print(f"writing the placeholder dataset to {placeholder} (once) ...", flush=True)
        write_cir3dfair_folder(placeholder, face_model, n_identities=300, n_variants=3, n_lights=4, resolution=256)
    return placeholder, face_model


def served_per_second(datamodule: Cir3DFaIRDataModule, epochs: int) -> tuple[float, float]:
    """(samples/s of the first epoch incl. worker start, samples/s of the later epochs) of train batches."""
    loader = datamodule.train_dataloader()
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += len(batch["index"])
        rates.append(count / (time.perf_counter() - start))
    later = rates[1:] or rates
    return rates[0], sum(later) / len(later)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alignment", default="dlib_150")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root, face_model = dataset_folder()
    with tempfile.TemporaryDirectory() as tmp:
        options = dict(root=root, face_model=face_model, alignment=args.alignment, batch_size=args.batch_size,
                       cache_dir=Path(tmp) / "cache", split_file=Path(tmp) / "split.json")
        building = Cir3DFaIRDataModule(num_workers=0, **options)
        start = time.perf_counter()
        building.setup()
        build_s = time.perf_counter() - start
        n_images = building.cache.images.shape[0]
        print(f"data: {root} ({n_images} images, {building.cache.vertices_mm.shape[1]} vertices, {args.alignment})")
        print(f"cache build: {n_images / build_s:.0f} images/s ({build_s:.1f} s, "
              f"{building.preprocess_workers} processes; mesh loading included)")
        for num_workers in (0, 2):
            datamodule = Cir3DFaIRDataModule(num_workers=num_workers, **options)
            start = time.perf_counter()
            datamodule.setup()
            setup_s = time.perf_counter() - start
            first, later = served_per_second(datamodule, args.epochs)
            print(f"served, num_workers={num_workers}: {later:.0f} samples/s after the first epoch "
                  f"(first epoch {first:.0f} samples/s; setup from the cache {setup_s:.2f} s), batch {args.batch_size}")


if __name__ == "__main__":
    main()
