"""Feeding a volume to a segmentation model and bringing its outputs back to the volume's grid.

The path of every slice: Hounsfield units -> the model's slice layout (orientation) -> the model's
normalisation -> in-plane resampling to the model's pixel spacing -> padding to the model's
stride -> network -> cropping -> resampling of the class probabilities back to the source grid
-> the canonical layout -> argmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import validation
from .class_map import class_map
from .data.normalization import NormalizationStats
from .data.orientation import IDENTITY, SliceLayout, slice_layout
from .data.resample import grid_shape, resize_images, resize_labels
from .data.slices import Crop, pad_to_multiple
from .data.volume import Volume
from .errors import InvalidInputError
from .segmentation import ModelSpec, SegmentationModel

MAX_MODEL_GRID_SIDE = 4096
"""The largest slice side, in pixels at the model's spacing, that is resampled for a model.

4096 pixels cover a 1.2 m field of view at 0.3 mm; a larger grid comes from a header whose
spacing is wrong (e.g. 3000 mm pixels), so it is refused with a message rather than allocated.
"""
ACTIVATION_FLOATS = 64
"""Floats per pixel that a network is assumed to hold while it runs on one slice (an estimate:
the shipped U-Net holds about 40 at 16 base channels)."""
FLOAT_BYTES = 4


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
        (H, W) of the source slices, in the canonical layout.
    stats
        The subject's normalisation statistics.
    layout
        How the model's slices are laid out relative to the canonical ones.
    pixel_spacing
        The model's (rows, columns) pixel size in mm.
    """

    images: torch.Tensor
    crop: Crop
    model_shape: tuple[int, int]
    source_shape: tuple[int, int]
    stats: NormalizationStats
    layout: SliceLayout = IDENTITY
    pixel_spacing: tuple[float, float] = (1.0, 1.0)

    def to_source(self, maps: torch.Tensor) -> torch.Tensor:
        """Crop padded (N, C, H', W') maps and resample them onto the source slices' grid.

        The result is in the canonical layout, (N, C, H, W) with (H, W) = ``source_shape``.
        """
        resized = resize_images(self.crop(maps), self.layout.shape(self.source_shape))
        return self.layout.invert(resized)

    def displacement_to_source_mm(self, displacement: torch.Tensor) -> torch.Tensor:
        """A padded (N, 2, H', W') field in model pixels as (N, 2, H, W) mm on the source grid.

        Channel 0 is the displacement along the source's columns (x), channel 1 along its rows
        (y), both in millimetres, whatever the model's layout and spacing.
        """
        rows_mm, cols_mm = self.pixel_spacing
        scale = torch.tensor([cols_mm, rows_mm], dtype=displacement.dtype)
        millimetres = self.crop(displacement) * scale.to(displacement.device).view(1, 2, 1, 1)
        resized = resize_images(millimetres, self.layout.shape(self.source_shape))
        return self.layout.invert_displacement(resized)

    def labels_to_model(self, labels: torch.Tensor) -> torch.Tensor:
        """Canonical (N, H, W) labels on the source grid as (N, H', W') on the model's grid."""
        return resize_labels(self.layout.apply(labels), self.model_shape)


def volume_layout(volume: Volume, spec: ModelSpec) -> SliceLayout:
    """How ``volume``'s canonical slices must be laid out for a model of ``spec``."""
    affine = volume.grid.affine if volume.grid is not None else None
    try:
        return slice_layout(spec.orientation, affine)
    except InvalidInputError as error:
        raise InvalidInputError(f"{volume.name}: {error}") from error


def model_grid_shape(volume: Volume, spec: ModelSpec) -> tuple[int, int]:
    """In-plane size of the volume's slices at the model's spacing, in the model's layout.

    Raises
    ------
    InvalidInputError
        If the slices would be smaller than the network takes, or larger than
        :data:`MAX_MODEL_GRID_SIDE` pixels a side.
    """
    layout = volume_layout(volume, spec)
    source = layout.shape(volume.image.shape[1:])
    shape = grid_shape(source, layout.spacing(volume.spacing[1:]), spec.pixel_spacing)
    described = (
        f"{volume.name}: slices of {volume.image.shape[1]}x{volume.image.shape[2]} pixels "
        f"at {volume.spacing[1]:g}x{volume.spacing[2]:g} mm are {shape[0]}x{shape[1]} at "
        f"the model's {spec.pixel_spacing[0]:g} mm"
    )
    if min(shape) < spec.min_size:
        raise InvalidInputError(
            f"{described}; the network needs at least {spec.min_size} pixels a side."
        )
    if max(shape) > MAX_MODEL_GRID_SIDE:
        raise InvalidInputError(
            f"{described}, more than the {MAX_MODEL_GRID_SIDE} a side allowed; check the pixel "
            "spacing in the file's header."
        )
    return shape


def padded_shape(shape: tuple[int, int], multiple: int) -> tuple[int, int]:
    """``shape`` padded up to a multiple of ``multiple``."""
    return (shape[0] + -shape[0] % multiple, shape[1] + -shape[1] % multiple)


def model_grid_bytes(volume: Volume, spec: ModelSpec) -> int:
    """Memory :func:`to_model_grid` allocates: normalised, resampled and padded slices."""
    slices, height, width = volume.image.shape
    model = model_grid_shape(volume, spec)
    padded = padded_shape(model, spec.input_multiple)
    pixels = height * width + model[0] * model[1] + padded[0] * padded[1]
    return FLOAT_BYTES * slices * pixels


