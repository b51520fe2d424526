"""The loss figure of the training widget: small panels of loss terms, drawn in napari's theme.

Pure matplotlib (no Qt): :meth:`LossFigure.render` turns a :class:`PlotSnapshot` (the loss
histories, the panel layout, the theme's colors and the size in pixels) into an RGBA image. The
widget calls it from a background thread, one render at a time, so the GUI thread never waits
for matplotlib.

Nine attack terms span several orders of magnitude (the xi term is about 1, the intensity
penalty 1e-5), so one shared axis hides most of them. Terms are grouped by what they measure,
each group on its own panel with its own y scale; the penalties, which differ by decades and
include the negative diversity reward, use a symmetric-log axis. Legends sit above their panel,
never over the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import SymmetricalLogLocator

DPI = 100.0
"""Dots per inch of one logical pixel (times the screen's device pixel ratio)."""

MIN_SIZE = 120
"""The smallest figure side drawn, in logical pixels."""

MARGINS = (46, 8, 26, 30)
"""Space around each panel in logical pixels: left (y labels), right, top (legend), bottom."""

MAX_POINTS = 400
"""At most this many points per line: longer histories are averaged in bins of equal steps."""

DARK_CYCLE = (
    "#8dd3c7",
    "#fdb462",
    "#fa8174",
    "#81b1d2",
    "#b3de69",
    "#bc82bd",
    "#feffb3",
    "#ccebc4",
)
LIGHT_CYCLE = (
    "#1f77b4",
    "#ff7f0e",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
)


@dataclass(frozen=True)
class Panel:
    """One panel: a short name (its y label), the terms it shows, and its y scale."""

    name: str
    terms: tuple[str, ...]
    yscale: str = "linear"


@dataclass(frozen=True)
class PlotLayout:
    """Which term goes on which panel; ``hidden`` terms are not drawn at all.

    Terms no panel names are drawn on one more panel, ``other``, so nothing a trainer reports
    is lost.
    """

    panels: tuple[Panel, ...]
    hidden: tuple[str, ...] = ()
    other: str = "other terms"

    def assign(self, names: Sequence[str]) -> list[Panel]:
        """The panels to draw for the terms ``names``, each holding only terms present."""
        present = [name for name in names if name not in self.hidden]
        panels = []
        for panel in self.panels:
            terms = tuple(term for term in panel.terms if term in present)
            if terms:
                panels.append(Panel(panel.name, terms, panel.yscale))
        claimed = {term for panel in self.panels for term in panel.terms}
        rest = tuple(name for name in present if name not in claimed)
        if rest:
            panels.append(Panel(self.other, rest))
        return panels


ATTACKER_LAYOUT = PlotLayout(
    (
        Panel("attack", ("masked_xent", "xi")),
        Panel("critic", ("wasserstein", "critic", "adversarial")),
        Panel("penalties", ("displacement", "intensity", "kl"), "symlog"),
        Panel("diversity", ("diversity",)),
        Panel("generator", ("total",)),
    )
)
"""The attacker's terms: the masked cross-entropy against its xi target (eq. 4, 5); the
critic's Wasserstein estimate with the critic and generator adversarial losses (eq. 3, one
scale: all are differences of critic scores); the penalties L(D), L(V) and KL (symmetric log:
they differ by decades, and one is exactly 0 in the D-only or V-only modes); the diversity
reward (in [-weight, 0], when it is on); the generator's total loss."""

UNET_LAYOUT = PlotLayout((Panel("loss", ("cross_entropy", "dice")),), hidden=("total",))
"""The U-Net's terms: cross-entropy and (weighted) soft Dice; their sum is not drawn."""

HARDEN_LAYOUT = PlotLayout(
    (
        Panel("f_seg", ("seg_cross_entropy", "seg_clean", "seg_attacked", "seg_dice")),
        Panel("attack", ("attacker_masked_xent", "attacker_xi")),
        Panel("critic", ("attacker_wasserstein",)),
    ),
    hidden=(
        "attacker_adversarial",
        "attacker_displacement",
        "attacker_intensity",
        "attacker_kl",
        "attacker_diversity",
        "attacker_total",
    ),
)
"""A hardening run's terms: f_seg's cross-entropy on its whole batch, on the clean and on the
attacked patches (and its weighted soft Dice); the attacker's masked cross-entropy against its
xi target and its xi term; the critic's Wasserstein estimate. The attacker's penalties and
adversarial losses are not drawn (the attacker's own training shows them)."""


@dataclass(frozen=True)
class ThemeColors:
    """The napari theme's colors a figure needs (hex strings), and whether it is dark."""

    background: str
    canvas: str
    text: str
    grid: str
    dark: bool

    @property
    def cycle(self) -> tuple[str, ...]:
        """Line colors that read well on :attr:`canvas`."""
        return DARK_CYCLE if self.dark else LIGHT_CYCLE


@dataclass(frozen=True)
class PlotSnapshot:
    """Everything one render needs; the arrays are not changed after the snapshot is taken.

    ``series`` maps each term to its values, at the steps ``steps`` gives for it (default
    1, 2, ...: a term reported at some steps only, as a hardening run's, needs them);
    ``targets`` maps a term to a value drawn as a dashed line on its panel (xi for the masked
    cross-entropy).
    """

    layout: PlotLayout
    series: Mapping[str, np.ndarray]
    colors: ThemeColors
    width: int
    height: int
    pixel_ratio: float = 1.0
    targets: Mapping[str, float] = field(default_factory=dict)
    steps: Mapping[str, np.ndarray] = field(default_factory=dict)


def decimate(
    values: np.ndarray, max_points: int = MAX_POINTS, steps: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values to draw: all points, or bin means of equal runs of points if too many.

    ``steps``: the step of each value (default 1, 2, ...). Non-finite values become NaN (a gap
    in the line), so they never break the axis limits.
    """
    values = np.asarray(values, dtype=np.float64)
    values = np.where(np.isfinite(values), values, np.nan)
    if steps is None:
        steps = np.arange(1, len(values) + 1, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.float64)
    if len(values) <= max_points:
        return steps, values
    size = math.ceil(len(values) / max_points)
    bins = -(-len(values) // size)
    padded = np.full(bins * size, np.nan)
    padded[: len(values)] = values
    counts = np.full(bins, size, dtype=np.float64)
    counts[-1] = len(values) - (bins - 1) * size
    sums = np.nansum(padded.reshape(bins, size), axis=1)
    finite = np.isfinite(padded).reshape(bins, size).sum(axis=1)
    means = np.divide(sums, finite, out=np.full(bins, np.nan), where=finite > 0)
    padded_steps = np.zeros(bins * size)
    padded_steps[: len(steps)] = steps
    centres = padded_steps.reshape(bins, size).sum(axis=1) / counts
    return centres, means


def symlog_threshold(arrays: Sequence[np.ndarray]) -> float:
    """The linear range of a symmetric-log axis: the decade of the smallest nonzero magnitude."""
    magnitudes = [np.abs(a[np.isfinite(a) & (a != 0)]) for a in arrays]
    smallest = min((float(m.min()) for m in magnitudes if m.size), default=1e-3)
    return float(10.0 ** math.floor(math.log10(min(max(smallest, 1e-8), 0.1))))


class LossFigure:
    """A matplotlib figure of loss panels, drawn off screen; one thread at a time uses it."""

    def __init__(self) -> None:
        self.figure = Figure(dpi=DPI)
        self.canvas = FigureCanvasAgg(self.figure)
        self.panels: list[Panel] = []
        self.lines: dict[str, Line2D] = {}
        self.thresholds: dict[str, float] = {}
        self.colors: ThemeColors | None = None

    def render(self, snapshot: PlotSnapshot) -> np.ndarray:
        """Draw the snapshot and return the image, (height, width, 4) uint8 RGBA."""
        panels = snapshot.layout.assign(list(snapshot.series))
        if panels != self.panels or snapshot.colors != self.colors:
            self._build(panels, snapshot)
        self._update(snapshot)
        width, height = max(snapshot.width, MIN_SIZE), max(snapshot.height, MIN_SIZE)
        self.figure.set_dpi(DPI * max(snapshot.pixel_ratio, 1.0))
        self.figure.set_size_inches(width / DPI, height / DPI, forward=False)
        self._place(width, height)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba()).copy()

    def panel_terms(self) -> list[tuple[str, list[str]]]:
        """Each panel's name and the terms drawn on it (legend labels), in drawing order."""
        return [
            (axes.get_ylabel(), [line.get_label() for line in axes.get_lines()])
            for axes in self.figure.axes
        ]

    def _place(self, width: int, height: int) -> None:
        """Lay the panels out on a grid with fixed margins in pixels (no layout engine: fast)."""
        count = len(self.figure.axes)
        if not count:
            return
        columns = 1 if count <= 2 else 2
        rows = -(-count // columns)
        cell_w, cell_h = width / columns, height / rows
        left, right, top, bottom = MARGINS
        for index, axes in enumerate(self.figure.axes):
            row, column = divmod(index, columns)
            x0 = column * cell_w + left
            y0 = height - (row + 1) * cell_h + bottom
            axes.set_position(
                (
                    x0 / width,
                    y0 / height,
                    max(cell_w - left - right, 1) / width,
                    max(cell_h - top - bottom, 1) / height,
                )
            )

    def _build(self, panels: list[Panel], snapshot: PlotSnapshot) -> None:
        colors = snapshot.colors
        self.figure.clear()
        self.figure.set_facecolor(colors.background)
        self.panels, self.colors, self.lines, self.thresholds = panels, colors, {}, {}
        if not panels:
            return
        columns = 1 if len(panels) <= 2 else 2
        order = [term for panel in panels for term in panel.terms]
        color_of = {term: colors.cycle[i % len(colors.cycle)] for i, term in enumerate(order)}
        first: Axes | None = None
        for index, panel in enumerate(panels):
            axes = self.figure.add_axes((0.0, 0.0, 1.0, 1.0), sharex=first)
            first = first or axes
            for term in panel.terms:
                (line,) = axes.plot([], [], color=color_of[term], linewidth=1.0, label=term)
                self.lines[term] = line
                if term in snapshot.targets:
                    axes.axhline(
                        snapshot.targets[term],
                        color=color_of[term],
                        linestyle="--",
                        linewidth=0.8,
                        label="xi target" if term.endswith("masked_xent") else f"{term} target",
                    )
            self._style(axes, panel, colors)
            if index + columns >= len(panels):  # nothing below it
                axes.set_xlabel("step", fontsize="x-small", color=colors.text, labelpad=1)

    @staticmethod
    def _style(axes: Axes, panel: Panel, colors: ThemeColors) -> None:
        axes.set_facecolor(colors.canvas)
        axes.set_ylabel(panel.name, fontsize="x-small", color=colors.text)
        axes.tick_params(colors=colors.text, labelsize="xx-small", length=2)
        for spine in axes.spines.values():
            spine.set_color(colors.grid)
        axes.grid(True, color=colors.grid, linewidth=0.5)
        if panel.yscale == "linear":
            axes.locator_params(axis="y", nbins=4)
        legend = axes.legend(
            loc="lower left",
            bbox_to_anchor=(0.0, 1.0, 1.0, 0.0),
            mode="expand",
            ncol=2 if len(panel.terms) > 1 else 1,
            frameon=False,
            fontsize="xx-small",
            borderaxespad=0.1,
            handlelength=1.2,
            columnspacing=0.8,
        )
        for text in legend.get_texts():
            text.set_color(colors.text)

    def _update(self, snapshot: PlotSnapshot) -> None:
        for axes, panel in zip(self.figure.axes, self.panels, strict=False):
            drawn = []
            for term in panel.terms:
                steps, values = decimate(snapshot.series[term], steps=snapshot.steps.get(term))
                self.lines[term].set_data(steps, values)
                drawn.append(values)
            if panel.yscale == "symlog":
                threshold = symlog_threshold(drawn)
                if self.thresholds.get(panel.name) != threshold:
                    axes.set_yscale("symlog", linthresh=threshold)
                    axes.yaxis.set_major_locator(
                        SymmetricalLogLocator(base=100.0, linthresh=threshold)
                    )
                    self.thresholds[panel.name] = threshold
            axes.relim()
            axes.autoscale_view()
            if panel.yscale == "symlog" and not any((v < 0).any() for v in drawn):
                axes.set_ylim(bottom=0.0)  # penalties are >= 0: no empty negative half
