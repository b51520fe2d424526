"""A scan read from napari layers whose label values wait for the model that gives them meaning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.volume import Volume
from ..labels import LabelMap


@dataclass(frozen=True, eq=False)
class LayerScan:
    """An image layer read into a volume (without labels) and its labels layer's array or None.

    The label values are checked when :meth:`volume` is given the model's labels: a labels
    layer for a model with 13 organs holds values up to 13, which the paper's four would refuse.
    """

    image: Volume
    labels: np.ndarray | None = None
    file_grid: bool = True
    """Whether the image layer carries the grid of the file it was opened from (a layer made
    from an array does not; its voxels are taken as stored in canonical, LPS, order)."""

    @property
    def name(self) -> str:
        """The image layer's name."""
        return self.image.name

    def orientation_warning(self, orientation: str) -> str | None:
        """A warning when a model fed in the file's voxel order meets a layer without a file."""
        if orientation != "file" or self.file_grid:
            return None
        return (
            f"Layer {self.name!r} was not opened from a file, so its voxel order is unknown; the "
            "model is fed in 'file' orientation as if it were stored LPS. Open the NIfTI file "
            "(File > Open) for its own order."
        )

    def volume(self, label_map: LabelMap) -> Volume:
        """The scan with its labels read as ``label_map``'s channels (raises on unknown values)."""
        image = self.image
        return Volume(image.image, image.spacing, self.labels, image.name, image.grid, label_map)
