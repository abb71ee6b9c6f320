"""Synthetic-data throughput: heads/s (G(z) + a wound), renders/s, and the default dataset's wall time.

    python bench/bench_data_generation.py [--identities 16] [--workers 2] [--resolution 256]

The default dataset (300 identities x 3 wounds x 4 lights at 256 px) is extrapolated from two runs of
``generate_dataset`` with the same settings: one identity (the fixed cost: spawning workers, VTK windows,
contact sheet) and ``--identities`` (the cost per identity); ``--identities 300`` measures it in full.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceregen.face_model.anny_source import anny_face_model  # noqa: E402
from faceregen.rendering import DEFAULT_LIGHT_DIRS, Camera, GreyRenderer  # noqa: E402
from faceregen.synthetic import WOUND_TYPES, generate_dataset, make_wound  # noqa: E402
from faceregen.synthetic.generator import FRAMED_REGIONS  # noqa: E402

DEFAULT_IDENTITIES, DEFAULT_WOUNDS = 300, 3


def heads_per_second(model, n_heads: int) -> float:
    """G(z) for a random code plus one wound (cycling over the wound types), in one process."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(n_heads):
        head = model.vertices_mm(rng.standard_normal(model.n_components).astype(np.float32))
        make_wound(head, model.faces, model, WOUND_TYPES[i % len(WOUND_TYPES)], rng)
    return n_heads / (time.perf_counter() - start)


def renders_per_second(model, resolution: int, n_heads: int) -> float:
    """Grey renders (one per light) of random heads through one reused window, in one process."""
    front = np.unique(np.concatenate([model.regions[r] for r in FRAMED_REGIONS]))
    renderer = GreyRenderer(Camera.framing(model.mean_mm[front], resolution, 25.0, 1.4))
    rng = np.random.default_rng(0)
    heads = [model.vertices_mm(rng.standard_normal(model.n_components).astype(np.float32)) for _ in range(n_heads)]
    renderer.render(heads[0], model.faces, DEFAULT_LIGHT_DIRS)  # warm-up (shader compilation)
    start = time.perf_counter()
    for head in heads:
        renderer.render(head, model.faces, DEFAULT_LIGHT_DIRS)
    elapsed = time.perf_counter() - start
    renderer.close()
    return n_heads * len(DEFAULT_LIGHT_DIRS) / elapsed


def generation_seconds(model, n_identities: int, workers: int, resolution: int) -> float:
    """Wall time of ``generate_dataset`` for ``n_identities`` x 3 wounds into a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        generate_dataset(
            root, model, n_identities=n_identities, wounds_per_identity=DEFAULT_WOUNDS, resolution=resolution,
            workers=workers,
        )  # fmt: skip
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, default=16, help="identities in the timed subset")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--cache-dir", default="cache/face_model", help="where the embedded face model is cached")
    args = parser.parse_args()

    model = anny_face_model(cache_dir=args.cache_dir)
    print(f"face model: {model.name}, {model.n_vertices} vertices, {model.n_components} components")
    print(f"heads/s (G(z) + wound, 1 process): {heads_per_second(model, 70):.1f}")
    print(f"renders/s ({args.resolution} px, 1 process): {renders_per_second(model, args.resolution, 25):.1f}")

    one_s = generation_seconds(model, 1, args.workers, args.resolution)
    subset_s = generation_seconds(model, args.identities, args.workers, args.resolution)
    samples = args.identities * DEFAULT_WOUNDS
    print(
        f"generate_dataset: {samples} samples x {len(DEFAULT_LIGHT_DIRS)} lights, {args.workers} workers: "
        f"{subset_s:.1f} s ({samples / subset_s:.1f} samples/s; fixed cost {one_s:.1f} s)"
    )
    if args.identities == DEFAULT_IDENTITIES:
        default_s, kind = subset_s, "measured"
    else:
        per_identity_s = (subset_s - one_s) / max(args.identities - 1, 1)
        default_s, kind = one_s + per_identity_s * (DEFAULT_IDENTITIES - 1), "extrapolated"
    print(
        f"default dataset ({DEFAULT_IDENTITIES} x {DEFAULT_WOUNDS} x {len(DEFAULT_LIGHT_DIRS)} "
        f"at {args.resolution} px), {kind}: {default_s:.0f} s ({default_s / 60:.1f} min)"
    )


if __name__ == "__main__":
    main()
