"""Table 1 rows over several training seeds, with bootstrap intervals over subjects.

An attack trained with several seeds is evaluated on the same subjects once per seed. Its row:

- per subject, each measure is averaged over the seeds (Dice where defined);
- the row's figures are those of the seed-averaged subjects (the paired rule of
  :mod:`.decrease`);
- 95 % intervals come from a bootstrap that resamples subjects (with replacement, seeded), the
  seeds already averaged within each subject: they say how much the figure depends on which
  subjects were drawn;
- the spread over seeds is reported apart: the standard deviation, over seeds, of each seed's
  own cohort figure (how much it depends on the training run).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from .attack_eval import AttackReport, SubjectResult
from .decrease import paired_decrease

BOOTSTRAP_SAMPLES = 2000
INTERVAL = (2.5, 97.5)
"""Percentiles of the bootstrap distribution: a 95 % interval."""
DICE_KEYS = ("dice_s0", "dice_dv", "dice_dv_warped")


def _mean_of(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def average_over_seeds(reports: Sequence[AttackReport]) -> AttackReport:
    """One report whose subjects are each subject's measures averaged over ``reports``.

    Raises
    ------
    ValueError
        If the reports are not of the same subjects in the same order.
    """
    if not reports:
        raise ValueError("no reports to average")
    names = [s.subject for s in reports[0].subjects]
    for report in reports[1:]:
        if [s.subject for s in report.subjects] != names:
            raise ValueError("the seeds were evaluated on different subjects")
    subjects = []
    for index, name in enumerate(names):
        runs = [report.subjects[index] for report in reports]
        values: dict[str, Any] = {"subject": name}
        for item in fields(SubjectResult):
            if item.name == "subject":
                continue
            if item.name in DICE_KEYS:
                organs = runs[0].dice_s0.keys()
                values[item.name] = {
                    organ: _mean_of([getattr(run, item.name)[organ] for run in runs])
                    for organ in organs
                }
            else:  # the largest of a maximum, the mean of anything else; None where none is
                given = [getattr(run, item.name) for run in runs]
                defined = [value for value in given if value is not None]
                combine = np.max if item.name.startswith("max_") else np.mean
                values[item.name] = float(combine(defined)) if defined else None
        subjects.append(SubjectResult(**values))
    first = reports[0]
    return AttackReport(
        method=f"{first.method} ({len(reports)} seeds)",
        reference=first.reference,
        organs=list(first.organs),
        subjects=subjects,
        seconds=float(sum(r.seconds for r in reports)),
        slices=int(sum(r.slices for r in reports)),
    )


def cohort_figures(subjects: Sequence[SubjectResult], organs: Sequence[str]) -> dict[str, Any]:
    """The row's figures of a set of subjects: mean Dice, paired decrease, mean p."""
    before = [s.dice_s0 for s in subjects]
    warped = paired_decrease(before, [s.dice_dv_warped for s in subjects], organs)
    original = paired_decrease(before, [s.dice_dv for s in subjects], organs)
    return {
        "dice": {o: original[o].after for o in organs},
        "dice_warped": {o: warped[o].after for o in organs},
        "decrease": {o: original[o].decrease for o in organs},
        "decrease_warped": {o: warped[o].decrease for o in organs},
        "p": float(np.mean([s.p for s in subjects])),
        "p_hu_fov": float(np.mean([s.p_hu_fov for s in subjects])),
        "p_hu_body": _mean_of([s.p_hu_body for s in subjects]),
    }


def _percentiles(samples: list[float | None]) -> list[float] | None:
    defined = [v for v in samples if v is not None]
    if len(defined) < len(samples) * 0.5 or not defined:
        return None  # undefined in most resamples: no interval
    low, high = np.percentile(defined, INTERVAL)
    return [float(low), float(high)]


def bootstrap_intervals(
    subjects: Sequence[SubjectResult],
    organs: Sequence[str],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    figures: Callable[[Sequence[SubjectResult], Sequence[str]], dict[str, Any]] = cohort_figures,
) -> dict[str, Any]:
    """95 % intervals of :func:`cohort_figures` over subjects resampled with replacement.

    Returns the same keys with ``_ci`` appended: ``[low, high]`` per organ (or for ``p``), None
    where the figure is undefined in most resamples.
    """
    rng = np.random.default_rng(seed)
    count = len(subjects)
    draws = [
        figures([subjects[i] for i in rng.integers(0, count, count)], organs)
        for _ in range(samples)
    ]
    result: dict[str, Any] = {}
    for key, value in draws[0].items():
        if isinstance(value, dict):
            result[f"{key}_ci"] = {o: _percentiles([d[key][o] for d in draws]) for o in organs}
        else:
            result[f"{key}_ci"] = _percentiles([d[key] for d in draws])
    return result


def seed_spread(reports: Sequence[AttackReport], organs: Sequence[str]) -> dict[str, Any]:
    """Standard deviation over seeds of each seed's cohort figures (None for one seed)."""
    per_seed = [cohort_figures(report.subjects, organs) for report in reports]

    def spread(values: list[float | None]) -> float | None:
        defined = [v for v in values if v is not None]
        return float(np.std(defined, ddof=1)) if len(defined) > 1 else None

    result: dict[str, Any] = {"seeds": len(reports)}
    for key in ("dice_warped", "decrease_warped", "dice"):
        result[key] = {o: spread([f[key][o] for f in per_seed]) for o in organs}
    result["p"] = spread([f["p"] for f in per_seed])
    result["p_hu_body"] = spread([f["p_hu_body"] for f in per_seed])
    return result


def interval_fields(
    reports: Sequence[AttackReport], organs: Sequence[str], seed: int = 0
) -> dict[str, Any]:
    """What a row over ``reports`` (one per training seed) adds: intervals and seed spread."""
    averaged = average_over_seeds(reports)
    return {
        "seeds": len(reports),
        **bootstrap_intervals(averaged.subjects, organs, seed=seed),
        "seed_spread": seed_spread(reports, organs),
    }
