"""Splitting subjects, never slices, into training, validation and test sets."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError

PAPER_SPLIT = (60, 15, 75)
"""Chen et al. 2019: 150 subjects, 60 for training, 15 for validation, 75 for testing."""

SPLIT_NAMES = ("train", "val", "test")


def split_subjects(n_subjects: int, seed: int = 0) -> dict[str, list[int]]:
    """Split subject indices 60:15:75 (the paper's proportions) after a seeded shuffle.

    Every subject lands in exactly one split, so no slice of a test subject is ever trained on.
    Cohorts of fewer than three subjects cannot be split.
    """
    if n_subjects < 3:
        raise InvalidInputError(
            f"Need at least 3 subjects to split train/val/test, got {n_subjects}."
        )
    total = sum(PAPER_SPLIT)
    n_train = max(1, round(n_subjects * PAPER_SPLIT[0] / total))
    n_val = max(1, round(n_subjects * PAPER_SPLIT[1] / total))
    n_train = min(n_train, n_subjects - n_val - 1)
    order = np.random.default_rng(seed).permutation(n_subjects).tolist()
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
