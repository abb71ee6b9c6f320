"""Cir3DFaIRDataModule on small folders written here in the data contract's layout."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datamodules.cache
from datamodules.cache import cache_key
from datamodules.cir3dfair import Cir3DFaIRDataModule
import datamodules.preprocessing as preprocessing
from datamodules.splits import load_or_create_split, split_counts, split_identities, ssl_identities
from faceregen.alignment import align_face, get_template
from faceregen.data_layout import find_samples
from face_models import toy_face_model
from faceregen.face_model.linear import FIVE_POINT_NAMES, LinearFaceModel
from faceregen.io import atomic_path, atomic_write_bytes, atomic_write_text
from faceregen.mesh_io import read_mesh


# --- a face model and a data folder in the contract's layout --------------------------------------
def write_png(path: Path, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    atomic_write_bytes(path, buffer.getvalue())


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    lines = [f"v {x:.4f} {y:.4f} {z:.4f}" for x, y, z in vertices] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_npz(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def write_cir3dfair_folder(
    root: Path, face_model: LinearFaceModel, n_identities: int = 10, n_variants: int = 2, n_lights: int = 2,
    resolution: int = 64, seed: int = 0, manifest: bool = True,
) -> Path:
    """A folder in the synthetic Cir3D-FaIR layout: smooth random images, five landmarks per image placed by
    a random similarity of a face-like layout, meshes G(z) with random codes, random wound masks."""
    rng = np.random.default_rng(seed)
    face_layout = (get_template("dlib_150").points_px - 75.0) / 150.0 * resolution
    group, entries = "synthetic", []
    for identity in (f"CTM{i:05d}" for i in range(n_identities)):
        code = rng.normal(size=face_model.n_components).astype(np.float32)
        for variant in range(n_variants):
            sample = f"{identity}_{variant}"
            images, points = [], []
            for k in range(n_lights):
                low = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
                image = np.asarray(Image.fromarray(low).resize((resolution, resolution), Image.Resampling.BILINEAR))
                path = root / "data2D" / group / sample / f"{sample}_{k}.png"
                write_png(path, image)
                images.append(path.relative_to(root).as_posix())
                angle, scale = rng.uniform(-0.2, 0.2), rng.uniform(0.9, 1.1)
                rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                points.append(face_layout @ rotation.T * scale + resolution / 2 + rng.uniform(-3, 3, size=2))
            names = np.array([*FIVE_POINT_NAMES, "chin"])
            points_px = np.concatenate([np.array(points), rng.uniform(0, resolution, (n_lights, 1, 2))], axis=1)
            landmarks = root / "data2D" / group / sample / "landmarks.npz"
            write_npz(landmarks, points_px=points_px.astype(np.float32), names=names)
            label = root / "label" / group / f"{sample}.obj"
            write_obj(label, face_model.vertices_mm(code), face_model.faces)
            imperfect = root / "imperfect" / group / f"{sample}.obj"
            write_obj(imperfect, face_model.vertices_mm(code) * 0.99, face_model.faces)
            wound = root / "wound" / group / f"{sample}.npz"
            mask = rng.random(face_model.n_vertices) < 0.1
            write_npz(wound, mask=mask, depth_mm=(mask * 5.0).astype(np.float32), wound_type=np.array("circle_scar"),
                      code=code)
            entries.append({"sample": sample, "identity": identity, "group": group, "variant": variant,
                            "wound_type": "circle_scar", "images": images,
                            "landmarks": landmarks.relative_to(root).as_posix(),
                            "label": label.relative_to(root).as_posix(),
                            "imperfect": imperfect.relative_to(root).as_posix(),
                            "wound": wound.relative_to(root).as_posix()})
    if manifest:
        atomic_write_text(root / "manifest.json", json.dumps({
            "format": "faceregen-cir3dfair", "version": 1,
            "face_model": {"name": face_model.name, "n_vertices": face_model.n_vertices,
                           "n_components": face_model.n_components},
            "generator": {"seed": seed}, "lights": [[0, 0, 1]] * n_lights, "camera": {"resolution": resolution},
            "samples": sorted(entries, key=lambda e: e["sample"]),
        }))
    return root


@pytest.fixture(scope="module")
def face_model() -> LinearFaceModel:
    return toy_face_model(subdivisions=2)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, face_model) -> Path:
    return write_cir3dfair_folder(tmp_path_factory.mktemp("cir3dfair"), face_model)


def make_datamodule(root: Path, face_model: LinearFaceModel, **kwargs) -> Cir3DFaIRDataModule:
    options = {"alignment": "arcface_112", "batch_size": 8, "num_workers": 0, "preprocess_workers": 2, **kwargs}
    return Cir3DFaIRDataModule(root=root, face_model=face_model, **options)


@pytest.fixture(scope="module")
def datamodule(data_root, face_model) -> Cir3DFaIRDataModule:
    dm = make_datamodule(data_root, face_model)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def copy_folder(source: Path, target: Path) -> Path:
    """A copy without cache and splits (file times kept)."""
    return Path(shutil.copytree(source, target, ignore=shutil.ignore_patterns("cache", "splits")))


# --- splits ----------------------------------------------------------------------------------------
def test_split_counts_follow_6_2_2_and_keep_every_split_non_empty():
    assert split_counts(50, (0.6, 0.2, 0.2)) == (30, 10, 10)
    assert split_counts(10, (6, 2, 2)) == (6, 2, 2)
    assert split_counts(5, (0.6, 0.2, 0.2)) == (3, 1, 1)
    assert split_counts(3, (1, 1, 1)) == (1, 1, 1)
    with pytest.raises(ValueError, match=">= 3 identities"):
        split_counts(2, (0.6, 0.2, 0.2))
    with pytest.raises(ValueError, match="three non-negative"):
        split_counts(10, (0.5, 0.5))


@pytest.mark.parametrize("n_identities, ratios", [(3, (0.6, 0.2, 0.2)), (4, (0.6, 0.2, 0.2)), (99, (0.98, 0.01, 0.01))])
def test_split_refuses_identities_too_few_for_the_ratios(n_identities, ratios):
    """A split whose share is under one identity cannot follow the ratios (3 at 6:2:2 would be 1/1/1)."""
    needed = {0.2: 5, 0.01: 100}[ratios[2]]
    with pytest.raises(ValueError, match=rf"{n_identities} identities cannot be split .* at least {needed} identities"):
        split_counts(n_identities, ratios)
    assert min(split_counts(needed, ratios)) == 1


def test_split_is_over_identities_disjoint_and_seeded():
    identities = [f"CTM{i:05d}" for i in range(50)]
    split = split_identities(identities, (0.6, 0.2, 0.2), seed=0)
    assert [len(split[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    assert sorted(split["train"] + split["val"] + split["test"]) == identities
    assert split == split_identities(list(reversed(identities)), (0.6, 0.2, 0.2), seed=0)
    assert split != split_identities(identities, (0.6, 0.2, 0.2), seed=1)


def test_split_file_is_reused_and_must_match_the_data(tmp_path):
    identities = [f"CTM{i:05d}" for i in range(20)]
    path = tmp_path / "split.json"
    first = load_or_create_split(path, identities, (0.6, 0.2, 0.2), seed=3)
    stored = json.loads(path.read_text())
    assert stored["seed"] == 3 and stored["ratios"] == [0.6, 0.2, 0.2] and stored["train"] == first["train"]
    stored["val"], stored["test"] = stored["test"], stored["val"]  # a hand-edited split is kept as stored
    atomic_write_text(path, json.dumps(stored))
    again = load_or_create_split(path, identities, (0.6, 0.2, 0.2), seed=3)
    assert again["val"] == first["test"]
    with pytest.raises(ValueError, match=r"1 in the data are not in the file \(e.g. \['CTM99999'\]\)"):
        load_or_create_split(path, [*identities, "CTM99999"], (0.6, 0.2, 0.2), seed=3)
    with pytest.raises(ValueError, match="1 identities in the file are not in the data"):
        load_or_create_split(path, identities[1:], (0.6, 0.2, 0.2), seed=3)
    with pytest.raises(ValueError, match="ratios"):
        load_or_create_split(path, identities, (0.8, 0.1, 0.1), seed=3)


def test_ssl_subset_is_a_nested_seeded_share_of_train():
    train = [f"CTM{i:05d}" for i in range(30)]
    fifth = ssl_identities(train, 0.2, seed=0)
    assert len(fifth) == 6 and set(fifth) <= set(train)
    assert set(fifth) <= set(ssl_identities(train, 0.4, seed=0))
    assert ssl_identities(train, 1.0, seed=0) == train
    assert ssl_identities(train, 0.01, seed=0) and len(ssl_identities(train, 0.01, seed=0)) == 1
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        ssl_identities(train, 0.0, seed=0)


# --- the datamodule -----------------------------------------------------------------------------------
def test_datamodule_split_and_ssl_subset_never_leak(datamodule, data_root, face_model):
    split = datamodule.split
    assert [len(split[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert (data_root / "splits" / "split_seed0.json").is_file()
    cache = datamodule.cache

    def identity_of(dataset):
        return {cache.identities[i] for i in cache.sample_identity[cache.item_sample[dataset.items]]}

    assert identity_of(datamodule.train_dataset) == set(split["train"])
    assert identity_of(datamodule.val_dataset) == set(split["val"])
    assert identity_of(datamodule.test_dataset) == set(split["test"])
    sizes = [len(d) for d in (datamodule.train_dataset, datamodule.val_dataset, datamodule.test_dataset)]
    assert sizes == [24, 8, 8]  # 2 variants x 2 lights per identity
    held_out = set(datamodule.val_dataset.items) | set(datamodule.test_dataset.items)
    for fraction, n_identities in ((0.2, 1), (1.0, 6)):
        dm = make_datamodule(data_root, face_model, ssl_fraction=fraction)
        dm.setup()
        assert len(dm.ssl_identities) == n_identities and set(dm.ssl_identities) <= set(split["train"])
        assert len(dm.ssl_dataset) == 4 * n_identities
        assert not held_out & set(dm.ssl_dataset.items)
    assert [s.sample for s in datamodule.samples_of("val")] == sorted(f"{i}_{v}" for i in split["val"] for v in (0, 1))
    val_sample = datamodule.samples_of("val")[0]
    assert val_sample.imperfect.is_file() and val_sample.wound.is_file() and val_sample.label.is_file()


def test_changed_seed_gives_a_new_split_file(data_root, face_model):
    dm = make_datamodule(data_root, face_model, split_seed=5)
    dm.setup()
    assert (data_root / "splits" / "split_seed5.json").is_file()
    reloaded = make_datamodule(data_root, face_model, split_seed=5)
    reloaded.setup()
    assert reloaded.split == dm.split


def test_batches_have_the_contract_shapes_and_dtypes(datamodule, face_model):
    batch = next(iter(datamodule.train_dataloader()))
    v = face_model.n_vertices
    expected = {"image": ((8, 3, 112, 112), torch.uint8), "vertices_mm": ((8, v, 3), torch.float32),
                "wound_mask": ((8, v), torch.bool), "has_wound_mask": ((8,), torch.bool),
                "identity": ((8,), torch.int64), "index": ((8,), torch.int64), "light": ((8,), torch.int64)}
    assert {k: (tuple(t.shape), t.dtype) for k, t in batch.items()} == expected
    assert batch["has_wound_mask"].all()
    single = datamodule.val_dataset[0]
    assert single["image"].shape == (3, 112, 112) and single["vertices_mm"].shape == (v, 3)


def test_train_shuffles_with_the_global_seed_and_val_does_not(datamodule):
    def order(loader):
        return torch.cat([b["index"] for b in loader]).tolist()

    torch.manual_seed(0)
    first = order(datamodule.train_dataloader())
    torch.manual_seed(0)
    assert order(datamodule.train_dataloader()) == first
    assert first != sorted(first) and sorted(first) == sorted(datamodule.train_dataset.items.tolist())
    val = order(datamodule.val_dataloader())
    assert val == sorted(val)


def test_worker_processes_serve_the_same_batches(datamodule, data_root, face_model):
    dm = make_datamodule(data_root, face_model, num_workers=2)
    dm.setup()
    with_workers = list(dm.val_dataloader())
    in_process = list(datamodule.val_dataloader())
    for a, b in zip(with_workers, in_process, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


HELD_BY_THE_CALLER = threading.Lock()


def caller_lock_is_free(_) -> bool:
    """Worker: whether this process's copy of the lock can be taken (a forked copy of a held lock never can)."""
    if not HELD_BY_THE_CALLER.acquire(timeout=2):
        return False
    HELD_BY_THE_CALLER.release()
    return True


