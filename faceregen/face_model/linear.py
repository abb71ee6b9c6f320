"""The linear face model ``G(z) = B z + A`` shared by every source (embedded Anny PCA, FLAME).

One object carries everything the rest of the project needs to know about a face topology:
the mean shape ``A`` (``mean_mm``), the basis ``B`` (``basis_mm``, scaled so that ``z ~ N(0, I)`` gives
plausible faces, as in FLAME's shape space), the triangles, named landmarks and named vertex regions.
It is the single source of truth for those facts; it is saved as one ``.npz`` file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceregen.io import atomic_path

#: The five points used for face alignment, in the order of ArcFace's 112x112 template
#: (image left to right: the subject's right eye appears on the image's left).
FIVE_POINT_NAMES = ("right_eye", "left_eye", "nose_tip", "right_mouth_corner", "left_mouth_corner")

#: NoW's seven landmarks, in now_evaluation's order: the outer and inner corners of the subject's right eye,
#: the inner and outer corners of the left eye, the nose bottom (subnasale), the right and left mouth
#: corners. The face-region error (:func:`faceregen.evaluation.scan_to_mesh.now_distance`) needs them.
NOW_LANDMARKS = (
    "right_eye_outer", "right_eye_inner", "left_eye_inner", "left_eye_outer", "nose_bottom",
    "right_mouth_corner", "left_mouth_corner",
)  # fmt: skip

#: Region names every source provides (possibly empty where a source has no such part).
REGION_NAMES = (
    "face",
    "left_eyeball",
    "right_eyeball",
    "left_ear",
    "right_ear",
    "nose",
    "lips",
    "forehead",
    "scalp",
    "neck",
    "eye_region",
)


@dataclass(frozen=True)
class Landmarks:
    """Named landmarks as fixed linear combinations of vertices.

    Landmark ``l`` is ``sum_k weights[l, k] * vertices[indices[l, k]]`` (barycentric points on a
    triangle when ``k == 3``, the centre of an eyelid ring for eye centres; unused slots have weight 0).
    """

    names: tuple[str, ...]
    indices: np.ndarray  # (L, K) int64
    weights: np.ndarray  # (L, K) float32, rows sum to 1

    def __post_init__(self) -> None:
        if self.indices.shape != self.weights.shape or self.indices.shape[0] != len(self.names):
            raise ValueError(
                f"landmarks: indices {self.indices.shape}, weights {self.weights.shape} and "
                f"{len(self.names)} names do not agree"
            )

    def positions(self, vertices: np.ndarray, names: tuple[str, ...] | None = None) -> np.ndarray:
        """Landmark positions ``(..., L, 3)`` for vertices ``(..., V, 3)``; ``names`` picks a subset in order."""
        rows = [self.names.index(n) for n in names] if names is not None else slice(None)
        idx, w = self.indices[rows], self.weights[rows]
        return np.einsum("...lkc,lk->...lc", vertices[..., idx, :], w)

    def subset(self, names: tuple[str, ...]) -> Landmarks:
        rows = [self.names.index(n) for n in names]
        return Landmarks(tuple(names), self.indices[rows], self.weights[rows])


@dataclass(frozen=True)
class LinearFaceModel:
    """``G(z) = B z + A``: vertices in millimetres from a shape code ``z``.

    Attributes:
        name: source and version, e.g. ``"anny-pca-v1"`` or ``"flame2020"``.
        mean_mm: ``A``, (V, 3) float32.
        basis_mm: ``B``, (V, 3, K) float32; column ``k`` is the displacement for ``z_k = 1``.
        faces: (F, 3) int64 triangles, outward-facing (counter-clockwise seen from outside).
        landmarks: named landmarks; always contains :data:`FIVE_POINT_NAMES`.
        regions: region name -> sorted vertex indices (int64); keys are :data:`REGION_NAMES`.
        info: free-form provenance (variance explained, held-out error, seed, ...), JSON-able.
    """

    name: str
    mean_mm: np.ndarray
    basis_mm: np.ndarray
    faces: np.ndarray
    landmarks: Landmarks
    regions: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = self.mean_mm.shape[0]
        if self.mean_mm.shape != (v, 3) or self.basis_mm.shape[:2] != (v, 3):
            raise ValueError(
                f"face model {self.name!r}: mean {self.mean_mm.shape} and basis {self.basis_mm.shape} "
                "must be (V, 3) and (V, 3, K)"
            )
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.max() >= v or self.faces.min() < 0:
            raise ValueError(f"face model {self.name!r}: faces must be (F, 3) indices below {v}")
        missing = set(FIVE_POINT_NAMES) - set(self.landmarks.names)
        if missing:
            raise ValueError(f"face model {self.name!r}: landmarks lack {sorted(missing)}")
        missing = set(REGION_NAMES) - set(self.regions)
        if missing:
            raise ValueError(f"face model {self.name!r}: regions lack {sorted(missing)}")

    @property
    def n_vertices(self) -> int:
        return self.mean_mm.shape[0]

    @property
    def n_components(self) -> int:
        return self.basis_mm.shape[2]

    def vertices_mm(self, z: np.ndarray) -> np.ndarray:
        """``G(z)`` for codes ``(..., K')`` with ``K' <= K`` (missing components are zero): (..., V, 3)."""
        z = np.asarray(z, dtype=np.float32)
        k = z.shape[-1]
        if k > self.n_components:
            raise ValueError(f"code has {k} components, face model {self.name!r} has {self.n_components}")
        return self.mean_mm + np.einsum("vck,...k->...vc", self.basis_mm[..., :k], z)

    def region_mask(self, name: str) -> np.ndarray:
        """Boolean (V,) mask of a named region."""
        mask = np.zeros(self.n_vertices, dtype=bool)
        mask[self.regions[name]] = True
        return mask

    # --- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as one ``.npz`` (atomically: a temporary name, then rename)."""
        import json

        arrays = {
            "name": np.array(self.name),
            "mean_mm": self.mean_mm.astype(np.float32),
            "basis_mm": self.basis_mm.astype(np.float32),
            "faces": self.faces.astype(np.int64),
            "landmark_names": np.array(self.landmarks.names),
            "landmark_indices": self.landmarks.indices.astype(np.int64),
            "landmark_weights": self.landmarks.weights.astype(np.float32),
            "info_json": np.array(json.dumps(self.info)),
        }
        for region, idx in self.regions.items():
            arrays[f"region/{region}"] = np.asarray(idx, dtype=np.int64)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LinearFaceModel:
        import json

        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a face-model .npz file ({err})") from err
        with data:
            try:
                return cls(
                    name=str(data["name"]),
                    mean_mm=data["mean_mm"],
                    basis_mm=data["basis_mm"],
                    faces=data["faces"],
                    landmarks=Landmarks(
                        tuple(str(n) for n in data["landmark_names"]),
                        data["landmark_indices"],
                        data["landmark_weights"],
                    ),
                    regions={k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("region/")},
                    info=json.loads(str(data["info_json"])),
                )
            except KeyError as err:
                raise ValueError(f"{path}: face-model file lacks the field {err}") from err
