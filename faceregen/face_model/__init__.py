"""Linear face models ``G(z) = B z + A``: one interface, two sources (embedded Anny PCA, FLAME)."""

from faceregen.face_model.linear import FIVE_POINT_NAMES, REGION_NAMES, Landmarks, LinearFaceModel

__all__ = ["FIVE_POINT_NAMES", "REGION_NAMES", "Landmarks", "LinearFaceModel"]
