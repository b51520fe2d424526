"""Volumes to napari layer data and back: scale from spacing, the organ colors, the source grid."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from ..data.volume import SourceGrid, Volume
from ..labels import DEFAULT_LABEL_MAP, LabelMap

GRID_KEY = "advseg_source_grid"
"""Layer metadata key that keeps the source file's grid, so a writer lands on it."""

CT_WINDOW = (-160.0, 240.0)
"""Default contrast limits (HU) for abdominal CT: a soft-tissue window."""


def label_colormap(label_map: LabelMap = DEFAULT_LABEL_MAP) -> DirectLabelColormap:
    """The organ colors of ``label_map`` (transparent background) as a napari colormap."""
    colors: dict[int | None, Any] = {None: (0.0, 0.0, 0.0, 0.0)}
    colors.update(label_map.colors_rgba())
    return DirectLabelColormap(color_dict=colors)


def image_layer_data(
    volume: Volume, name: str | None = None
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A CT volume as an image layer tuple (HU, scale = spacing, soft-tissue window)."""
    meta = {
        "name": name or volume.name,
        "scale": volume.spacing,
        "colormap": "gray",
        "contrast_limits": CT_WINDOW,
        "metadata": {GRID_KEY: volume.grid},
    }
    return volume.image, meta, "image"


def labels_layer_data(
    labels: np.ndarray, volume: Volume, name: str
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A label volume on ``volume``'s grid as a labels layer tuple in the organ colors."""
    meta = {
        "name": name,
        "scale": volume.spacing,
        "colormap": label_colormap(volume.label_map),
        "metadata": {GRID_KEY: volume.grid},
    }
    return labels, meta, "labels"


def volume_layers(volume: Volume) -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """An image layer and, when present, its labels layer."""
    layers = [image_layer_data(volume)]
    if volume.labels is not None:
        layers.append(labels_layer_data(volume.labels, volume, f"{volume.name} labels"))
    return layers


def grid_of(data: np.ndarray, meta: dict[str, Any]) -> SourceGrid:
    """The source grid kept in a layer's metadata, or one made from its scale."""
    grid = (meta.get("metadata") or {}).get(GRID_KEY)
    shape = np.asarray(data).shape
    if isinstance(grid, SourceGrid) and grid.canonical_shape() == shape:
        return grid
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0, 1.0, 1.0)))[-3:]
    return SourceGrid.from_spacing(shape, scale)
