"""Dice per organ, per slice and per subject.

Convention for empty versus empty: when neither the prediction nor the reference contains an
organ, its Dice is undefined and reported as ``None``; it is left out of every average, so no
NaN leaks into a mean. When only one of them contains the organ, Dice is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from ..labels import LabelMap


def dice_per_label(
    prediction: np.ndarray, reference: np.ndarray, label_map: LabelMap
) -> dict[str, float | None]:
    """Dice of each organ over the whole arrays (a slice, or a volume for 3D Dice)."""
    prediction = np.asarray(prediction)
    reference = np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(
            f"prediction {prediction.shape} and reference {reference.shape} differ in shape"
        )
    result: dict[str, float | None] = {}
    for label in label_map:
        pred = prediction == label.id
        ref = reference == label.id
        total = int(pred.sum()) + int(ref.sum())
        result[label.name] = None if total == 0 else 2.0 * int((pred & ref).sum()) / total
    return result


def dice_per_slice(
    prediction: np.ndarray, reference: np.ndarray, label_map: LabelMap
) -> list[dict[str, float | None]]:
    """2D Dice of each organ on each axial slice of (Z, Y, X) volumes."""
    return [dice_per_label(p, r, label_map) for p, r in zip(prediction, reference, strict=True)]


def mean_dice(
    rows: Iterable[Mapping[str, float | None]], names: Iterable[str]
) -> dict[str, float | None]:
    """Average each organ's Dice over the rows where it is defined (``None`` if nowhere)."""
    rows = list(rows)
    result: dict[str, float | None] = {}
    for name in names:
        values = [row[name] for row in rows if row.get(name) is not None]
        result[name] = float(np.mean(values)) if values else None
    return result


def overall_mean(dice: Mapping[str, float | None]) -> float | None:
    """Mean over the organs whose Dice is defined."""
    values = [value for value in dice.values() if value is not None]
    return float(np.mean(values)) if values else None
