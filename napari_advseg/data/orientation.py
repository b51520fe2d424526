"""The in-plane layout of the axial slices a model expects, relative to our canonical order.

Volumes are held in one canonical (z, y, x) order (see :mod:`napari_advseg.data.volume`): rows
run from anterior to posterior and columns from the patient's right to left, the radiological
view. A model may have been trained on slices laid out otherwise:

- ``radiological``: the canonical slice itself;
- ``ras``: ``data[:, :, k]`` of the volume reoriented to RAS+ (nibabel's ``as_closest_canonical``,
  MONAI's ``Orientation("RAS")``): rows run from the patient's left to right, columns from
  posterior to anterior;
- ``file``: the voxels in the order the file stores them, as SimpleITK and nnU-Net read them:
  slice ``k`` of the file's third axis, rows along the file's second axis (j), columns along its
  first (i). The file's third axis must be the inferior-superior one.

Each layout is one of the eight flips and transposes of the canonical slice;
:class:`SliceLayout` applies it to images, labels and displacement fields and undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from nibabel import orientations

from ..errors import InvalidInputError

# (world axis, direction) in nibabel's RAS terms: axis 0 is left-right (+1 toward the right),
# axis 1 posterior-anterior (+1 toward anterior), axis 2 inferior-superior.
_CANONICAL_ROWS = (1, -1)  # rows run toward posterior
_CANONICAL_COLS = (0, -1)  # columns run toward the patient's left


@dataclass(frozen=True)
class SliceLayout:
    """Canonical slice -> model slice: transpose first (if set), then flip rows and/or columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @classmethod
    def from_axes(cls, rows: tuple[int, int], cols: tuple[int, int]) -> SliceLayout:
        """The layout whose rows and columns run along ``rows`` and ``cols`` (world axis, dir)."""
        transpose = rows[0] == _CANONICAL_COLS[0]
        base_rows, base_cols = (
            (_CANONICAL_COLS, _CANONICAL_ROWS) if transpose else (_CANONICAL_ROWS, _CANONICAL_COLS)
        )
        if rows[0] != base_rows[0] or cols[0] != base_cols[0]:
            raise InvalidInputError(
                "The slices' rows and columns must run along the anterior-posterior and "
                "left-right axes."
            )
        return cls(transpose, rows[1] != base_rows[1], cols[1] != base_cols[1])

    @property
    def is_identity(self) -> bool:
        """True for the canonical (radiological) layout."""
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(rows, columns) of a canonical slice of ``shape`` in this layout."""
        return (shape[1], shape[0]) if self.transpose else (shape[0], shape[1])

    def spacing(self, spacing: tuple[float, float]) -> tuple[float, float]:
        """(rows, columns) pixel size of a canonical slice's ``spacing`` in this layout."""
        return (spacing[1], spacing[0]) if self.transpose else (spacing[0], spacing[1])

    def apply(self, maps: torch.Tensor) -> torch.Tensor:
        """Canonical (..., H, W) maps in this layout."""
        if self.transpose:
            maps = maps.transpose(-1, -2)
        dims = [d for d, flip in ((-2, self.flip_rows), (-1, self.flip_cols)) if flip]
        return maps.flip(dims) if dims else maps

    def invert(self, maps: torch.Tensor) -> torch.Tensor:
        """Maps (..., H', W') in this layout back in the canonical layout."""
        dims = [d for d, flip in ((-2, self.flip_rows), (-1, self.flip_cols)) if flip]
        if dims:
            maps = maps.flip(dims)
        return maps.transpose(-1, -2) if self.transpose else maps

    def invert_displacement(self, displacement: torch.Tensor) -> torch.Tensor:
        """A (N, 2, H', W') field (channel 0 along columns, 1 along rows) in canonical terms.

        The geometry is undone like any map, and the vectors with it: a flipped axis negates its
        component and a transpose swaps the two.
        """
        along_cols, along_rows = displacement[:, 0], displacement[:, 1]
        if self.flip_cols:
            along_cols = -along_cols
        if self.flip_rows:
            along_rows = -along_rows
        if self.transpose:
            along_cols, along_rows = along_rows, along_cols
        return self.invert(torch.stack([along_cols, along_rows], dim=1))


IDENTITY = SliceLayout()


def slice_layout(orientation: str, affine: np.ndarray | None) -> SliceLayout:
    """The layout a model of ``orientation`` expects for slices of a volume with ``affine``.

    Raises
    ------
    InvalidInputError
        For ``file`` when the file's third axis is not the inferior-superior one.
    """
    if orientation == "radiological":
        return IDENTITY
    if orientation == "ras":
        return SliceLayout.from_axes(rows=(0, 1), cols=(1, 1))
    if orientation != "file":
        raise InvalidInputError(f"Unknown slice orientation {orientation!r}.")
    if affine is None:
        return IDENTITY
    axes = orientations.io_orientation(affine)  # file axis -> (world axis, direction)
    if int(axes[2, 0]) != 2:
        codes = "".join(orientations.ornt2axcodes(axes))
        raise InvalidInputError(
            f"The file stores its voxels in {codes} order, not in axial slices (its third axis "
            "is not inferior-superior); a model with orientation 'file' cannot be fed from it. "
            "Reorient the file, or describe the model as 'ras' or 'radiological'."
        )
    rows = (int(axes[1, 0]), int(axes[1, 1]))  # SimpleITK rows run along the file's j
    cols = (int(axes[0, 0]), int(axes[0, 1]))
    return SliceLayout.from_axes(rows, cols)
