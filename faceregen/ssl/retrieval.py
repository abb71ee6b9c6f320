"""Identity retrieval: does an image's nearest neighbour (cosine) show the same person?

    nn(i)  = argmax_{j != i} cos(e_i, e_j)
    top1   = (1/N) sum_i [identity(nn(i)) == identity(i)]

Every image is a query, so an image whose identity has no other image counts as a miss. The score
watches whether self-supervised training keeps (or builds) identity information in the encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

#: queries compared at once against all embeddings (bounds the (chunk, N) similarity block)
QUERY_CHUNK = 1024


def retrieval_top1(embeddings: torch.Tensor, identities: torch.Tensor) -> float:
    """Share of images whose nearest OTHER image by cosine similarity has the same identity.

    Args:
        embeddings: (N, D) float, N >= 2 (any scale: they are L2-normalised here).
        identities: (N,) integer identity labels.
    """
    if embeddings.ndim != 2 or identities.ndim != 1 or len(embeddings) != len(identities):
        raise ValueError(
            f"retrieval: expected embeddings (N, D) and identities (N,), got {tuple(embeddings.shape)} and "
            f"{tuple(identities.shape)}"
        )
    if len(embeddings) < 2:
        raise ValueError(f"retrieval: needs at least 2 images, got {len(embeddings)}")
    unit = F.normalize(embeddings.float(), dim=1)
    hits = 0
    for start in range(0, len(unit), QUERY_CHUNK):
        similarity = unit[start : start + QUERY_CHUNK] @ unit.T
        rows = torch.arange(similarity.shape[0], device=similarity.device)
        similarity[rows, rows + start] = -torch.inf
        nearest = similarity.argmax(dim=1)
        hits += int((identities[nearest] == identities[start : start + QUERY_CHUNK]).sum())
    return hits / len(unit)


class RetrievalTop1(Metric):
    """Accumulates embeddings and identities over an epoch (all ranks), then :func:`retrieval_top1`."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("identities", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, identities: torch.Tensor) -> None:
        self.embeddings.append(embeddings.detach().float())
        self.identities.append(identities.detach().long())

    def compute(self) -> torch.Tensor:
        return torch.tensor(retrieval_top1(dim_zero_cat(self.embeddings), dim_zero_cat(self.identities)))
