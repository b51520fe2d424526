"""Padding slices to the network's stride, and sampling training patches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Crop:
    """Where the original slice lies inside a padded one: ``padded[..., rows, cols]``."""

    rows: slice
    cols: slice

    def __call__(self, padded: torch.Tensor) -> torch.Tensor:
        """Crop a padded (..., H, W) tensor back to the original size."""
        return padded[..., self.rows, self.cols]


def pad_to_multiple(
    images: torch.Tensor, multiple: int, value: float | None = None
) -> tuple[torch.Tensor, Crop]:
    """Pad (..., H, W) so that H and W are multiples of ``multiple``, centred.

    The pad value defaults to each batch's minimum, i.e. air in a CT.
    """
    height, width = images.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    top, left = pad_h // 2, pad_w // 2
    crop = Crop(slice(top, top + height), slice(left, left + width))
    if pad_h == 0 and pad_w == 0:
        return images, crop
    fill = float(images.min()) if value is None else value
    padded = F.pad(images, (left, pad_w - left, top, pad_h - top), value=fill)
    return padded, crop


def sample_patch_origins(
    labels: np.ndarray,
    patch_size: int,
    count: int,
    rng: np.random.Generator,
    foreground_fraction: float = 0.5,
) -> np.ndarray:
    """Top-left corners of ``count`` patches in one (H, W) slice at least ``patch_size`` wide.

    A ``foreground_fraction`` of the patches is centred (up to the border) on a random labelled
    pixel, so that small organs such as the pancreas are seen often enough; the rest are uniform.
    """
    height, width = labels.shape
    if height < patch_size or width < patch_size:
        raise ValueError(f"slice {labels.shape} is smaller than the patch size {patch_size}")
    origins = np.stack(
        [
            rng.integers(0, height - patch_size + 1, count),
            rng.integers(0, width - patch_size + 1, count),
        ],
        axis=1,
    )
    foreground = np.argwhere(labels > 0)
    if len(foreground):
        chosen = rng.random(count) < foreground_fraction
        centres = foreground[rng.integers(0, len(foreground), int(chosen.sum()))]
        corner = centres - patch_size // 2
        corner[:, 0] = np.clip(corner[:, 0], 0, height - patch_size)
        corner[:, 1] = np.clip(corner[:, 1], 0, width - patch_size)
        origins[chosen] = corner
    return origins
