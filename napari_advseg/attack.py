"""Attacking a whole volume and bringing the results back onto its own grid.

The attack runs on f_seg's grid (normalised slices at its pixel spacing, padded to its stride);
:func:`attack_volume` returns I_DV and V in Hounsfield units, D in millimetres, and S0 and S_DV as
label volumes, all on the source volume's grid, ready to be written as NIfTI or shown as layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .class_map import class_map
from .data.resample import resize_images
from .data.volume import Volume
from .evaluation.attack_eval import SliceBatch, attack_slices
from .evaluation.attacks import AttackMethod
from .inference import ModelGridSlices, to_model_grid
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


def to_source_grid(
    batch: SliceBatch, grid: ModelGridSlices, pixel_spacing: tuple[float, float]
) -> dict[str, np.ndarray]:
    """A batch of attacked slices on the source grid: HU, mm and labels, (N, ...) arrays.

    Keys: ``attacked_hu``, ``displacement_mm`` (N, 2, H, W), ``intensity_hu``, ``s0``, ``s_dv``.
    Labels are the argmax of the class probabilities resampled to the source grid.
    """
    size = grid.source_shape
    spacing_y, spacing_x = pixel_spacing
    millimetres = torch.tensor([spacing_x, spacing_y]).view(1, 2, 1, 1)
    stats = grid.stats
    return {
        "attacked_hu": stats.denormalize(resize_images(batch.attacked, size)[:, 0].numpy()),
        "displacement_mm": resize_images(batch.displacement * millimetres, size).numpy(),
        "intensity_hu": resize_images(batch.intensity, size)[:, 0].numpy() * stats.std,
        "s0": class_map(resize_images(batch.probabilities_s0, size)).numpy().astype(np.uint8),
        "s_dv": class_map(resize_images(batch.probabilities_dv, size)).numpy().astype(np.uint8),
    }


def attack_volume(
    seg_model: SegmentationModel, method: AttackMethod, volume: Volume, batch_size: int = 16
) -> VolumeAttack:
    """Attack every slice of ``volume`` and return the results on its own grid."""
    grid = to_model_grid(volume, seg_model.spec)
    parts: dict[str, list[np.ndarray]] = {}
    total, pixels = 0.0, 0
    for batch in attack_slices(seg_model, method, grid, batch_size):
        total += float((batch.attacked - batch.image).abs().sum())
        pixels += batch.image.numel()
        for key, array in to_source_grid(batch, grid, seg_model.spec.pixel_spacing).items():
            parts.setdefault(key, []).append(array)
    volumes = {key: np.concatenate(arrays) for key, arrays in parts.items()}
    return VolumeAttack(
        attacked_hu=volumes["attacked_hu"].astype(np.float32),
        displacement_mm=volumes["displacement_mm"].transpose(1, 0, 2, 3).astype(np.float32),
        intensity_hu=volumes["intensity_hu"].astype(np.float32),
        s0=volumes["s0"],
        s_dv=volumes["s_dv"],
        p=total / max(pixels, 1),
    )
