"""SwAV under DistributedDataParallel: 2 CPU processes (gloo, ddp_spawn), Sinkhorn over the global batch."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightly.loss.swav_loss import sinkhorn
from torch.utils.data import DataLoader

import test_swav as stand_ins  # a module object, so its tests are not collected twice
from faceregen.io import atomic_path

WORLD_SIZE = 2


class RecordRank(pl.Callback):
    """Each rank saves its final weights and checks the distributed Sinkhorn against the global one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def setup(self, trainer, module, stage) -> None:
        torch.set_num_threads(1)

    def on_train_end(self, trainer, module) -> None:
        rank = trainer.global_rank
        generator = torch.Generator().manual_seed(0)
        global_scores = torch.randn(2 * 12, 16, generator=generator)  # the same on every rank
        shard = global_scores.chunk(trainer.world_size)[rank]
        distributed = sinkhorn(shard, iterations=3, epsilon=0.05, gather_distributed=True)
        single = sinkhorn(global_scores, iterations=3, epsilon=0.05).chunk(trainer.world_size)[rank]
        record = {
            "parameters": {k: v.detach().clone() for k, v in module.named_parameters()},
            "queues": [q.bank.clone() for q in module.queues],
            "gather": module.criterion.sinkhorn_gather_distributed,
            "queue_gather": [q.gather_distributed for q in module.queues],
            "world_size": trainer.world_size,
            "initialized": dist.is_initialized(),
            # distributed codes are those of the whole batch's Sinkhorn, up to the per-process B factor
            "sinkhorn_error": float((distributed - single).abs().max()),
        }
        with atomic_path(self.folder / f"rank{rank}.pt") as tmp:
            torch.save(record, tmp)


def test_two_process_ddp_run_keeps_ranks_identical(tmp_path):
    torch.manual_seed(0)
    data = stand_ins.StructuredFaces(n_identities=8, per_identity=4, transform=stand_ins.tiny_multicrop())
    module = stand_ins.swav(queue_length=32, queue_start_epoch=1, freeze_prototypes_epochs=1)
    trainer = pl.Trainer(
        accelerator="cpu", devices=WORLD_SIZE, strategy="ddp_spawn", max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[RecordRank(tmp_path)], default_root_dir=tmp_path,
    )
    initial = {k: v.detach().clone() for k, v in module.named_parameters()}
    trainer.fit(module, DataLoader(data, batch_size=8, shuffle=True, drop_last=True))
    records = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    for record in records:
        assert record["world_size"] == WORLD_SIZE and record["initialized"]
        assert record["gather"] is True and record["queue_gather"] == [True, True]
        assert record["sinkhorn_error"] < 1e-5
    # identical weights (batch-norm running statistics are per rank unless sync_batchnorm) and queues
    first, second = (r["parameters"] for r in records)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert all(torch.equal(a, b) for a, b in zip(records[0]["queues"], records[1]["queues"]))
    # and it trained: the encoder and (after the frozen first epoch) the prototypes moved
    assert any(not torch.equal(first[k], initial[k]) for k in initial if k.startswith("identity_encoder."))
    assert not torch.allclose(first["prototypes.heads.0.weight"], initial["prototypes.heads.0.weight"], atol=1e-3)
