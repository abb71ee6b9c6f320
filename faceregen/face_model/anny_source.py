"""The embedded face model: a PCA of adult heads sampled from Anny (``pip install anny``, Apache-2.0).

``anny.Anny(rig='makehuman-head', topology='head', local_changes='all')`` is a parametric head (4538
vertices, 9014 triangles; metres, z up, the face toward -y). We sample adult heads over Anny's
phenotypes and every head-related local change, bring them into the face-model frame, centre them,
and take a PCA, which gives ``G(z) = B z + A`` with the same form as FLAME's shape space:

    A = mean of the training heads (V, 3), mm
    B[:, :, k] = sqrt(lambda_k) * v_k      (v_k the k-th principal direction, lambda_k its variance)

so ``z ~ N(0, I)`` gives plausible heads. Held-out heads (``heldout_fraction``) measure how well the
basis reconstructs unseen heads.

Frame (the project's, FLAME's): millimetres, x toward the subject's LEFT, y UP, z out of the face.
Anny's (x, y, z) in metres maps to ``1000 * (x, z, -y)``: a proper rotation (det +1), so triangles keep
their outward, counter-clockwise orientation. Centring: every head is translated so that the midpoint
of its two ear-region centroids is at the origin (roughly the centre of the head; a fixed vertex set,
so the centring is linear and the PCA stays exact). Metric size is kept.

Sampling (all ranges recorded in ``info["sampling"]``): gender U[0, 1]; age uniform in
:data:`ADULT_AGE_YEARS` morphological years, mapped to Anny's age with Anny's own calibration
(``anny/data/shape_calibration``); muscle, weight, height, proportions U over :data:`PHENOTYPE_RANGES`;
every local change whose label starts with one of :data:`HEAD_LOCAL_CHANGE_PREFIXES` from a normal of
std :data:`LOCAL_CHANGE_STD` truncated to [-1, 1]; the other (body) local changes stay 0.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from faceregen.face_model.anthropometry import compare_to_survey, format_comparison
from faceregen.face_model.linear import LinearFaceModel
from faceregen.face_model.regions_anny import anny_ear_regions, anny_landmarks, anny_regions, mesh_report
from faceregen.locking import build_lock

if TYPE_CHECKING:
    import anny

#: Bump when the build changes (sampling, frame, centring, regions, landmarks): it is in the cache name.
ANNY_PCA_VERSION = 2
ANNY_HEAD = {"rig": "makehuman-head", "topology": "head", "local_changes": "all"}
#: Anny's (x, y, z) metres -> face-model (x, y, z) millimetres: x stays, y = Anny z, z = -Anny y.
ANNY_TO_FACE_FRAME_MM = 1000.0 * np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
ADULT_AGE_YEARS = (18.0, 80.0)
PHENOTYPE_RANGES = {
    "gender": (0.0, 1.0),
    "muscle": (0.1, 0.9),
    "weight": (0.1, 0.9),
    "height": (0.4, 0.6),
    "proportions": (0.1, 0.9),
}
HEAD_LOCAL_CHANGE_PREFIXES = (
    "head-", "forehead-", "eyebrows-", "l-eye-", "r-eye-", "nose-", "mouth-", "chin-",
    "l-cheek-", "r-cheek-", "l-ear-", "r-ear-", "neck-", "measure-neck-",
)  # fmt: skip
LOCAL_CHANGE_STD = 0.2
#: Per-axis scale (x, y, z) of every sampled head (after centring), with the height range and
#: LOCAL_CHANGE_STD above calibrated so that the heads' head breadth, head length, bizygomatic breadth and
#: face height agree with ANSUR II (:mod:`faceregen.face_model.anthropometry`, an even mix of sexes) in mean
#: and SD: Anny's heads are ~6% narrow, ~7% long, ~4% short in the face, and with heights over [0.1, 0.9]
#: and local changes of std 0.4 their sizes spread 2.5x the survey's (``bench/bench_anthropometry.py``).
ANSUR_AXIS_SCALE = (1.059, 1.042, 0.928)
SAMPLE_BATCH = 256
#: Component counts at which ``info`` records variance explained and held-out error (those <= K).
REPORTED_COMPONENTS = (10, 25, 50, 100, 200, 300)


@functools.lru_cache(maxsize=1)
def load_anny_head() -> anny.Anny:
    """Anny's head model on the CPU (the first ``import anny`` is slow: warp initialises)."""
    import anny

    return anny.Anny(**ANNY_HEAD).eval()


