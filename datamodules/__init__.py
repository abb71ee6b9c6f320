"""LightningDataModules wrapping the project's data (``faceregen`` holds the domain code)."""

from datamodules.cir3dfair import Cir3DFaIRDataModule

__all__ = ["Cir3DFaIRDataModule"]
