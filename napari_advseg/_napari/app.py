"""``advseg-app``: napari with the explorer docked, the real CT and the shipped models loaded.

The first view is the attack itself: I_DV with the S0 and S_DV overlays on a slice that shows
all four organs, fitted to a window that fills the screen; V, |D| and the arrows of D are one click
away in the layer list. ``scripts/screenshot.py`` takes the README's picture through
:func:`open_main_job`, the same code path, changing nothing.
"""

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
    """Open the real CT with its labels, dock the explorer and start it on one slice.

    Loading runs in a worker; once the layers exist the view is fitted to the slice. Wait for
    ``widget.state.loaded and widget.is_idle()`` to see the attack.
    """
    layers = viewer.open_sample(PLUGIN, SAMPLE)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Adversarial explorer")
    image, labels = layers[0], layers[1]
    widget.image_box.setCurrentText(image.name)
    widget.labels_box.setCurrentText(labels.name)
    labels.visible = False
    viewer.dims.set_current_step(0, min(MIDDLE_SLICE, image.data.shape[0] - 1))

    def fit(event: object) -> None:
        if getattr(event, "value", False):
            viewer.layers.selection.active = widget.layers["I_DV"]  # its controls on show
            viewer.reset_view()

    widget.state.events.loaded.connect(fit)
    widget.start()
    return widget


def fill_screen(viewer: napari.viewer.Viewer) -> None:
    """Show the viewer's window maximised (napari has no public call for it)."""
    window = getattr(viewer.window, "_qt_window", None)
    if window is not None:
        window.showMaximized()


def open_main_job(viewer: napari.viewer.Viewer) -> ExplorerWidget:
    """The README's main job in ``viewer``: a window filling the screen, the explorer started."""
    fill_screen(viewer)
    return set_up(viewer)


def main() -> None:
    """Start napari ready to explore (the README's main job)."""
    import napari

    viewer = napari.Viewer(title="napari-advseg")
    open_main_job(viewer)
    napari.run()
