"""MICAModule: shapes and units, what trains, overfitting, checkpoints, resume."""

from functools import partial

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from faceregen.encoders.identity_encoder import build_identity_encoder
from faceregen.encoders.mapping_network import MappingNetwork
from lightning_modules.mica_module import MICAModule

REGION_WEIGHTS = {"left_eyeball": 0.01, "right_eyeball": 0.01, "left_ear": 0.01, "right_ear": 0.01, "face": 150.0}


def make_module(face_model, freeze="mica", pretrained=None, lr=1e-3, feature_stages=None, **kwargs) -> MICAModule:
    return MICAModule(
        identity_encoder=build_identity_encoder("dlib_resnet", pretrained=pretrained, freeze=freeze, feature_stages=feature_stages),
        mapping_network=partial(MappingNetwork),
        face_model=face_model,
        region_weights=REGION_WEIGHTS,
        optimizer=partial(torch.optim.Adam, lr=lr),
        **kwargs,
    )


class FaceBatches(Dataset):
    """Random images paired with the face model's vertices for random codes (a learnable mapping)."""

    def __init__(self, face_model, n=8, size=150, seed=0):
        rng = np.random.default_rng(seed)
        self.images = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
        codes = rng.normal(size=(n, face_model.n_components)).astype(np.float32)
        self.vertices = torch.from_numpy(face_model.vertices_mm(codes).astype(np.float32))
        wound = np.zeros((n, face_model.n_vertices), bool)
        wound[:, face_model.regions["nose"]] = True
        self.wound = torch.from_numpy(wound)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {
            "image": self.images[i],
            "vertices_mm": self.vertices[i],
            "wound_mask": self.wound[i],
            "has_wound_mask": torch.tensor(True),
            "index": torch.tensor(i),
        }


def test_shapes_and_units(toy_model):
    module = make_module(toy_model).eval()
    images = torch.zeros(2, 3, 150, 150, dtype=torch.uint8)
    with torch.no_grad():
        vertices = module(images)
        z = module.encode(images)
    assert z.shape == (2, toy_model.n_components)
    assert vertices.shape == (2, toy_model.n_vertices, 3)
    # G(z) = B z + A exactly, in mm
    expected = toy_model.vertices_mm(z.numpy())
    np.testing.assert_allclose(vertices.numpy(), expected, rtol=1e-4, atol=1e-3)
    # the decoder is frozen: no parameters, only buffers
    assert not list(module.face_model_decoder.parameters())


def test_only_intended_parameters_train(toy_model):
    module = make_module(toy_model, freeze="mica")
    batch = next(iter(DataLoader(FaceBatches(toy_model, n=2), batch_size=2)))
    module.train()
    loss = module.region_weighted_l1(module(batch["image"]), batch["vertices_mm"])
    loss.backward()
    backbone = module.identity_encoder.backbone
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad <= trainable
    assert any(n.startswith("mapping_network.") for n in with_grad)
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen, "freeze='mica' must freeze the early backbone stages"
    assert all(f"identity_encoder.backbone.{n}" not in with_grad for n in frozen)
    # the optimizer sees exactly the trainable parameters
    optimizer = module.configure_optimizers()
    optimised = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in module.parameters() if p.requires_grad}


