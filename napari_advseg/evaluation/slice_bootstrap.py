"""Intervals for Dice on few subjects: a bootstrap over axial slices, paired across models.

With one scan (the real case) there are no subjects to resample, so the slices are resampled
instead, with replacement and within each subject; each draw recomputes every subject's 3D
Dice from the drawn slices' counts, and averages over subjects as :func:`.metrics.mean_dice`
does. Every model sees the same draws, so the interval of a difference between two models is
paired. Slices are not independent (neighbours look alike), so these intervals are narrower
than ones over new scans would be: they say how much a figure depends on which slices it was
measured on, not how it would vary across patients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..labels import LabelMap

INTERVAL = (2.5, 97.5)
"""Percentiles of the bootstrap distribution: a 95 % interval."""


def slice_counts(prediction: np.ndarray, reference: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """Per axial slice and organ: overlap, predicted and reference voxels, (Z, organs, 3)."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape or prediction.ndim != 3:
        raise ValueError(
            f"need two (Z, Y, X) volumes, got {prediction.shape} and {reference.shape}"
        )
    counts = np.zeros((prediction.shape[0], len(label_map), 3), dtype=np.int64)
    for column, label in enumerate(label_map):
        pred, ref = prediction == label.id, reference == label.id
        counts[:, column, 0] = (pred & ref).sum(axis=(1, 2))
        counts[:, column, 1] = pred.sum(axis=(1, 2))
        counts[:, column, 2] = ref.sum(axis=(1, 2))
    return counts


def _dice(totals: np.ndarray) -> np.ndarray:
    """3D Dice per organ from summed counts (..., organs, 3); NaN where both are empty."""
    denominator = totals[..., 1] + totals[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2.0 * totals[..., 0] / denominator, np.nan)


def _cohort_dice(per_subject: list[np.ndarray]) -> np.ndarray:
    """Mean over subjects of each organ's Dice, where defined (NaN where nowhere)."""
    stacked = np.stack(per_subject)
    defined = ~np.isnan(stacked)
    with np.errstate(invalid="ignore"):
        return np.where(defined.any(0), np.nansum(stacked, 0) / defined.sum(0), np.nan)


def _interval(values: np.ndarray) -> list[float] | None:
    defined = values[~np.isnan(values)]
    if defined.size < values.size / 2:
        return None  # undefined in most draws: no interval
    low, high = np.percentile(defined, INTERVAL)
    return [float(low), float(high)]


def _value(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def slice_bootstrap(
    counts: Mapping[str, Sequence[np.ndarray]],
    organs: Sequence[str],
    samples: int = 2000,
    seed: int = 0,
    baseline: str | None = None,
) -> dict[str, Any]:
    """Dice per organ with 95 % slice-bootstrap intervals, for one or more models.

    Parameters
    ----------
    counts
        Per model, per subject, the :func:`slice_counts` of its prediction (same subjects and
        slices for every model).
    organs
        The organ names, in the counts' column order.
    samples, seed
        Bootstrap draws, and the seed of the slice draws (the same for every model).
    baseline
        A model whose Dice the others are compared with: adds, per other model, the paired
        difference and its interval.

    Returns
    -------
    dict
        ``{"models": {name: {"dice": {organ: value}, "dice_ci": {organ: [low, high]}}},
        "differences": {name: {"dice": ..., "dice_ci": ...}}, "samples", "seed", "slices"}``.
    """
    names = list(counts)
    if not names:
        raise ValueError("no models to bootstrap")
    shapes = {name: [c.shape for c in counts[name]] for name in names}
    if len({str(s) for s in shapes.values()}) != 1:
        raise ValueError(f"the models' counts differ in subjects or slices: {shapes}")
    if baseline is not None and baseline not in counts:
        raise ValueError(f"baseline {baseline!r} is not one of the models {names}")
    rng = np.random.default_rng(seed)
    slices = [c.shape[0] for c in counts[names[0]]]
    draws = [rng.integers(0, n, size=(samples, n)) for n in slices]  # per subject
    point = {n: _cohort_dice([_dice(c.sum(0)) for c in counts[n]]) for n in names}
    drawn = {
        n: _cohort_dice([_dice(c[index].sum(1)) for c, index in zip(counts[n], draws, strict=True)])
        for n in names
    }  # (samples, organs) per model

    def figures(values: np.ndarray, spread: np.ndarray) -> dict[str, Any]:
        return {
            "dice": {o: _value(values[i]) for i, o in enumerate(organs)},
            "dice_ci": {o: _interval(spread[:, i]) for i, o in enumerate(organs)},
        }

    result: dict[str, Any] = {
        "models": {n: figures(point[n], drawn[n]) for n in names},
        "samples": samples,
        "seed": seed,
        "slices": slices,
        "convention": (
            "3D Dice per subject from the drawn slices, mean over subjects; 95 % percentile "
            "intervals of a bootstrap over axial slices within each subject, paired across models"
        ),
    }
    if baseline is not None:
        result["baseline"] = baseline
        result["differences"] = {
            n: figures(point[n] - point[baseline], drawn[n] - drawn[baseline])
            for n in names
            if n != baseline
        }
    return result
