"""MICAModule: image -> identity encoder -> mapping network -> z -> face model -> vertices (mm).

The supervised half of the paper (section 2, Eq. 1-3)::

    z = M(E(I))            identity encoder E (face-recognition backbone), mapping network M
    V = G(z) = B z + A     the face model as a frozen linear layer, vertices in mm
    L = mean_v,c( w_v * |V_vc - V*_vc| )   region-weighted L1 (MICA's masks), w from ``region_weights``

Validation and test report the authors' metric, the mean per-vertex Euclidean distance in mm, over
the whole face (eyeballs excluded) and separately inside and outside the wound; also the distance after a
similarity fit of each prediction to its ground truth (the shape alone) and the mean shape's distance (the
baseline a model has to beat). Beside them, every per-sample metric of the evaluation protocol
(:mod:`faceregen.evaluation.protocol`: the authors' MSE in mm^2, face-region and per-part errors after a rigid
fit, inside / outside the wound, the NoW-style face-region error), logged as ``<stage>/<metric>``: the mean
over the stage's images. The NoW protocol (~0.3 s an image) runs on the first ``now_test_images`` test
images and the first ``now_val_images`` validation images of each epoch that are their sample's first
render (``light`` 0): the same images for every run, so runs compare pairwise. The test's per-image
values are kept (:meth:`MICAModule.test_sample_metrics`) for paired comparisons between settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import CatMetric, MeanMetric

from faceregen.encoders.checkpoints import load_mica_checkpoint, load_state_strict
from faceregen.encoders.feature_cache import FeatureCache
from faceregen.encoders.flip_averaging import FlipAveraging
from faceregen.encoders.readout import ReadoutStatistics, fit_ridge_readout
from faceregen.encoders.scale_averaging import ScaleAveraging
from faceregen.evaluation.linear_probe import best_fit_codes
from faceregen.evaluation.protocol import SAMPLE_METRICS, EvaluationProtocol, now_images
from faceregen.face_model.decoder import FaceModelDecoder, evaluation_vertices
from faceregen.face_model.decoder import region_weights as per_vertex_region_weights
from faceregen.face_model.linear import LinearFaceModel
from faceregen.face_model.symmetry import code_mirror
from faceregen.metrics import masked_mean_distance_mm, per_vertex_distance_mm, similarity_aligned_distance_mm
from lightning_modules.optimization import encoder_parameter_groups, optimizer_with_scheduler

log = logging.getLogger(__name__)

#: names of the distance metrics, per stage: ``<stage>/<name>``. ``aligned_distance_mm``: after a
#: similarity fit of each prediction to its ground truth (shape without size and pose);
#: ``mean_shape_distance_mm``: the face model's mean shape as the prediction (the baseline to beat).
DISTANCE_METRICS = ("mean_distance_mm", "wound_distance_mm", "intact_distance_mm", "aligned_distance_mm", "mean_shape_distance_mm")


class MICAModule(pl.LightningModule):
    """MICA as a LightningModule.

    Args:
        identity_encoder: backbone wrapper with ``feature_dim`` and ``normalize_input(uint8 images)``.
        mapping_network: partial constructor ``(input_dim, output_dim) -> nn.Module`` (MICA's
            mapping network); its sizes follow the encoder and the face model.
        face_model: the linear face model of the data; becomes the frozen decoder.
        region_weights: ordered ``region -> weight`` (MICA: eyeballs 0.01, ears 0.01, face 150).
        optimizer: partial optimizer constructor taking parameter groups.
        backbone_lr: learning rate of the backbone's trainable layers (None: the optimizer's lr).
        scheduler: optional partial LR scheduler.
        base_checkpoint: MICA-layout checkpoint (``mica.tar`` or the embedded base model) to start from.
        n_components: how many face-model components the mapping network predicts (None: all).
        now_val_images / now_test_images: how many images get the NoW protocol, per validation epoch / test:
            the first ones (in the split's order) that are their sample's first render (``light`` 0).
        readout_init: ``"ridge"``: before the first training step, fit the (linear) mapping network in
            closed form to the training images' best-fit codes, toward the read-out it starts from, the
            ridge strength chosen on the validation images (:mod:`faceregen.encoders.readout`); epoch 0
            validates it as fitted (no optimizer step), SGD fine-tunes from epoch 1. None: SGD only (MICA).
        base_statistics: read-out statistics of the base stage's complete faces (``readout_statistics.npz``;
            :meth:`readout_statistics`) for ``readout_init=ridge``: the read-out is fitted on them pooled with
            the training images' rather than toward the read-out it starts from. They must be this encoder's
            features: the embedded base model's beside it, the SwAV stage's beside ``mica_ssl.tar``.
        flip_averaging: predict the code from each photo and from its mirror image and average them
            (:mod:`faceregen.encoders.flip_averaging`); the closed-form read-out then also learns from every
            training image's flip with its head's mirrored code, and SGD from each image or its flip at
            random. Needs a face model symmetric about ``x = 0``.
        chip_scales: average the codes predicted from each chip magnified by each of these factors about its
            centre (:mod:`faceregen.encoders.scale_averaging`; 1.0: the chip as aligned); the closed-form
            read-out then learns from every training chip at every scale, SGD from each chip at one drawn at
            random. None: the chip as aligned only.
        feature_cache_dir: keep the identity encoder's mid-level features here while they are fixed (every
            setting but ``scratch``), keyed by the encoder's weights and each view's bytes, and reuse them across
            epochs, runs and seeds (:mod:`faceregen.encoders.feature_cache`); None: encode every time. Not used
            with the final embedding (``feature_stages=null``).
    """

    def __init__(
        self,
        identity_encoder: nn.Module,
        mapping_network: Callable[..., nn.Module],
        face_model: LinearFaceModel,
        region_weights: Mapping[str, float],
        optimizer: Callable[..., torch.optim.Optimizer],
        backbone_lr: float | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        base_checkpoint: str | None = None,
        n_components: int | None = None,
        now_val_images: int = 16,
        now_test_images: int = 60,
        readout_init: str | None = None,
        base_statistics: str | None = None,
        flip_averaging: bool = False,
        chip_scales: Sequence[float] | None = None,
        feature_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            ignore=["identity_encoder", "mapping_network", "face_model", "optimizer", "scheduler", "feature_cache_dir"])
        self.identity_encoder = identity_encoder
        self.face_model_decoder = FaceModelDecoder(face_model, n_components)
        self.mapping_network = mapping_network(
            input_dim=identity_encoder.feature_dim, output_dim=self.face_model_decoder.n_components
        )
        self.register_buffer("vertex_weights", torch.from_numpy(per_vertex_region_weights(face_model, region_weights)))
        self.register_buffer("evaluation_mask", torch.from_numpy(evaluation_vertices(face_model)))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.distance = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in ("val", "test") for name in DISTANCE_METRICS}
        )
        self.protocol = EvaluationProtocol.for_face_model(face_model)
        self.sample_metrics = nn.ModuleDict(
            {f"{stage}_{name}": CatMetric(nan_strategy="disable") for stage in ("val", "test") for name in (*SAMPLE_METRICS, "index")}
        )
        self._now_images_seen = 0
        if readout_init not in (None, "ridge"):
            raise ValueError(f"readout_init={readout_init!r}: expected null or 'ridge'")
        if readout_init and not getattr(self.mapping_network, "is_linear", False):
            raise ValueError("readout_init=ridge fits a linear read-out: set model.mapping_network.hidden_dim=null "
                             "and hidden_layers=0")
        if base_statistics and not readout_init:
            raise ValueError(f"base_statistics={base_statistics!r} serves the closed-form read-out: set readout_init=ridge")
        self._face_model = face_model
        self.code_mirror = code_mirror(face_model, self.face_model_decoder.n_components) if flip_averaging else None
        self.flip_averaging = FlipAveraging(self.code_mirror) if flip_averaging else None
        self.scale_averaging = ScaleAveraging(chip_scales) if chip_scales else None
        if feature_cache_dir and identity_encoder.feature_stages is not None:
            identity_encoder.use_feature_cache(FeatureCache(feature_cache_dir))
        if base_checkpoint:
            self.load_base_checkpoint(base_checkpoint)

    # --- model ---------------------------------------------------------------------------------
    def load_base_checkpoint(self, path: str) -> None:
        """Start from a MICA-layout checkpoint: identity-encoder backbone + mapping network."""
        encoder_state, mapping_state = load_mica_checkpoint(path)
        self.identity_encoder.load_encoder_state(encoder_state, source=f"{path} (encoder)")
        load_state_strict(self.mapping_network, mapping_state, source=f"{path} (mapping network)")

    @property
    def faces(self) -> np.ndarray:
        """The face model's triangles (F, 3)."""
        return self.protocol.faces

    def encode(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Shape code z (B, K) from aligned uint8 images (B, 3, S, S); with ``flip_averaging``, the mean of the
        image's and its mirror image's (mirrored back); with ``chip_scales``, each of those the mean over the
        scales."""
        if self.flip_averaging is not None:
            return self.flip_averaging(self._predict_code, images_uint8)
        return self._predict_code(images_uint8)

    def _predict_code(self, images_uint8: torch.Tensor) -> torch.Tensor:
        inputs = self.identity_encoder.normalize_input(images_uint8)
        if self.scale_averaging is not None:
            return self.scale_averaging(self._code_of_input, inputs)
        return self._code_of_input(inputs)

    def _training_code(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """A training step's code: one pass, each chip at one of ``chip_scales`` drawn at random."""
        inputs = self.identity_encoder.normalize_input(images_uint8)
        if self.scale_averaging is not None:
            inputs = self.scale_averaging.random_rescale(inputs)
        return self._code_of_input(inputs)

    def _code_of_input(self, inputs: torch.Tensor) -> torch.Tensor:
        """z = M(E(x)) of the backbone's float input."""
        return self.mapping_network(self.identity_encoder(inputs))

    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """Vertices (B, V, 3) in mm."""
        return self.face_model_decoder(self.encode(images_uint8))

    def region_weighted_l1(self, pred_mm: torch.Tensor, gt_mm: torch.Tensor) -> torch.Tensor:
        """``mean_{b,v,c} w_v |pred - gt|`` (MICA's masked L1, in mm)."""
        return ((pred_mm - gt_mm).abs() * self.vertex_weights[:, None]).mean()

    # --- the read-out in closed form ---------------------------------------------------------------
    @torch.no_grad()
    def _raw_features_and_heads(self, loader) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Identity features before their standardisation (C, N, D) of each chip at each of the C
        ``chip_scales`` (C = 1 without), those of the mirror images (C, N, D; None without
        ``flip_averaging``) and the heads (N, V, 3); eval mode."""
        encoder = self.identity_encoder

        def features_of(images: torch.Tensor) -> torch.Tensor:
            views = [images] if self.scale_averaging is None else self.scale_averaging.views(images)
            pooled = [encoder.pooled_stages(v) if encoder.feature_standardizer is not None else encoder(v) for v in views]
            return torch.stack(pooled)

        features, flipped, heads = [], [], []
        for batch in loader:
            images = encoder.normalize_input(batch["image"].to(self.device))
            features.append(features_of(images))
            if self.flip_averaging is not None:
                flipped.append(features_of(images.flip(-1)))
            heads.append(batch["vertices_mm"].numpy())
        as_array = lambda parts: torch.cat(parts, dim=1).double().cpu().numpy() if parts else None  # noqa: E731
        return as_array(features), as_array(flipped), np.concatenate(heads)

    def _best_fit_codes(self, heads: np.ndarray) -> np.ndarray:
        return best_fit_codes(self._face_model, heads, self.face_model_decoder.n_components)

    def _statistics(self, features: np.ndarray, flipped: np.ndarray | None, heads: np.ndarray) -> ReadoutStatistics:
        """The read-out's training set: the images at each chip scale (features (C, N, D)), and with
        ``flip_averaging`` their mirror images with the mirrored heads' codes."""
        codes = self._best_fit_codes(heads)
        views = [(view, codes) for view in features]
        if flipped is not None:
            mirrored = self.code_mirror(codes)
            views += [(view, mirrored) for view in flipped]
        statistics = ReadoutStatistics.of(*views[0])
        for view in views[1:]:
            statistics = statistics.pooled(ReadoutStatistics.of(*view))
        return statistics

    def readout_statistics(self, loader) -> ReadoutStatistics:
        """What a read-out learns from ``loader``'s images: their features before standardisation and their
        heads' best-fit codes, with their mirror images under ``flip_averaging`` (the base stage keeps them
        for the fine-tuning's read-out)."""
        training = self.training
        self.eval()
        statistics = self._statistics(*self._raw_features_and_heads(loader))
        self._flush_feature_cache()
        self.train(training)
        return statistics

    @torch.no_grad()
    def fit_readout(self, train_loader, val_loader) -> None:
        """``readout_init=ridge`` (see the class docstring). The mid-level features' standardisation first
        takes the training images' mean and variance (the encoder may have changed since the statistics were
        last set, e.g. by SwAV: statistics that no longer fit made the first SGD epoch of ssl_20pct jump from
        3.8 to 6.6 mm). With ``base_statistics`` the ridge is fitted on those pooled with the training
        images' (no prior read-out); else toward the read-out the module starts from."""
        training = self.training
        self.eval()
        features, flipped, heads = self._raw_features_and_heads(train_loader)
        standardizer = self.identity_encoder.feature_standardizer
        if standardizer is not None:
            seen = (features if flipped is None else np.concatenate([features, flipped])).reshape(-1, features.shape[-1])
            standardizer.running_mean.copy_(torch.from_numpy(seen.mean(0)))
            standardizer.running_var.copy_(torch.from_numpy(seen.var(0, ddof=1)))
            standardizer.num_batches_tracked.fill_(1)
        statistics = self._statistics(features, flipped, heads)
        output = self.mapping_network.output
        prior = output.weight.double().cpu().numpy().T if self.hparams.base_checkpoint else None
        path = self.hparams.base_statistics
        if path:
            try:
                statistics = statistics.pooled(ReadoutStatistics.load(path))
            except ValueError as err:
                raise ValueError(f"base_statistics={path}: {err}") from err
            prior = None
        # the views' mean feature: the linear read-out of it is the mean of the views' codes, as predicted
        val_features, val_flipped, val_heads = self._raw_features_and_heads(val_loader)
        self._flush_feature_cache()
        val_features, val_flipped = val_features.mean(0), None if val_flipped is None else val_flipped.mean(0)
        if standardizer is not None:
            mean = standardizer.running_mean.double().cpu().numpy()
            scale = np.sqrt(standardizer.running_var.double().cpu().numpy() + standardizer.eps)
            statistics, val_features = statistics.standardized(mean, scale), (val_features - mean) / scale
            val_flipped = None if val_flipped is None else (val_flipped - mean) / scale
        face = self.protocol.face
        k = self.face_model_decoder.n_components
        readout = fit_ridge_readout(
            statistics, val_features, val_heads[:, face],
            self._face_model.basis_mm[face][:, :, :k], self._face_model.mean_mm[face], prior_weights=prior,
            val_flipped_features=val_flipped, code_mirror=self.code_mirror,
        )
        output.weight.copy_(torch.from_numpy(readout.weights.T))
        output.bias.copy_(torch.from_numpy(readout.bias))
        log.info("read-out fitted in closed form on %d views of the images (mirror images, chip scales)%s: "
                 "alpha %.3g, validation face error %.3f mm",
                 statistics.count, f" (with {path})" if path else "", readout.alpha, readout.val_face_mm)
        self.train(training)

    def on_fit_start(self) -> None:
        if self.hparams.readout_init and self.trainer.ckpt_path is None:
            datamodule = self.trainer.datamodule
            self.fit_readout(datamodule.train_dataloader(), datamodule.val_dataloader())

    def on_train_epoch_start(self) -> None:
        """With ``readout_init``, epoch 0 takes no optimizer step (:meth:`optimizer_step`) and runs the identity
        encoder in eval mode, so that its batch norms keep the statistics the read-out was fitted with and the
        first validation is the closed form's as fitted (a trained backbone's, scratch's, drifted otherwise:
        1.847 -> 1.867 mm on validation); it trains from epoch 1."""
        if self.hparams.readout_init:
            self.identity_encoder.train(self.current_epoch > 0)

    # --- steps ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The region-weighted L1; with ``flip_averaging``, on each image or its mirror image at random, with
        ``chip_scales`` at one of them at random (one pass, without the averaging)."""
        images, heads = batch["image"], batch["vertices_mm"]
        if self.flip_averaging is not None:
            images, heads = self.flip_averaging.random_flip(images, heads)
        pred = self.face_model_decoder(self._training_code(images))
        loss = self.region_weighted_l1(pred, heads)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(pred))
        return loss

    def _evaluate(self, batch: dict, stage: str) -> torch.Tensor:
        pred = self(batch["image"])
        gt = batch["vertices_mm"]
        loss = self.region_weighted_l1(pred, gt)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=stage == "val", batch_size=len(pred), sync_dist=True)
        distance = per_vertex_distance_mm(pred, gt)
        evaluated = self.evaluation_mask.expand_as(distance)
        wound = batch["wound_mask"] & evaluated & batch["has_wound_mask"][:, None]
        intact = ~batch["wound_mask"] & evaluated & batch["has_wound_mask"][:, None]
        aligned = similarity_aligned_distance_mm(pred, gt, self.evaluation_mask)
        mean_shape = per_vertex_distance_mm(self.face_model_decoder.mean_mm.expand_as(gt), gt)
        for name, values, mask in zip(
            DISTANCE_METRICS,
            (distance, distance, distance, aligned, mean_shape),
            (evaluated, wound, intact, evaluated, evaluated),
        ):
            total, count = masked_mean_distance_mm(values, mask)
            if count > 0:
                metric = self.distance[f"{stage}_{name}"]
                metric.update(total / count, weight=count)
                self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "mean_distance_mm")
        self._update_sample_metrics(pred, batch, stage)
        return loss

    def _update_sample_metrics(self, pred: torch.Tensor, batch: dict, stage: str) -> None:
        """The protocol's per-image metrics of this batch; NoW on the stage's first ``now_<stage>_images``
        images that are their sample's first render (``light`` 0)."""
        first = (batch["light"] == 0).cpu().numpy() if "light" in batch else np.ones(len(pred), bool)
        now = now_images(first, self.hparams[f"now_{stage}_images"], self._now_images_seen)
        self._now_images_seen += int(now.sum())
        wound = (batch["wound_mask"] & batch["has_wound_mask"][:, None]).cpu().numpy()
        values = self.protocol.per_sample(pred.detach().cpu().numpy(), batch["vertices_mm"].cpu().numpy(), wound, now=now)
        for name, value in values.items():
            self.sample_metrics[f"{stage}_{name}"].update(torch.as_tensor(value, dtype=torch.float32, device=self.device))
        self.sample_metrics[f"{stage}_index"].update(batch["index"].to(self.device, torch.float32))

    def _log_sample_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """Log each protocol metric's mean over the stage's images (NaN entries left out); returns the
        per-image values (with ``index``, the cache item of each image) and resets them."""
        values = {name: self.sample_metrics[f"{stage}_{name}"].compute() for name in (*SAMPLE_METRICS, "index")}
        for name in SAMPLE_METRICS:
            finite = values[name][torch.isfinite(values[name])]
            if len(finite):
                self.log(f"{stage}/{name}", finite.mean(), sync_dist=False)
        for name in (*SAMPLE_METRICS, "index"):
            self.sample_metrics[f"{stage}_{name}"].reset()
        return values

    def on_validation_epoch_start(self) -> None:
        self._now_images_seen = 0

    def on_test_epoch_start(self) -> None:
        self._now_images_seen = 0

    def on_validation_epoch_end(self) -> None:
        self._log_sample_metrics("val")
        self._flush_feature_cache()

    def on_test_epoch_end(self) -> None:
        self._test_samples = self._log_sample_metrics("test")
        self._flush_feature_cache()

    def on_predict_epoch_end(self) -> None:
        self._flush_feature_cache()

    def _flush_feature_cache(self) -> None:
        """Write the identity features computed since the last flush (``feature_cache_dir``)."""
        if self.identity_encoder.feature_cache is not None:
            self.identity_encoder.feature_cache.flush()

    def test_sample_metrics(self) -> dict[str, np.ndarray]:
        """The last test's per-image metrics (:data:`SAMPLE_METRICS` and ``index``, the cache item), (N,) each."""
        return {name: value.cpu().numpy() for name, value in getattr(self, "_test_samples", {}).items()}

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self(batch["image"])

    # --- optimisation --------------------------------------------------------------------------
    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """With ``readout_init``, epoch 0 is the closed-form read-out as fitted: its training loss is computed
        (the closure runs) but no step is taken, so the first validation and checkpoint are the closed form's
        and SGD, from epoch 1, is kept only where it improves on it."""
        if self.hparams.readout_init and epoch == 0:
            optimizer_closure()
            return
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

    def configure_optimizers(self):
        """Two parameter groups: mapping network (``lr``) and the backbone's trainable layers (``backbone_lr``)."""
        groups = encoder_parameter_groups({"mapping_network": self.mapping_network}, self.identity_encoder, self.hparams.backbone_lr)
        return optimizer_with_scheduler(groups, self.optimizer_factory, self.scheduler_factory)
