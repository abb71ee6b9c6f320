"""The restoration on the wounded scan, measured on the test split against the clinical baselines.

Per test case (a wounded head, its complete label, the generator's wound mask) and scan ``variant``:

* ``clean``: the wounded head as it is (the face model's topology and frame, mm);
* ``remeshed``: another topology: every triangle split in four, then decimated (VTK's quadric decimation)
  back to the original triangle count;
* ``noise``: ``N(0, noise_mm^2)`` added to every coordinate (0.2 mm);
* ``moved``: a uniformly random rotation and a translation of up to 200 mm;
* ``metres``: coordinates in metres (``scan.units=auto`` must find that);
* ``partial``: a face-only scan, as a structured-light scanner captures: the triangles facing the camera
  (``n_z > 0.2``) in front of the ears (``z > 0``), largest connected piece.

and per ``method``:

* ``scan_fit``: the face model fitted to the scan (:class:`~faceregen.restoration.Restorer`), no image;
* ``scan_fit_image_prior``: the same with the image's predicted code as prior;
* ``image_only``: today's path: the image's prediction taken as it is, in the face model's frame;
* ``image_similarity``: the image's prediction registered to the scan (similarity, robust ICP);
* ``mirror``: the scan mirrored across the face's mid-sagittal plane (prosthetists' practice; meaningful
  for lateral wounds).

Every method shares the wound detection and the filling (the restoration path), so the rows differ only
in the completed surface. Metrics: the ground truth's wound vertices (label, mapped into the scan's frame)
to the completed SURFACE (exact point-to-surface distance): RMSE and mean (mm); the filling built and
watertight; its volume against the true filling's (label vs wounded head under the generator's mask):
``(V - V_true) / V_true`` per case, its magnitude in the table; wound-detection IoU against the generator's mask (per scan vertex; for the
remeshed variant the mask is carried to each new vertex from the nearest original one).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from faceregen.evaluation.scan_to_mesh import Similarity, point_to_surface_distance_mm
from faceregen.mesh_io import vertex_normals
from faceregen.postprocess import extract_filling
from faceregen.restoration import Restorer, scan_from_arrays
from faceregen.restoration.restorer import scan_filling
from faceregen.restoration.scan import Scan
from faceregen.restoration.wound_detection import depth_below_surface, detect_wound

VARIANTS = ("clean", "remeshed", "noise", "moved", "metres", "partial")
METHODS = ("image_only", "image_similarity", "scan_fit", "scan_fit_image_prior", "mirror")
IMAGE_METHODS = ("image_only", "image_similarity", "scan_fit_image_prior")
IDENTITY = Similarity(1.0, np.eye(3), np.zeros(3))


@dataclass(frozen=True)
class Case:
    """One test sample: wounded and complete heads (V, 3) mm, triangles, the generator's mask and type, its
    first render, and the image's predicted code when a trained model is evaluated."""

    sample: str
    wound_type: str
    imperfect_mm: np.ndarray
    label_mm: np.ndarray
    faces: np.ndarray
    mask: np.ndarray
    image: str = ""
    image_code: np.ndarray | None = None


