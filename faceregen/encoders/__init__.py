"""The encoder side of MICA: identity encoders (IResNet/ArcFace, dlib's ResNet) and the mapping network.

``z = M(normalize(backbone(I)))``; the face model ``G(z) = B z + A`` lives in :mod:`faceregen.face_model`.
"""

from faceregen.encoders.backbone import FREEZE_MODES, FreezableBackbone
from faceregen.encoders.checkpoints import (
    load_insightface_backbone,
    load_mica_checkpoint,
    load_state_strict,
)
from faceregen.encoders.dlib_resnet import DlibResNet, dlib_state_dict, read_dlib_records
from faceregen.encoders.identity_encoder import IdentityEncoder, build_backbone, build_identity_encoder
from faceregen.encoders.iresnet import IRESNET_LAYERS, IResNet, iresnet
from faceregen.encoders.mapping_network import MappingNetwork

__all__ = [
    "FREEZE_MODES",
    "IRESNET_LAYERS",
    "DlibResNet",
    "FreezableBackbone",
    "IResNet",
    "IdentityEncoder",
    "MappingNetwork",
    "build_backbone",
    "build_identity_encoder",
    "dlib_state_dict",
    "iresnet",
    "load_insightface_backbone",
    "load_mica_checkpoint",
    "load_state_strict",
    "read_dlib_records",
]
