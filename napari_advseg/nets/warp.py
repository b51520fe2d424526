"""The differentiable warp f_D of eq. 1: resample an image along a dense displacement field."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warp(image: torch.Tensor, displacement: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Backward-warp ``image`` by ``displacement``: ``out(p) = image(p + D(p))``.

    Parameters
    ----------
    image
        (B, C, H, W) images or class probabilities.
    displacement
        (B, 2, H, W) displacement in pixels; channel 0 along x (columns), channel 1 along y
        (rows).
    mode
        ``"bilinear"`` (differentiable) or ``"nearest"`` (for label maps).

    Notes
    -----
    Samples that fall outside the image take the value of the nearest border pixel
    (``padding_mode="border"``): at a CT's edge that is air, so no black band appears, and the
    field stays differentiable there.
    """
    batch, _, height, width = image.shape
    if displacement.shape != (batch, 2, height, width):
        raise ValueError(
            f"displacement {tuple(displacement.shape)} does not fit image {tuple(image.shape)}"
        )
    ys = torch.arange(height, device=image.device, dtype=image.dtype)
    xs = torch.arange(width, device=image.device, dtype=image.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    x = grid_x + displacement[:, 0]
    y = grid_y + displacement[:, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    x = 2.0 * x / max(width - 1, 1) - 1.0
    y = 2.0 * y / max(height - 1, 1) - 1.0
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)


def jacobian_determinant(displacement: torch.Tensor) -> torch.Tensor:
    """Determinant of the Jacobian of ``p -> p + D(p)`` by central differences, (B, H-2, W-2).

    Values <= 0 mark pixels where the deformation folds (is not invertible).
    """
    dx = displacement[:, 0]
    dy = displacement[:, 1]
    ddx_dx = (dx[:, 1:-1, 2:] - dx[:, 1:-1, :-2]) / 2.0
    ddx_dy = (dx[:, 2:, 1:-1] - dx[:, :-2, 1:-1]) / 2.0
    ddy_dx = (dy[:, 1:-1, 2:] - dy[:, 1:-1, :-2]) / 2.0
    ddy_dy = (dy[:, 2:, 1:-1] - dy[:, :-2, 1:-1]) / 2.0
    return (1.0 + ddx_dx) * (1.0 + ddy_dy) - ddx_dy * ddy_dx
