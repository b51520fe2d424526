"""The one Dice decrease rule (napari_advseg/evaluation/decrease.py)."""

import pytest

from napari_advseg.evaluation.decrease import (
    SUCCESS_DECREASE,
    decreases,
    paired_decrease,
    successes,
)

ORGANS = ["liver", "spleen"]


def test_no_change_is_no_decrease():
    dice = [{"liver": 0.9, "spleen": 0.8}, {"liver": 0.7, "spleen": 0.6}]
    result = paired_decrease(dice, dice, ORGANS)
    assert decreases(result) == {"liver": 0.0, "spleen": 0.0}
    assert successes(result) == {"liver": False, "spleen": False}
    assert result["liver"].subjects == 2


def test_subjects_are_paired_and_missing_is_not_zero():
    before = [{"liver": 0.8, "spleen": 0.9}, {"liver": 0.6, "spleen": None}]
    after = [{"liver": 0.4, "spleen": None}, {"liver": None, "spleen": 0.5}]
    result = paired_decrease(before, after, ORGANS)
    # liver: only subject 0 has both; spleen: no subject has both
    assert result["liver"].before == 0.8 and result["liver"].after == 0.4
    assert result["liver"].decrease == pytest.approx(50.0) and result["liver"].subjects == 1
    assert result["spleen"].decrease is None and result["spleen"].subjects == 0
    assert successes(result) == {"liver": True, "spleen": None}


def test_the_decrease_is_of_the_paired_means_and_the_bar_is_30_percent():
    before = [{"liver": 1.0}, {"liver": 0.5}]
    after = [{"liver": 0.55}, {"liver": 0.5}]  # means 0.75 -> 0.525: exactly 30 %
    result = paired_decrease(before, after, ["liver"])
    assert result["liver"].decrease == pytest.approx(SUCCESS_DECREASE)
    assert result["liver"].success is True
    assert paired_decrease([{"liver": 0.0}], [{"liver": 0.0}], ["liver"])["liver"].decrease is None


def test_unequal_cohorts_are_an_error():
    with pytest.raises(ValueError):
        paired_decrease([{"liver": 1.0}], [], ["liver"])
