"""Screenshot of the main job for the README: run under a display, e.g. `xvfb-run -a`."""

from __future__ import annotations

import sys

import napari
from qtpy.QtWidgets import QApplication

from napari_advseg._napari.app import set_up


def main(path: str = "docs/app_explorer.png") -> None:
    viewer = napari.Viewer(title="napari-advseg", show=True)
    viewer.window.resize(1500, 950)
    widget = set_up(viewer)
    widget.sliders[10].setValue(200)
    widget.update_slice()
    widget.refresh_thumbnails()  # the widget redraws them once a drag pauses
    for name in ("abdomen_ct_ts", "abdomen_ct_ts V", "abdomen_ct_ts S0"):
        viewer.layers[name].visible = False
    viewer.reset_view()
    for _ in range(10):
        QApplication.processEvents()
    viewer.window.screenshot(path, canvas_only=False)
    print(f"wrote {path}")
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
