"""Screenshot of ``advseg-app`` as it opens, for the README.

It goes through the app's own code path (``open_main_job``) and changes nothing: no slider, no
layer visibility, no view. It waits in Qt's event loop (a busy wait would starve the worker) for
the explorer to finish loading, then one more second for the thumbnails, which the widget redraws
300 ms after a change. Run it on a screen of a usual size, e.g.
``xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/screenshot.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import napari
from qtpy.QtCore import QEventLoop, QTimer

from napari_advseg._napari.app import open_main_job


def run_until(condition: Callable[[], bool], timeout_ms: int) -> bool:
    """Run the event loop until ``condition()`` holds (checked every 50 ms) or time is up."""
    loop = QEventLoop()
    poll, limit = QTimer(), QTimer()
    poll.timeout.connect(lambda: condition() and loop.quit())
    limit.setSingleShot(True)
    limit.timeout.connect(loop.quit)
    poll.start(50)
    limit.start(timeout_ms)
    loop.exec()
    poll.stop()
    return condition()


def main(path: str = "docs/app_explorer.png") -> None:
    viewer = napari.Viewer(title="napari-advseg")
    widget = open_main_job(viewer)
    if not run_until(lambda: widget.state.loaded and widget.is_idle(), 180_000):
        raise SystemExit("the explorer did not finish loading within 3 minutes")
    run_until(lambda: False, 1000)  # thumbnails and the last redraw
    viewer.window.screenshot(path, canvas_only=False)
    print(f"wrote {path}")
    viewer.close()
    widget.shut_down()  # closing removes layers, which may have asked for one more slice


if __name__ == "__main__":
    main(*sys.argv[1:])
