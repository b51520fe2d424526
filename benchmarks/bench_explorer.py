"""Explorer latency: from a slider change to every layer updated, at 128x128 and 256x256.

Run under a display: ``xvfb-run -a .venv/bin/python benchmarks/bench_explorer.py``.
Each change sets one latent slider and runs the update the widget's timer would run (decode,
warp, segment twice, resample, write six layers, refresh), then lets Qt draw.
"""

from __future__ import annotations

import statistics
import time

import napari
import numpy as np
import torch
from qtpy.QtWidgets import QApplication

from napari_advseg._napari.explorer_widget import ExplorerWidget
from napari_advseg.data.phantom import PhantomConfig
from napari_advseg.data.samples import PhantomCohort


def redraw_floor(viewer: napari.Viewer, repeats: int = 60) -> float:
    """Median time for napari to redraw its canvas when nothing changed: the floor of a change."""
    canvas = viewer.window._qt_viewer.canvas._scene_canvas  # vispy canvas (private in napari)
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        canvas.update()
        QApplication.processEvents()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def run(size: int, spacing: float, changes: int) -> tuple[float, float, float]:
    cohort = PhantomCohort(3, config=PhantomConfig((40, size, size), (3.0, spacing, spacing)))
    volume = cohort.subject(0)
    viewer = napari.Viewer(show=True)
    viewer.add_image(volume.image, name="ct", scale=volume.spacing)
    widget = ExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_box.setCurrentText("ct")
    viewer.dims.set_current_step(0, 20)
    widget.start()
    widget.update_slice()
    rng = np.random.default_rng(0)
    times = []
    for _ in range(changes):
        slider = widget.sliders[int(rng.integers(len(widget.sliders)))]
        tick = time.perf_counter()
        slider.blockSignals(True)
        slider.setValue(int(rng.integers(-300, 301)))
        slider.blockSignals(False)
        widget.update_slice()
        QApplication.processEvents()
        times.append(time.perf_counter() - tick)
    floor = redraw_floor(viewer)
    viewer.close()
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], floor


def main() -> None:
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, 2 CPU threads; slider change -> all layers updated")
    for size, spacing in ((128, 3.0), (256, 1.5)):
        median, p95, floor = run(size, spacing, 120)
        print(
            f"  {size}x{size} slices ({spacing} mm): median {median * 1000:6.1f} ms, "
            f"p95 {p95 * 1000:6.1f} ms over 120 changes; a redraw with no change takes "
            f"{floor * 1000:.1f} ms ({floor / median:.0%} of the median)"
        )


if __name__ == "__main__":
    main()
