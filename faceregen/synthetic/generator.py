"""The synthetic Cir3D-FaIR dataset: random heads ``G(z)``, wounds carved into them, grey renders.

For identity ``i`` (named ``<identity_prefix>%05d`` of ``i + 1``, ``CTM00001``...): ``z ~ N(0, I) * code_scale``
from the generator seeded by ``(seed, i)``, complete head ``G(z)`` plus, when ``detail_rms_mm > 0``, the
identity's own smooth surface detail (:mod:`faceregen.synthetic.surface_detail`: a band-limited displacement
along the normals, ``detail_rms_mm`` RMS over the face, seeded by ``(seed, i, 0)``) that no face model
reproduces, so the ground truth is not the decoder's own output; variant ``k`` carves wound type
``wound_types[(i K + k) mod T]`` with the generator seeded by ``(seed, i, k + 1)``, renders the imperfect head
under each light and projects the landmarks. Results depend on ``(seed, i, k)`` only, not on which worker ran
what, so any number of workers, and a resumed run, give the same bytes.

Complete faces (the base stage's pre-training set, identities disjoint from the imperfect set's by name and
seed): ``wound_types=["none"]`` leaves every head complete (empty mask, ``imperfect == label``),
``identity_prefix="BASE"`` names them ``BASE%05d``, and two jitters vary the renders, drawn from the sample's
generator after the wound's draws, in this order, each only when it is > 0:

* ``pose_jitter_deg = j``: the head is rotated by ``R = R_z(roll) R_x(pitch) R_y(yaw)``, each angle
  ``~ U(-j, j)`` degrees, about the complete head's vertex centroid before rendering; the landmarks are
  projected from the rotated head. The meshes stay in the face model's frame (the truth is the shape, not
  the pose).
* ``light_jitter = s``: each render's unit light direction ``d`` becomes ``(d + e) / |d + e|`` with
  ``e ~ N(0, s^2 I_3)`` and the z component of ``d + e`` made non-negative (kept on the camera's side).

With both at 0 (and the default prefix) the bytes are those of datasets made before these settings existed:
the manifest lists them only when they differ from their defaults.

The files are those of :mod:`faceregen.data_layout`, plus ``contact_sheet.png`` (a few samples under every
light, wound overlaid in red); the manifest is written last. ``landmarks.npz`` holds ``pose_deg`` (3,) (yaw,
pitch, roll) with pose jitter and ``light_dirs`` (L, 3) (the unit directions rendered) with light jitter;
``wound/<group>/<sample>.npz``'s ``code`` is the z the head was drawn from, before its detail.

Every file goes through an atomic rename. A sample is written label, imperfect, wound, images, then
``landmarks.npz`` last, so a sample is complete exactly when its ``landmarks.npz`` exists: a resumed run
skips those, removes temporary files left by a killed run, and redoes the rest.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from faceregen.data_layout import (
    MANIFEST_FORMAT, MANIFEST_NAME, landmarks_bytes, read_landmarks, read_wound, sample_paths, wound_bytes,
)
from faceregen.face_model.linear import FIVE_POINT_NAMES, LinearFaceModel
from faceregen.io import atomic_write_bytes, atomic_write_text
from faceregen.locking import one_builder_per
from faceregen.mesh_io import read_mesh, write_mesh
from faceregen.synthetic.surface_detail import DETAIL_STREAM, SurfaceDetail
from faceregen.synthetic.wounds import NO_WOUND, WOUND_TYPES, make_wound

if TYPE_CHECKING:  # rendering imports VTK: only the functions that render import it
    from faceregen.rendering import Camera

MANIFEST_VERSION = 1
#: Face-model regions the camera frames (the front of the mean head).
FRAMED_REGIONS = ("face", "forehead", "nose", "lips", "eye_region")
#: Parameters of an unfinished run, checked on resume; removed once the manifest is written.
PENDING_PARAMS_NAME = ".generate_params.json"
#: Settings added after the first datasets: in the manifest only when not at their defaults (same bytes as before).
LATER_SETTINGS = ("identity_prefix", "pose_jitter_deg", "light_jitter", "detail_rms_mm", "detail_band")


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything that decides a dataset's bytes (the worker count does not)."""

    n_identities: int = 300
    wounds_per_identity: int = 3
    wound_types: tuple[str, ...] = WOUND_TYPES
    lights: tuple[tuple[float, float, float], ...] = ()
    resolution: int = 256
    fov_deg: float = 25.0
    frame_margin: float = 1.4
    seed: int = 0
    code_scale: float = 1.0
    group: str = "synthetic"
    identity_prefix: str = "CTM"
    pose_jitter_deg: float = 0.0
    light_jitter: float = 0.0
    detail_rms_mm: float = 0.0
    detail_band: tuple[int, int] = (16, 256)
    wound_params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_identities < 1 or self.wounds_per_identity < 1:
            raise ValueError(
                f"n_identities={self.n_identities}, wounds_per_identity={self.wounds_per_identity}: both must be >= 1"
            )
        unknown = [t for t in self.wound_types if t not in WOUND_TYPES + (NO_WOUND,)]
        if not self.wound_types or unknown:
            raise ValueError(
                f"wound_types {list(self.wound_types)}: expected a non-empty subset of {WOUND_TYPES + (NO_WOUND,)}"
            )
        if not self.lights or any(len(d) != 3 for d in self.lights):
            raise ValueError(f"lights {self.lights}: expected a non-empty list of [x, y, z] directions")
        if self.code_scale <= 0:
            raise ValueError(f"code_scale={self.code_scale}: expected > 0")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", self.identity_prefix):
            raise ValueError(
                f"identity_prefix={self.identity_prefix!r}: expected letters and digits starting with a letter"
            )
        if not 0.0 <= self.pose_jitter_deg < 90.0:
            raise ValueError(f"pose_jitter_deg={self.pose_jitter_deg}: expected degrees in [0, 90)")
        if self.light_jitter < 0.0:
            raise ValueError(f"light_jitter={self.light_jitter}: expected >= 0")
        if self.detail_rms_mm < 0.0:
            raise ValueError(f"detail_rms_mm={self.detail_rms_mm}: expected >= 0 mm")
        if len(self.detail_band) != 2 or not 0 <= self.detail_band[0] < self.detail_band[1]:
            raise ValueError(f"detail_band={list(self.detail_band)}: expected [low, high] eigenfunction indices, 0 <= low < high")

    def to_dict(self) -> dict:
        return {
            "n_identities": self.n_identities,
            "wounds_per_identity": self.wounds_per_identity,
            "wound_types": list(self.wound_types),
            "resolution": self.resolution,
            "fov_deg": self.fov_deg,
            "frame_margin": self.frame_margin,
            "seed": self.seed,
            "code_scale": self.code_scale,
            "group": self.group,
            **{
                f.name: list(getattr(self, f.name)) if f.name == "detail_band" else getattr(self, f.name)
                for f in fields(self)
                if f.name in LATER_SETTINGS and getattr(self, f.name) != f.default
            },
            "wound_params": {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in self.wound_params.items()},
        }


