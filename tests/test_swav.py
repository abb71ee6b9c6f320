"""SwAV pre-training: Sinkhorn codes, multi-crop views, retrieval score, and the LightningModule.

Most tests use a tiny stand-in encoder with the identity-encoder interface (also imported by
tests/test_swav_ddp.py); one test runs the real dlib encoder with conf/model/swav.yaml.
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.loss.swav_loss import sinkhorn
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from faceregen.encoders.checkpoints import load_state_strict
from faceregen.encoders.mapping_network import MappingNetwork
from faceregen.ssl import FaceMultiCrop, RetrievalTop1, retrieval_top1
from lightning_modules.swav_module import SwAVModule

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: with the cores shared, intra-op threads only wait on each other (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- stand-ins ---------------------------------------------------------------------------------
class TinyBackbone(nn.Module):
    """conv -> relu -> conv -> global average pool -> linear; any input side >= 8 px."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class TinyEncoder(nn.Module):
    """The identity-encoder interface (``input_size``, ``feature_dim``, ``normalize_input``, ``encoder_state_dict``).

    ``strict_size``: refuse inputs that are not ``input_size`` px, as the real encoders do.
    """

    def __init__(self, input_size: int = 32, feature_dim: int = 16, strict_size: bool = False) -> None:
        super().__init__()
        self.input_size, self.feature_dim, self.strict_size = input_size, feature_dim, strict_size
        self.backbone = TinyBackbone(feature_dim)

    def normalize_input(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 127.5 - 1.0

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.backbone.state_dict().items()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.strict_size and images.shape[-1] != self.input_size:
            raise ValueError(f"expected {self.input_size} px chips, got {tuple(images.shape)}")
        return F.normalize(self.backbone(images), dim=-1)


class StructuredFaces(Dataset):
    """``n_identities`` smooth colour patterns (sums of sinusoids), ``per_identity`` noisy, re-lit copies each.

    Items: ``{"image": uint8 (3, S, S), "identity": int}`` plus ``"views"`` when a transform is given.
    """

    def __init__(self, n_identities: int = 8, per_identity: int = 4, size: int = 32, transform=None, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
        images, identities = [], []
        for identity in range(n_identities):
            frequency = 1 + 5 * torch.rand(3, 2, generator=generator)
            phase = 2 * math.pi * torch.rand(3, generator=generator)
            base = torch.stack(
                [0.5 + 0.5 * torch.sin(2 * math.pi * (f[0] * xx + f[1] * yy) + p) for f, p in zip(frequency, phase)]
            )
            for _ in range(per_identity):
                light = 0.7 + 0.6 * torch.rand(1, generator=generator)
                noise = 0.05 * torch.randn(base.shape, generator=generator)
                images.append(((base * light + noise).clamp(0, 1) * 255).round().to(torch.uint8))
                identities.append(identity)
        self.images, self.identities, self.transform = images, identities, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        item = {"image": self.images[index], "identity": self.identities[index]}
        if self.transform is not None:
            item["views"] = self.transform(self.images[index])
        return item


def tiny_multicrop(size: int = 32, **overrides) -> FaceMultiCrop:
    """2 x 32 px + 2 x 24 px views of 32 px chips."""
    return FaceMultiCrop(size, n_high_resolution=2, n_low_resolution=2, low_resolution_factor=0.75, **overrides)


def loader(dataset: Dataset, batch_size: int = 16, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle)


def trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    return pl.Trainer(**{**defaults, **kwargs})


def swav(encoder: nn.Module | None = None, **kwargs) -> SwAVModule:
    defaults = dict(projection_hidden_dim=32, projection_output_dim=16, n_prototypes=16)
    return SwAVModule(encoder or TinyEncoder(), **{**defaults, **kwargs})


# --- Sinkhorn (Eq. 7-9) ------------------------------------------------------------------------
def official_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV's ``distributed_sinkhorn`` (main_swav.py) on one process, written out independently."""
    q = torch.exp(scores / epsilon).t()  # K x B
    n_prototypes, batch = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / n_prototypes
        q = q / q.sum(dim=0, keepdim=True) / batch
    return (q * batch).t()


def test_sinkhorn_codes_are_doubly_stochastic_and_match_the_official_code():
    torch.manual_seed(0)
    batch, n_prototypes = 24, 8
    scores = F.normalize(torch.randn(batch, 16), dim=1) @ F.normalize(torch.randn(n_prototypes, 16), dim=1).T
    for iterations in (3, 10):
        assert torch.allclose(sinkhorn(scores, iterations, 0.05), official_sinkhorn(scores, 0.05, iterations), rtol=1e-5, atol=1e-7)
    q = sinkhorn(scores, iterations=500, epsilon=0.05) / batch  # B x K, before the final rescaling by B
    assert torch.allclose(q.sum(dim=1), torch.full((batch,), 1 / batch), atol=1e-6)
    assert torch.allclose(q.sum(dim=0), torch.full((n_prototypes,), 1 / n_prototypes), atol=1e-5)
    # few iterations: rows exact, columns only roughly balanced; codes follow the scores
    q3 = sinkhorn(scores, iterations=3, epsilon=0.05)
    assert torch.allclose(q3.sum(dim=1), torch.ones(batch), atol=1e-6)
    assert (q3.argmax(dim=1) == scores.argmax(dim=1)).float().mean() > 0.5


# --- multi-crop --------------------------------------------------------------------------------
def test_multicrop_views_sizes_dtype_and_determinism():
    image = StructuredFaces(1, 1, size=150)[0]["image"]
    transform = FaceMultiCrop(150)
    torch.manual_seed(3)
    views = transform(image)
    assert [tuple(v.shape) for v in views] == [(3, 150, 150)] * 2 + [(3, 90, 90)] * 4
    assert transform.view_sizes == [150, 150, 90, 90, 90, 90]
    assert all(v.dtype == torch.uint8 for v in views)
    torch.manual_seed(3)
    assert all(torch.equal(a, b) for a, b in zip(views, transform(image)))
    torch.manual_seed(4)
    assert not torch.equal(views[0], transform(image)[0])
    assert not torch.equal(views[0], views[1])


def test_multicrop_without_appearance_changes_keeps_the_chip_content():
    """With flip/jitter/grey/blur off and scale (1, 1) at square ratio the high-resolution crop is the chip."""
    image = StructuredFaces(1, 1, size=64)[0]["image"]
    transform = FaceMultiCrop(
        64, n_low_resolution=1, high_resolution_scale=(1.0, 1.0), flip_probability=0.0, jitter_probability=0.0,
        grayscale_probability=0.0, blur_probability=0.0,
    )
    transform.high_resolution.transforms[0].ratio = (1.0, 1.0)
    high, _, low = transform(image)
    assert torch.equal(high, image)
    assert low.shape == (3, 38, 38)


def test_multicrop_rejects_bad_input():
    transform = FaceMultiCrop(32)
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        transform(torch.zeros(3, 40, 40, dtype=torch.uint8))
    with pytest.raises(ValueError, match="high_resolution_scale"):
        FaceMultiCrop(32, high_resolution_scale=(0.5, 1.5))


# --- retrieval ---------------------------------------------------------------------------------
def test_retrieval_top1_hand_made_case():
    embeddings = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    identities = torch.tensor([0, 0, 1, 1, 2])
    # nearest other image: 0->1 (same), 1->2 (other), 2->1 (other), 3->2 (same), 4->3 (other)
    assert retrieval_top1(embeddings, identities) == pytest.approx(2 / 5)
    assert retrieval_top1(5.0 * embeddings, identities) == pytest.approx(2 / 5)  # cosine: scale-free
    assert retrieval_top1(embeddings, torch.tensor([0, 0, 0, 0, 0])) == 1.0
    metric = RetrievalTop1()
    metric.update(embeddings[:2], identities[:2])
    metric.update(embeddings[2:], identities[2:])
    assert float(metric.compute()) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="at least 2"):
        retrieval_top1(embeddings[:1], identities[:1])
    with pytest.raises(ValueError, match="identities"):
        retrieval_top1(embeddings, identities[:3])


# --- the module --------------------------------------------------------------------------------
class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_loss_goes_down_and_metrics_are_logged():
    torch.manual_seed(0)
    data = StructuredFaces(n_identities=8, per_identity=4, transform=tiny_multicrop())
    module = swav(freeze_prototypes_epochs=0, optimizer=lambda params: torch.optim.Adam(params, lr=3e-3))
    recorder = LossRecorder()
    fit = trainer(max_steps=30, callbacks=[recorder])
    fit.fit(module, loader(data), loader(StructuredFaces(4, 3, transform=None, seed=1), shuffle=False))
    first, last = sum(recorder.losses[:5]) / 5, sum(recorder.losses[-5:]) / 5
    assert len(recorder.losses) == 30 and last < 0.75 * first, (first, last)
    metrics = fit.callback_metrics
    assert 0.0 < float(metrics["ssl/prototype_entropy"]) <= 1.0
    assert 0.0 <= float(metrics["ssl/val_retrieval_top1"]) <= 1.0
    assert "ssl/loss" in metrics


class PrototypeWatcher(pl.Callback):
    """Records prototype gradients before each optimizer step and the weights at each epoch end."""

    def __init__(self) -> None:
        self.had_grad: dict[int, list[bool]] = {}
        self.weights: dict[int, torch.Tensor] = {}
        self.initial: torch.Tensor | None = None

    def on_train_start(self, trainer, module) -> None:
        self.initial = module.prototypes.heads[0].weight.detach().clone()

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        grad = module.prototypes.heads[0].weight.grad
        self.had_grad.setdefault(trainer.current_epoch, []).append(grad is not None)

    def on_train_epoch_end(self, trainer, module) -> None:
        self.weights[trainer.current_epoch] = module.prototypes.heads[0].weight.detach().clone()


def test_prototypes_are_frozen_in_the_first_epoch_then_trained():
    torch.manual_seed(0)
    data = StructuredFaces(n_identities=4, per_identity=8, transform=tiny_multicrop())
    watcher = PrototypeWatcher()
    trainer(max_epochs=2, callbacks=[watcher]).fit(swav(freeze_prototypes_epochs=1), loader(data))
    assert watcher.had_grad == {0: [False] * 2, 1: [True] * 2}
    unit_initial = F.normalize(watcher.initial, dim=1)
    assert torch.allclose(watcher.weights[0], unit_initial, atol=1e-6)  # only renormalised
    assert (watcher.weights[1] - unit_initial).abs().max() > 1e-3
    assert torch.allclose(watcher.weights[1].norm(dim=1), torch.ones(16), atol=1e-2)  # renormalised each step


def test_encoder_state_dict_is_an_exact_copy_of_the_trained_weights():
    torch.manual_seed(0)
    data = StructuredFaces(n_identities=4, per_identity=4, transform=tiny_multicrop())
    module = swav(use_mapping_network=True, mapping_network=lambda input_dim: MappingNetwork(input_dim, 24, 20, 1))
    initial = {k: v.clone() for k, v in module.identity_encoder.backbone.state_dict().items()}
    trainer(max_steps=3).fit(module, loader(data))
    state = module.encoder_state_dict()
    assert set(state) == {"identity_encoder", "mapping_network"}
    encoder_now = module.identity_encoder.backbone.state_dict()
    assert state["identity_encoder"].keys() == encoder_now.keys()
    assert all(torch.equal(state["identity_encoder"][k], encoder_now[k]) for k in encoder_now)
    assert any(not torch.equal(initial[k], encoder_now[k]) for k in initial)  # it did train
    assert all(torch.equal(state["mapping_network"][k], v) for k, v in module.mapping_network.state_dict().items())
    fresh, fresh_mapping = TinyEncoder(), MappingNetwork(16, 24, 20, 1)
    load_state_strict(fresh.backbone, state["identity_encoder"], "swav export")
    load_state_strict(fresh_mapping, state["mapping_network"], "swav export")
    images = module.identity_encoder.normalize_input(data[0]["image"][None])
    module.eval()
    with torch.no_grad():
        assert torch.equal(fresh_mapping(fresh(images)), module.features(images))
    # a copy: changing the module afterwards leaves the export alone
    with torch.no_grad():
        module.identity_encoder.backbone.fc.weight.add_(1.0)
    assert not torch.equal(state["identity_encoder"]["fc.weight"], module.identity_encoder.backbone.fc.weight)
    assert set(swav().encoder_state_dict()) == {"identity_encoder"}


def test_low_resolution_views_resized_for_fixed_size_encoders():
    torch.manual_seed(0)
    views = [torch.randint(0, 256, (4, 3, s, s), dtype=torch.uint8) for s in (32, 32, 24, 24)]
    resized = swav(TinyEncoder(strict_size=True), resize_low_resolution=True)
    assert [tuple(z.shape) for z in resized.project(views)] == [(4, 16)] * 4
    with pytest.raises(ValueError, match="32 px"):
        swav(TinyEncoder(strict_size=True), resize_low_resolution=False).project(views)
    native = swav(TinyEncoder(), resize_low_resolution=False)
    z = native.project(views)
    assert all(torch.allclose(zi.norm(dim=1), torch.ones(4)) for zi in z)
    # same-size views are batched together: same result as one view at a time (eval mode: BN frozen)
    native.eval()
    with torch.no_grad():
        together, alone = native.project(views), [native.project([v])[0] for v in views]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(together, alone))
    with pytest.raises(ValueError, match="first 2"):
        native.split_views([views[2], views[0]])


