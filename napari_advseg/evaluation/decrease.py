"""The one Dice decrease: paired over subjects, S0 against the reference, S_DV against it moved.

The rule, used by the trainer's progress, the evaluation, the sweep and the explorer alike:

- Dice(S0) is scored against the reference R (the ground truth, or S0 where there is none);
  Dice(S_DV) against R moved by D as labels are moved (:func:`~.attack_eval.warp_labels`), since
  the correct segmentation of a deformed image is the deformed one. ``original`` scores S_DV
  against R itself (the paper's literal Table 1), reported beside it.
- A subject counts for an organ only where both Dice values are defined (an organ in neither the
  segmentation nor the reference has no Dice); missing is never read as 0.
- The cohort decrease of an organ is ``100 * (mean before - mean after) / mean before`` over the
  same (paired) subjects, and ``None`` where no subject counts or the mean before is 0.
- An attack succeeds on an organ when that decrease is at least :data:`SUCCESS_DECREASE` percent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

SUCCESS_DECREASE = 30.0
"""An attack succeeds on an organ when its Dice decreases by at least this many percent."""

Dice = Mapping[str, float | None]


@dataclass(frozen=True)
class OrganDecrease:
    """One organ's paired cohort figures.

    Attributes
    ----------
    before, after
        Mean Dice of S0 and of S_DV over the paired subjects (None where there are none).
    decrease
        ``100 * (before - after) / before`` (None where undefined).
    subjects
        How many subjects were paired.
    """

    before: float | None
    after: float | None
    decrease: float | None
    subjects: int

    @property
    def success(self) -> bool | None:
        """Whether the decrease reaches :data:`SUCCESS_DECREASE` (None where undefined)."""
        if self.decrease is None:
            return None
        return self.decrease >= SUCCESS_DECREASE - 1e-9  # a decrease of exactly 30 % counts


def paired_decrease(
    before: Sequence[Dice], after: Sequence[Dice], organs: Iterable[str]
) -> dict[str, OrganDecrease]:
    """Each organ's decrease over the subjects where both Dice values are defined.

    ``before[i]`` and ``after[i]`` are subject i's Dice per organ (S0, and S_DV); a batch or a
    slice is one "subject" where that is what is scored.
    """
    if len(before) != len(after):
        raise ValueError(f"{len(before)} subjects before but {len(after)} after")
    result = {}
    for organ in organs:
        pairs = [
            (b[organ], a[organ])
            for b, a in zip(before, after, strict=True)
            if b.get(organ) is not None and a.get(organ) is not None
        ]
        if not pairs:
            result[organ] = OrganDecrease(None, None, None, 0)
            continue
        mean_before = float(np.mean([b for b, _ in pairs]))
        mean_after = float(np.mean([a for _, a in pairs]))
        drop = None if mean_before <= 0 else 100.0 * (mean_before - mean_after) / mean_before
        result[organ] = OrganDecrease(mean_before, mean_after, drop, len(pairs))
    return result


def decreases(paired: Mapping[str, OrganDecrease]) -> dict[str, float | None]:
    """The decrease (%) of each organ of :func:`paired_decrease`'s result."""
    return {organ: value.decrease for organ, value in paired.items()}


def successes(paired: Mapping[str, OrganDecrease]) -> dict[str, bool | None]:
    """Whether the attack succeeds on each organ of :func:`paired_decrease`'s result."""
    return {organ: value.success for organ, value in paired.items()}