def test_mid_level_features_train_what_they_should(toy_model):
    """Default embedded set-up (dlib stages 1-2): with "mica" only the mapping network trains; with "none"
    the stages up to stage 2 train at backbone_lr and the later ones, unused, get nothing."""
    batch = next(iter(DataLoader(FaceBatches(toy_model, n=2), batch_size=2)))
    for freeze, encoder_trains in (("mica", False), ("none", True)):
        module = make_module(toy_model, freeze=freeze, feature_stages=[1, 2], backbone_lr=1e-5).train()
        module.region_weighted_l1(module(batch["image"]), batch["vertices_mm"]).backward()
        with_grad = {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert any(n.startswith("mapping_network.") for n in with_grad)
        assert any(n.startswith("identity_encoder.backbone.stages.1.") for n in with_grad) == encoder_trains
        assert not any(n.startswith(("identity_encoder.backbone.stages.3", "identity_encoder.backbone.fc")) for n in with_grad)
        lrs = {g["name"]: g["lr"] for g in module.configure_optimizers().param_groups}
        assert lrs == ({"mapping_network": 1e-3, "identity_encoder": 1e-5} if encoder_trains else {"mapping_network": 1e-3})


def test_region_weights_follow_mica_order(toy_model):
    module = make_module(toy_model)
    w = module.vertex_weights.numpy()
    assert np.all(w[toy_model.regions["face"]] == 150.0)
    assert np.all(w[toy_model.regions["left_eyeball"]] == np.float32(0.01))
    untouched = np.ones(toy_model.n_vertices, bool)
    for region in REGION_WEIGHTS:
        untouched[toy_model.regions[region]] = False
    assert np.all(w[untouched] == 1.0)


def test_overfit_small_batch_drives_loss_down(toy_model):
    """Four distinct photos (shipped dlib weights, frozen) -> four face codes: L1 falls at least 10x."""
    from skimage import data, transform

    torch.manual_seed(0)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    images = np.stack([(transform.resize(p, (150, 150)) * 255).astype(np.uint8) for p in photos]).transpose(0, 3, 1, 2)
    targets = next(iter(DataLoader(FaceBatches(toy_model, n=4), batch_size=4)))["vertices_mm"]
    module = make_module(toy_model, freeze="all", pretrained="default", lr=3e-3)
    optimizer = module.configure_optimizers()
    module.train()
    with torch.no_grad():  # the backbone is frozen: its features are computed once
        features = module.identity_encoder(module.identity_encoder.normalize_input(torch.from_numpy(images)))
    losses = []
    for _ in range(400):
        optimizer.zero_grad()
        loss = module.region_weighted_l1(module.face_model_decoder(module.mapping_network(features)), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-20:]) < losses[0] / 10


def test_fit_logs_distances_and_resumes(toy_model, tmp_path):
    data = DataLoader(FaceBatches(toy_model, n=4), batch_size=2)
    checkpoints = tmp_path / "checkpoints"

    def trainer(max_epochs):
        ckpt = pl.callbacks.ModelCheckpoint(dirpath=checkpoints, monitor="val/mean_distance_mm", save_last=True)
        return pl.Trainer(
            max_epochs=max_epochs, accelerator="cpu", logger=False, callbacks=[ckpt],
            enable_progress_bar=False, enable_model_summary=False,
        )

    first = trainer(1)
    first.fit(make_module(toy_model, freeze="all"), data, data)
    assert first.global_step == 2
    for name in ("val/mean_distance_mm", "val/wound_distance_mm", "val/intact_distance_mm"):
        assert float(first.callback_metrics[name]) > 0
    resumed_module = make_module(toy_model, freeze="all")
    second = trainer(2)
    second.fit(resumed_module, data, data, ckpt_path=str(checkpoints / "last.ckpt"))
    assert second.global_step == 4  # continued from step 2, not from 0


@pytest.mark.parametrize("freeze", ["all", "none"])
def test_epoch_zero_is_the_closed_form_read_out(toy_model, tmp_path, freeze):
    """With ``readout_init=ridge`` the first epoch takes no optimizer step and leaves the encoder's batch-norm
    statistics alone: after it the read-out and the encoder are exactly those ``fit_readout`` gives (and the
    checkpoint of epoch 0 holds them), also for a backbone that trains (``freeze=none``, scratch); the second
    epoch moves the read-out."""
    data = DataLoader(FaceBatches(toy_model, n=6), batch_size=3)

    def module():
        torch.manual_seed(0)
        return MICAModule(
            identity_encoder=build_identity_encoder("dlib_resnet", pretrained=None, freeze=freeze, feature_stages=[0], feature_grid=1),
            mapping_network=partial(MappingNetwork, hidden_dim=None, hidden_layers=0), face_model=toy_model,
            region_weights=REGION_WEIGHTS, optimizer=partial(torch.optim.Adam, lr=1e-2), readout_init="ridge",
        )

    expected = module()
    expected.fit_readout(data, data)
    weights = expected.mapping_network.output.weight.detach().clone()
    encoder = {k: v.clone() for k, v in expected.identity_encoder.state_dict().items()}
    assert any("running_mean" in k for k in encoder)
    for epochs in (1, 2):
        fitted = module()
        trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(fitted, datamodule=pl.LightningDataModule.from_datasets(data.dataset, data.dataset, batch_size=3))
        moved = (fitted.mapping_network.output.weight.detach() - weights).abs().max().item()
        assert (moved < 1e-6) if epochs == 1 else (moved > 1e-4)
        if epochs == 1:
            for name, value in fitted.identity_encoder.state_dict().items():
                assert torch.equal(value, encoder[name]), name
        else:
            assert fitted.identity_encoder.training


