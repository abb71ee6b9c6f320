"""Self-supervised pre-training helpers (SwAV): multi-crop views of aligned faces, identity retrieval.

The SwAV LightningModule itself is :mod:`lightning_modules.swav_module`.
"""

from faceregen.ssl.multicrop import FaceMultiCrop
from faceregen.ssl.retrieval import RetrievalTop1, retrieval_top1

__all__ = ["FaceMultiCrop", "RetrievalTop1", "retrieval_top1"]
