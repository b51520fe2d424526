"""Attacking a whole volume and bringing the results back onto its own grid.

The attack runs on f_seg's grid (normalised slices at its pixel spacing, padded to its stride);
:func:`attack_volume` returns I_DV and V in Hounsfield units, D in millimetres, and S0 and S_DV as
label volumes, all on the source volume's grid, ready to be written as NIfTI or shown as layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.resample import resize_images
from .data.volume import Volume
from .evaluation.attack_eval import attack_slices
from .evaluation.attacks import AttackMethod
from .inference import to_model_grid
from .segmentation import SegmentationModel


@dataclass
class VolumeAttack:
    """An attacked volume on its source grid, (z, y, x) arrays.

    Attributes
    ----------
    attacked_hu
        I_DV in Hounsfield units.
    displacement_mm
        D as (2, z, y, x): along x (columns) and y (rows), millimetres.
    intensity_hu
        V in Hounsfield units.
    s0, s_dv
        f_seg's labels on I0 and on I_DV.
    p
        Perceptibility mean |I_DV - I0| in normalised units, on f_seg's grid.
    """

    attacked_hu: np.ndarray
    displacement_mm: np.ndarray
    intensity_hu: np.ndarray
    s0: np.ndarray
    s_dv: np.ndarray
    p: float


def attack_volume(
    seg_model: SegmentationModel, method: AttackMethod, volume: Volume, batch_size: int = 16
) -> VolumeAttack:
    """Attack every slice of ``volume`` and return the results on its own grid."""
    grid = to_model_grid(volume, seg_model.spec)
    size = grid.source_shape
    spacing_y, spacing_x = seg_model.spec.pixel_spacing
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("i", "d", "v", "s0", "dv")}
    total, pixels = 0.0, 0
    for batch in attack_slices(seg_model, method, grid, batch_size):
        total += float((batch.attacked - batch.image).abs().sum())
        pixels += batch.image.numel()
        parts["i"].append(resize_images(batch.attacked, size))
        displacement = batch.displacement * torch.tensor([spacing_x, spacing_y]).view(1, 2, 1, 1)
        parts["d"].append(resize_images(displacement, size))
        parts["v"].append(resize_images(batch.intensity, size))
        parts["s0"].append(resize_images(batch.probabilities_s0, size).argmax(dim=1))
        parts["dv"].append(resize_images(batch.probabilities_dv, size).argmax(dim=1))
    stats = grid.stats
    attacked = stats.denormalize(torch.cat(parts["i"])[:, 0].numpy())
    return VolumeAttack(
        attacked_hu=attacked.astype(np.float32),
        displacement_mm=torch.cat(parts["d"]).permute(1, 0, 2, 3).numpy().astype(np.float32),
        intensity_hu=(torch.cat(parts["v"])[:, 0].numpy() * stats.std).astype(np.float32),
        s0=torch.cat(parts["s0"]).numpy().astype(np.uint8),
        s_dv=torch.cat(parts["dv"]).numpy().astype(np.uint8),
        p=total / max(pixels, 1),
    )