def parent_process_id(_) -> int:
    return os.getppid()


def test_preprocessing_workers_do_not_inherit_the_callers_locks():
    """A lock held in the calling process (as a web server's or trainer's thread may hold one) is copied,
    held, into a forked worker, which then waits on it forever; the pool's workers start from a clean process."""
    with HELD_BY_THE_CALLER:
        with preprocessing.worker_pool(2) as pool:
            free = pool.map(caller_lock_is_free, range(4))
            parents = set(pool.map(parent_process_id, range(4)))
    assert free == [True] * 4
    assert os.getpid() not in parents


def test_cache_holds_the_direct_computation(datamodule, data_root, face_model):
    cache = datamodule.cache
    assert cache.images.shape == (40, 3, 112, 112) and cache.vertices_mm.shape == (20, face_model.n_vertices, 3)
    samples = {s.sample: s for s in find_samples(data_root)}
    template = get_template("arcface_112")
    dataset = datamodule.train_dataset
    for position in (0, 5, len(dataset) - 1):
        batch = dataset.__getitems__([position])
        item = int(batch["index"][0])
        sample = samples[cache.sample_names[cache.item_sample[item]]]
        k = cache.item_light[item]
        with np.load(sample.landmarks) as landmarks:
            points = landmarks["points_px"][k, : len(FIVE_POINT_NAMES)]
        image = np.asarray(Image.open(sample.images[k]).convert("RGB"))
        expected = align_face(image, points, template).transpose(2, 0, 1)
        np.testing.assert_array_equal(batch["image"][0].numpy(), expected)
        np.testing.assert_array_equal(batch["vertices_mm"][0].numpy(), read_mesh(sample.label)[0])
        with np.load(sample.wound) as wound:
            np.testing.assert_array_equal(batch["wound_mask"][0].numpy(), wound["mask"])
        assert cache.identities[batch["identity"][0]] == sample.identity


