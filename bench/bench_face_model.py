"""Benchmark of the embedded Anny face model at its default settings (no cache: a fresh build).

Prints heads/s sampled from Anny, the PCA build time, the variance explained at 300 components and
the held-out reconstruction error (mm, mean per-vertex distance) at 50/100/300 components.

    .venv/bin/python bench/bench_face_model.py
"""

import time

import numpy as np

from faceregen.face_model.anny_source import (
    build_anny_face_model,
    load_anny_head,
    sample_anny_heads_mm,
)


def main() -> None:
    started = time.perf_counter()
    load_anny_head()
    print(f"Anny head model load (incl. import): {time.perf_counter() - started:.1f} s")

    n_heads = 1024
    sample_anny_heads_mm(256, seed=1, progress=False)  # warm-up
    started = time.perf_counter()
    sample_anny_heads_mm(n_heads, seed=0, progress=False)
    elapsed = time.perf_counter() - started
    print(f"sampling: {n_heads / elapsed:.0f} heads/s ({n_heads} heads in {elapsed:.2f} s)")

    started = time.perf_counter()
    model = build_anny_face_model()
    total = time.perf_counter() - started
    info = model.info
    print(f"default build (4000 heads, 300 components): {total:.1f} s total, "
          f"sampling {info['timing_s']['sampling']:.1f} s, PCA {info['timing_s']['pca']:.1f} s")  # fmt: skip
    print(f"variance explained at {model.n_components}: {info['variance_explained']:.12f}")
    for k in (50, 100, 300):
        print(f"held-out error at {k:3d} components: {info['heldout_error_mm_by_components'][str(k)]:.3g} mm")
    extent = np.ptp(model.mean_mm, axis=0)
    print(f"mean head extent x/y/z: {extent[0]:.0f} / {extent[1]:.0f} / {extent[2]:.0f} mm; mesh: {info['mesh']}")
    print(f"region sizes: {info['region_sizes']}")


if __name__ == "__main__":
    main()