def smooth_detail_mm(vertices_mm: np.ndarray, faces: np.ndarray, rng: np.random.Generator, rms_mm: float,
                     wavelengths_mm: tuple[float, float] = (15.0, 60.0), n_waves: int = 24) -> np.ndarray:
    """A smooth random displacement (V, 3) along the vertex normals with RMS ``rms_mm``: a sum of
    ``n_waves`` plane waves ``sin(k . v + phase)``, wavelengths uniform in ``wavelengths_mm``, random
    directions. The stand-in for per-head surface detail where the dataset has none."""
    directions = rng.normal(size=(n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    k = 2 * np.pi / rng.uniform(*wavelengths_mm, n_waves)
    height = np.sin(vertices_mm @ (directions * k[:, None]).T + rng.uniform(0, 2 * np.pi, n_waves)).sum(axis=1)
    height *= rms_mm / np.sqrt(np.mean(height**2))
    return height[:, None] * vertex_normals(vertices_mm, faces)


def with_detail(case: Case, rng: np.random.Generator, rms_mm: float) -> Case:
    """The case with the same smooth detail added to its complete and its wounded head."""
    detail = smooth_detail_mm(case.label_mm, case.faces, rng, rms_mm)
    return dataclasses.replace(case, imperfect_mm=case.imperfect_mm + detail, label_mm=case.label_mm + detail)


def _largest_piece(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The largest edge-connected piece: (vertices, faces, kept original vertex indices)."""
    _, labels = connected_components(_face_graph(faces), directed=False)
    keep = labels == np.bincount(labels).argmax()
    used = np.unique(faces[keep])
    index = np.full(len(vertices), -1)
    index[used] = np.arange(len(used))
    return vertices[used], index[faces[keep]], used


def _face_graph(faces: np.ndarray):
    """Faces linked when they share an edge (sparse adjacency)."""
    from scipy.sparse import coo_matrix

    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    owner = np.repeat(np.arange(len(faces)), 3)
    _, inverse = np.unique(edges, axis=0, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    pairs = inverse.ravel()[order]
    same = pairs[1:] == pairs[:-1]
    a, b = owner[order][:-1][same], owner[order][1:][same]
    return coo_matrix((np.ones(len(a)), (a, b)), shape=(len(faces), len(faces)))


def scan_variant(case: Case, variant: str, rng: np.random.Generator,
                 noise_mm: float = 0.2) -> tuple[Scan, Similarity, np.ndarray]:
    """``(scan, model mm -> scan mm similarity, true wound mask per scan vertex)`` (module docstring)."""
    vertices, faces, mask, units, to_scan = case.imperfect_mm.astype(np.float64), case.faces, case.mask, "mm", IDENTITY
    if variant == "remeshed":
        import pyvista as pv

        fine = trimesh.Trimesh(vertices, faces, process=False).subdivide()
        poly = pv.PolyData(np.asarray(fine.vertices), np.c_[np.full(len(fine.faces), 3), fine.faces].ravel())
        coarse = poly.decimate(1.0 - len(faces) / len(fine.faces))
        new_vertices, new_faces = np.asarray(coarse.points, np.float64), coarse.faces.reshape(-1, 4)[:, 1:]
        _, nearest = cKDTree(vertices).query(new_vertices)
        vertices, faces, mask = new_vertices, new_faces, mask[nearest]
    elif variant == "noise":
        vertices = vertices + rng.normal(0.0, noise_mm, vertices.shape)
    elif variant == "moved":
        to_scan = Similarity(1.0, Rotation.random(random_state=rng).as_matrix(), rng.uniform(-200.0, 200.0, 3))
        vertices = to_scan.apply(vertices)
    elif variant == "metres":
        units = "auto"
    elif variant == "partial":
        corners = vertices[faces]
        normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        front = (normals[:, 2] > 0.2) & (corners[:, :, 2].mean(axis=1) > 0.0)
        vertices, faces, kept = _largest_piece(vertices, faces[front])
        mask = mask[kept]
    elif variant != "clean":
        raise ValueError(f"unknown scan variant {variant!r}; expected one of {VARIANTS}")
    file_vertices = vertices / 1000.0 if variant == "metres" else vertices
    return scan_from_arrays(file_vertices, faces, f"{case.sample}[{variant}]", units), to_scan, mask


def _wound_errors_mm(case: Case, to_scan: Similarity, completed_mm: np.ndarray, completed_faces: np.ndarray) -> np.ndarray:
    return point_to_surface_distance_mm(to_scan.apply(case.label_mm[case.mask]), completed_mm, completed_faces)


def evaluate_case(restorer: Restorer, case: Case, method: str, variant: str, seed: int = 0) -> dict:
    """One row: the case restored by ``method`` on its ``variant`` scan, with the module's metrics."""
    if method in IMAGE_METHODS and case.image_code is None:
        raise ValueError(f"{case.sample}: method {method!r} needs the image's predicted code (a trained run)")
    rng = np.random.default_rng([seed, int.from_bytes(case.sample.encode()[-8:], "little"), VARIANTS.index(variant)])
    row = {"sample": case.sample, "wound_type": case.wound_type, "method": method, "variant": variant,
           "wound_rmse_mm": np.nan, "wound_mean_mm": np.nan, "built": False, "watertight": False,
           "volume_error": np.nan, "iou": np.nan, "seconds": np.nan, "error": ""}
    true_volume = extract_filling(case.imperfect_mm, case.label_mm, case.faces, case.mask).volume
    clock = time.perf_counter()
    try:
        scan, to_scan, true_mask = scan_variant(case, variant, rng)
        if method == "image_only":
            completed, faces = to_scan.apply(restorer.face_model.vertices_mm(case.image_code)), case.faces
            depth = depth_below_surface(scan.vertices_mm, completed, faces)
            facial = restorer.facial(scan, to_scan.inverse(), None)
            mask = detect_wound(scan.vertices_mm, scan.faces, depth.depth_mm, 0.0, restorer.wound, facial)
            try:
                filling, error = scan_filling(scan, completed, faces, depth, mask), ""
            except ValueError as err:
                filling, error = None, str(err)
        else:
            completion = {"scan_fit": "face_model", "scan_fit_image_prior": "face_model", "mirror": "mirror",
                          "image_similarity": "image"}[method]
            prior = case.image_code if method in IMAGE_METHODS else None
            result = restorer(scan, prior, completion=completion)
            completed, faces, mask, filling, error = (result.completed_mm, result.completed_faces, result.mask,
                                                      result.filling, result.filling_error or "")
        row["seconds"] = time.perf_counter() - clock
        errors = _wound_errors_mm(case, to_scan, completed, faces)
        row.update(wound_rmse_mm=float(np.sqrt(np.mean(errors**2))), wound_mean_mm=float(errors.mean()),
                   iou=float((mask & true_mask).sum() / max((mask | true_mask).sum(), 1)), error=error)
        if filling is not None:
            row.update(built=True, watertight=bool(filling.is_watertight),
                       volume_error=float((filling.volume - true_volume) / true_volume))
    except ValueError as err:
        row["error"] = str(err)
    return row


def summary_rows(rows: Sequence[dict]) -> list[dict]:
    """Per (method, variant, wound type) and per (method, variant) over all types: the table's columns."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        for wound_type in (row["wound_type"], "all"):
            groups.setdefault((row["method"], row["variant"], wound_type), []).append(row)
    out = []
    for (method, variant, wound_type), members in groups.items():
        volume = np.abs([m["volume_error"] for m in members if m["built"]])
        with np.errstate(invalid="ignore"):
            out.append({
                "method": method, "variant": variant, "wound_type": wound_type, "cases": len(members),
                "wound_rmse_mm": float(np.sqrt(np.nanmean([m["wound_rmse_mm"] ** 2 for m in members]))),
                "wound_mean_mm": float(np.nanmean([m["wound_mean_mm"] for m in members])),
                "built_watertight": float(np.mean([m["built"] and m["watertight"] for m in members])),
                "volume_error_median": float(np.median(volume)) if len(volume) else np.nan,
                "within_10pct": float(np.sum(volume <= 0.10) / len(members)),
                "within_25pct": float(np.sum(volume <= 0.25) / len(members)),
                "iou": float(np.nanmean([m["iou"] for m in members])),
                "seconds": float(np.nanmedian([m["seconds"] for m in members])),
            })
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(out, key=lambda r: (r["wound_type"] != "all", r["wound_type"], VARIANTS.index(r["variant"]),
                                      order[r["method"]]))


def csv_text(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown_table(rows: Sequence[dict], title: str) -> str:
    """The summary as markdown: one table over all wound types, then one per type (clean scans)."""
    def fmt(row):
        return (f"| {row['method']} | {row['variant']} | {row['cases']} | {row['wound_rmse_mm']:.2f} | "
                f"{row['wound_mean_mm']:.2f} | {100 * row['built_watertight']:.0f}% | {100 * row['volume_error_median']:.1f}% | "
                f"{100 * row['within_10pct']:.0f}% | {100 * row['within_25pct']:.0f}% | {row['iou']:.2f} | {row['seconds']:.2f} |")
    header = ("| method | scan | cases | wound RMSE (mm) | wound mean (mm) | built + watertight | volume error (median) "
              "| within 10% | within 25% | wound IoU | s / case |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [f"## {title}", "", "### All wound types", "", header] + [fmt(r) for r in rows if r["wound_type"] == "all"]
    lines += ["", "### Per wound type (clean scans)", ""]
    for wound_type in sorted({r["wound_type"] for r in rows} - {"all"}):
        lines += [f"**{wound_type}**", "", header]
        lines += [fmt(r) for r in rows if r["wound_type"] == wound_type and r["variant"] == "clean"] + [""]
    return "\n".join(lines) + "\n"


def read_cases(root, identities: set[str] | None, max_cases: int | None = None) -> list[Case]:
    """The dataset's samples of the given identities; with ``max_cases``, every wound type evenly thinned to
    its share (``max_cases // n_types``, at least 1), so that a subset holds every type."""
    from faceregen.data_layout import find_samples, read_wound
    from faceregen.mesh_io import read_mesh

    samples = [s for s in find_samples(root) if identities is None or s.identity in identities]
    cases = []
    for sample in samples:
        imperfect, faces = read_mesh(sample.imperfect)
        label, _ = read_mesh(sample.label)
        wound = read_wound(sample.wound, len(imperfect))
        cases.append(Case(sample.sample, wound.wound_type, imperfect.astype(np.float64), label.astype(np.float64),
                          faces, wound.mask, str(sample.images[0])))
    if max_cases is not None and len(cases) > max_cases:
        types = sorted({c.wound_type for c in cases})
        share = max(1, max_cases // len(types))
        keep = set()
        for wound_type in types:
            of_type = [i for i, c in enumerate(cases) if c.wound_type == wound_type]
            keep |= {of_type[j] for j in np.unique(np.linspace(0, len(of_type) - 1, share).round().astype(int))}
        cases = [c for i, c in enumerate(cases) if i in keep]
    return cases


def summary_figure(rows: Sequence[dict], title: str):
    """Bars per scan variant and method: wound RMSE (mm), fillings within 10% of the true volume, IoU."""
    import matplotlib.pyplot as plt

    overall = [r for r in rows if r["wound_type"] == "all"]
    methods = [m for m in METHODS if any(r["method"] == m for r in overall)]
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in overall)]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    width = 0.8 / len(methods)
    for ax, key, label in zip(axes, ("wound_rmse_mm", "within_10pct", "iou"),
                              ("wound-region RMSE (mm)", "fillings within 10% of the true volume", "wound IoU")):
        for i, method in enumerate(methods):
            values = [next((r[key] for r in overall if r["method"] == method and r["variant"] == v), np.nan)
                      for v in variants]
            ax.bar(np.arange(len(variants)) + i * width, values, width, label=method)
        ax.set_xticks(np.arange(len(variants)) + 0.4 - width / 2, variants)
        ax.set_ylabel(label)
        if key == "wound_rmse_mm":
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
        else:
            ax.axhline(0.8 if key == "within_10pct" else 0.9, color="k", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
