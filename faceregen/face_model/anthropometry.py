"""Head and face dimensions of generated heads, against an adult anthropometric survey (ANSUR II).

Four caliper dimensions, measured on heads (N, V, 3) in the face-model frame (mm; x toward the subject's
left, y up, z out of the face) from the face model's regions and five landmarks:

* ``head_breadth`` (euryon-euryon): the largest x-extent of the scalp (the skull's sides above the ears).
* ``head_length`` (glabella-opisthocranion): from the most forward forehead point within 15 mm of the
  midline to the most backward scalp point.
* ``bizygomatic_breadth`` (zygion-zygion): the largest x-extent of the skin (ears excluded) in front of the
  ear centroids and between the nose tip's and the eyes' heights (the zygomatic arches).
* ``face_height`` (menton-sellion): from the sellion, the deepest (smallest z) skin point within 5 mm of the
  midline between 12 mm below and 12 mm above the eyes' height, down to the menton, the lowest point of
  the front of the chin (:func:`~faceregen.face_model.decoder.face_parts`) within 15 mm of the midline.

They are the mesh counterparts of the survey's caliper landmarks, not a palpation: the skin of a mesh has no
bone under it, and a face model's "face" region ends where its authors drew it.

:data:`ANSUR_II_MM` holds the survey's figures (mean, SD in mm) for men and women; :func:`survey_mixture`
mixes them in a given share of women, as the generated heads mix sexes.
"""

from __future__ import annotations

import numpy as np

from faceregen.face_model.decoder import face_parts
from faceregen.face_model.linear import LinearFaceModel

#: ANSUR II (2012 U.S. Army anthropometric survey, Gordon et al. 2014; public working databases, 4082 men
#: and 1986 women): (mean, SD) in mm per sex. Head length and breadth as computed from the public files;
#: bizygomatic breadth and menton-sellion length from the survey's summary statistics.
ANSUR_II_MM = {
    "male": {
        "head_breadth": (154.3, 5.5),
        "head_length": (199.5, 7.0),
        "bizygomatic_breadth": (142.6, 5.6),
        "face_height": (124.4, 6.4),
    },
    "female": {
        "head_breadth": (147.8, 5.2),
        "head_length": (189.8, 7.4),
        "bizygomatic_breadth": (133.8, 5.1),
        "face_height": (114.9, 5.9),
    },
}
DIMENSIONS = ("head_breadth", "head_length", "bizygomatic_breadth", "face_height")


def survey_mixture(share_female: float = 0.5) -> dict[str, tuple[float, float]]:
    """Mean and SD of each dimension for a population of ``share_female`` women (a two-normal mixture)."""
    if not 0.0 <= share_female <= 1.0:
        raise ValueError(f"share_female={share_female}: expected a fraction in [0, 1]")
    weights = {"male": 1.0 - share_female, "female": share_female}
    mixture = {}
    for name in DIMENSIONS:
        mean = sum(w * ANSUR_II_MM[sex][name][0] for sex, w in weights.items())
        second = sum(w * (ANSUR_II_MM[sex][name][1] ** 2 + ANSUR_II_MM[sex][name][0] ** 2) for sex, w in weights.items())
        mixture[name] = (mean, float(np.sqrt(second - mean**2)))
    return mixture


def head_dimensions_mm(model: LinearFaceModel, heads_mm: np.ndarray) -> dict[str, np.ndarray]:
    """The four :data:`DIMENSIONS` (each (N,), mm) of heads (N, V, 3) in ``model``'s topology and frame."""
    heads = np.asarray(heads_mm, dtype=np.float64)
    if heads.ndim == 2:
        heads = heads[None]
    if heads.shape[1:] != (model.n_vertices, 3):
        raise ValueError(f"heads {heads.shape}: expected (N, {model.n_vertices}, 3) for face model {model.name!r}")
    regions = model.regions
    x, y, z = heads[..., 0], heads[..., 1], heads[..., 2]
    ears = np.concatenate([regions["left_ear"], regions["right_ear"]])
    scalp, face, forehead = regions["scalp"], regions["face"], regions["forehead"]
    skin = np.setdiff1d(np.concatenate([scalp, face, regions["nose"], regions["lips"], regions["eye_region"]]), ears)
    points = {name: model.landmarks.positions(heads, (name,))[:, 0] for name in ("left_eye", "right_eye", "nose_tip")}
    eye_y = 0.5 * (points["left_eye"][:, 1] + points["right_eye"][:, 1])
    nose_y = points["nose_tip"][:, 1]
    ear_z = heads[:, ears if len(ears) else slice(None), 2].mean(axis=1)  # no ear regions: the head's centroid

    def masked(values: np.ndarray, mask: np.ndarray, reduce) -> np.ndarray:
        return reduce(np.where(mask, values, np.nan), axis=1)

    breadth = x[:, scalp].max(axis=1) - x[:, scalp].min(axis=1)
    glabella = masked(z[:, forehead], np.abs(x[:, forehead]) < 15.0, np.nanmax)
    length = glabella - z[:, scalp].min(axis=1)
    arch = (z[:, skin] > ear_z[:, None]) & (y[:, skin] > nose_y[:, None]) & (y[:, skin] < eye_y[:, None])
    bizygomatic = masked(x[:, skin], arch, np.nanmax) - masked(x[:, skin], arch, np.nanmin)
    root = (np.abs(x[:, skin]) < 5.0) & (np.abs(y[:, skin] - eye_y[:, None]) < 12.0) & (z[:, skin] > ear_z[:, None])
    sellion = np.nanargmin(np.where(root, z[:, skin], np.nan), axis=1)
    sellion_y = y[:, skin][np.arange(len(heads)), sellion]
    chin = np.flatnonzero(face_parts(model)["chin"])
    menton_y = masked(y[:, chin], np.abs(x[:, chin]) < 15.0, np.nanmin)
    return {
        "head_breadth": breadth,
        "head_length": length,
        "bizygomatic_breadth": bizygomatic,
        "face_height": sellion_y - menton_y,
    }


def compare_to_survey(model: LinearFaceModel, heads_mm: np.ndarray, share_female: float = 0.5) -> dict[str, dict]:
    """Per dimension: the heads' mean and SD beside the survey mixture's, and their ratio of means."""
    measured = head_dimensions_mm(model, heads_mm)
    survey = survey_mixture(share_female)
    return {
        name: {
            "mean_mm": float(np.mean(measured[name])),
            "sd_mm": float(np.std(measured[name], ddof=1)) if len(measured[name]) > 1 else 0.0,
            "survey_mean_mm": survey[name][0],
            "survey_sd_mm": survey[name][1],
            "ratio_of_means": float(np.mean(measured[name]) / survey[name][0]),
        }
        for name in DIMENSIONS
    }


def format_comparison(comparison: dict[str, dict]) -> str:
    """A text table of :func:`compare_to_survey`'s result."""
    lines = [f"{'dimension':<20} {'heads mean (SD) mm':>20} {'ANSUR II mean (SD) mm':>23} {'ratio':>6}"]
    for name, row in comparison.items():
        lines.append(
            f"{name:<20} {row['mean_mm']:>12.1f} ({row['sd_mm']:4.1f}) {row['survey_mean_mm']:>15.1f} "
            f"({row['survey_sd_mm']:4.1f}) {row['ratio_of_means']:>6.3f}"
        )
    return "\n".join(lines)
