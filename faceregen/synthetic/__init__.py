"""Synthetic Cir3D-FaIR-style data: wounds carved into random heads of a face model, rendered in grey."""

from faceregen.synthetic.generator import generate_dataset
from faceregen.synthetic.wounds import TISSUE_LOSS_SITES, WOUND_TYPES, Wound, make_wound

__all__ = ["TISSUE_LOSS_SITES", "WOUND_TYPES", "Wound", "generate_dataset", "make_wound"]