def test_second_run_only_memory_maps(datamodule, data_root, face_model, monkeypatch):
    def no_workers(processes):
        raise AssertionError("started preprocessing workers again")

    monkeypatch.setattr(datamodules.cache, "worker_pool", no_workers)
    dm = make_datamodule(data_root, face_model)
    dm.setup()
    assert dm.cache.folder == datamodule.cache.folder
    assert isinstance(dm.cache.images, np.memmap)
    served, original = next(iter(dm.val_dataloader())), next(iter(datamodule.val_dataloader()))
    np.testing.assert_array_equal(served["image"], original["image"])


def test_epochs_after_setup_need_no_images(tmp_path, data_root, face_model):
    root = copy_folder(data_root, tmp_path / "copy")
    dm = make_datamodule(root, face_model)
    dm.setup()
    first = [b["image"].clone() for b in dm.val_dataloader()]
    shutil.rmtree(root / "data2D")
    for _ in range(2):
        assert all(torch.equal(a, b["image"]) for a, b in zip(first, dm.val_dataloader(), strict=True))
        assert sum(len(b["index"]) for b in dm.train_dataloader()) == 24


def test_cache_is_rebuilt_when_an_input_changes(tmp_path, data_root, face_model):
    root = copy_folder(data_root, tmp_path / "copy")
    dm = make_datamodule(root, face_model)
    dm.setup()
    sample = find_samples(root)[3]
    write_png(sample.images[1], np.full((64, 64, 3), 200, dtype=np.uint8))
    changed = make_datamodule(root, face_model)
    changed.setup()
    assert changed.cache.folder != dm.cache.folder
    item = np.flatnonzero((np.array(changed.cache.sample_names)[changed.cache.item_sample] == sample.sample)
                          & (changed.cache.item_light == 1))[0]
    with np.load(sample.landmarks) as landmarks:
        points = landmarks["points_px"][1, : len(FIVE_POINT_NAMES)]
    grey = align_face(np.full((64, 64, 3), 200, dtype=np.uint8), points, get_template("arcface_112"))
    np.testing.assert_array_equal(changed.cache.images[item], grey.transpose(2, 0, 1))
    assert not np.array_equal(changed.cache.images[item], dm.cache.images[item])
    other_alignment = make_datamodule(root, face_model, alignment="dlib_150")
    other_alignment.setup()
    assert other_alignment.cache.images.shape[-1] == 150


