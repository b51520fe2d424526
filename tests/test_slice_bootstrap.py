"""The bootstrap over axial slices: its point figures are the 3D Dice, its draws are paired."""

import numpy as np
import pytest

from napari_advseg.evaluation.metrics import dice_per_label
from napari_advseg.evaluation.slice_bootstrap import slice_bootstrap, slice_counts
from napari_advseg.labels import DEFAULT_LABEL_MAP

ORGANS = DEFAULT_LABEL_MAP.names


def volumes(seed, slices=12):
    """A reference with organs 1-3 (4 absent), and a prediction that errs on some voxels."""
    rng = np.random.default_rng(seed)
    reference = np.zeros((slices, 16, 16), dtype=np.uint8)
    reference[:, 2:7, 2:7] = 1
    reference[:, 8:14, 2:9] = 2
    reference[2:, 9:14, 10:15] = 3
    prediction = reference.copy()
    prediction[rng.random(reference.shape) < 0.1] = 0
    return prediction, reference


def test_point_figures_are_the_3d_dice_and_intervals_hold_them():
    prediction, reference = volumes(0)
    counts = slice_counts(prediction, reference, DEFAULT_LABEL_MAP)
    assert counts.shape == (12, 4, 3)
    result = slice_bootstrap({"a": [counts]}, ORGANS, samples=300)
    expected = dice_per_label(prediction, reference, DEFAULT_LABEL_MAP)
    figures = result["models"]["a"]
    for organ in ("pancreas", "kidneys", "liver"):
        assert figures["dice"][organ] == pytest.approx(expected[organ])
        low, high = figures["dice_ci"][organ]
        assert low <= figures["dice"][organ] <= high
    assert figures["dice"]["spleen"] is None and figures["dice_ci"]["spleen"] is None
    assert result["slices"] == [12]


def test_draws_are_seeded_and_paired_across_models():
    counts_a = [slice_counts(*volumes(0), DEFAULT_LABEL_MAP)]
    counts_b = [slice_counts(*volumes(1), DEFAULT_LABEL_MAP)]
    models = {"a": counts_a, "same": counts_a, "b": counts_b}
    result = slice_bootstrap(models, ORGANS, samples=200, seed=4, baseline="a")
    assert result == slice_bootstrap(models, ORGANS, samples=200, seed=4, baseline="a")
    same = result["differences"]["same"]
    assert same["dice"]["kidneys"] == 0.0 and same["dice_ci"]["kidneys"] == [0.0, 0.0]
    other = result["differences"]["b"]["dice"]["kidneys"]
    a, b = (result["models"][n]["dice"]["kidneys"] for n in ("a", "b"))
    assert other == pytest.approx(b - a)


def test_subjects_are_resampled_within_and_averaged():
    first, second = volumes(0), volumes(2, slices=7)
    counts = [slice_counts(*pair, DEFAULT_LABEL_MAP) for pair in (first, second)]
    result = slice_bootstrap({"a": counts}, ORGANS, samples=100)
    expected = np.mean([dice_per_label(*p, DEFAULT_LABEL_MAP)["liver"] for p in (first, second)])
    assert result["models"]["a"]["dice"]["liver"] == pytest.approx(expected)
    assert result["slices"] == [12, 7]


def test_models_must_be_scored_on_the_same_slices():
    with pytest.raises(ValueError, match="differ"):
        slice_bootstrap(
            {
                "a": [slice_counts(*volumes(0), DEFAULT_LABEL_MAP)],
                "b": [slice_counts(*volumes(0, slices=5), DEFAULT_LABEL_MAP)],
            },
            ORGANS,
        )
