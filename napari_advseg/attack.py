"""Attacking a whole volume and bringing the results back onto its own grid.

The attack runs on f_seg's grid (normalised slices at its pixel spacing, in its slice layout,
padded to its stride). Its fields are then applied to the scan at the scan's own resolution:
D and V are resampled to the source grid (the layout undone), D converted to the scan's pixels
and V to Hounsfield units, and ``I_DV = warp(I0, D) + V`` on the scan itself, so nothing is
clipped to the model's HU window and a zero attack returns the scan voxel for voxel.
:func:`attack_volume` returns I_DV and V in HU, D in millimetres, and S0 and S_DV as label
volumes, all on the source volume's grid, ready to be written as NIfTI or shown as layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import validation
from .class_map import class_map
from .data.volume import Volume
from .evaluation.attack_eval import SliceBatch, attack_slices, batch_on_source, unpadded
from .evaluation.attacks import AttackMethod
from .inference import ModelGridSlices, model_grid_bytes, slice_work_bytes, to_model_grid
from .segmentation import SegmentationModel


@dataclass
class VolumeAttack:
    """An attacked volume on its source grid, (z, y, x) arrays.

    Attributes
    ----------
    attacked_hu
        I_DV in Hounsfield units: the scan warped by D at its own resolution, plus V.
    displacement_mm
        D as (2, z, y, x): along x (columns) and y (rows), millimetres.
    intensity_hu
        V in Hounsfield units.
    s0, s_dv
        f_seg's labels on I0 and on I_DV.
    p
        Perceptibility mean |I_DV - I0| in normalised units, on f_seg's grid.
    p_hu_fov
        Mean |I_DV - I0| in Hounsfield units over every voxel of the source volume.
    """

    attacked_hu: np.ndarray
    displacement_mm: np.ndarray
    intensity_hu: np.ndarray
    s0: np.ndarray
    s_dv: np.ndarray
    p: float
    p_hu_fov: float


def to_source_grid(
    batch: SliceBatch,
    grid: ModelGridSlices,
    image_hu: np.ndarray,
    spacing: tuple[float, float],
) -> dict[str, np.ndarray]:
    """A batch of attacked slices on the source grid: HU, mm and labels, (N, ...) arrays.

    ``image_hu`` holds the batch's (N, H, W) source slices in HU and ``spacing`` their (rows,
    columns) pixel size in mm. Keys: ``attacked_hu`` (D and V applied to ``image_hu``, see
    :func:`~napari_advseg.evaluation.attack_eval.batch_on_source`), ``displacement_mm``
    (N, 2, H, W), ``intensity_hu``, ``s0``, ``s_dv``. Labels are the argmax of the class
    probabilities resampled to the source grid.
    """
    image = torch.from_numpy(np.asarray(image_hu, np.float32))
    attacked, displacement, intensity = batch_on_source(batch, grid, image, spacing)
    whole = unpadded(grid)
    return {
        "attacked_hu": attacked.numpy(),
        "displacement_mm": displacement.numpy(),
        "intensity_hu": intensity.numpy(),
        "s0": class_map(whole.to_source(batch.probabilities_s0)).numpy().astype(np.uint8),
        "s_dv": class_map(whole.to_source(batch.probabilities_dv)).numpy().astype(np.uint8),
    }


OUTPUT_BYTES = {
    "attacked_hu": (np.float32, 1),
    "displacement_mm": (np.float32, 2),
    "intensity_hu": (np.float32, 1),
    "s0": (np.uint8, 1),
    "s_dv": (np.uint8, 1),
}
"""The arrays :func:`attack_volume` returns on the source grid: dtype and maps per voxel."""


def attack_volume_bytes(seg_model: SegmentationModel, volume: Volume) -> int:
    """Memory :func:`attack_volume` needs with a batch of one slice (an estimate)."""
    spec = seg_model.spec
    outputs = sum(np.dtype(d).itemsize * n for d, n in OUTPUT_BYTES.values()) * volume.image.size
    # per slice: f_seg twice and the attacker, each network's activations, and the batch's maps
    # (I0, D, V, I_DV, two label maps, two probability maps) resampled to the source grid, with
    # the warp on the source grid (D in source pixels, its sampling grid, the warped slice)
    maps = 13 + 2 * spec.label_map.num_classes
    per_slice = 3 * slice_work_bytes(volume, spec, maps)
    return model_grid_bytes(volume, spec) + outputs + per_slice


def attack_volume(
    seg_model: SegmentationModel, method: AttackMethod, volume: Volume, batch_size: int = 16
) -> VolumeAttack:
    """Attack every slice of ``volume`` and return the results on its own grid.

    Raises
    ------
    ResourceError
        If the attack would need more memory than is free (checked before allocating).
    """
    validation.check_memory(
        attack_volume_bytes(seg_model, volume), f"{volume.name}: attacking the volume"
    )
    grid = to_model_grid(volume, seg_model.spec)
    count, (height, width) = grid.images.shape[0], grid.source_shape
    volumes = {
        key: np.empty((n, count, height, width) if n > 1 else (count, height, width), dtype)
        for key, (dtype, n) in OUTPUT_BYTES.items()
    }
    spacing = (volume.spacing[1], volume.spacing[2])
    total, total_hu, pixels, start = 0.0, 0.0, 0, 0
    for batch in attack_slices(seg_model, method, grid, batch_size, volume):
        total += float((batch.attacked - batch.image).abs().sum())
        pixels += batch.image.numel()
        stop = start + batch.image.shape[0]
        image = np.asarray(volume.image[start:stop], np.float32)
        for key, array in to_source_grid(batch, grid, image, spacing).items():
            if array.ndim == 4:  # (N, 2, H, W) displacement into (2, Z, H, W)
                volumes[key][:, start:stop] = array.transpose(1, 0, 2, 3)
            else:
                volumes[key][start:stop] = array
        total_hu += float(np.abs(volumes["attacked_hu"][start:stop] - image).sum(dtype=np.float64))
        start = stop
    return VolumeAttack(
        attacked_hu=volumes["attacked_hu"],
        displacement_mm=volumes["displacement_mm"],
        intensity_hu=volumes["intensity_hu"],
        s0=volumes["s0"],
        s_dv=volumes["s_dv"],
        p=total / max(pixels, 1),
        p_hu_fov=total_hu / max(volume.image.size, 1),
    )