def test_cache_build_removes_what_a_killed_build_left(tmp_path, data_root, face_model):
    """A build killed mid-way leaves a temporary array and no meta.json: the next build removes the one and
    completes the folder."""
    root = copy_folder(data_root, tmp_path / "copy")
    folder = root / "cache" / cache_key(find_samples(root), root, "arcface_112", face_model.n_vertices)
    folder.mkdir(parents=True)
    (folder / ".images.k1ll3d.tmp.npy").write_bytes(b"\0" * 4096)
    (folder / "vertices_mm.npy").write_bytes(b"not an array")
    dm = make_datamodule(root, face_model)
    dm.setup()
    assert dm.cache.folder == folder and (folder / "meta.json").is_file()
    assert not list(folder.glob(".*.tmp*"))
    assert dm.cache.vertices_mm.shape[1:] == (face_model.n_vertices, 3)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    """A 16-bit greyscale PNG (Pillow mode I;16) holding 257 k reads as k in all channels (training and
    reconstruct.py read photos with read_rgb; Pillow's convert("RGB") would clip it to 255 from k = 1 on)."""
    from faceregen.image_io import read_rgb

    levels = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257
    path = tmp_path / "grey16.png"
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode.startswith("I")
    expected = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    np.testing.assert_array_equal(read_rgb(path), expected)


