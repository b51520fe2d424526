"""The training widget's loss figure without Qt: panel layouts, decimation, drawing in a theme."""

import numpy as np

from napari_advseg._napari.loss_figure import (
    ATTACKER_LAYOUT,
    MAX_POINTS,
    UNET_LAYOUT,
    LossFigure,
    PlotSnapshot,
    ThemeColors,
    decimate,
    symlog_threshold,
)

DARK = ThemeColors("#23242b", "#000000", "#f0f1f2", "#424a54", dark=True)


def test_short_histories_are_drawn_whole_and_non_finite_values_leave_gaps():
    steps, values = decimate(np.array([1.0, np.inf, 3.0, np.nan]))
    assert steps.tolist() == [1, 2, 3, 4]
    assert values[0] == 1.0 and values[2] == 3.0 and np.isnan(values[[1, 3]]).all()


def test_long_histories_are_averaged_in_bins_of_steps():
    values = np.arange(1, 100_001, dtype=float)
    steps, means = decimate(values)
    assert len(means) <= MAX_POINTS
    assert np.allclose(steps, means)  # the mean of steps a..b sits at their centre
    assert steps[0] >= 1 and steps[-1] <= 100_000


def test_every_term_gets_a_panel_and_unknown_ones_are_kept():
    names = ["xi", "masked_xent", "critic", "wasserstein", "adversarial", "displacement"]
    names += ["intensity", "kl", "total", "something_new"]
    panels = ATTACKER_LAYOUT.assign(names)
    placed = [term for panel in panels for term in panel.terms]
    assert sorted(placed) == sorted(names)
    assert panels[-1].name == "other terms" and panels[-1].terms == ("something_new",)
    assert [p.terms for p in UNET_LAYOUT.assign(["cross_entropy", "total"])] == [("cross_entropy",)]


def test_symlog_range_starts_at_the_smallest_magnitude():
    assert symlog_threshold([np.array([0.0, 3e-5, 0.2]), np.array([np.nan])]) == 1e-5
    assert symlog_threshold([np.zeros(3)]) == 1e-3


def test_the_figure_is_drawn_in_the_theme_colors():
    figure = LossFigure()
    series = {"cross_entropy": np.linspace(2, 0.5, 50), "dice": np.linspace(0.9, 0.2, 50)}
    rgba = figure.render(PlotSnapshot(UNET_LAYOUT, series, DARK, 300, 200))
    assert rgba.shape == (200, 300, 4)
    assert tuple(rgba[0, 0, :3]) == (0x23, 0x24, 0x2B)  # the figure: napari's background
    assert tuple(rgba[100, 150, :3]) != (255, 255, 255)
    assert figure.panel_terms() == [("loss", ["cross_entropy", "dice"])]
