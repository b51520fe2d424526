"""A CT volume in one canonical orientation, with spacing, labels and its source grid.

Arrays are ordered (z, y, x) as napari shows them: z runs from inferior to superior, y (rows)
from anterior to posterior and x (columns) from the patient's right to left, which is the usual
radiological axial view. :class:`SourceGrid` remembers how the file's own array maps onto this
order, so that everything written later lands on the file's grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nibabel import orientations

from ..errors import InvalidInputError
from ..labels import DEFAULT_LABEL_MAP, LabelMap

CANONICAL_AXCODES = ("L", "P", "S")
"""Axis codes of a file's (i, j, k) array that map to canonical (x, y, z) unchanged."""

_CANONICAL_ORNT = orientations.axcodes2ornt(CANONICAL_AXCODES)


@dataclass(frozen=True)
class SourceGrid:
    """The voxel grid of the file a volume came from: affine and shape of its own array."""

    affine: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def from_spacing(
        cls, shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, ...]
    ) -> SourceGrid:
        """Grid of an in-memory canonical array: an LPS-ordered file with the given spacing."""
        sz, sy, sx = (float(s) for s in spacing_zyx)
        affine = np.diag([-sx, -sy, sz, 1.0])
        return cls(affine, (shape_zyx[2], shape_zyx[1], shape_zyx[0]))

    def _to_canonical(self) -> np.ndarray:
        return orientations.ornt_transform(
            orientations.io_orientation(self.affine), _CANONICAL_ORNT
        )

    def to_canonical(self, data: np.ndarray) -> np.ndarray:
        """Reorder a file-ordered array (i, j, k) into canonical (z, y, x)."""
        return np.ascontiguousarray(
            orientations.apply_orientation(data, self._to_canonical()).transpose(2, 1, 0)
        )

    def from_canonical(self, data: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`: a canonical (z, y, x) array in the file's order."""
        back = orientations.ornt_transform(
            _CANONICAL_ORNT, orientations.io_orientation(self.affine)
        )
        return np.ascontiguousarray(orientations.apply_orientation(data.transpose(2, 1, 0), back))

    def canonical_shape(self) -> tuple[int, int, int]:
        """Shape of the file's array in canonical (z, y, x) order."""
        order = self._to_canonical()[:, 0].astype(int)
        xyz = [0, 0, 0]
        for axis, size in zip(order, self.shape, strict=True):
            xyz[axis] = size
        return (xyz[2], xyz[1], xyz[0])

    def axial_slab(self, index: int) -> SourceGrid:
        """The grid of canonical slice ``index`` alone: one voxel thick, in its place in space.

        A (1, y, x) array written on it overlays that slice of the source in any viewer.
        """
        return self.axial_block(index, index + 1)

    def axial_block(self, start: int, stop: int) -> SourceGrid:
        """The grid of canonical slices ``start`` to ``stop - 1``, in their place in space."""
        transform = self._to_canonical()
        axis = int(np.flatnonzero(transform[:, 0] == 2)[0])  # the file axis that is canonical z
        size = self.shape[axis]
        if not 0 <= start < stop <= size:
            if stop == start + 1:
                raise InvalidInputError(f"Slice {start} is outside the volume's {size} slices.")
            raise InvalidInputError(
                f"Slices {start} to {stop - 1} are not within the volume's {size} slices."
            )
        voxel = start if transform[axis, 1] > 0 else size - stop
        shift = np.eye(4)
        shift[axis, 3] = voxel
        shape = list(self.shape)
        shape[axis] = stop - start
        return SourceGrid(self.affine @ shift, (shape[0], shape[1], shape[2]))

    def canonical_spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along canonical (z, y, x)."""
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        order = self._to_canonical()[:, 0].astype(
            int
        )  # file axis i goes to canonical axis order[i]
        xyz = np.empty(3)
        xyz[order] = zooms
        return (float(xyz[2]), float(xyz[1]), float(xyz[0]))


@dataclass
class Volume:
    """A CT volume in Hounsfield units, optionally with a label volume, in canonical order.

    Attributes
    ----------
    image
        float32 array (z, y, x) in Hounsfield units.
    spacing
        Voxel size in mm along (z, y, x).
    labels
        uint8 array (z, y, x) of label ids (0 background) or None.
    name
        Where it came from (a file or layer name), used in messages.
    grid
        The source file's grid, for writing results back onto it.
    label_map
        Names and colors of the label ids.
    """

    image: np.ndarray
    spacing: tuple[float, float, float]
    labels: np.ndarray | None = None
    name: str = "volume"
    grid: SourceGrid | None = None
    label_map: LabelMap = field(default=DEFAULT_LABEL_MAP)

    def __post_init__(self) -> None:
        self.image = check_image(self.image, self.name)
        self.spacing = check_spacing(self.spacing, self.name)
        if self.labels is not None:
            self.labels = check_labels(self.labels, self.image.shape, self.label_map, self.name)
        if self.grid is None:
            self.grid = SourceGrid.from_spacing(self.image.shape, self.spacing)

    @property
    def num_slices(self) -> int:
        """Number of axial slices."""
        return int(self.image.shape[0])

    def block(self, start: int, stop: int, name: str | None = None) -> Volume:
        """Canonical slices ``start`` to ``stop - 1`` as a volume in their place in space."""
        grid = self.grid.axial_block(start, stop) if self.grid is not None else None
        labels = None if self.labels is None else self.labels[start:stop]
        return Volume(
            self.image[start:stop],
            self.spacing,
            labels,
            name or f"{self.name}[{start}:{stop}]",
            grid,
            self.label_map,
        )

    def require_labels(self) -> np.ndarray:
        """Return the labels, or raise if there are none or none is foreground."""
        if self.labels is None:
            raise InvalidInputError(
                f"{self.name}: no label volume; training and evaluation need one (give --labels)."
            )
        if not np.any(self.labels):
            raise InvalidInputError(
                f"{self.name}: the label volume has no labelled voxel; check that it is the "
                "right file and that organs are labelled 1..C."
            )
        return self.labels


def check_image(image: np.ndarray, name: str) -> np.ndarray:
    """Validate a CT image array and return it as float32 (z, y, x)."""
    image = np.asarray(image)
    image = _squeeze_trailing(image)
    if image.ndim != 3:
        raise InvalidInputError(
            f"{name}: expected a 3D volume (slices, rows, columns), got a {image.ndim}D array of "
            f"shape {image.shape}. Give a single 3D CT volume; split 4D series first."
        )
    if not (np.issubdtype(image.dtype, np.number) and not np.iscomplexobj(image)):
        raise InvalidInputError(f"{name}: image data type {image.dtype} is not a real number type.")
    if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise InvalidInputError(
            f"{name}: {bad} voxels are NaN or infinite; fill them (e.g. with -1000 HU, air) first."
        )
    return np.ascontiguousarray(image, dtype=np.float32)


def check_spacing(spacing: tuple[float, ...], name: str) -> tuple[float, float, float]:
    """Validate a (z, y, x) voxel size in mm."""
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name}: spacing must be three positive numbers in mm, got {spacing!r}."
        ) from error
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise InvalidInputError(
            f"{name}: spacing must be three positive numbers in mm, got {spacing}."
        )
    return values  # type: ignore[return-value]


def check_labels(
    labels: np.ndarray, shape: tuple[int, ...], label_map: LabelMap, name: str
) -> np.ndarray:
    """Validate a label array against the image shape and the label map; return uint8."""
    labels = _squeeze_trailing(np.asarray(labels))
    if labels.shape != tuple(shape):
        raise InvalidInputError(
            f"{name}: labels of shape {labels.shape} do not match the image of shape "
            f"{tuple(shape)}; give the label volume that belongs to this image."
        )
    labels = integer_labels(labels, name)
    label_map.check_values(labels, name)
    return np.ascontiguousarray(labels, dtype=np.uint8)


def integer_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """``labels`` as integers: integer arrays as they are, whole-number floats as int64.

    Raises
    ------
    InvalidInputError
        For non-numeric, non-finite or fractional values.
    """
    if np.issubdtype(labels.dtype, np.integer):
        return labels
    if not np.issubdtype(labels.dtype, np.number) or not np.all(np.isfinite(labels)):
        raise InvalidInputError(f"{name}: label values must be finite integers.")
    if not np.array_equal(labels, np.round(labels)):
        raise InvalidInputError(
            f"{name}: label values must be integers, found fractional values such as "
            f"{labels[labels != np.round(labels)].flat[0]:g}; is this an image, not labels?"
        )
    return labels.astype(np.int64)


def _squeeze_trailing(array: np.ndarray) -> np.ndarray:
    """Drop trailing singleton axes beyond the third (NIfTI often stores (x, y, z, 1))."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array