def test_queue_enters_sinkhorn_from_its_start_epoch():
    torch.manual_seed(0)
    data = StructuredFaces(n_identities=4, per_identity=8, transform=tiny_multicrop())
    module = swav(queue_length=48, queue_start_epoch=1, freeze_prototypes_epochs=0)
    recorder = LossRecorder()
    trainer(max_epochs=2, limit_train_batches=2, callbacks=[recorder]).fit(module, loader(data))
    assert len(module.queues) == 2 and all(math.isfinite(x) for x in recorder.losses)
    # 4 batches of 16 went in: the newest 16 projections sit before the write pointer
    bank, pointer = module.queues[0].bank, int(module.queues[0].bank_ptr)
    assert pointer == 64 % 48
    assert torch.allclose(bank[pointer - 16 : pointer].norm(dim=1), torch.ones(16), atol=1e-5)
    z = [F.normalize(torch.randn(16, 16), dim=1) for _ in range(2)]
    assert module.queue_scores(z) is not None and module.queue_scores(z)[0].shape == (48, 16)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mapping_network"):
        swav(use_mapping_network=True)
    with pytest.raises(ValueError, match="queue_length"):
        swav(queue_length=-1)


def test_real_dlib_encoder_from_the_hydra_config(tmp_path):
    """conf/model/swav.yaml on MICA's identity encoder (conf/model/mica.yaml: the dlib ResNet with its shipped
    weights, unfrozen as the SSL stage does): two steps train it, the export loads into MICA's encoder."""
    mica = OmegaConf.load(ROOT / "conf" / "model" / "mica.yaml")
    encoder = hydra.utils.instantiate(mica.identity_encoder, freeze="none")
    module = hydra.utils.instantiate(OmegaConf.load(ROOT / "conf" / "model" / "swav.yaml"), _partial_=True)(
        identity_encoder=encoder)
    assert isinstance(module, SwAVModule) and module.identity_encoder.input_size == 150
    torch.manual_seed(0)
    data = StructuredFaces(n_identities=2, per_identity=2, size=150, transform=FaceMultiCrop(150, n_low_resolution=1))
    before = module.encoder_state_dict()["identity_encoder"]
    trainer(max_steps=2, default_root_dir=tmp_path).fit(module, loader(data, batch_size=4))
    after = module.encoder_state_dict()["identity_encoder"]
    assert any(not torch.equal(before[k], after[k]) for k in before)
    hydra.utils.instantiate(mica.identity_encoder).load_encoder_state(after, "swav export")


def test_encoder_trains_at_its_own_learning_rate():
    """backbone_lr applies to the encoder's group only; every trainable parameter is in exactly one group."""
    module = swav(use_mapping_network=True, mapping_network=lambda input_dim: MappingNetwork(input_dim, 24, 20, 1), backbone_lr=1e-5)
    optimizer = module.configure_optimizers()
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"projection_head": 1e-3, "prototypes": 1e-3, "mapping_network": 1e-3, "identity_encoder": 1e-5}
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters() if p.requires_grad)
    encoder = {id(p) for p in module.identity_encoder.parameters()}
    assert {id(p) for p in optimizer.param_groups[-1]["params"]} == encoder
