"""Main-thread stalls while the training widget trains: an attacker, then a U-Net, on the real CT.

Run under a display: ``xvfb-run -a .venv/bin/python benchmarks/bench_training_widget.py``.
Opens napari with the real abdominal CT sample (File > Open Sample > napari-advseg > real_ct),
docks *Train networks*, and trains from the widget as a user would: an attacker of the shipped
U-Net for a few dozen steps, then a U-Net on the CT and its labels. A 5 ms Qt timer
(:class:`stall.StallMeter`) records the longest time the main thread stayed away from the event
loop, for the click on *Train* (the widget reads its settings and layers) and for the run itself
(building the trainer, training, the events, the progress bar, the loss plot). Goal: no stall
over 200 ms. ``--widget module:Class`` docks another widget class with the same controls (for
example the previous version of the widget, to compare on the same machine and load).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import napari
import torch
from qtpy.QtCore import QEventLoop, QTimer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stall import StallMeter

from napari_advseg._napari.training_widget import KINDS

GOAL_MS = 200.0


def wait(milliseconds: int) -> None:
    """Run the event loop for a while (the window shows and settles)."""
    loop = QEventLoop()
    QTimer.singleShot(milliseconds, loop.quit)
    loop.exec()


def train(widget: object, meter: StallMeter) -> tuple[float, float, float, int, float]:
    """Train from the widget until it finishes: click ms, longest and p99 stall ms, events, s."""
    events: list[object] = []
    tick = time.perf_counter()
    widget.start()
    click = (time.perf_counter() - tick) * 1000.0
    if widget.worker is None:
        raise SystemExit(f"training did not start: {widget.status.text()}")
    widget.worker.yielded.connect(events.append)
    loop = QEventLoop()
    poll = QTimer()
    poll.timeout.connect(lambda: widget.worker is None and loop.quit())
    poll.start(50)
    meter.start()
    tick = time.perf_counter()
    loop.exec()
    seconds = time.perf_counter() - tick
    longest = meter.stop()
    poll.stop()
    gaps = sorted(meter.gaps_ms)
    p99 = gaps[int(0.99 * (len(gaps) - 1))]
    return click, longest, p99, len(events), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack-steps", type=int, default=24)
    parser.add_argument("--unet-steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--train", default="attacker,unet", help="what to train, in order (comma-separated)"
    )
    parser.add_argument("--widget", help="module:Class of the widget to dock (default: plugin's)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)  # private: a realistic window size under Xvfb
    viewer.open_sample("napari-advseg", "real_ct")
    if args.widget:
        module, name = args.widget.split(":")
        widget = getattr(importlib.import_module(module), name)(viewer)
        viewer.window.add_dock_widget(widget, name="Train networks")
    else:
        _, widget = viewer.window.add_plugin_dock_widget("napari-advseg", "Train networks")
    labels = [widget.labels_box.itemText(i) for i in range(widget.labels_box.count())]
    widget.labels_box.setCurrentText(next(name for name in labels if name))
    wait(1000)
    meter = StallMeter()
    results = {}
    print(f"torch {torch.__version__}, 2 CPU threads, batch {args.batch}; real CT sample")
    with tempfile.TemporaryDirectory() as folder:
        widget.device.setCurrentText("cpu")
        widget.batch.setValue(args.batch)
        runs = {"attacker": (KINDS[1], args.attack_steps), "unet": (KINDS[0], args.unet_steps)}
        for kind, steps in (runs[name] for name in args.train.split(",")):
            widget.kind.setCurrentText(kind)
            widget.steps.setValue(steps)
            widget.out.setText(str(Path(folder) / kind.split()[0].lower()))
            results[kind] = train(widget, meter)
            click, longest, p99, events, seconds = results[kind]
            print(f"  {kind}, {steps} steps: {events} events in {seconds:.1f} s")
    viewer.close()
    print(f"Longest main-thread stall (goal: none over {GOAL_MS:.0f} ms):")
    for kind, (click, longest, p99, _, _) in results.items():
        verdict = "met" if max(click, longest) <= GOAL_MS else "NOT met"
        print(
            f"  {kind:22s} click on Train {click:6.1f} ms; while training {longest:6.1f} ms "
            f"(p99 of 5 ms ticks {p99:5.1f} ms): {verdict}"
        )
    worst = max(max(r[0], r[1]) for r in results.values())
    print(f"  worst {worst:.1f} ms: {'met' if worst <= GOAL_MS else 'NOT met'}")


if __name__ == "__main__":
    main()
