"""npe2 reader, writer and sample data for NIfTI CT volumes and label maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.nifti import is_nifti_path, read_nifti, write_nifti
from ..data.samples import PhantomCohort, load_real_case
from ..data.volume import Volume, check_image
from ..errors import InvalidInputError
from ..labels import DEFAULT_LABEL_MAP
from .layer_data import grid_of, image_layer_data, labels_layer_data, volume_layers

LayerData = tuple[np.ndarray, dict[str, Any], str]


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """Claim ``.nii``/``.nii.gz`` files (one or several)."""
    paths = [path] if isinstance(path, str) else list(path)
    return read_nifti_layers if paths and all(is_nifti_path(p) for p in paths) else None


def looks_like_labels(data: np.ndarray) -> bool:
    """Integer data with a few small non-negative values: a label map, not a CT."""
    if not np.issubdtype(data.dtype, np.integer):
        return False
    values = np.unique(data)
    return values.size <= 64 and values.min() >= 0 and values.max() < 256


def read_nifti_layers(path: str | Sequence[str]) -> list[LayerData]:
    """Read NIfTI files as image or labels layers with the scans' spacing as scale."""
    layers = []
    for item in [path] if isinstance(path, str) else path:
        data, grid = read_nifti(item)
        name = Path(item).name.removesuffix(".gz").removesuffix(".nii")
        if looks_like_labels(data):
            DEFAULT_LABEL_MAP.check_values(data, str(item))
            volume = Volume(
                np.zeros(data.shape, np.float32), grid.canonical_spacing(), name=name, grid=grid
            )
            layers.append(labels_layer_data(data.astype(np.uint8), volume, name))
        else:
            volume = Volume(
                check_image(data, str(item)), grid.canonical_spacing(), name=name, grid=grid
            )
            layers.append(image_layer_data(volume, name))
    return layers


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an image layer as float32 NIfTI on its source grid (or its scale)."""
    return [str(_write(path, np.asarray(data), meta, np.float32))]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a labels layer as uint8 NIfTI on its source grid (or its scale)."""
    return [str(_write(path, np.asarray(data), meta, np.uint8))]


def _write(path: str, data: np.ndarray, meta: dict[str, Any], dtype: type) -> Path:
    if data.ndim != 3:
        raise InvalidInputError(
            f"{meta.get('name', 'layer')}: only 3D volumes can be written as NIfTI, "
            f"this layer is {data.ndim}D."
        )
    if not is_nifti_path(path):
        path = f"{path}.nii.gz"
    return write_nifti(path, data, grid_of(data, meta), dtype)


def phantom_sample() -> list[LayerData]:
    """One phantom subject (the first of the test split) with its labels."""
    cohort = PhantomCohort()
    return volume_layers(cohort.subject(cohort.split("test")[0]))


def real_ct_sample() -> list[LayerData]:
    """The real abdominal CT (TotalSegmentator example crop) with its pseudo-labels."""
    return volume_layers(load_real_case())
