"""Batch augmentation for segmentation training: small affine moves and intensity changes.

The standard set (:func:`augment_batch`) moves each patch a little and jitters its intensity.
``domain=True`` adds the shifts a model meets on other scanners and protocols (issue 12):
coarser resolution, more noise, another contrast phase (each organ brighter or darker on its
own), and another field of view (wider zoom and shift, a border cut off, and the global gain
and offset that a per-subject z-score gives a scan with more or less air around the body).

No flips: the abdomen is not left-right symmetric (the liver is on the patient's right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError


@dataclass(frozen=True)
class AugmentRanges:
    """The ranges each augmentation draws from, uniformly (intensities in z-score units)."""

    rotation_deg: float
    scale: tuple[float, float]
    shift: float
    gain: tuple[float, float]
    offset: float
    noise: float
    organ_offset: float = 0.0
    """Contrast phase: each organ's own intensity shift (0: off)."""
    resolution: float = 1.0
    """Coarsest resolution, as a factor of the model's pixel size (1: off)."""
    resolution_probability: float = 0.0
    cut_probability: float = 0.0
    """Field of view: chance that one border band (5 to 25 % of the side) is cut off."""


STANDARD = AugmentRanges(
    rotation_deg=10.0, scale=(0.9, 1.1), shift=0.05, gain=(0.9, 1.1), offset=0.1, noise=0.05
)
DOMAIN = AugmentRanges(
    rotation_deg=15.0,
    scale=(0.75, 1.33),
    shift=0.15,
    gain=(0.8, 1.25),
    offset=0.25,
    noise=0.12,
    organ_offset=0.15,
    resolution=2.0,
    resolution_probability=0.5,
    cut_probability=0.25,
)
"""Domain shift. A z-score unit is the scan's HU standard deviation, about 400-500 HU in an
abdomen: noise up to ~50 HU, organ shifts up to ~±65 HU (native against portal-venous liver
differs by ~50 HU), resolution down to twice the pixel size."""


def check_augmentation(augment: object, domain_augment: object) -> None:
    """Refuse, in one line, augmentation switches that are not booleans or do not fit together."""
    for name, value in (("augment", augment), ("domain_augment", domain_augment)):
        if not isinstance(value, bool):
            raise InvalidInputError(f"{name} must be True or False.")
    if domain_augment and not augment:
        raise InvalidInputError(
            "Domain augmentation extends the standard one; turn augmentation on, or drop "
            "domain augmentation."
        )


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    generator: torch.Generator,
    domain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly move each sample and change its intensity (see :data:`STANDARD`, :data:`DOMAIN`).

    Parameters
    ----------
    images
        (B, 1, H, W) normalised images.
    labels
        (B, H, W) integer labels, moved with the same transform (nearest neighbour).
    generator
        Source of randomness (on the CPU).
    domain
        Draw from the wider :data:`DOMAIN` ranges and add resolution, contrast-phase and
        field-of-view changes.
    """
    ranges = DOMAIN if domain else STANDARD
    batch = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) * (high - low) + low

    def per_sample(values: torch.Tensor) -> torch.Tensor:
        return values.to(images.device, images.dtype)[:, None, None, None]

    angle = uniform(-ranges.rotation_deg, ranges.rotation_deg) * math.pi / 180.0
    low, high = ranges.scale
    scale = torch.exp(uniform(math.log(low), math.log(high))) if domain else uniform(low, high)
    shift = torch.stack([uniform(-ranges.shift, ranges.shift) for _ in range(2)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    theta = torch.cat([theta, shift[:, :, None]], dim=2).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    fill = images.amin(dim=(1, 2, 3), keepdim=True)
    moved = F.grid_sample(
        images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    labels = F.grid_sample(
        labels[:, None].to(images.dtype),
        grid,
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )[:, 0].to(torch.int64)
    if domain:
        moved = _lower_resolution(moved, ranges, generator)
        moved, labels = _cut_border(moved, labels, ranges, generator)
        moved = moved + _organ_offsets(labels, ranges, generator).to(moved.dtype)
    images = moved + fill
    gain = per_sample(uniform(*ranges.gain))
    offset = per_sample(uniform(-ranges.offset, ranges.offset))
    sigma = per_sample(uniform(0.0, ranges.noise))
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    return images * gain + offset + sigma * noise, labels


def _lower_resolution(
    images: torch.Tensor, ranges: AugmentRanges, generator: torch.Generator
) -> torch.Tensor:
    """Down-sample some samples by a factor in [1, ``ranges.resolution``] and back (a blur)."""
    out = images.clone()
    height, width = images.shape[-2:]
    for index in range(images.shape[0]):
        chosen, draw = torch.rand(2, generator=generator).tolist()
        if chosen >= ranges.resolution_probability:
            continue
        factor = 1.0 + draw * (ranges.resolution - 1.0)
        size = (max(2, round(height / factor)), max(2, round(width / factor)))
        small = F.interpolate(images[index : index + 1], size=size, mode="bilinear", antialias=True)
        out[index : index + 1] = F.interpolate(small, size=(height, width), mode="bilinear")
    return out


def _cut_border(
    images: torch.Tensor,
    labels: torch.Tensor,
    ranges: AugmentRanges,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blank one border band of some samples: outside the field of view, no image, no organ."""
    images, labels = images.clone(), labels.clone()
    height, width = images.shape[-2:]
    for index in range(images.shape[0]):
        chosen, side, fraction = torch.rand(3, generator=generator).tolist()
        if chosen >= ranges.cut_probability:
            continue
        side_index = min(3, int(side * 4))
        extent = height if side_index < 2 else width
        band = max(1, round(extent * (0.05 + 0.2 * fraction)))
        region = [
            (slice(0, band), slice(None)),
            (slice(height - band, height), slice(None)),
            (slice(None), slice(0, band)),
            (slice(None), slice(width - band, width)),
        ][side_index]
        images[index, 0][region] = 0.0  # the sample's fill value (added back by the caller)
        labels[index][region] = 0
    return images, labels


def _organ_offsets(
    labels: torch.Tensor, ranges: AugmentRanges, generator: torch.Generator
) -> torch.Tensor:
    """Per sample and organ, an intensity shift over that organ, with softened edges."""
    classes = int(labels.max()) + 1 if labels.numel() else 1
    shifts = (torch.rand(labels.shape[0], classes, generator=generator) * 2.0 - 1.0) * (
        ranges.organ_offset
    )
    shifts[:, 0] = 0.0
    shifts = shifts.to(labels.device)
    offsets = torch.gather(shifts, 1, labels.flatten(1)).view(labels.shape)[:, None]
    return F.avg_pool2d(offsets, 3, stride=1, padding=1, count_include_pad=False)
