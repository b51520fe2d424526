"""Choosing a CT image layer and an optional labels layer, and turning them into a Volume."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image, Labels
from qtpy.QtWidgets import QComboBox

from ..data.volume import SourceGrid, Volume
from ..errors import AdvsegError
from ..labels import DEFAULT_LABEL_MAP
from .layer_data import GRID_KEY
from .layer_scan import LayerScan

if TYPE_CHECKING:
    import napari


class LayerChoice:
    """Two combo boxes (image, optional labels) that follow the viewer's layer list.

    ``exclude`` returns the layers not to offer (for example a widget's own outputs).
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, exclude: Callable[[], list[object]] | None = None
    ) -> None:
        self.viewer = viewer
        self.exclude = exclude or list
        self.image_box = QComboBox()
        self.labels_box = QComboBox()
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        self.refresh()

    def refresh(self, *_: object) -> None:
        """List the viewer's image and labels layers, keeping the current choices."""
        excluded = {id(layer) for layer in self.exclude()}
        layers = [layer for layer in self.viewer.layers if id(layer) not in excluded]
        for box, kind, optional in (
            (self.image_box, Image, False),
            (self.labels_box, Labels, True),
        ):
            current = box.currentText()
            names = [layer.name for layer in layers if isinstance(layer, kind)]
            box.clear()
            box.addItems(([""] if optional else []) + names)
            if current in names:
                box.setCurrentText(current)

    def image_layer(self, name: str | None = None) -> Image:
        """The chosen image layer (or the one named ``name``), checked to be a 3D grey volume."""
        name = self.image_box.currentText() if name is None else name
        if not name:
            raise AdvsegError("Open a CT volume first (File > Open, or File > Open Sample).")
        if name not in self.viewer.layers:
            raise AdvsegError(f"There is no layer {name!r} any more; choose another CT layer.")
        layer = self.viewer.layers[name]
        if not isinstance(layer, Image) or layer.rgb or layer.ndim != 3:
            raise AdvsegError(
                f"Layer {layer.name!r} is not a 3D grey-level CT volume; choose a 3D image layer."
            )
        return layer

    def scan(self, image_name: str | None = None, labels_name: str | None = None) -> LayerScan:
        """The chosen (or named) layers, spacing from the image's scale, labels not yet checked.

        ``labels_name`` "" means no labels; ``None`` takes the choices of the combo boxes. The
        label values are checked against a model's labels by :meth:`LayerScan.volume`.
        """
        image = self.image_layer(image_name)
        labels = None
        labels_name = self.labels_box.currentText() if labels_name is None else labels_name
        if labels_name:
            if labels_name not in self.viewer.layers:
                raise AdvsegError(f"There is no layer {labels_name!r} any more; choose another.")
            labels_layer = self.viewer.layers[labels_name]
            if not isinstance(labels_layer, Labels):
                raise AdvsegError(f"Layer {labels_name!r} is not a labels layer; choose one.")
            labels = np.asarray(labels_layer.data)
            if labels.shape != image.data.shape:
                raise AdvsegError(
                    f"Labels {labels_layer.name!r} {labels.shape} do not match image "
                    f"{image.name!r} {image.data.shape}; choose matching layers or none."
                )
        spacing = tuple(float(s) for s in image.scale[-3:])
        data, grid = np.asarray(image.data), layer_grid(image)
        volume = Volume(data, spacing, name=image.name, grid=grid)
        return LayerScan(volume, labels, file_grid=grid is not None)

    def volume(self, image_name: str | None = None, labels_name: str | None = None) -> Volume:
        """The chosen (or named) layers as a :class:`Volume` labelled in the paper's organs."""
        return self.scan(image_name, labels_name).volume(DEFAULT_LABEL_MAP)


def layer_grid(image: Image) -> SourceGrid | None:
    """The file grid a layer opened from a NIfTI file carries, if it still fits the layer's data.

    Models fed in the file's own voxel order (``file`` orientation, nnU-Net's) need it; a layer
    made from an array has none, and is taken as stored in canonical (LPS) order.
    """
    grid = image.metadata.get(GRID_KEY)
    if isinstance(grid, SourceGrid) and grid.canonical_shape() == tuple(image.data.shape):
        return grid
    return None
