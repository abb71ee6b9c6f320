"""The Cir3D-FaIR data layout: where each file of a sample lies, what it holds, how it is written and read.

Under a dataset's ``root``::

    data2D/<group>/<sample>/<sample>_<k>.png   the sample under light k (RGB)
    data2D/<group>/<sample>/landmarks.npz      points_px (L, P, 2) float32, names (P,): row k belongs to
                                               render <sample>_<k>.png; the synthetic data may add pose_deg
                                               (3,) and light_dirs (L, 3)
    label/<group>/<sample>.obj                 complete head (mm, the face model's topology)
    imperfect/<group>/<sample>.obj             wounded head
    wound/<group>/<sample>.npz                 mask (V,) bool; the synthetic data adds depth_mm (V,),
                                               wound_type, code (K,)
    manifest.json                              format "faceregen-cir3dfair": the samples and their files

The real Cir3D-FaIR folder has ``data2D/`` and ``label/`` only and no manifest: its folders are scanned, the
identity read from the sample name by a regex. The synthetic generator (:mod:`faceregen.synthetic`) writes
this layout; the datamodule, the evaluation and ``reconstruct.py`` read it, all through this module.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceregen.face_model.linear import FIVE_POINT_NAMES

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "faceregen-cir3dfair"
LANDMARKS_NAME = "landmarks.npz"
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


# --- where the files lie ------------------------------------------------------------------------------
def sample_paths(group: str, sample: str, n_lights: int) -> dict:
    """The files of one sample, relative to the dataset root (the keys of a manifest entry)."""
    return {
        "images": [f"data2D/{group}/{sample}/{sample}_{k}.png" for k in range(n_lights)],
        "landmarks": f"data2D/{group}/{sample}/{LANDMARKS_NAME}",
        "label": f"label/{group}/{sample}.obj",
        "imperfect": f"imperfect/{group}/{sample}.obj",
        "wound": f"wound/{group}/{sample}.npz",
    }


def render_light(image: Path) -> int | None:
    """``k`` of a render ``<sample>/<sample>_<k>.png``; None for an image not named so."""
    match = re.fullmatch(rf"{re.escape(image.parent.name)}_(\d+)", image.stem)
    return None if match is None else int(match.group(1))


# --- the manifest --------------------------------------------------------------------------------------
def has_manifest(root: str | os.PathLike) -> bool:
    return (Path(root) / MANIFEST_NAME).is_file()


def read_manifest(root: str | os.PathLike, n_vertices: int | None = None) -> dict:
    """``root/manifest.json``, checked: valid JSON of format ``faceregen-cir3dfair`` and, with ``n_vertices``,
    made with a face model of that many vertices."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: format is {manifest.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    face_model = manifest.get("face_model", {})
    if n_vertices is not None and face_model.get("n_vertices") not in (None, n_vertices):
        raise ValueError(
            f"{path}: data made with face model {face_model.get('name')!r} of {face_model['n_vertices']} "
            f"vertices; the face model here has {n_vertices}"
        )
    return manifest


def manifest_samples(root: Path, manifest: dict) -> list[SampleFiles]:
    """The samples a manifest lists, paths made absolute under ``root``."""
    def optional(entry: dict, key: str) -> Path | None:
        return root / entry[key] if entry.get(key) else None

    try:
        return [
            SampleFiles(
                sample=str(e["sample"]), identity=str(e["identity"]), group=str(e["group"]),
                images=tuple(root / p for p in e["images"]), landmarks=optional(e, "landmarks"),
                label=root / e["label"], imperfect=optional(e, "imperfect"), wound=optional(e, "wound"),
            )
            for e in manifest["samples"]
        ]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{root / MANIFEST_NAME}: a sample entry lacks the field {err}") from err


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
                                f"{root}/label/<group>/<sample>.obj (or a {MANIFEST_NAME})")
    pattern = re.compile(identity_pattern)
    samples = []
    for folder in sorted(p for p in data2d.glob("*/*") if p.is_dir()):
        group, sample = folder.parent.name, folder.name
        match = pattern.search(sample)
        if match is None:
            raise ValueError(f"{folder}: sample name {sample!r} does not match identity_pattern {identity_pattern!r}")
        paths = {key: root / path for key, path in sample_paths(group, sample, 0).items() if key != "images"}
        samples.append(SampleFiles(
            sample=sample, identity=match.groupdict().get("identity") or match.group(0), group=group,
            images=tuple(sorted((p for p in folder.glob("*.png") if "GT" not in p.name), key=_natural_key)),
            label=paths["label"],
            **{key: paths[key] if paths[key].is_file() else None for key in ("landmarks", "imperfect", "wound")},
        ))
    return samples


