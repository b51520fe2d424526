"""Rows over several training seeds: averaging, bootstrap intervals over subjects, seed spread."""

import dataclasses

import numpy as np
import pytest

from napari_advseg.evaluation.attack_eval import AttackReport, SubjectResult
from napari_advseg.evaluation.seeded import (
    average_over_seeds,
    bootstrap_intervals,
    cohort_figures,
    interval_fields,
    seed_spread,
)

ORGANS = ["liver", "spleen"]


def subject(name, before, after, p=0.05):
    fields = {f.name: 0.0 for f in dataclasses.fields(SubjectResult)}
    fields.update(
        subject=name,
        dice_s0=dict(zip(ORGANS, before, strict=True)),
        dice_dv=dict(zip(ORGANS, after, strict=True)),
        dice_dv_warped=dict(zip(ORGANS, after, strict=True)),
        p=p,
        p_hu_fov=10 * p,
    )
    return SubjectResult(**fields)


def report(rows):
    return AttackReport(method="dv xi=2", reference="ground truth", organs=ORGANS, subjects=rows)


def test_seeds_are_averaged_per_subject():
    seed_a = report([subject("a", (0.9, 0.8), (0.5, 0.4)), subject("b", (0.7, None), (0.3, None))])
    seed_b = report([subject("a", (0.9, 0.8), (0.3, 0.6)), subject("b", (0.7, None), (0.5, None))])
    averaged = average_over_seeds([seed_a, seed_b])
    assert averaged.subjects[0].dice_dv_warped == pytest.approx({"liver": 0.4, "spleen": 0.5})
    assert averaged.subjects[1].dice_dv_warped == {"liver": pytest.approx(0.4), "spleen": None}
    figures = cohort_figures(averaged.subjects, ORGANS)
    assert figures["dice_warped"]["liver"] == pytest.approx(0.4)
    assert figures["decrease_warped"]["liver"] == pytest.approx(100 * (0.8 - 0.4) / 0.8)
    assert figures["decrease_warped"]["spleen"] == pytest.approx(100 * (0.8 - 0.5) / 0.8)
    other = report([subject("z", (0.9, 0.8), (0.5, 0.4)), subject("b", (0.7, None), (0.3, None))])
    with pytest.raises(ValueError):
        average_over_seeds([seed_a, other])


def test_identical_subjects_give_a_zero_width_interval():
    rows = [subject(str(i), (0.8, 0.9), (0.4, 0.45)) for i in range(10)]
    intervals = bootstrap_intervals(rows, ORGANS, samples=200)
    assert intervals["dice_warped_ci"]["liver"] == pytest.approx([0.4, 0.4])
    assert intervals["decrease_warped_ci"]["spleen"] == pytest.approx([50.0, 50.0])
    assert intervals["p_ci"] == pytest.approx([0.05, 0.05])


def test_the_interval_covers_the_mean_and_matches_a_direct_bootstrap():
    rng = np.random.default_rng(3)
    after = rng.uniform(0.2, 0.8, 30)
    rows = [subject(str(i), (0.9, 0.9), (a, a)) for i, a in enumerate(after)]
    intervals = bootstrap_intervals(rows, ORGANS, samples=500, seed=7)
    low, high = intervals["dice_warped_ci"]["liver"]
    assert low < after.mean() < high
    # the same resamples, computed directly
    draws = np.random.default_rng(7)
    means = [after[draws.integers(0, 30, 30)].mean() for _ in range(500)]
    assert [low, high] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
    assert bootstrap_intervals(rows, ORGANS, samples=500, seed=7) == intervals  # seeded


def test_seed_spread_and_interval_fields():
    one = report([subject("a", (0.9, 0.8), (0.5, 0.4))])
    two = report([subject("a", (0.9, 0.8), (0.3, 0.6))])
    spread = seed_spread([one, two], ORGANS)
    assert spread["seeds"] == 2
    assert spread["dice_warped"]["liver"] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert seed_spread([one], ORGANS)["dice_warped"]["liver"] is None
    fields = interval_fields([one, two], ORGANS)
    assert fields["seeds"] == 2 and fields["dice_warped_ci"]["liver"] == pytest.approx([0.4, 0.4])
