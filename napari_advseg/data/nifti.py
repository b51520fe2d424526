"""Read and write NIfTI (``.nii``, ``.nii.gz``) volumes through nibabel."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InvalidInputError
from ..labels import DEFAULT_LABEL_MAP, LabelMap
from ..validation import check_memory, format_bytes
from .lazy import LazyVolumes
from .volume import SourceGrid, Volume, check_image, check_labels

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has a NIfTI file name."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


GZIP_MAX_RATIO = 1032
"""Deflate cannot expand data more than about 1032:1, which bounds what a .gz file can hold."""


def _claimed_bytes(image: nib.Nifti1Image | nib.Nifti2Image) -> tuple[int, int]:
    """Bytes of voxel data that a header claims on disk, and once read into memory."""
    header = image.header
    count = math.prod(int(n) for n in image.shape)  # a Python int: no overflow
    dtype = header.get_data_dtype()
    slope, inter = header.get_slope_inter()
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    return count * dtype.itemsize, count * (8 if scaled else dtype.itemsize)


def open_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image | nib.Nifti2Image:
    """Open a NIfTI file's header, and check the data it claims before anything is read.

    The claimed data must fit in the file (for ``.nii.gz``: in what a gzip file of its size can
    hold) and, once read, in the machine's free memory.

    Raises
    ------
    InvalidInputError
        If the path is missing or a folder, not NIfTI, or its header does not fit the file.
    ResourceError
        If the data it holds would not fit in free memory.
    """
    path = Path(path)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if is_nifti_path(p))[:1]
        hint = (
            f", such as {inside[0]} in it"
            if inside
            else "; convert a DICOM series to NIfTI first (e.g. with dcm2niix)"
        )
        raise InvalidInputError(f"{path}: is a folder; give a .nii or .nii.gz file{hint}.")
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file.")
    if not is_nifti_path(path):
        raise InvalidInputError(f"{path}: not a NIfTI file name; give a .nii or .nii.gz file.")
    try:
        image = nib.load(path)
    except Exception as error:  # nibabel and gzip raise many kinds on a bad header
        raise InvalidInputError(
            f"{path}: cannot be read as NIfTI ({type(error).__name__}: {error}). "
            "The file may be truncated or of another format."
        ) from error
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InvalidInputError(f"{path}: not a NIfTI image (read as {type(image).__name__}).")
    on_disk, in_memory = _claimed_bytes(image)
    size = path.stat().st_size
    compressed = str(path).lower().endswith(".gz")
    claimed = int(image.header.get_data_offset()) + on_disk
    if claimed > (size * GZIP_MAX_RATIO if compressed else size):
        raise InvalidInputError(
            f"{path}: its header claims {'x'.join(map(str, image.shape))} voxels "
            f"({format_bytes(on_disk)}), more than this {format_bytes(size)} file can hold; "
            "the file is truncated or its header is wrong."
        )
    # the data as read, its canonical copy, and the float32 image made from it
    voxels = math.prod(int(n) for n in image.shape)
    check_memory(2 * in_memory + 4 * voxels, f"Reading {path.name}")
    return image


def read_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, SourceGrid]:
    """Read a NIfTI file into a canonical (z, y, x) array and its source grid.

    Raises
    ------
    InvalidInputError
        If the file is missing, not NIfTI, corrupt or not a 3D volume.
    ResourceError
        If its data would not fit in free memory.
    """
    path = Path(path)
    image = open_nifti(path)
    try:
        data = np.asanyarray(image.dataobj)
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
    remap: Callable[[np.ndarray, str], np.ndarray] | None = None,
    name: str | None = None,
) -> Volume:
    """Load a CT image and, optionally, its label volume, checked against each other.

    ``remap(values, path)`` maps the file's label values to ``label_map``'s ids before they are
    checked (see :mod:`napari_advseg.data.label_remap`); ``name`` defaults to the file name.

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
        if remap is not None:
            labels = remap(labels, str(labels_path))
        labels = check_labels(labels, image.shape, label_map, str(labels_path))
    return Volume(
        image=image,
        spacing=grid.canonical_spacing(),
        labels=labels,
        name=name or Path(image_path).name,
        grid=grid,
        label_map=label_map,
    )


def lazy_volumes(
    images: Sequence[str | os.PathLike[str]],
    labels: Sequence[str | os.PathLike[str] | None] | None = None,
    label_map: LabelMap = DEFAULT_LABEL_MAP,
    cache_bytes: int = 0,
    remap: Callable[[np.ndarray, str], np.ndarray] | None = None,
    names: Sequence[str] | None = None,
) -> LazyVolumes:
    """NIfTI volumes (with optional labels) read one at a time when used.

    Every file's header is checked first (see :func:`open_nifti`), so a missing, mislabelled or
    impossible file is refused before any work, not after the volumes before it. ``remap`` and
    ``names`` are passed on to :func:`load_volume` (names default to the image file names).
    """
    pairs = list(zip(images, labels or [None] * len(images), strict=True))
    for image, label in pairs:
        open_nifti(image)
        if label is not None:
            open_nifti(label)
    names = list(names) if names is not None else [Path(image).name for image in images]
    return LazyVolumes(
        [
            (name, partial(load_volume, image, label, label_map, remap, name))
            for name, (image, label) in zip(names, pairs, strict=True)
        ],
        cache_bytes,
    )


def hu_dtype(image: np.ndarray) -> str:
    """How to store a CT in HU: ``int16`` for whole numbers in its range, else ``float32``.

    Either way an unattacked scan is written back exactly.
    """
    whole = bool(np.all(np.abs(image) <= np.iinfo(np.int16).max) and np.all(image % 1 == 0))
    return "int16" if whole else "float32"


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