# --- naming and layout ------------------------------------------------------------------------------
def identity_name(settings: GeneratorSettings, i: int) -> str:
    """``<identity_prefix>%05d`` of ``i + 1``."""
    return f"{settings.identity_prefix}{i + 1:05d}"


def sample_name(settings: GeneratorSettings, i: int, k: int) -> str:
    return f"{identity_name(settings, i)}_{k}"


def wound_type_of(settings: GeneratorSettings, i: int, k: int) -> str:
    """Wound types cycle over samples: ``wound_types[(i K + k) mod T]``."""
    return settings.wound_types[(i * settings.wounds_per_identity + k) % len(settings.wound_types)]


def files_of(settings: GeneratorSettings, i: int, k: int) -> dict:
    """Paths of sample ``(i, k)``'s files, relative to the dataset root (:func:`faceregen.data_layout.sample_paths`)."""
    return sample_paths(settings.group, sample_name(settings, i, k), len(settings.lights))


def manifest_entry(settings: GeneratorSettings, i: int, k: int) -> dict:
    return {
        "sample": sample_name(settings, i, k),
        "identity": identity_name(settings, i),
        "group": settings.group,
        "variant": k,
        "wound_type": wound_type_of(settings, i, k),
        **files_of(settings, i, k),
    }


# --- deterministic file bytes ------------------------------------------------------------------------
def png_bytes(image: np.ndarray) -> bytes:
    """PNG of an RGB uint8 image with fixed encoder options (no metadata)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# --- one identity (run in a worker) -------------------------------------------------------------------
def landmark_names(model: LinearFaceModel) -> tuple[str, ...]:
    """The five alignment points first, then the model's other landmarks in its order."""
    return FIVE_POINT_NAMES + tuple(n for n in model.landmarks.names if n not in FIVE_POINT_NAMES)