@pytest.fixture
def bad_root(tmp_path, data_root, face_model):
    """A copy with a missing image, a corrupt PNG and a mesh of the wrong vertex count."""
    root = copy_folder(data_root, tmp_path / "bad")
    samples = find_samples(root)
    samples[0].images[0].unlink()
    atomic_write_bytes(samples[1].images[1], b"\x89PNG\r\n\x1a\n not really a png")
    smaller = toy_face_model(subdivisions=1)
    write_obj(samples[2].label, smaller.mean_mm, smaller.faces)
    return root, samples


def test_bad_input_is_reported_by_file_name(bad_root, face_model):
    root, samples = bad_root
    with pytest.raises(ValueError, match=rf"{samples[2].label}: 42 vertices, expected 162"):
        make_datamodule(root, face_model).setup()
    write_obj(samples[2].label, face_model.mean_mm, face_model.faces)
    with pytest.raises(FileNotFoundError, match=rf"{samples[0].images[0]}: image not found"):
        make_datamodule(root, face_model).setup()
    shutil.copy(samples[0].images[1], samples[0].images[0])
    with pytest.raises(ValueError, match=rf"{samples[1].images[1]}: not an image"):
        make_datamodule(root, face_model).setup()


def test_on_error_skip_drops_and_counts_bad_files(bad_root, face_model):
    root, samples = bad_root
    dm = make_datamodule(root, face_model, on_error="skip")
    dm.setup()
    assert len(dm.skipped) == 3
    bad_files = {str(samples[0].images[0]), str(samples[1].images[1]), str(samples[2].label)}
    assert {path for path, _ in dm.skipped} == bad_files
    assert dm.cache.images.shape[0] == 40 - 2 - 2  # two bad images, and the bad mesh's sample (2 images)
    assert samples[2].sample not in dm.cache.sample_names
    # the same cache refuses to serve silently when asked to raise
    with pytest.raises(ValueError, match="skipping 3 bad files"):
        make_datamodule(root, face_model).setup()


def test_manifest_and_face_model_must_agree(data_root, face_model):
    other = toy_face_model(subdivisions=1)
    with pytest.raises(ValueError, match="data made with face model 'toy-ellipsoid-2' of 162 vertices; .* has 42"):
        make_datamodule(data_root, other).setup()


