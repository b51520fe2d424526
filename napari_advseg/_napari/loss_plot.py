"""The training widget's live loss plot: napari's theme, small panels, drawn off the GUI thread.

Drawing a figure of several panels with matplotlib's Agg takes 100 to 400 ms of CPU (more on
a loaded machine), far too long for the GUI thread, which must not stall over 200 ms. So the
GUI thread only appends each step's losses to growing arrays (microseconds) and, at most every
:data:`REDRAW_MS` and only while something changed, hands a snapshot to one background thread
that draws it (:class:`~napari_advseg._napari.loss_figure.LossFigure`); the finished image
comes back through a queued Qt signal and is shown as a pixmap (about a millisecond). One draw
runs at a time; changes made meanwhile are drawn next, so nothing is lost and nothing queues up.
The figure follows the viewer's theme (``viewer.events.theme``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_warning
from napari.utils.theme import get_theme
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from .loss_figure import UNET_LAYOUT, LossFigure, PlotLayout, PlotSnapshot, ThemeColors

if TYPE_CHECKING:
    import napari

REDRAW_MS = 500
"""The plot is drawn at most this often (milliseconds) while losses arrive."""

DRAW_SHARE = 0.2
"""At most this share of one CPU core goes to drawing: after a draw of t seconds, the next
waits at least t / DRAW_SHARE (training needs the cores more than the plot does)."""

MAX_PAUSE_MS = 5000
"""However slow drawing is, the plot is at most this old (milliseconds) while losses arrive."""


def theme_colors(name: str) -> ThemeColors:
    """The colors of napari's theme ``name`` ("system" follows the desktop; unknown: dark)."""
    try:
        theme = get_theme(name)
    except ValueError:
        theme = get_theme("dark")
    return ThemeColors(
        background=_hex(theme.background),
        canvas=_hex(theme.canvas),
        text=_hex(theme.text),
        grid=_hex(theme.primary),
        dark=theme.type == "dark",
    )


def _hex(color: object) -> str:
    """A napari theme color as ``#rrggbb`` (pydantic's ``as_hex`` may shorten it to ``#rgb``)."""
    red, green, blue = color.as_rgb_tuple()[:3]
    return f"#{red:02x}{green:02x}{blue:02x}"


class _Series:
    """A growing array of one term's values and steps: appending is amortised O(1)."""

    def __init__(self) -> None:
        self.data = np.empty(64, dtype=np.float64)
        self.steps = np.empty(64, dtype=np.float64)
        self.size = 0

    def append(self, value: float, step: float | None = None) -> None:
        if self.size == len(self.data):
            # earlier views keep the old buffers, which are never written again
            self.data = self._grown(self.data)
            self.steps = self._grown(self.steps)
        self.data[self.size] = value
        self.steps[self.size] = self.size + 1 if step is None else step
        self.size += 1

    def _grown(self, array: np.ndarray) -> np.ndarray:
        grown = np.empty(2 * len(array), dtype=np.float64)
        grown[: self.size] = array[: self.size]
        return grown

    def view(self) -> np.ndarray:
        return self._frozen(self.data)

    def step_view(self) -> np.ndarray:
        return self._frozen(self.steps)

    def _frozen(self, array: np.ndarray) -> np.ndarray:
        view = array[: self.size]
        view.flags.writeable = False
        return view


class _Bridge(QObject):
    """Carries a finished draw from the drawing thread to the GUI thread (queued signal)."""

    done = Signal(object)


