"""Reading and writing CT volumes, normalisation, resampling, slices and the bundled samples."""

from .nifti import load_volume, read_nifti, write_nifti
from .volume import Volume

__all__ = ["Volume", "load_volume", "read_nifti", "write_nifti"]