def head_local_change_labels(head: anny.Anny) -> list[str]:
    """Anny's local changes that shape the head (labels starting with HEAD_LOCAL_CHANGE_PREFIXES)."""
    return [label for label in head.local_change_labels if label.startswith(HEAD_LOCAL_CHANGE_PREFIXES)]


def adult_anny_age(age_years: np.ndarray) -> np.ndarray:
    """Anny's age parameter for morphological ages in years (Anny's WHO-calibrated piecewise-linear map)."""
    from anny.paths import get_anny_root_dir
    from anny.shape_distribution import MorphologicalAgeMapping

    state = torch.load(
        get_anny_root_dir() / "data" / "shape_calibration" / "boys.pth", weights_only=True, map_location="cpu"
    )["morphological_age_mapping"]
    mapping = MorphologicalAgeMapping()
    mapping.load_state_dict(state)
    return mapping.morphological_to_anny_age(torch.as_tensor(age_years, dtype=torch.float64)).numpy()


def sample_head_parameters(head: anny.Anny, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Phenotypes (N, len(head.phenotype_labels)) and local changes (N, len(head.local_change_labels))."""
    from scipy.stats import truncnorm

    columns = {name: rng.uniform(low, high, n_samples) for name, (low, high) in PHENOTYPE_RANGES.items()}
    columns["age"] = adult_anny_age(rng.uniform(*ADULT_AGE_YEARS, n_samples))
    missing = set(head.phenotype_labels) - set(columns)
    if missing:
        raise ValueError(f"anny head: no sampling range for phenotypes {sorted(missing)}")
    phenotypes = np.stack([columns[name] for name in head.phenotype_labels], axis=1)

    labels = head_local_change_labels(head)
    bound = 1.0 / LOCAL_CHANGE_STD
    values = truncnorm.rvs(-bound, bound, scale=LOCAL_CHANGE_STD, size=(n_samples, len(labels)), random_state=rng)
    local_changes = np.zeros((n_samples, len(head.local_change_labels)))
    local_changes[:, [head.local_change_labels.index(label) for label in labels]] = values
    return phenotypes, local_changes


def anny_to_face_frame_mm(vertices_m: np.ndarray) -> np.ndarray:
    """Anny vertices (..., V, 3) in metres (z up, face toward -y) -> face-model frame (..., V, 3) in mm."""
    return vertices_m @ ANNY_TO_FACE_FRAME_MM.T


def centre_heads(vertices_mm: np.ndarray, ears: dict[str, np.ndarray]) -> np.ndarray:
    """Translate heads (..., V, 3) so the midpoint of the left and right ear-region centroids is at 0."""
    centre = 0.5 * (vertices_mm[..., ears["left_ear"], :].mean(-2) + vertices_mm[..., ears["right_ear"], :].mean(-2))
    return vertices_mm - centre[..., None, :]


def anny_rest_vertices_m(head: anny.Anny, phenotypes: np.ndarray, local_changes: np.ndarray) -> np.ndarray:
    """Rest (unposed) vertices (B, V, 3), metres, Anny frame: template + blendshapes . coefficients.

    The same as ``head(...)["rest_vertices"]`` without the skeleton work of a full forward pass.
    """
    as_tensor = functools.partial(torch.as_tensor, dtype=head.dtype, device=head.device)
    with torch.no_grad():
        coefficients = head.get_phenotype_blendshape_coefficients(
            **{name: as_tensor(phenotypes[:, i]) for i, name in enumerate(head.phenotype_labels)},
            local_changes={name: as_tensor(local_changes[:, i]) for i, name in enumerate(head.local_change_labels)},
        )
        return head.get_rest_vertices(coefficients).cpu().double().numpy()


def sample_anny_heads_mm(n_samples: int, seed: int, progress: bool = True) -> np.ndarray:
    """``n_samples`` adult Anny heads (N, V, 3) float32, face-model frame, mm, centred, scaled by
    :data:`ANSUR_AXIS_SCALE`; deterministic in ``seed``."""
    head = load_anny_head()
    ears = anny_ear_regions(head)
    phenotypes, local_changes = sample_head_parameters(head, n_samples, np.random.default_rng(seed))
    heads = np.empty((n_samples, head.template_vertices.shape[0], 3), dtype=np.float32)
    starts = range(0, n_samples, SAMPLE_BATCH)
    for start in tqdm(starts, desc="sampling Anny heads", unit="batch", disable=not progress):
        rows = slice(start, start + SAMPLE_BATCH)
        vertices_m = anny_rest_vertices_m(head, phenotypes[rows], local_changes[rows])
        heads[rows] = centre_heads(anny_to_face_frame_mm(vertices_m), ears) * np.asarray(ANSUR_AXIS_SCALE)
    return heads


def principal_components(train: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """PCA of rows ``train`` (N, D): mean (D,), directions (K, D) orthonormal, their variances (K,), total variance.

    Through the Gram matrix (N << D): with ``X = train - mean = U S V^T``, ``X X^T = U S^2 U^T`` and
    ``V = X^T U S^-1``; variance ``lambda_k = s_k^2 / (N - 1)``; total variance ``trace(X X^T) / (N - 1)``.
    Only the top K eigenpairs are computed (LAPACK ``dsyrk`` + ``dsyevr``). Each direction's sign makes its
    largest-magnitude entry positive, so the result is deterministic.
    """
    import scipy.linalg

    n = train.shape[0]
    if not 1 <= n_components <= n - 1:
        raise ValueError(f"n_components={n_components}: need 1 <= n_components <= {n - 1} (training heads - 1)")
    mean = train.mean(axis=0, dtype=np.float64)
    centred = train.astype(np.float64) - mean
    gram = scipy.linalg.blas.dsyrk(1.0, centred)  # upper triangle of X X^T
    eigenvalues, eigenvectors = scipy.linalg.eigh(
        gram, lower=False, subset_by_index=[n - n_components, n - 1], driver="evr"
    )
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    if eigenvalues[-1] <= 1e-12 * eigenvalues[0]:
        raise ValueError(
            f"n_components={n_components} exceeds the rank of the sampled heads "
            f"(component {n_components} has variance {eigenvalues[-1] / (n - 1):.3g})"
        )
    directions = (eigenvectors.T @ centred) / np.sqrt(eigenvalues)[:, None]
    directions *= np.sign(directions[np.arange(n_components), np.abs(directions).argmax(axis=1)])[:, None]
    return mean, directions, eigenvalues / (n - 1), float(np.trace(gram)) / (n - 1)


def heldout_error_mm(heldout: np.ndarray, mean: np.ndarray, directions: np.ndarray, counts: list[int]) -> dict[int, float]:
    """Mean per-vertex Euclidean distance (mm) of held-out heads (N, D) to their projection on ``k`` directions."""
    centred = heldout.astype(np.float64) - mean
    codes = centred @ directions.T
    errors = {}
    for k in counts:
        residual = centred - codes[:, :k] @ directions[:k]
        errors[k] = float(np.linalg.norm(residual.reshape(len(heldout), -1, 3), axis=-1).mean())
    return errors


def build_anny_face_model(
    n_components: int = 300, n_samples: int = 4000, seed: int = 0, heldout_fraction: float = 0.1, progress: bool = True
) -> LinearFaceModel:
    """Sample ``n_samples`` adult heads, hold out ``heldout_fraction`` of them, PCA the rest (uncached)."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction={heldout_fraction}: expected a fraction in (0, 1)")
    n_heldout = max(1, int(round(heldout_fraction * n_samples)))
    n_train = n_samples - n_heldout
    if n_train < 2:
        raise ValueError(f"n_samples={n_samples}: too few heads to train a PCA with heldout_fraction={heldout_fraction}")

    started = time.perf_counter()
    heads = sample_anny_heads_mm(n_samples, seed, progress=progress)
    sampled = time.perf_counter()
    flat = heads.reshape(n_samples, -1)
    mean, directions, variances, total_variance = principal_components(flat[:n_train], n_components)
    counts = sorted({k for k in REPORTED_COMPONENTS if k <= n_components} | {n_components})
    errors = heldout_error_mm(flat[n_train:], mean, directions, counts)
    explained = np.cumsum(variances) / total_variance
    finished = time.perf_counter()

    head = load_anny_head()
    faces = head.faces.detach().cpu().numpy().astype(np.int64)
    n_vertices = heads.shape[1]
    mean_mm = mean.reshape(n_vertices, 3)
    basis_mm = (directions.T * np.sqrt(variances)).reshape(n_vertices, 3, n_components)
    regions = anny_regions(head, mean_mm)
    info = {
        "source": "anny",
        "anny_version": importlib.metadata.version("anny"),
        "anny_head": ANNY_HEAD,
        "version": ANNY_PCA_VERSION,
        "n_samples": n_samples,
        "n_train": n_train,
        "n_heldout": n_heldout,
        "seed": seed,
        "heldout_fraction": heldout_fraction,
        "variance_explained": float(explained[n_components - 1]),
        "variance_explained_by_components": {str(k): float(explained[k - 1]) for k in counts},
        "heldout_error_mm": errors[n_components],
        "heldout_error_mm_by_components": {str(k): v for k, v in errors.items()},
        "first_component_rms_mm": float(np.sqrt(variances[0] / n_vertices)),
        "frame": "mm; x to the subject's left, y up, z out of the face; Anny (x, y, z) m -> 1000 (x, z, -y)",
        "centring": "origin at the midpoint of the left_ear and right_ear region centroids of each head",
        "sampling": {
            "age_years": list(ADULT_AGE_YEARS),
            "phenotype_ranges": {k: list(v) for k, v in PHENOTYPE_RANGES.items()},
            "local_change_std": LOCAL_CHANGE_STD,
            "local_change_truncation": [-1.0, 1.0],
            "local_changes": head_local_change_labels(head),
        },
        "mesh": mesh_report(mean_mm, faces),
        "region_sizes": {name: int(len(idx)) for name, idx in regions.items()},
        "timing_s": {"sampling": sampled - started, "pca": finished - sampled},
    }
    model = LinearFaceModel(
        name=f"anny-pca-v{ANNY_PCA_VERSION}",
        mean_mm=mean_mm.astype(np.float32),
        basis_mm=basis_mm.astype(np.float32),
        faces=faces,
        landmarks=anny_landmarks(head, regions, mean_mm),
        regions=regions,
        info=info,
    )
    info["anthropometry"] = compare_to_survey(model, heads[:n_train])
    return model


