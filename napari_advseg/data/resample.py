"""In-plane resampling between a scan's pixel spacing and a model's."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_shape(
    shape_hw: tuple[int, int],
    spacing_yx: tuple[float, float],
    target_spacing_yx: tuple[float, float],
) -> tuple[int, int]:
    """Rows and columns that cover the same field of view at ``target_spacing_yx``."""
    return tuple(  # type: ignore[return-value]
        max(1, round(n * s / t))
        for n, s, t in zip(shape_hw, spacing_yx, target_spacing_yx, strict=True)
    )


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (N, C, H, W) images or probabilities bilinearly, antialiased when shrinking."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (N, H, W) integer labels by nearest neighbour (pixel centres kept aligned)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return resized[:, 0].to(labels.dtype)