def slice_work_bytes(volume: Volume, spec: ModelSpec, maps: int) -> int:
    """Memory the network and ``maps`` resampled output maps need per slice on the CPU."""
    padded = padded_shape(model_grid_shape(volume, spec), spec.input_multiple)
    height, width = volume.image.shape[1:]
    return FLOAT_BYTES * (
        ACTIVATION_FLOATS * padded[0] * padded[1] + maps * (padded[0] * padded[1] + height * width)
    )


def fit_batch(fixed: int, per_item: int, batch_size: int, what: str) -> int:
    """The largest batch, at most ``batch_size``, whose memory fits beside ``fixed`` bytes.

    Raises
    ------
    ResourceError
        If not even one item fits.
    """
    validation.check_memory(fixed + per_item, what)
    free = validation.available_memory()
    if free is None:
        return batch_size
    return int(max(1, min(batch_size, (free - fixed) // max(per_item, 1))))


def to_model_grid(volume: Volume, spec: ModelSpec, pad: bool = True) -> ModelGridSlices:
    """Normalise, resample and (optionally) pad all slices of ``volume`` for the model.

    Raises
    ------
    ResourceError
        If the slices at the model's spacing would not fit in free memory.
    """
    shape = model_grid_shape(volume, spec)
    validation.check_memory(
        model_grid_bytes(volume, spec), f"{volume.name}: resampling to the model's grid"
    )
    layout = volume_layout(volume, spec)
    normalized, stats = spec.normalization.apply(volume.image)
    images = resize_images(layout.apply(torch.from_numpy(normalized))[:, None], shape)
    crop = Crop(slice(0, shape[0]), slice(0, shape[1]))
    if pad:
        images, crop = pad_to_multiple(images, spec.input_multiple, value=float(normalized.min()))
    source_shape = (volume.image.shape[1], volume.image.shape[2])
    return ModelGridSlices(
        images.contiguous(), crop, shape, source_shape, stats, layout, spec.pixel_spacing
    )


def labels_to_model_grid(volume: Volume, spec: ModelSpec) -> torch.Tensor:
    """The volume's labels at the model's spacing and layout, unpadded, as (Z, H', W') int64."""
    shape = model_grid_shape(volume, spec)
    labels = volume_layout(volume, spec).apply(torch.from_numpy(volume.require_labels()))
    return resize_labels(labels.to(torch.int64), shape)


def _probability_bytes(slices: ModelGridSlices, channels: int) -> int:
    return FLOAT_BYTES * slices.images.shape[0] * channels * math.prod(slices.source_shape)


def _slice_bytes(model: SegmentationModel, slices: ModelGridSlices, channels: int) -> int:
    padded = math.prod(slices.images.shape[-2:])
    network = ACTIVATION_FLOATS * padded if model.device.type == "cpu" else 0
    return FLOAT_BYTES * (network + channels * (padded + math.prod(slices.source_shape)))


@torch.inference_mode()
def predict_probabilities(
    model: SegmentationModel, slices: ModelGridSlices, batch_size: int = 16
) -> torch.Tensor:
    """Class probabilities (Z, C + 1, H, W) on the source grid, computed on the model's device.

    The batch shrinks where a batch of large slices would not fit in free memory.

    Raises
    ------
    ResourceError
        If the probabilities and one slice's work do not fit in free memory.
    """
    channels = model.spec.label_map.num_classes
    batch_size = fit_batch(
        _probability_bytes(slices, channels),
        _slice_bytes(model, slices, channels),
        batch_size,
        "Segmenting the volume",
    )
    count = slices.images.shape[0]
    output = torch.empty((count, channels, *slices.source_shape), dtype=torch.float32)
    for start in range(0, count, batch_size):
        batch = slices.images[start : start + batch_size].to(model.device)
        probabilities = torch.softmax(model(batch).float(), dim=1)
        if tuple(probabilities.shape[:2]) != (batch.shape[0], channels):
            raise InvalidInputError(
                f"{model.name}: returned outputs of shape {tuple(probabilities.shape)} for "
                f"{tuple(batch.shape)} inputs; its spec needs {channels} channels, one per class."
            )
        output[start : start + batch.shape[0]] = slices.to_source(probabilities).cpu()
    return output


def segment_volume_bytes(model: SegmentationModel, volume: Volume) -> int:
    """Memory :func:`segment_volume` needs with a batch of one slice."""
    channels = model.spec.label_map.num_classes
    voxels = volume.image.size
    # the model grid, the probabilities on the source grid, the int64 class map, uint8 labels
    return (
        model_grid_bytes(volume, model.spec)
        + FLOAT_BYTES * channels * voxels
        + 9 * voxels
        + slice_work_bytes(volume, model.spec, channels)
    )


def segment_volume(model: SegmentationModel, volume: Volume, batch_size: int = 16) -> np.ndarray:
    """Label volume (Z, Y, X) uint8 predicted by ``model`` on ``volume``'s own grid.

    Raises
    ------
    ResourceError
        If segmenting it would need more memory than is free (checked before allocating).
    """
    validation.check_memory(
        segment_volume_bytes(model, volume), f"{volume.name}: segmenting the volume"
    )
    probabilities = predict_probabilities(model, to_model_grid(volume, model.spec), batch_size)
    return class_map(probabilities).numpy().astype(np.uint8)