def dataset_camera(model: LinearFaceModel, settings: GeneratorSettings) -> Camera:
    """One camera for the whole dataset: framing the front regions of the mean head."""
    from faceregen.rendering import Camera

    front = np.unique(np.concatenate([model.regions[r] for r in FRAMED_REGIONS]))
    if len(front) == 0:
        raise ValueError(f"face model {model.name!r}: regions {FRAMED_REGIONS} are all empty; cannot frame the face")
    return Camera.framing(model.mean_mm[front], settings.resolution, settings.fov_deg, settings.frame_margin)


_worker: dict = {}


def _init_worker(model: LinearFaceModel, settings: GeneratorSettings, root: str, detail: SurfaceDetail | None) -> None:
    """Per-process state: the face model, settings, camera, surface detail (and, lazily, one VTK window)."""
    _worker.update(
        model=model, settings=settings, root=Path(root), camera=dataset_camera(model, settings), detail=detail
    )


def identity_code(seed: int, i: int, n_components: int, code_scale: float = 1.0) -> np.ndarray:
    """Identity ``i``'s shape code ``z ~ N(0, I) * code_scale`` (float32), drawn from the generator ``(seed, i)``."""
    rng = np.random.default_rng([seed, i])
    return (rng.standard_normal(n_components) * code_scale).astype(np.float32)


def complete_head_mm(
    model: LinearFaceModel, settings: GeneratorSettings, i: int, detail: SurfaceDetail | None
) -> tuple[np.ndarray, np.ndarray]:
    """Identity ``i``'s code ``z`` (K,) and complete head (V, 3): ``G(z)``, plus its own surface detail when
    ``detail`` is given (:mod:`faceregen.synthetic.surface_detail`, stream ``(seed, i, DETAIL_STREAM)``)."""
    code = identity_code(settings.seed, i, model.n_components, settings.code_scale)
    complete = model.vertices_mm(code)
    if detail is not None:
        complete = detail.apply(complete, model.faces, np.random.default_rng([settings.seed, i, DETAIL_STREAM]))
    return code, complete


def head_centre_mm(vertices_mm: np.ndarray) -> np.ndarray:
    """The centre (3,) a head is posed about: its vertex centroid (float64)."""
    return np.asarray(vertices_mm).mean(axis=0, dtype=np.float64)


def head_rotation(pose_deg: np.ndarray) -> np.ndarray:
    """``R = R_z(roll) R_x(pitch) R_y(yaw)`` (3, 3) of ``pose_deg = (yaw, pitch, roll)``: yaw about +y (up),
    pitch about +x (toward the subject's left), roll about +z (out of the face), right-handed."""
    yaw, pitch, roll = np.radians(np.asarray(pose_deg, dtype=np.float64))
    c, s = np.cos([yaw, pitch, roll]), np.sin([yaw, pitch, roll])
    r_y = np.array([[c[0], 0.0, s[0]], [0.0, 1.0, 0.0], [-s[0], 0.0, c[0]]])
    r_x = np.array([[1.0, 0.0, 0.0], [0.0, c[1], -s[1]], [0.0, s[1], c[1]]])
    r_z = np.array([[c[2], -s[2], 0.0], [s[2], c[2], 0.0], [0.0, 0.0, 1.0]])
    return r_z @ r_x @ r_y


def posed_head(vertices_mm: np.ndarray, centre_mm: np.ndarray, pose_deg: np.ndarray) -> np.ndarray:
    """The head rotated about ``centre_mm``: ``v' = R (v - c) + c`` (float32), ``R`` of :func:`head_rotation`."""
    rotation = head_rotation(pose_deg)
    return ((np.asarray(vertices_mm, dtype=np.float64) - centre_mm) @ rotation.T + centre_mm).astype(np.float32)


