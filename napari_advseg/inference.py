"""Feeding a volume to a segmentation model and bringing its outputs back to the volume's grid.

The path of every slice: Hounsfield units -> the model's normalisation -> in-plane resampling to
the model's pixel spacing -> padding to the model's stride -> network -> cropping -> resampling
of the class probabilities back to the source grid -> argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .class_map import class_map
from .data.normalization import NormalizationStats
from .data.resample import grid_shape, resize_images, resize_labels
from .data.slices import Crop, pad_to_multiple
from .data.volume import Volume
from .errors import InvalidInputError
from .segmentation import ModelSpec, SegmentationModel


@dataclass
class ModelGridSlices:
    """A volume's axial slices as the model sees them.

    Attributes
    ----------
    images
        (Z, 1, H', W') normalised slices at the model's spacing, padded to its stride.
    crop
        Where the unpadded slice lies in the padded one.
    model_shape
        (H', W') before padding.
    source_shape
        (H, W) of the source slices.
    stats
        The subject's normalisation statistics.
    """

    images: torch.Tensor
    crop: Crop
    model_shape: tuple[int, int]
    source_shape: tuple[int, int]
    stats: NormalizationStats

    def to_source(self, maps: torch.Tensor) -> torch.Tensor:
        """Crop padded (N, C, H', W') maps and resample them onto the source slices' grid."""
        return resize_images(self.crop(maps), self.source_shape)


def model_grid_shape(volume: Volume, spec: ModelSpec) -> tuple[int, int]:
    """In-plane size of the volume's slices at the model's spacing; checks the minimum size."""
    shape = grid_shape(volume.image.shape[1:], volume.spacing[1:], spec.pixel_spacing)
    if min(shape) < spec.min_size:
        raise InvalidInputError(
            f"{volume.name}: slices of {volume.image.shape[1]}x{volume.image.shape[2]} pixels "
            f"at {volume.spacing[1]:g}x{volume.spacing[2]:g} mm are {shape[0]}x{shape[1]} at "
            f"the model's {spec.pixel_spacing[0]:g} mm; the network needs at least "
            f"{spec.min_size} pixels a side."
        )
    return shape


def to_model_grid(volume: Volume, spec: ModelSpec, pad: bool = True) -> ModelGridSlices:
    """Normalise, resample and (optionally) pad all slices of ``volume`` for the model."""
    shape = model_grid_shape(volume, spec)
    normalized, stats = spec.normalization.apply(volume.image)
    images = resize_images(torch.from_numpy(normalized)[:, None], shape)
    crop = Crop(slice(0, shape[0]), slice(0, shape[1]))
    if pad:
        images, crop = pad_to_multiple(images, spec.input_multiple, value=float(normalized.min()))
    return ModelGridSlices(images.contiguous(), crop, shape, tuple(volume.image.shape[1:]), stats)


def labels_to_model_grid(volume: Volume, spec: ModelSpec) -> torch.Tensor:
    """The volume's labels at the model's spacing, unpadded, as (Z, H', W') int64."""
    shape = model_grid_shape(volume, spec)
    return resize_labels(torch.from_numpy(volume.require_labels().astype(np.int64)), shape)


@torch.inference_mode()
def predict_probabilities(
    model: SegmentationModel, slices: ModelGridSlices, batch_size: int = 16
) -> torch.Tensor:
    """Class probabilities (Z, C + 1, H, W) on the source grid, computed on the model's device."""
    outputs = []
    for start in range(0, slices.images.shape[0], batch_size):
        batch = slices.images[start : start + batch_size].to(model.device)
        probabilities = torch.softmax(model(batch).float(), dim=1)
        outputs.append(slices.to_source(probabilities).cpu())
    return torch.cat(outputs)


def segment_volume(model: SegmentationModel, volume: Volume, batch_size: int = 16) -> np.ndarray:
    """Label volume (Z, Y, X) uint8 predicted by ``model`` on ``volume``'s own grid."""
    probabilities = predict_probabilities(model, to_model_grid(volume, model.spec), batch_size)
    return class_map(probabilities).numpy().astype(np.uint8)
