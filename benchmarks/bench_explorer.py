"""Explorer responsiveness: event-loop stalls during its jobs, and the cost of a slider change.

Run under a display: ``xvfb-run -a .venv/bin/python benchmarks/bench_explorer.py``.

Measured, on the real case (46 slices of 101x122 at 3 mm) and on a 512x512 version of it at
0.98 mm (resampled in-plane and padded with air, as a clinical scan would be):

- the longest event-loop stall (:class:`stall.StallMeter`) while *Start* loads the models, while
  *All slices* attacks every slice and while *Export* writes the NIfTI files (goal: none over
  200 ms);
- the main thread's time per slider change: setting the slider (state, request) plus copying the
  returned planes into the layers and refreshing them, without the canvas redraw (goal: 25 ms);
- the attack compute of one slice, :meth:`ExplorerSession.attack_slice`, in the worker's place
  (goals: median 30 ms at 128x128 -- the real case padded with air to 128x128 -- and 60 ms at
  512x512).

Other processes on the machine inflate every figure: run it on a quiet machine.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import napari
import numpy as np
import torch
from qtpy.QtCore import QEventLoop, QTimer

sys.path.insert(0, str(Path(__file__).parent))

from stall import StallMeter

from napari_advseg._napari.explorer_widget import ExplorerWidget
from napari_advseg._napari.layer_data import volume_layers
from napari_advseg.data.resample import resize_images, resize_labels
from napari_advseg.data.samples import load_real_case
from napari_advseg.data.volume import Volume

THREADS = 2
CHANGES = 40
STALL_GOAL_MS = 200.0
MAIN_GOAL_MS = 25.0
COMPUTE_GOALS_MS = {128: 30.0, 512: 60.0}
"""Attack compute goals by slice size (the real case itself, 101x122, has none)."""
SLICE = 25
SETTLE_S = 3.0
"""Seconds of event loop after the viewer opens, before anything is measured."""


def padded(volume: Volume, size: int, spacing: float, name: str) -> Volume:
    """``volume`` resampled in-plane to ``spacing`` mm and padded with air to size x size."""
    shape = tuple(
        round(n * s / spacing)
        for n, s in zip(volume.image.shape[1:], volume.spacing[1:], strict=True)
    )
    image = resize_images(torch.from_numpy(volume.image)[:, None], shape)[:, 0].numpy()
    labels = resize_labels(torch.from_numpy(volume.labels.astype(np.int64)), shape).numpy()
    out = np.full((volume.image.shape[0], size, size), -1000.0, np.float32)
    out_labels = np.zeros(out.shape, np.uint8)
    top, left = (size - shape[0]) // 2, (size - shape[1]) // 2
    out[:, top : top + shape[0], left : left + shape[1]] = image
    out_labels[:, top : top + shape[0], left : left + shape[1]] = labels
    return Volume(out, (volume.spacing[0], spacing, spacing), out_labels, name=name)


def wait(condition: Callable[[], bool], timeout: float = 600.0) -> None:
    """Run the Qt event loop until ``condition`` holds (checked every 5 ms).

    The main thread waits inside Qt's event loop, as it does in napari, not in a Python loop
    that would hold the GIL and slow the workers down.
    """
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: condition() and loop.quit())
    timer.start()
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("the explorer did not finish in time")
        loop.exec()
    timer.stop()


def idle(widget: ExplorerWidget) -> bool:
    return widget.is_idle()


def stalled(widget: ExplorerWidget, job: Callable[[], object]) -> float:
    """The longest event-loop stall (ms) while ``job`` runs to its end."""
    meter = StallMeter()
    meter.start()
    job()
    wait(lambda: idle(widget))
    return meter.stop()


def percentiles(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered) * 1e3, ordered[int(0.95 * (len(ordered) - 1))] * 1e3


def open_explorer(volume: Volume) -> tuple[napari.Viewer, ExplorerWidget, float]:
    viewer = napari.Viewer(show=True)
    for data, meta, kind in volume_layers(volume):
        getattr(viewer, f"add_{kind}")(data, **meta)
    widget = ExplorerWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.image_box.setCurrentText(volume.name)
    widget.labels_box.setCurrentText(f"{volume.name} labels")
    viewer.dims.set_current_step(0, SLICE)
    end = time.perf_counter() + SETTLE_S  # the window's first paint is not the explorer's
    wait(lambda: time.perf_counter() > end)
    stall = stalled(widget, widget.start)
    return viewer, widget, stall


def slider_main_thread(widget: ExplorerWidget, changes: int) -> list[float]:
    """Main-thread seconds per slider change: the change itself plus writing the result."""
    spent: list[float] = []
    handler = widget._slice_done
    widget.slice_runner.done.disconnect(handler)

    def timed(output: object) -> None:
        tick = time.perf_counter()
        handler(output)
        spent[-1] += time.perf_counter() - tick

    widget.slice_runner.done.connect(timed)
    rng = np.random.default_rng(0)
    for _ in range(changes):
        slider = widget.sliders[int(rng.integers(len(widget.sliders)))]
        tick = time.perf_counter()
        slider.setValue(int(rng.integers(-300, 301)))
        spent.append(time.perf_counter() - tick)
        wait(lambda: idle(widget))
    widget.slice_runner.done.disconnect(timed)
    widget.slice_runner.done.connect(handler)
    return spent


def attack_compute(widget: ExplorerWidget, changes: int) -> list[float]:
    """Seconds of :meth:`ExplorerSession.attack_slice` for random latents on one slice."""
    session = widget.session
    dims_d, dims_v = session.latent_dims
    rng = np.random.default_rng(1)
    session.attack_slice(SLICE, np.zeros(dims_d, np.float32), np.zeros(dims_v, np.float32))
    times = []
    for _ in range(changes):
        z_d = rng.uniform(-3, 3, dims_d).astype(np.float32)
        z_v = rng.uniform(-3, 3, dims_v).astype(np.float32)
        tick = time.perf_counter()
        session.attack_slice(SLICE, z_d, z_v)
        times.append(time.perf_counter() - tick)
    return times


def report(label: str, value: float, goal: float) -> str:
    mark = "meets" if value <= goal else "misses"
    return f"{label} {value:7.1f} ms (goal {goal:g} ms: {value / goal:.2f}x, {mark})"


def run(volume: Volume, jobs: bool) -> None:
    viewer, widget, start_stall = open_explorer(volume)
    shape = "x".join(str(n) for n in volume.image.shape[1:])
    print(f"{volume.name}: {volume.num_slices} slices of {shape} at {volume.spacing[1]:g} mm")
    print("  " + report("longest stall during Start:      ", start_stall, STALL_GOAL_MS))
    if jobs:
        stall = stalled(widget, widget.attack_volume)
        print("  " + report("longest stall during All slices: ", stall, STALL_GOAL_MS))
        with tempfile.TemporaryDirectory() as folder:
            widget.state.export_dir = folder
            stall = stalled(widget, widget.export)
            written = len(widget.exported)
        print("  " + report("longest stall during Export:     ", stall, STALL_GOAL_MS))
        assert written == 7, "the export did not write its 7 files"
    median, p95 = percentiles(slider_main_thread(widget, CHANGES))
    print("  " + report("slider change, main thread median", median, MAIN_GOAL_MS))
    print(f"  {'':34} p95 {p95:7.1f} ms over {CHANGES} changes")
    median, p95 = percentiles(attack_compute(widget, CHANGES))
    goal = COMPUTE_GOALS_MS.get(volume.image.shape[-1])
    label = "attack compute (worker) median   "
    print("  " + (report(label, median, goal) if goal else f"{label} {median:7.1f} ms"))
    print(f"  {'':34} p95 {p95:7.1f} ms over {CHANGES} changes")
    widget.unload()
    viewer.close()


def main() -> None:
    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}, {THREADS} CPU threads for torch")
    real = load_real_case()
    run(real, jobs=True)
    run(padded(real, 128, 3.0, "real_128"), jobs=False)
    run(padded(real, 512, 0.98, "real_512"), jobs=False)


if __name__ == "__main__":
    main()