def anny_cache_path(
    n_components: int = 300, n_samples: int = 4000, seed: int = 0, cache_dir: str | Path = "cache/face_model",
    heldout_fraction: float = 0.1,
) -> Path:  # fmt: skip
    """``<cache_dir>/anny-pca-v<VERSION>-<hash>.npz``; the hash covers every argument and the version."""
    key = json.dumps(
        {"version": ANNY_PCA_VERSION, "n_components": int(n_components), "n_samples": int(n_samples),
         "seed": int(seed), "heldout_fraction": float(heldout_fraction)},
        sort_keys=True,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"anny-pca-v{ANNY_PCA_VERSION}-{digest}.npz"


def anny_face_model(
    n_components: int = 300, n_samples: int = 4000, seed: int = 0, cache_dir: str | Path = "cache/face_model",
    heldout_fraction: float = 0.1,
) -> LinearFaceModel:  # fmt: skip
    """The embedded face model: loaded from ``anny_cache_path(...)`` or built (about a minute) and saved there."""
    path = anny_cache_path(n_components, n_samples, seed, cache_dir, heldout_fraction)
    with build_lock(path):  # parallel jobs: one builds, the others wait and load it
        if path.exists():
            return LinearFaceModel.load(path)
        model = build_anny_face_model(n_components, n_samples, seed, heldout_fraction)
        print(f"face model {model.name}: the training heads against ANSUR II (adults, even mix of sexes)")
        print(format_comparison(model.info["anthropometry"]))
        model.save(path)
    return model