class LossPlot(QWidget):
    """The loss panels of one training run, redrawn in the background while it trains."""

    rendered = Signal()
    """Emitted on the GUI thread each time a new image of the plot is shown."""

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.layout_spec: PlotLayout = UNET_LAYOUT
        self.targets: dict[str, float] = {}
        self.series: dict[str, _Series] = {}
        self.colors = theme_colors(str(viewer.theme))
        self.shown: PlotSnapshot | None = None
        """The snapshot of the image on screen (theme colors, terms), for tests and callers."""
        self.figure = LossFigure()
        """Drawn by the background thread only; read it on the GUI thread when :attr:`idle`."""
        self.label = QLabel()
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.label.setMinimumSize(280, 220)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="advseg-loss-plot")
        self._bridge = _Bridge(self)
        self._bridge.done.connect(self._show)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._submit)
        self._busy = False
        self._dirty = False
        self._warned = False
        self._pause_ms = REDRAW_MS
        viewer.events.theme.connect(self._on_theme)
        executor = self._executor
        # a draw still running finishes before the Qt objects it reports to go away
        self.destroyed.connect(lambda *_: executor.shutdown(wait=True))
        self.request_draw(now=True)

    @property
    def idle(self) -> bool:
        """No draw is running or waiting."""
        return not (self._busy or self._dirty or self._timer.isActive())

    def reset(self, layout: PlotLayout, targets: Mapping[str, float] | None = None) -> None:
        """Start a new run: empty histories, this panel layout, these target lines."""
        self.layout_spec = layout
        self.targets = dict(targets or {})
        self.series = {}
        self.request_draw(now=True)

    def append(self, losses: Mapping[str, float], step: int | None = None) -> None:
        """Record one step's loss terms (GUI thread; cheap: the redraw is throttled).

        ``step``: the run's step (drawn on the x axis; default: each term's count of values).
        Give it when some terms are reported at some steps only, or when a run resumes.
        """
        for name, value in losses.items():
            if name not in self.series:
                self.series[name] = _Series()
            self.series[name].append(float(value), step)
        self.request_draw()

    def history(self, name: str) -> np.ndarray:
        """The values recorded for one term so far (empty if none)."""
        return self.series[name].view() if name in self.series else np.empty(0)

    def request_draw(self, now: bool = False) -> None:
        """Redraw soon: at once if ``now`` and nothing is drawing, else within :data:`REDRAW_MS`."""
        self._dirty = True
        if self._busy:
            return  # drawn again when the running draw comes back
        if now:
            self._timer.start(0)
        elif not self._timer.isActive():
            self._timer.start(self._pause_ms)

    def resizeEvent(self, event: object) -> None:
        """Draw again at the new size."""
        super().resizeEvent(event)
        self.request_draw()

    def _on_theme(self, event: object) -> None:
        # (napari disconnects this by itself once the widget's Qt object is deleted)
        self.colors = theme_colors(str(getattr(event, "value", self.viewer.theme)))
        self.request_draw(now=True)

    def _snapshot(self) -> PlotSnapshot:
        return PlotSnapshot(
            layout=self.layout_spec,
            series={name: series.view() for name, series in self.series.items()},
            steps={name: series.step_view() for name, series in self.series.items()},
            colors=self.colors,
            width=max(self.label.width(), self.label.minimumWidth()),
            height=max(self.label.height(), self.label.minimumHeight()),
            pixel_ratio=float(self.label.devicePixelRatioF()),
            targets=dict(self.targets),
        )

    def _submit(self) -> None:
        if self._busy:
            return
        self._dirty = False
        self._busy = True
        snapshot = self._snapshot()
        figure, bridge = self.figure, self._bridge

        def draw() -> None:  # in the drawing thread
            tick = time.perf_counter()
            try:
                outcome: np.ndarray | Exception = figure.render(snapshot)
            except Exception as error:  # a plot must never end a training run
                outcome = error
            try:
                bridge.done.emit((snapshot, outcome, time.perf_counter() - tick))
            except RuntimeError:  # the widget was deleted meanwhile
                pass

        self._executor.submit(draw)

    def _show(self, result: tuple[PlotSnapshot, np.ndarray | Exception, float]) -> None:
        snapshot, rgba, seconds = result
        self._busy = False
        self._pause_ms = min(max(REDRAW_MS, round(1000 * seconds / DRAW_SHARE)), MAX_PAUSE_MS)
        if isinstance(rgba, Exception):
            if not self._warned:
                show_warning(f"The loss plot could not be drawn: {type(rgba).__name__}: {rgba}")
                self._warned = True
        else:
            height, width = rgba.shape[:2]
            image = QImage(rgba.data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
            image = image.copy()  # own the pixels: rgba goes away
            image.setDevicePixelRatio(max(snapshot.pixel_ratio, 1.0))
            self.label.setPixmap(QPixmap.fromImage(image))
            self.shown = snapshot
        if self._dirty:
            self._timer.start(self._pause_ms)
        self.rendered.emit()
