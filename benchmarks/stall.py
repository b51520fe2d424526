"""Longest event-loop stall: how long the main thread stayed away from the Qt event loop.

A 5 ms repeating timer records the gaps between its ticks; any gap far above 5 ms is time the
main thread spent elsewhere (a slot, a redraw), during which the viewer could not respond.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QObject, QTimer


class StallMeter(QObject):
    """Start, let the work run through the event loop, then read :attr:`longest_ms`."""

    def __init__(self, interval_ms: int = 5) -> None:
        super().__init__()
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.gaps_ms: list[float] = []
        self._last = 0.0

    def start(self) -> None:
        self.gaps_ms = []
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        self._tick()
        return self.longest_ms

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps_ms.append((now - self._last) * 1000.0)
        self._last = now

    @property
    def longest_ms(self) -> float:
        return max(self.gaps_ms, default=0.0)
