"""The explorer's attacked volume: the planes of each attacked slice, and their export as NIfTI.

Qt-free. :class:`AttackedVolume` holds whole-volume arrays (I_DV, V, D, |D|, S0, S_DV and where
they differ) that the napari layers display without copies; :func:`slice_planes` turns one
:class:`~napari_advseg.explorer.SliceAttack` into the planes to write (computed in the worker
thread, so the main thread only copies them in). :func:`plan_export` checks an export before any
file is written; :func:`write_export` writes it file by file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.nifti import hu_dtype, write_nifti
from .data.volume import SourceGrid, Volume
from .errors import InvalidInputError
from .explorer import SliceAttack
from .validation import check_disk, check_output_dir

PLANE_KEYS = ("I_DV", "V", "|D|", "S0", "S_DV", "changed")
"""The per-slice planes, one per layer, in the order they are written."""

EXPORTS = {
    "IDV": np.float32,  # at most: int16 for a scan of whole HU (AttackedVolume.hu_dtype)
    "V_HU": np.float32,
    "Dx_mm": np.float32,
    "Dy_mm": np.float32,
    "absD_mm": np.float32,
    "S0": np.uint8,
    "SDV": np.uint8,
}
"""File suffix and stored type of each exported volume, in the order they are written."""


@dataclass
class SlicePlanes:
    """One attacked slice ready to be copied into the layers: the planes, D and the arrows."""

    index: int
    planes: dict[str, np.ndarray]
    displacement_mm: np.ndarray
    vectors: np.ndarray
    attack: SliceAttack


def displacement_vectors(result: SliceAttack, spacing: tuple[float, float, float]) -> np.ndarray:
    """D of one slice as napari vectors (N, 2, 3) on a readable grid, in data pixels."""
    height, width = result.s0.shape
    step = max(4, max(height, width) // 24)
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    dy = result.displacement_mm[1][ys, xs] / spacing[1]
    dx = result.displacement_mm[0][ys, xs] / spacing[2]
    count = ys.size
    positions = np.stack([np.full(count, result.index), ys.ravel(), xs.ravel()], axis=1)
    projections = np.stack([np.zeros(count), dy.ravel(), dx.ravel()], axis=1)
    return np.stack([positions, projections], axis=1).astype(np.float32)


def slice_planes(result: SliceAttack, spacing: tuple[float, float, float]) -> SlicePlanes:
    """The planes of one attacked slice, one per layer (see :data:`PLANE_KEYS`)."""
    displacement = result.displacement_mm
    planes = {
        "I_DV": result.attacked_hu,
        "V": result.intensity_hu,
        "|D|": np.sqrt(displacement[0] ** 2 + displacement[1] ** 2),
        "S0": result.s0,
        "S_DV": result.s_dv,
        "changed": (result.s0 != result.s_dv).astype(np.uint8),
    }
    vectors = displacement_vectors(result, spacing)
    return SlicePlanes(result.index, planes, displacement, vectors, result)


BYTES_PER_VOXEL = 4 + 4 + 4 + 1 + 1 + 1 + 2 * 4
"""I_DV, V, |D| (float32), S0, S_DV, S0 != S_DV (uint8) and D (two float32)."""


def attacked_volume_bytes(volume: Volume) -> int:
    """Memory an :class:`AttackedVolume` of ``volume`` takes."""
    return int(volume.image.size) * BYTES_PER_VOXEL


class AttackedVolume:
    """Whole-volume arrays of the attack, (z, y, x); slices not attacked hold I0 and zeros.

    Attributes
    ----------
    arrays
        One array per key of :data:`PLANE_KEYS` (the layers' data).
    displacement_mm
        D as (2, z, y, x): along x and y, millimetres.
    """

    def __init__(self, volume: Volume) -> None:
        shape = volume.image.shape
        self.name = volume.name
        self.grid = volume.grid
        self.arrays: dict[str, np.ndarray] = {
            "I_DV": np.array(volume.image, np.float32),
            "V": np.zeros(shape, np.float32),
            "|D|": np.zeros(shape, np.float32),
            "S0": np.zeros(shape, np.uint8),
            "S_DV": np.zeros(shape, np.uint8),
            "changed": np.zeros(shape, np.uint8),
        }
        self.displacement_mm = np.zeros((2, *shape), np.float32)
        self.hu_dtype = hu_dtype(volume.image)  # how I_DV is stored: as the scan's values allow

    @property
    def shape(self) -> tuple[int, int, int]:
        """(z, y, x) of every array."""
        return self.arrays["I_DV"].shape

    def write(self, planes: SlicePlanes, skip: tuple[str, ...] = ()) -> None:
        """Copy one slice's planes in (except the keys in ``skip``)."""
        for key, plane in planes.planes.items():
            if key not in skip:
                self.arrays[key][planes.index] = plane
        self.displacement_mm[:, planes.index] = planes.displacement_mm

    def outputs(self) -> dict[str, np.ndarray]:
        """The exported volumes by file suffix (see :data:`EXPORTS`)."""
        return {
            "IDV": self.arrays["I_DV"],
            "V_HU": self.arrays["V"],
            "Dx_mm": self.displacement_mm[0],
            "Dy_mm": self.displacement_mm[1],
            "absD_mm": self.arrays["|D|"],
            "S0": self.arrays["S0"],
            "SDV": self.arrays["S_DV"],
        }


@dataclass
class ExportPlan:
    """What :func:`write_export` will write: paths, the grid, and which slices."""

    folder: Path
    paths: list[Path]
    grid: SourceGrid
    chosen: slice


def plan_export(
    attacked: AttackedVolume,
    folder: str | Path,
    grid: SourceGrid | None = None,
    index: int | None = None,
) -> ExportPlan:
    """Check an export before writing anything; raise :class:`InvalidInputError` if refused.

    Files are named ``<volume>_<suffix>.nii.gz`` (``<volume>_slice<index>_...`` for one slice).
    An export never overwrites: when any of its files exists, it is refused with a message
    naming them, and nothing is written. The folder must be writable (or creatable) and have the
    disk space for the uncompressed volumes.
    """
    folder = check_output_dir(folder, "Export folder")
    grid = grid or attacked.grid
    stem = attacked.name
    chosen = slice(None)
    if index is not None:
        if not 0 <= index < attacked.shape[0]:
            raise InvalidInputError(f"Slice {index} is outside the volume's {attacked.shape[0]}.")
        grid = grid.axial_slab(index)
        chosen = slice(index, index + 1)
        stem = f"{stem}_slice{index}"
    paths = [folder / f"{stem}_{key}.nii.gz" for key in EXPORTS]
    existing = [path.name for path in paths if path.exists()]
    if existing:
        raise InvalidInputError(
            f"Export folder {folder} already holds {', '.join(existing)}; choose another folder "
            "or move those files away (an export never overwrites)."
        )
    voxels = int(np.prod(attacked.shape[1:])) * (1 if index is not None else attacked.shape[0])
    needed = voxels * sum(np.dtype(dtype).itemsize for dtype in EXPORTS.values())
    check_disk(folder, needed, "The export")
    return ExportPlan(folder, paths, grid, chosen)


def write_export(attacked: AttackedVolume, plan: ExportPlan) -> Iterator[Path]:
    """Write the planned files one by one, yielding each path once it is written."""
    outputs = attacked.outputs()
    for path, (key, dtype) in zip(plan.paths, EXPORTS.items(), strict=True):
        if key == "IDV":
            dtype = attacked.hu_dtype
        yield write_nifti(path, outputs[key][plan.chosen], plan.grid, dtype)