def jittered_lights(lights: np.ndarray, light_jitter: float, rng: np.random.Generator) -> np.ndarray:
    """Unit light directions (L, 3): ``(d + e) / |d + e|``, ``d`` the unit direction, ``e ~ N(0, light_jitter^2 I_3)``,
    the z of ``d + e`` mirrored to ``>= 0`` so every light stays on the camera's side."""
    lights = np.asarray(lights, dtype=np.float64)
    moved = lights / np.linalg.norm(lights, axis=1, keepdims=True) + rng.normal(0.0, light_jitter, lights.shape)
    moved[:, 2] = np.abs(moved[:, 2])
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def _generate_identity(i: int) -> int:
    """Write every unfinished sample of identity ``i``; returns how many were written."""
    from faceregen.rendering import render_grey

    model, settings, root, camera = (_worker[k] for k in ("model", "settings", "root", "camera"))
    code, complete = complete_head_mm(model, settings, i, _worker["detail"])
    names = landmark_names(model)
    written = 0
    for k in range(settings.wounds_per_identity):
        paths = files_of(settings, i, k)
        if (root / paths["landmarks"]).exists():
            continue
        kind = wound_type_of(settings, i, k)
        rng = np.random.default_rng([settings.seed, i, k + 1])
        wound = make_wound(complete, model.faces, model, kind, rng, **settings.wound_params)
        write_mesh(root / paths["label"], complete, model.faces)
        write_mesh(root / paths["imperfect"], wound.vertices_mm, model.faces)
        atomic_write_bytes(
            root / paths["wound"],
            wound_bytes(wound.mask, wound.depth_mm, kind, code),
        )
        shown, lights, jitter = wound.vertices_mm, np.asarray(settings.lights), {}
        if settings.pose_jitter_deg > 0:
            jitter["pose_deg"] = rng.uniform(-settings.pose_jitter_deg, settings.pose_jitter_deg, 3).astype(np.float32)
            shown = posed_head(shown, head_centre_mm(complete), jitter["pose_deg"])
        if settings.light_jitter > 0:
            jitter["light_dirs"] = lights = jittered_lights(lights, settings.light_jitter, rng).astype(np.float32)
        images = render_grey(shown, model.faces, camera, lights)
        for image, path in zip(images, paths["images"]):
            atomic_write_bytes(root / path, png_bytes(image))
        points_px = camera.project(model.landmarks.positions(shown, names)).astype(np.float32)
        atomic_write_bytes(
            root / paths["landmarks"], landmarks_bytes(np.repeat(points_px[None], len(images), axis=0), names, **jitter)
        )
        written += 1
    return written


# --- contact sheet ------------------------------------------------------------------------------------
def write_contact_sheet(root: Path, manifest: dict, n_samples: int = 8) -> Path:
    """``contact_sheet.png``: rows = the first samples, columns = their renders + light 0 with the wound in red
    (on the posed head where the sample has a ``pose_deg``)."""
    from faceregen.rendering import Camera

    camera = Camera.from_dict(manifest["camera"])
    rows = []
    for entry in manifest["samples"][:n_samples]:
        renders = [np.asarray(Image.open(root / p).convert("RGB")) for p in entry["images"]]
        overlay = Image.fromarray(renders[0].copy())
        vertices, _ = read_mesh(root / entry["imperfect"])
        mask = read_wound(root / entry["wound"], len(vertices)).mask
        landmarks = read_landmarks(root / entry["landmarks"])
        if "pose_deg" in landmarks:
            label, _ = read_mesh(root / entry["label"])
            vertices = posed_head(vertices, head_centre_mm(label), landmarks["pose_deg"])
        draw = ImageDraw.Draw(overlay)
        radius = max(1.0, camera.resolution / 128)
        for u, v in camera.project(vertices[mask]):
            draw.ellipse((u - radius, v - radius, u + radius, v + radius), fill=(255, 40, 40))
        draw.text((3, 2), f"{entry['sample']} {entry['wound_type']}", fill=(255, 255, 0))
        rows.append(np.concatenate(renders + [np.asarray(overlay)], axis=1))
    path = root / "contact_sheet.png"
    atomic_write_bytes(path, png_bytes(np.concatenate(rows, axis=0)))
    return path


# --- the dataset --------------------------------------------------------------------------------------
def _remove_stale_temporaries(root: Path) -> None:
    """Delete temporary files (``.<stem>.<random>.tmp<suffix>``) that a killed run left behind."""
    for sub in ("data2D", "label", "imperfect", "wound", "."):
        pattern = ".*.tmp*" if sub == "." else "**/.*.tmp*"
        for tmp in (root / sub).glob(pattern):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)


def _check_resume(root: Path, params: dict) -> bool:
    """True when ``root`` already holds the finished dataset for ``params``; error if it holds another."""
    for name in (MANIFEST_NAME, PENDING_PARAMS_NAME):
        path = root / name
        if path.exists():
            found = json.loads(path.read_text())
            differ = sorted(key for key in params if found.get(key) != params[key])
            found_generator, generator = found.get("generator", {}), params["generator"]
            keys = set(generator) | set(found_generator)  # a later setting is absent at its default
            differ += sorted(f"generator.{k}" for k in keys if found_generator.get(k) != generator.get(k))
            if differ:
                raise ValueError(
                    f"{path}: {root} holds a dataset generated with other parameters (differing: {', '.join(differ)}); "
                    "choose another root or delete it"
                )
            return name == MANIFEST_NAME
    return False