def test_wound_and_intact_distances_partition_the_face(toy_model):
    module = make_module(toy_model).eval()
    batch = next(iter(DataLoader(FaceBatches(toy_model, n=2), batch_size=2)))
    with torch.no_grad():
        module._evaluate(batch, "test")
    d = {name: float(module.distance[f"test_{name}"].compute()) for name in ("mean_distance_mm", "wound_distance_mm", "intact_distance_mm")}
    n_wound = int(module.evaluation_mask[batch["wound_mask"][0]].sum())
    n_all = int(module.evaluation_mask.sum())
    # the mean over all evaluated vertices is the count-weighted mean of wound and intact means
    combined = (d["wound_distance_mm"] * n_wound + d["intact_distance_mm"] * (n_all - n_wound)) / n_all
    assert d["mean_distance_mm"] == pytest.approx(combined, rel=1e-4)


def test_aligned_distance_ignores_size_position_and_orientation(toy_model):
    """A prediction that is the ground truth scaled, rotated and moved has zero shape error."""
    from scipy.spatial.transform import Rotation

    from faceregen.metrics import per_vertex_distance_mm, similarity_aligned_distance_mm

    gt = torch.from_numpy(toy_model.vertices_mm(np.random.default_rng(0).normal(size=(2, toy_model.n_components))))
    rotation = torch.from_numpy(Rotation.from_euler("xyz", [5, -10, 20], degrees=True).as_matrix()).float()
    pred = 1.1 * gt @ rotation.T + torch.tensor([3.0, -2.0, 7.0])
    everywhere = torch.ones(toy_model.n_vertices, dtype=torch.bool)
    assert float(per_vertex_distance_mm(pred, gt).mean()) > 5
    assert float(similarity_aligned_distance_mm(pred, gt, everywhere).max()) < 1e-3
    # a real shape change survives the alignment
    bumped = gt.clone()
    bumped[:, toy_model.regions["nose"], 2] += 5.0
    assert float(similarity_aligned_distance_mm(bumped, gt, everywhere)[:, toy_model.regions["nose"]].mean()) > 2


def test_a_feature_cache_changes_nothing_but_the_encoding(toy_model, tmp_path):
    """Fixed features (``freeze=mica``): a fit with the cache gives the read-out and validation of one without;
    a second run on the same cache encodes no view (flip and scale averaging: 6 images x 2 x 3 views each)."""
    data = DataLoader(FaceBatches(toy_model, n=6), batch_size=3)

    def fitted(cache_dir):
        torch.manual_seed(0)
        module = MICAModule(
            identity_encoder=build_identity_encoder("dlib_resnet", pretrained=None, freeze="mica", feature_stages=[0], feature_grid=1),
            mapping_network=partial(MappingNetwork, hidden_dim=None, hidden_layers=0), face_model=toy_model,
            region_weights=REGION_WEIGHTS, optimizer=partial(torch.optim.Adam, lr=1e-2), readout_init="ridge",
            chip_scales=[0.9, 1.0, 1.1], feature_cache_dir=cache_dir,
        )
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
        trainer.fit(module, datamodule=pl.LightningDataModule.from_datasets(data.dataset, data.dataset, batch_size=3))
        return module, float(trainer.callback_metrics["val/mean_distance_mm"])

    plain, plain_error = fitted(None)
    first, first_error = fitted(str(tmp_path))
    second, second_error = fitted(str(tmp_path))
    cache = second.identity_encoder.feature_cache
    assert cache.misses == 0 and cache.hits > 0
    assert first.identity_encoder.feature_cache.misses > 0
    assert plain.identity_encoder.feature_cache is None
    for module in (first, second):
        assert torch.allclose(module.mapping_network.output.weight, plain.mapping_network.output.weight, atol=1e-5)
    assert second_error == first_error == pytest.approx(plain_error, abs=1e-4)
