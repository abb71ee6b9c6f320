"""SwAVModule: self-supervised pre-training of MICA's identity encoder (paper section 3.1-3.2, Eq. 4-9).

For every unlabelled aligned face image, multi-crop views x_nt (faceregen.ssl.multicrop) go through::

    f_theta(x)  = E(x)          the identity encoder MICA fine-tunes later
                = M(E(x))       with ``use_mapping_network`` (the 300-d shape code; M is pre-trained too)
    z           = h(f) / ||h(f)||_2                         projection head h (lightly's SwaVProjectionHead)
    scores_k    = z^T c_k                                   prototypes C (lightly's SwaVPrototypes)
    q           = Sinkhorn(scores / eps) over the batch     codes of the high-resolution views (Eq. 7-9)
    p_t         = softmax(scores_t / tau)                   (Eq. 5)
    L           = swapped cross-entropy -sum_k q_s log p_t  over all pairs of views (Eq. 4, 6)

The loss and the Sinkhorn-Knopp codes are lightly's ``SwaVLoss``. Unlike the authors' script (which
optimised only the backbone), the encoder, the projection head and the prototypes all train, as in the
paper (Eq. 6 is minimised over C and theta). lightly's prototypes carry a bias (the official ones do
not); Sinkhorn's row scaling absorbs it in the codes.

Details:
- Prototypes are renormalised to the unit sphere at the start of every training batch, and stay fixed
  for the first ``freeze_prototypes_epochs`` epochs (as lightly's examples, which pass the epoch as the
  step). They are frozen the way the official SwAV code does it, by dropping their gradient after the
  backward pass, so under DDP every parameter still takes part in every step.
- Views come in ``batch["views"]``: the first ``n_high_resolution_crops`` at the encoder's input size S
  (these get codes), the rest low-resolution. The identity encoder checks its input size
  (``check_chip_shape``), so by default (``resize_low_resolution``) low-resolution views are resized up to
  S inside this module: required for IResNet (its fc expects 112 px); an encoder that accepts smaller
  chips (dlib's ResNet pools globally) can take them as they are with ``resize_low_resolution=False``.
  Views of the same size go through the encoder as one batch.
- With ``queue_length > 0`` each high-resolution view has a queue (lightly's ``MemoryBankModule``) of
  past projections, filled from the start and added to the Sinkhorn batch from ``queue_start_epoch``.
- Under DDP (``trainer.world_size > 1``), Sinkhorn normalises over the global batch
  (``sinkhorn_gather_distributed``) and the queues enqueue the projections of all ranks, so they stay
  identical on every rank.

Logged: ``ssl/loss`` (step and epoch), ``ssl/prototype_entropy`` (epoch; normalised entropy of the mean
soft assignment, 1 = prototypes used evenly, low = collapse) and on validation
``ssl/val_retrieval_top1`` (nearest-neighbour identity retrieval with the encoder's embedding of the
aligned image; the val batches carry ``"image"`` and ``"identity"``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from torch import nn
from torchmetrics import Metric
from torchvision.transforms.v2 import functional as TF

from faceregen.encoders.checkpoints import cpu_copy
from faceregen.ssl.retrieval import RetrievalTop1
from lightning_modules.optimization import encoder_parameter_groups, optimizer_with_scheduler


class PrototypeUsage(Metric):
    """``H(mean_n p_n) / log K``, ``p_n = softmax(z_n^T C / tau)``: how evenly the prototypes are used.

    1 when the average assignment is uniform over the K prototypes, 0 when every view goes to one.
    """

    full_state_update = False

    def __init__(self, n_prototypes: int) -> None:
        super().__init__()
        self.n_prototypes = n_prototypes
        self.add_state("assignment_sum", default=torch.zeros(n_prototypes), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, probabilities: torch.Tensor) -> None:
        """probabilities: (N, K) soft assignments (rows sum to 1)."""
        self.assignment_sum += probabilities.detach().sum(dim=0)
        self.count += probabilities.shape[0]

    def compute(self) -> torch.Tensor:
        mean = self.assignment_sum / self.count
        return -torch.special.xlogy(mean, mean).sum() / math.log(self.n_prototypes)


class SwAVModule(pl.LightningModule):
    """SwAV on unlabelled aligned face images, training the identity encoder MICA starts from.

    Args:
        identity_encoder: module with ``feature_dim``, ``input_size``, ``encoder_state_dict()`` and
            ``normalize_input(uint8 (B, 3, S, S)) -> float``; ``forward(float) -> (B, feature_dim)``
            (an :class:`~faceregen.encoders.identity_encoder.IdentityEncoder`).
        use_mapping_network: the SwAV feature is ``M(E(I))`` instead of ``E(I)``.
        mapping_network: partial constructor ``(input_dim) -> nn.Module`` with ``output_dim`` (MICA's
            mapping network, its output the code MICA predicts: the SSL stage builds it so); needed only
            with ``use_mapping_network``.
        projection_hidden_dim, projection_output_dim: projection head sizes (SwAV: 2048, 128).
        n_prototypes: K (SwAV: 3000; fewer for small data).
        freeze_prototypes_epochs: epochs at the start during which the prototypes do not move.
        temperature: tau of Eq. 5.
        sinkhorn_epsilon, sinkhorn_iterations: epsilon of Eq. 7 and Sinkhorn-Knopp iterations.
        n_high_resolution_crops: the leading views that get codes (SwAV's ``crops_for_assign``: 2).
        resize_low_resolution: resize low-resolution views up to the encoder's input size.
        queue_length: projections kept per high-resolution view (0: no queue).
        queue_start_epoch: first epoch whose Sinkhorn batches include the queue.
        optimizer: partial optimizer constructor taking parameter groups (paper: Adam, lr 1e-3).
        backbone_lr: learning rate of the identity encoder (None: the optimizer's lr). A pre-trained
            encoder without batch norm (dlib's) drifts under SwAV at 1e-3: the loss only sees its
            standardised, L2-normalised output, so nothing holds the activations' scale.
        scheduler: optional partial LR scheduler (stepped every epoch).
    """

    def __init__(
        self,
        identity_encoder: nn.Module,
        use_mapping_network: bool = False,
        mapping_network: Callable[..., nn.Module] | None = None,
        projection_hidden_dim: int = 512,
        projection_output_dim: int = 128,
        n_prototypes: int = 512,
        freeze_prototypes_epochs: int = 1,
        temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        n_high_resolution_crops: int = 2,
        resize_low_resolution: bool = True,
        queue_length: int = 0,
        queue_start_epoch: int = 15,
        optimizer: Callable[..., torch.optim.Optimizer] = functools.partial(torch.optim.Adam, lr=1e-3),
        backbone_lr: float | None = None,
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
    ) -> None:
        super().__init__()
        if use_mapping_network and mapping_network is None:
            raise ValueError("use_mapping_network=True needs a mapping_network constructor (partial)")
        if n_high_resolution_crops < 1 or queue_length < 0 or freeze_prototypes_epochs < 0 or n_prototypes < 2:
            raise ValueError(
                f"n_high_resolution_crops={n_high_resolution_crops} (>= 1), queue_length={queue_length} (>= 0), "
                f"freeze_prototypes_epochs={freeze_prototypes_epochs} (>= 0), n_prototypes={n_prototypes} (>= 2)"
            )
        self.save_hyperparameters(ignore=["identity_encoder", "mapping_network", "optimizer", "scheduler"])
        self.identity_encoder = identity_encoder
        self.mapping_network = mapping_network(input_dim=identity_encoder.feature_dim) if use_mapping_network else None
        feature_dim = self.mapping_network.output_dim if use_mapping_network else identity_encoder.feature_dim
        self.projection_head = SwaVProjectionHead(feature_dim, projection_hidden_dim, projection_output_dim)
        self.prototypes = SwaVPrototypes(projection_output_dim, n_prototypes)
        self.criterion = SwaVLoss(temperature, sinkhorn_iterations, sinkhorn_epsilon)
        self.queues = nn.ModuleList(
            MemoryBankModule(size=(queue_length, projection_output_dim)) for _ in range(n_high_resolution_crops if queue_length else 0)
        )
        self.prototype_usage = PrototypeUsage(n_prototypes)
        self.val_retrieval = RetrievalTop1()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def setup(self, stage: str) -> None:
        """Sinkhorn over the global batch, and shared queues, when training on several processes."""
        distributed = self.trainer.world_size > 1
        self.criterion.sinkhorn_gather_distributed = distributed
        for queue in self.queues:
            queue.gather_distributed = distributed

    # --- model ---------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """f_theta: normalised float chips (B, 3, s, s) -> E(x), or M(E(x)) with the mapping network."""
        embedding = self.identity_encoder(images)
        return embedding if self.mapping_network is None else self.mapping_network(embedding)

    def encoder_input(self, view: torch.Tensor) -> torch.Tensor:
        """uint8 view (B, 3, s, s) -> the encoder's float input (resized to S first if asked)."""
        size = self.identity_encoder.input_size
        if self.hparams.resize_low_resolution and view.shape[-2:] != (size, size):
            view = TF.resize(view, [size, size], antialias=True)
        return self.identity_encoder.normalize_input(view)

    def project(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """uint8 views, each (B, 3, s, s) -> unit projections z, each (B, D); same-size views share a batch."""
        inputs = [self.encoder_input(view) for view in views]
        projections: list[torch.Tensor | None] = [None] * len(inputs)
        for shape in dict.fromkeys(x.shape for x in inputs):
            same = [i for i, x in enumerate(inputs) if x.shape == shape]
            z = F.normalize(self.projection_head(self.features(torch.cat([inputs[i] for i in same]))), dim=1)
            for i, chunk in zip(same, z.chunk(len(same))):
                projections[i] = chunk
        return projections

    def queue_scores(self, high_resolution_z: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """Prototype scores of the queued projections (before this batch enters them); None when unused."""
        if not self.queues:
            return None
        queued = [queue(z.detach(), update=True)[1].T for queue, z in zip(self.queues, high_resolution_z)]
        if self.current_epoch < self.hparams.queue_start_epoch:
            return None
        with torch.no_grad():
            return [self.prototypes(z) for z in queued]

    def split_views(self, views: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(high-resolution views, low-resolution views); the former must be at the encoder's input size."""
        n_high = self.hparams.n_high_resolution_crops
        size = self.identity_encoder.input_size
        if len(views) < n_high or any(v.shape[-2:] != (size, size) for v in views[:n_high]):
            raise ValueError(
                f"views: expected the first {n_high} of them at the encoder input size {size} px, got sizes "
                f"{[tuple(v.shape[-2:]) for v in views]}"
            )
        return views[:n_high], views[n_high:]

    # --- steps ---------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        with torch.no_grad():
            self.prototypes.normalize()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if "views" not in batch:
            raise ValueError("SwAV training batches need 'views' (give the datamodule an ssl_transform, mode='ssl')")
        high, low = self.split_views(list(batch["views"]))
        z = self.project(high + low)
        scores = [self.prototypes(zi) for zi in z]
        high_scores, low_scores = scores[: len(high)], scores[len(high) :]
        loss = self.criterion(high_scores, low_scores, self.queue_scores(z[: len(high)]))
        self.prototype_usage.update(torch.cat([F.softmax(s.detach() / self.hparams.temperature, dim=1) for s in high_scores]))
        batch_size = len(high[0])
        self.log("ssl/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        self.log("ssl/prototype_entropy", self.prototype_usage, on_step=False, on_epoch=True)
        return loss

    def on_after_backward(self) -> None:
        """Keep the prototypes fixed during the first ``freeze_prototypes_epochs`` epochs (drop their gradient)."""
        if self.current_epoch < self.hparams.freeze_prototypes_epochs:
            for parameter in self.prototypes.parameters():
                parameter.grad = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Embed the aligned images with the identity encoder; retrieval is scored over the whole epoch."""
        embeddings = self.identity_encoder(self.identity_encoder.normalize_input(batch["image"]))
        self.val_retrieval.update(embeddings, batch["identity"])
        self.log("ssl/val_retrieval_top1", self.val_retrieval, on_step=False, on_epoch=True, prog_bar=True)

    # --- export and optimisation ---------------------------------------------------------------
    def encoder_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """CPU copies of the weights MICA starts from: ``{"identity_encoder": the encoder's
        ``encoder_state_dict()``, "mapping_network": its state (only with use_mapping_network)}``; they load
        with ``IdentityEncoder.load_encoder_state`` and into ``MappingNetwork``."""
        state = {"identity_encoder": self.identity_encoder.encoder_state_dict()}
        if self.mapping_network is not None:
            state["mapping_network"] = cpu_copy(self.mapping_network.state_dict())
        return state

    def configure_optimizers(self):
        """Groups: projection head, prototypes, mapping network (``lr``), then the encoder (``backbone_lr``)."""
        heads = {"projection_head": self.projection_head, "prototypes": self.prototypes, "mapping_network": self.mapping_network}
        groups = encoder_parameter_groups(heads, self.identity_encoder, self.hparams.backbone_lr)
        return optimizer_with_scheduler(groups, self.optimizer_factory, self.scheduler_factory)