def find_samples(
    root: str | os.PathLike, identity_pattern: str = DEFAULT_IDENTITY_PATTERN, n_vertices: int | None = None
) -> list[SampleFiles]:
    """The samples under ``root`` sorted by name: the manifest's when there is one (checked against
    ``n_vertices``, :func:`read_manifest`), else :func:`scan_folder`'s."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found")
    if has_manifest(root):
        samples = manifest_samples(root, read_manifest(root, n_vertices))
    else:
        samples = scan_folder(root, identity_pattern)
    if not samples:
        raise ValueError(f"{root}: no samples found (expected data2D/<group>/<sample>/*.png)")
    names = [s.sample for s in samples]
    if len(set(names)) != len(names):
        raise ValueError(f"{root}: sample names repeat across groups; they must be unique")
    return sorted(samples, key=lambda s: s.sample)


# --- what the files hold ---------------------------------------------------------------------------------
def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` (as ``np.savez``) with fixed zip timestamps, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


def landmarks_bytes(points_px: np.ndarray, names: tuple[str, ...], **extra: np.ndarray) -> bytes:
    """A ``landmarks.npz``: ``points_px`` (L, P, 2) float32, row k for render k, ``names`` (P,), then ``extra``."""
    return npz_bytes({"points_px": np.asarray(points_px, dtype=np.float32), "names": np.array(names), **extra})


def wound_bytes(mask: np.ndarray, depth_mm: np.ndarray, wound_type: str, code: np.ndarray) -> bytes:
    """A ``wound/<group>/<sample>.npz``: ``mask`` (V,) bool, ``depth_mm`` (V,), ``wound_type``, ``code`` (K,)."""
    return npz_bytes({"mask": np.asarray(mask, dtype=bool), "depth_mm": depth_mm, "wound_type": np.array(wound_type),
                      "code": code})


def _read_npz(path: Path, keys: tuple[str, ...], what: str) -> dict[str, np.ndarray]:
    """``keys`` (and whatever else the file holds) of an ``.npz`` read without pickles; errors name the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a {what} ({err})") from err
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise ValueError(f"{path}: not a {what}: no {', '.join(missing)} (it holds {sorted(arrays)})")
    return arrays


@dataclass(frozen=True)
class WoundFile:
    """A wound file: ``mask`` (V,) bool, the vertices the wound removed or moved; ``wound_type`` ('' if unnamed)."""

    mask: np.ndarray
    wound_type: str


def read_wound(path: str | os.PathLike, n_vertices: int) -> WoundFile:
    """The wound of a ``wound/<group>/<sample>.npz`` (or any ``.npz`` with a ``mask``) over a mesh of
    ``n_vertices`` vertices: ``mask`` must be bool (V,)."""
    path = Path(path)
    arrays = _read_npz(path, ("mask",), "wound file with a 'mask' array")
    mask = arrays["mask"]
    if mask.shape != (n_vertices,) or mask.dtype != bool:
        raise ValueError(f"{path}: mask is {mask.dtype} {mask.shape}, expected bool ({n_vertices},)")
    return WoundFile(mask, str(arrays["wound_type"]) if "wound_type" in arrays else "")


def read_landmarks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a ``landmarks.npz``: ``points_px`` (L, P, 2), ``names`` (P,) and the synthetic extras."""
    return _read_npz(Path(path), ("points_px", "names"), "landmark file with points_px and names")


def render_five_points(landmarks: str | os.PathLike, images: tuple[Path, ...]) -> np.ndarray:
    """The five alignment points (N, 5, 2) px, in ``FIVE_POINT_NAMES`` order, of renders ``<sample>_<k>.png``:
    row ``k`` of the sample's ``landmarks.npz``. ValueError naming the file for an image not named so, a
    render without its row, or a file without the five points."""
    arrays = read_landmarks(landmarks)
    points, names = arrays["points_px"], [str(n) for n in arrays["names"]]
    missing = [n for n in FIVE_POINT_NAMES if n not in names]
    if missing or points.ndim != 3 or points.shape[1:] != (len(names), 2):
        raise ValueError(f"{landmarks}: expected points_px (L, P, 2) and names containing {FIVE_POINT_NAMES}; "
                         f"got {points.shape}, missing {missing}")
    rows = []
    for image in images:
        k = render_light(image)
        if k is None:
            raise ValueError(f"{image}: not named <sample>_<k>.png, so no row of {landmarks} is its own")
        if k >= len(points):
            raise ValueError(f"{landmarks}: no points for render {k} ({image.name}); it holds {len(points)}")
        rows.append(k)
    return points[rows][:, [names.index(n) for n in FIVE_POINT_NAMES]].astype(np.float64)
