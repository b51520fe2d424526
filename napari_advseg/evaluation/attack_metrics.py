"""Measures of an attack: perceptibility, deformation size and folding, SSIM.

The per-image measures (``perceptibility``, ``max_displacement``, ``folding_fraction``,
``ssim``) cover the whole field of view; the ``masked_*`` ones return sums and counts over a mask
(the body, :mod:`.body_mask`), so that a subject's figure pools its slices voxel by voxel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nets.warp import jacobian_determinant


def perceptibility(attacked: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per image: p = mean |I_DV - I0| over the pixels, (B,), in normalised units."""
    return (attacked - original).abs().flatten(1).mean(dim=1)


def max_displacement(displacement: torch.Tensor) -> torch.Tensor:
    """Largest displacement length per image, pixels, (B,)."""
    return displacement.pow(2).sum(dim=1).sqrt().flatten(1).amax(dim=1)


def folding_fraction(displacement: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels per image where the deformation folds (Jacobian determinant <= 0)."""
    if displacement.shape[-1] < 3 or displacement.shape[-2] < 3:
        return displacement.new_zeros(displacement.shape[0])
    return (jacobian_determinant(displacement) <= 0).float().flatten(1).mean(dim=1)


def masked_abs_sum(attacked: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum of |I_DV - I0| over the pixels where ``mask`` is true (float64), (N, H, W) each."""
    return float((attacked.double() - original.double()).abs()[mask].sum())


def masked_max_displacement(displacement: torch.Tensor, mask: torch.Tensor) -> float | None:
    """Largest |D| over the pixels of (N, H, W) ``mask``, in D's units; None where it is empty.

    ``displacement`` is (N, 2, H, W).
    """
    if not bool(mask.any()):
        return None
    return float(displacement.double().pow(2).sum(dim=1).sqrt()[mask].max())


def masked_folding(displacement: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    """(folded, counted): pixels of ``mask`` where det(J) <= 0, and the pixels of ``mask`` seen.

    ``displacement`` is (N, 2, H, W) in pixels (any pixel aspect: the determinant is the same
    in pixels as in millimetres); the determinant is taken by central differences, so the
    outermost row and column of each slice are not counted.
    """
    if displacement.shape[-1] < 3 or displacement.shape[-2] < 3:
        return 0, 0
    inner = mask[:, 1:-1, 1:-1]
    folded = (jacobian_determinant(displacement.double()) <= 0) & inner
    return int(folded.sum()), int(inner.sum())


def ssim(
    a: torch.Tensor, b: torch.Tensor, data_range: torch.Tensor | float, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, Gaussian window of ``sigma`` px, (B,).

    ``data_range`` is the intensity range of the reference (a number, or one per image).
    """
    radius = int(3.5 * sigma + 0.5)
    coords = torch.arange(-radius, radius + 1, dtype=a.dtype, device=a.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
        return F.conv2d(
            F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1)
        )

    data_range = torch.as_tensor(data_range, dtype=a.dtype, device=a.device).reshape(-1, 1, 1, 1)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return index.flatten(1).mean(dim=1)
