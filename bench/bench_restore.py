"""Seconds per case of the restoration on a wounded scan, on one CPU core (target: <= 2 s).

The CPU seconds of the process (one BLAS thread) are what one core spends, whatever else runs beside it;
the wall seconds per step show where they go (and grow when the machine is shared).

Face model: the embedded Anny model when its default cache exists (``cache/face_model``), else the test
suite's ellipsoid head. Each case: a random head ``G(z)``, one wound of every type in turn, then the scan as
it is (the face model's topology: landmarks known), and as another topology (remeshed: split in four, then
decimated back) under a random rigid motion: the orientation search runs. Prints the median seconds per
step (registration, completion, wound, filling) and in total, and writing the outputs once.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_restore.py [--cases 7]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, before numpy loads its BLAS

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faceregen.evaluation.restoration import Case, scan_variant  # noqa: E402
from faceregen.face_model.anny_source import anny_cache_path, anny_face_model  # noqa: E402
from faceregen.restoration import Restorer  # noqa: E402
from faceregen.restoration.outputs import write_restoration  # noqa: E402
from faceregen.synthetic.wounds import WOUND_TYPES, make_wound  # noqa: E402


def load_face_model():
    if anny_cache_path(cache_dir=ROOT / "cache" / "face_model").exists():
        return anny_face_model(cache_dir=ROOT / "cache" / "face_model")
    from face_models import toy_face_model

    return toy_face_model(subdivisions=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=len(WOUND_TYPES))
    args = parser.parse_args()
    face_model = load_face_model()
    restorer = Restorer(face_model)
    rng = np.random.default_rng(0)
    print(f"face model {face_model.name}: {face_model.n_vertices} vertices; threads: OMP_NUM_THREADS="
          f"{os.environ['OMP_NUM_THREADS']}")
    for label, variant in (("face-model topology, moved", "moved"), ("remeshed", "remeshed")):
        steps: dict[str, list[float]] = {}
        for i in range(args.cases):
            complete = face_model.vertices_mm(rng.standard_normal(face_model.n_components).astype(np.float32))
            kind = WOUND_TYPES[i % len(WOUND_TYPES)]
            wound = make_wound(complete, face_model.faces, face_model, kind, rng)
            case = Case(f"bench_{i}", kind, wound.vertices_mm.astype(np.float64), complete.astype(np.float64),
                        face_model.faces, wound.mask)
            scan, _, _ = scan_variant(case, variant, rng)
            clock, cpu = time.perf_counter(), time.process_time()
            result = restorer(scan)
            steps.setdefault("total", []).append(time.perf_counter() - clock)
            steps.setdefault("cpu", []).append(time.process_time() - cpu)
            for step, seconds in result.seconds.items():
                steps.setdefault(step, []).append(seconds)
        medians = ", ".join(f"{step} {np.median(values):.2f}" for step, values in steps.items()
                            if step not in ("total", "cpu"))
        print(f"{label} ({len(scan.vertices_mm)} scan vertices): {np.median(steps['cpu']):.2f} s of CPU per case "
              f"(one thread; median of {args.cases}, max {max(steps['cpu']):.2f}); wall {np.median(steps['total']):.2f} s "
              f"= {medians}")
    with tempfile.TemporaryDirectory() as folder:
        clock = time.perf_counter()
        write_restoration(folder, result)
        print(f"writing the outputs (meshes, STL + printability report, GLB, summary PNG): {time.perf_counter() - clock:.2f} s")


if __name__ == "__main__":
    main()
