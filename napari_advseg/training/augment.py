"""Batch augmentation for segmentation training: small affine moves and intensity changes.

No flips: the abdomen is not left-right symmetric (the liver is on the patient's right).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_batch(
    images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly rotate (±10°), scale (±10%) and shift (±5%) each sample, then jitter intensity.

    Parameters
    ----------
    images
        (B, 1, H, W) normalised images.
    labels
        (B, H, W) integer labels, moved with the same transform (nearest neighbour).
    generator
        Source of randomness (on the CPU).
    """
    batch = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) * (high - low) + low

    angle = uniform(-10.0, 10.0) * math.pi / 180.0
    scale = uniform(0.9, 1.1)
    shift = torch.stack([uniform(-0.05, 0.05), uniform(-0.05, 0.05)], dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    theta = torch.cat([theta, shift[:, :, None]], dim=2).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    fill = images.amin(dim=(1, 2, 3), keepdim=True)
    moved = F.grid_sample(
        images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    images = moved + fill
    labels = F.grid_sample(
        labels[:, None].to(images.dtype),
        grid,
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )[:, 0].to(torch.int64)
    gain = uniform(0.9, 1.1).to(images.device)[:, None, None, None]
    offset = uniform(-0.1, 0.1).to(images.device)[:, None, None, None]
    sigma = uniform(0.0, 0.05).to(images.device)[:, None, None, None]
    noise = torch.randn(images.shape, generator=generator).to(images.device)
    return images * gain + offset + sigma * noise, labels
