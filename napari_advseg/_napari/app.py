"""``advseg-app``: napari with the explorer docked, the real CT and the shipped models loaded."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .explorer_widget import ExplorerWidget

if TYPE_CHECKING:
    import napari

PLUGIN = "napari-advseg"
SAMPLE = "real_ct"
MIDDLE_SLICE = 25
"""A slice of the real case that shows all four organs."""


def set_up(viewer: napari.viewer.Viewer) -> ExplorerWidget:
    """Open the real CT with its labels, dock the explorer and show the attack on one slice."""
    layers = viewer.open_sample(PLUGIN, SAMPLE)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Adversarial explorer")
    image, labels = layers[0], layers[1]
    widget.image_box.setCurrentText(image.name)
    widget.labels_box.setCurrentText(labels.name)
    labels.visible = False
    viewer.dims.set_current_step(0, min(MIDDLE_SLICE, image.data.shape[0] - 1))
    widget.start()
    widget.update_slice()
    return widget


def main() -> None:
    """Start napari ready to explore (the README's main job)."""
    import napari

    viewer = napari.Viewer(title="napari-advseg")
    set_up(viewer)
    napari.run()