@one_builder_per("root")  # parallel jobs: one generates, the others wait and find it finished
def generate_dataset(
    root: str | Path,
    face_model: LinearFaceModel,
    n_identities: int = 300,
    wounds_per_identity: int = 3,
    wound_types: Sequence[str] = WOUND_TYPES,
    lights: Sequence[Sequence[float]] | None = None,
    resolution: int = 256,
    seed: int = 0,
    workers: int = 2,
    code_scale: float = 1.0,
    fov_deg: float = 25.0,
    frame_margin: float = 1.4,
    group: str = "synthetic",
    contact_sheet_samples: int = 8,
    identity_prefix: str = "CTM",
    pose_jitter_deg: float = 0.0,
    light_jitter: float = 0.0,
    detail_rms_mm: float = 0.0,
    detail_band: Sequence[int] = (16, 256),
    **wound_params,
) -> Path:
    """Generate (or finish) the synthetic dataset under ``root``; returns the manifest's path.

    ``lights``: directions toward the lights, default :data:`faceregen.rendering.DEFAULT_LIGHT_DIRS`.
    ``contact_sheet_samples``: rows of ``contact_sheet.png`` (0: none).
    ``wound_types`` may be ``["none"]`` (complete heads); ``identity_prefix``, ``pose_jitter_deg`` (degrees) and
    ``light_jitter`` (standard deviation added to unit light directions): see the module docstring.
    ``wound_params``: keyword arguments of :func:`faceregen.synthetic.wounds.make_wound`
    (``depth_range_mm``, ``scar_radius_range_mm``, ...). ``workers`` processes (spawned, each with its own
    VTK window) share the identities; ``workers=1`` runs in this process.
    """
    from faceregen.rendering import DEFAULT_LIGHT_DIRS

    if workers < 1:
        raise ValueError(f"workers={workers}: expected >= 1")
    settings = GeneratorSettings(
        n_identities=n_identities,
        wounds_per_identity=wounds_per_identity,
        wound_types=tuple(wound_types),
        lights=tuple(tuple(float(c) for c in d) for d in (DEFAULT_LIGHT_DIRS if lights is None else lights)),
        resolution=resolution,
        fov_deg=fov_deg,
        frame_margin=frame_margin,
        seed=seed,
        code_scale=code_scale,
        group=group,
        identity_prefix=identity_prefix,
        pose_jitter_deg=float(pose_jitter_deg),
        light_jitter=float(light_jitter),
        detail_rms_mm=float(detail_rms_mm),
        detail_band=tuple(int(b) for b in detail_band),
        wound_params=dict(wound_params),
    )
    root = Path(root)
    camera = dataset_camera(face_model, settings)
    params = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "face_model": {
            "name": face_model.name,
            "n_vertices": face_model.n_vertices,
            "n_components": face_model.n_components,
        },
        "generator": settings.to_dict(),
        "lights": [list(d) for d in settings.lights],
        "camera": camera.to_dict(),
    }
    manifest_path = root / MANIFEST_NAME
    if _check_resume(root, params):
        return manifest_path
    detail = None
    if settings.detail_rms_mm > 0:
        detail = SurfaceDetail.for_face_model(face_model, settings.detail_rms_mm, settings.detail_band)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / PENDING_PARAMS_NAME, json.dumps(params, indent=1))
    _remove_stale_temporaries(root)

    done = {
        (i, k)
        for i in range(n_identities)
        for k in range(wounds_per_identity)
        if (root / files_of(settings, i, k)["landmarks"]).exists()
    }
    pending = [i for i in range(n_identities) if any((i, k) not in done for k in range(wounds_per_identity))]
    with tqdm(total=n_identities * wounds_per_identity, initial=len(done), desc="samples", unit="sample") as progress:
        if workers == 1:
            _init_worker(face_model, settings, str(root), detail)
            for i in pending:
                progress.update(_generate_identity(i))
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(face_model, settings, str(root), detail)) as pool:
                for written in pool.imap_unordered(_generate_identity, pending):
                    progress.update(written)

    manifest = {
        **params,
        "samples": sorted(
            (manifest_entry(settings, i, k) for i in range(n_identities) for k in range(wounds_per_identity)),
            key=lambda entry: entry["sample"],
        ),
    }
    if contact_sheet_samples > 0:
        write_contact_sheet(root, manifest, contact_sheet_samples)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    (root / PENDING_PARAMS_NAME).unlink(missing_ok=True)
    return manifest_path