def test_folder_without_manifest_is_scanned(tmp_path, datamodule, data_root, face_model):
    root = copy_folder(data_root, tmp_path / "real")
    (root / "manifest.json").unlink()
    shutil.rmtree(root / "imperfect")
    for wound in (root / "wound").rglob("*.npz"):
        if wound.stem.endswith("_1"):
            wound.unlink()
    dm = make_datamodule(root, face_model)
    dm.setup()
    assert dm.split == datamodule.split
    np.testing.assert_array_equal(dm.cache.images, datamodule.cache.images)
    has_wound = dict(zip(dm.cache.sample_names, dm.cache.has_wound_mask))
    assert has_wound["CTM00000_0"] and not has_wound["CTM00000_1"]
    assert not dm.cache.wound_mask[dm.cache.sample_names.index("CTM00000_1")].any()
    with pytest.raises(ValueError, match=r"does not match identity_pattern"):
        make_datamodule(root, face_model, identity_pattern=r"^(?P<identity>XYZ\d+)").setup()


@pytest.mark.skipif(importlib.util.find_spec("dlib") is None, reason="dlib is not installed")
def test_a_photo_gives_the_same_chip_in_training_and_in_reconstruct(tmp_path, face_model):
    """A real photo stored sideways with an EXIF rotation (as phones store portraits), in a folder without
    landmarks: training's cache holds the chip reconstruct.py makes of it (one path, faceregen.photo), the
    upright photo's face chosen among the detections scoring at least the detector's min_score."""
    from faceregen.photo import PhotoAligner

    root = write_cir3dfair_folder(tmp_path / "photos", face_model, n_identities=3, n_variants=1, n_lights=1,
                                  manifest=False)
    upright = np.asarray(Image.open(Path(__file__).resolve().parents[1] / "examples" / "astronaut.png").convert("RGB"))
    for landmarks in (root / "data2D").rglob("landmarks.npz"):
        landmarks.unlink()
        sideways = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))  # shown upright after a 90 deg turn
        exif = sideways.getexif()
        exif[0x0112] = 6  # Orientation: rotate 90 deg clockwise to display
        sideways.save(next(landmarks.parent.glob("*.png")), exif=exif)
    dm = make_datamodule(root, face_model, alignment="dlib_150", preprocess_workers=1, split_ratios=(1, 1, 1))
    dm.setup()
    photo = next((root / "data2D").rglob("*.png"))
    reconstructed = PhotoAligner("dlib_150")(photo)
    assert reconstructed.face.n_faces == 1 and reconstructed.face.n_weak >= 1  # a weak false detection ignored
    np.testing.assert_array_equal(dm.cache.images[0], reconstructed.chip.transpose(2, 0, 1))
    expected = align_face(upright, reconstructed.face.points_px, get_template("dlib_150"))
    np.testing.assert_array_equal(reconstructed.chip, expected)


def test_ssl_mode_serves_views_of_ssl_identities(data_root, face_model):
    def two_views(image):
        return [image.float() / 255, image[:, ::2, ::2].float() / 255]

    dm = make_datamodule(data_root, face_model, mode="ssl", ssl_transform=two_views, ssl_fraction=0.5)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert [tuple(v.shape) for v in batch["views"]] == [(8, 3, 112, 112), (8, 3, 56, 56)]
    torch.testing.assert_close(batch["views"][0], batch["image"].float() / 255)
    assert set(batch["index"].tolist()) <= set(dm.ssl_dataset.items.tolist())
    with pytest.raises(ValueError, match="needs an ssl_transform"):
        make_datamodule(data_root, face_model, mode="ssl")


def test_hydra_config_instantiates_the_datamodule(data_root, face_model, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(__file__).parents[1] / "conf" / "data" / "cir3dfair.yaml")
    root = OmegaConf.create({"paths": {"data_dir": str(tmp_path), "cache_dir": str(tmp_path / "cache")}, "data": config})
    # the runner passes the face model and the encoder's alignment (derived, not configured)
    dm = instantiate(root.data, _partial_=True, root=str(data_root))(face_model=face_model, alignment="dlib_150")
    assert isinstance(dm, Cir3DFaIRDataModule) and dm.n_vertices == face_model.n_vertices
    assert (dm.alignment, dm.batch_size, dm.num_workers, dm.split_ratios) == ("dlib_150", 50, 2, (0.6, 0.2, 0.2))
    assert dm.cache_dir == tmp_path / "cache" / "cir3dfair"
