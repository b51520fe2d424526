"""Read and write NIfTI (``.nii``, ``.nii.gz``) volumes through nibabel."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InvalidInputError
from ..labels import DEFAULT_LABEL_MAP, LabelMap
from .volume import SourceGrid, Volume, check_image

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a NIfTI file name."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, SourceGrid]:
    """Read a NIfTI file into a canonical (z, y, x) array and its source grid.

    Raises
    ------
    InvalidInputError
        If the file is missing, not NIfTI, corrupt or not a 3D volume.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file.")
    if not is_nifti_path(path):
        raise InvalidInputError(f"{path}: not a NIfTI file name; give a .nii or .nii.gz file.")
    try:
        image = nib.load(path)
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise InvalidInputError(f"{path}: not a NIfTI image (read as {type(image).__name__}).")
        data = np.asanyarray(image.dataobj)
    except InvalidInputError:
        raise
    except Exception as error:  # nibabel, gzip and numpy raise many kinds on a bad file
        raise InvalidInputError(
            f"{path}: cannot be read as NIfTI ({type(error).__name__}: {error}). "
            "The file may be truncated or of another format."
        ) from error
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInputError(
            f"{path}: expected a 3D volume, got {data.ndim}D data of shape {data.shape}. "
            "Give a single 3D CT volume; split 4D series first."
        )
    grid = SourceGrid(np.asarray(image.affine, dtype=np.float64), tuple(int(s) for s in data.shape))
    return grid.to_canonical(data), grid


def load_volume(
    image_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str] | None = None,
    label_map: LabelMap = DEFAULT_LABEL_MAP,
) -> Volume:
    """Load a CT image and, optionally, its label volume, checked against each other.

    Raises
    ------
    InvalidInputError
        If either file is unusable, or if they differ in shape or affine.
    """
    image, grid = read_nifti(image_path)
    image = check_image(image, str(image_path))
    labels = None
    if labels_path is not None:
        labels, label_grid = read_nifti(labels_path)
        if label_grid.shape != grid.shape:
            raise InvalidInputError(
                f"{labels_path}: shape {label_grid.shape} differs from the image's {grid.shape} "
                f"({image_path}); give the label volume that belongs to this image."
            )
        if not np.allclose(label_grid.affine, grid.affine, atol=1e-3):
            raise InvalidInputError(
                f"{labels_path}: its affine (voxel-to-world position) differs from the image's "
                f"({image_path}); the two files are not on the same grid. Resample the labels onto "
                "the image first."
            )
    return Volume(
        image=image,
        spacing=grid.canonical_spacing(),
        labels=labels,
        name=Path(image_path).name,
        grid=grid,
        label_map=label_map,
    )


def write_nifti(
    path: str | os.PathLike[str],
    array_zyx: np.ndarray,
    grid: SourceGrid,
    dtype: np.dtype | type | None = None,
) -> Path:
    """Write a canonical (z, y, x) array onto a source grid as NIfTI, atomically.

    The array must have the canonical shape of ``grid``; it is reordered into the file's own
    axis order and written with the file's affine, so it overlays the source in any viewer.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise InvalidInputError(f"{path}: output must end in .nii or .nii.gz.")
    data = grid.from_canonical(np.asarray(array_zyx))
    if data.shape != grid.shape:
        raise InvalidInputError(
            f"{path}: array of shape {np.asarray(array_zyx).shape} does not fit the source grid "
            f"{grid.shape[::-1]} (z, y, x)."
        )
    if dtype is not None:
        if np.issubdtype(np.dtype(dtype), np.integer) and np.issubdtype(data.dtype, np.floating):
            info = np.iinfo(dtype)
            data = np.clip(np.rint(data), info.min, info.max)
        data = data.astype(dtype)
    image = nib.Nifti1Image(data, grid.affine)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{''.join(path.suffixes)}")
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
