"""Splitting subjects, never slices, into training, validation and test sets.

The one exception is a single scan (training from napari layers): it is split into contiguous
slabs of slices, since there is nothing else to split.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .volume import Volume

PAPER_SPLIT = (60, 15, 75)
"""Chen et al. 2019: 150 subjects, 60 for training, 15 for validation, 75 for testing."""

SPLIT_NAMES = ("train", "val", "test")


def split_subjects(
    n_subjects: int, seed: int = 0, fractions: tuple[float, float, float] = PAPER_SPLIT
) -> dict[str, list[int]]:
    """Split subject indices train:val:test (the paper's 60:15:75) after a seeded shuffle.

    Every subject lands in exactly one split, so no slice of a test subject is ever trained on.
    Cohorts of fewer than three subjects cannot be split.
    """
    if n_subjects < 3:
        raise InvalidInputError(
            f"Need at least 3 subjects to split train/val/test, got {n_subjects}."
        )
    return split_indices(n_subjects, fractions, seed)


def split_indices(
    n: int, fractions: tuple[float, float, float] = PAPER_SPLIT, seed: int = 0
) -> dict[str, list[int]]:
    """Indices 0..n-1 (n >= 3) in ``train``, ``val`` and ``test``, sorted, after a seeded shuffle.

    A split whose fraction is above 0 gets at least one subject, and ``test`` takes what
    ``train`` and ``val`` leave (``train`` does when the test fraction is 0).
    """
    parts = [float(f) for f in fractions]
    total = sum(parts)
    has_test = parts[2] > 0
    n_val = 0 if parts[1] == 0 else max(1, round(n * parts[1] / total))
    n_val = min(n_val, n - 1 - has_test)
    n_train = max(1, round(n * parts[0] / total))
    n_train = min(n_train, n - n_val - 1) if has_test else n - n_val
    order = np.random.default_rng(seed).permutation(n).tolist()
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def hold_out_slab(volume: Volume, fraction: float = 0.2) -> tuple[list[Volume], list[Volume]]:
    """Split one labelled scan into training parts and a validation slab of whole slices.

    With a single scan there are no subjects to split, so a contiguous block of ``fraction`` of
    the labelled slices, from the middle of the labelled range, is held out (neighbouring slices
    are alike, so a block leaks less than scattered slices). The slices above and below it train.
    A scan with fewer than 5 labelled slices is not split: everything trains, nothing validates.
    """
    labels = volume.require_labels()
    labelled = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    if labelled.size < 5:
        return [volume], []
    count = max(1, round(fraction * labelled.size))
    start = int(labelled[(labelled.size - count) // 2])
    stop = start + count

    def part(first: int, last: int, tag: str) -> Volume:
        return Volume(
            volume.image[first:last],
            volume.spacing,
            volume.labels[first:last],
            f"{volume.name} [{tag} slices {first}-{last - 1}]",
            label_map=volume.label_map,
        )

    train = [part(a, b, "train") for a, b in ((0, start), (stop, volume.num_slices)) if b > a]
    return train, [part(start, stop, "validation")]
