"""The bundled samples: the procedural phantom cohort and one real CT case.

Both work with no network. The real case is a crop of TotalSegmentator's example CT with its
model's pseudo-labels (see ``sample_data/abdomen_ct_ts/README.md`` for the attribution): Dice
against it is Dice against a reference segmentation, not a manual ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np

from .._resources import sample_data_dir
from ..errors import InvalidInputError
from .lazy import LazyVolumes
from .nifti import load_volume
from .phantom import PhantomConfig, generate_phantom
from .splits import SPLIT_NAMES, split_subjects
from .volume import Volume

SAMPLE_NAMES = ("phantom", "real", "real-train", "real-test")
REAL_TEST_BLOCK = (20, 32)
"""Axial slices [start, stop) of the real case held out from training: 12 contiguous slices
(36 mm), each showing all four organs. ``real-test`` is this block; ``real-train`` the rest but
:data:`REAL_GUARD` slices on each side, so that no trained slice neighbours a held-out one."""
REAL_GUARD = 2
MAX_SUBJECTS = 1000
"""The largest phantom cohort the command line makes (the paper's has 150 subjects)."""
CACHED_SUBJECTS = 16
"""Generated phantoms kept for reuse; a bound, so that memory does not grow with a cohort."""
REAL_CASE_DIR = "abdomen_ct_ts"
REAL_CASE_ATTRIBUTION = (
    "Real CT: crop of the TotalSegmentator example CT (github.com/wasserth/TotalSegmentator, "
    "Apache-2.0); labels are TotalSegmentator predictions (pseudo-labels), not manual annotations."
)


def load_real_case() -> Volume:
    """The real abdominal CT (3 mm, 46 slices) with its 4-organ pseudo-labels."""
    folder = sample_data_dir() / REAL_CASE_DIR
    volume = load_volume(folder / "ct.nii.gz", folder / "labels.nii.gz")
    volume.name = "abdomen_ct_ts"
    return volume


def real_case_part(part: str) -> list[Volume]:
    """The real case's held-out block (``"test"``) or the slices a model may train on.

    ``"train"`` gives the two blocks outside the held-out one and its guard slices. Each block
    keeps its place in space (its grid), so results written on it overlay the case.
    """
    volume = load_real_case()
    start, stop = REAL_TEST_BLOCK
    if part == "test":
        return [volume.block(start, stop)]
    if part != "train":
        raise InvalidInputError(f"The real case's parts are train and test, not {part!r}.")
    return [
        volume.block(0, start - REAL_GUARD),
        volume.block(stop + REAL_GUARD, volume.num_slices),
    ]


@dataclass(frozen=True)
class PhantomCohort:
    """A deterministic cohort of phantom subjects, split 60:15:75 by subject.

    Subject ``i`` is generated from a seed derived from ``(seed, i)``, so any subject can be
    made on its own, in any order, and is the same every time.
    """

    n_subjects: int = 150
    seed: int = 0
    config: PhantomConfig = field(default_factory=PhantomConfig)

    def __post_init__(self) -> None:
        if self.n_subjects < 3:
            raise InvalidInputError(
                f"A phantom cohort needs at least 3 subjects, got {self.n_subjects}."
            )

    def splits(self) -> dict[str, list[int]]:
        """Subject indices of the train, val and test splits."""
        return split_subjects(self.n_subjects, self.seed)

    def split(self, name: str) -> list[int]:
        """Subject indices of one split (``train``, ``val``, ``test`` or ``all``)."""
        if name == "all":
            return list(range(self.n_subjects))
        if name not in SPLIT_NAMES:
            raise InvalidInputError(f"Unknown split {name!r}; choose train, val, test or all.")
        return self.splits()[name]

    def subject_seed(self, index: int) -> int:
        """The generator seed of subject ``index``."""
        return int(np.random.SeedSequence([self.seed, index]).generate_state(1)[0])

    def subject_name(self, index: int) -> str:
        """The name of subject ``index`` (without generating it)."""
        return f"phantom_{self.seed:03d}_{index:03d}"

    def subject(self, index: int) -> Volume:
        """Generate subject ``index`` as a :class:`Volume` with labels."""
        if not 0 <= index < self.n_subjects:
            raise InvalidInputError(f"Subject {index} is outside the cohort of {self.n_subjects}.")
        image, labels = _generate_cached(self.subject_seed(index), self.config)
        return Volume(
            image=image.astype(np.float32),
            spacing=self.config.spacing,
            labels=labels.copy(),
            name=self.subject_name(index),
        )

    def volumes(self, split: str) -> list[Volume]:
        """All subjects of one split."""
        return [self.subject(index) for index in self.split(split)]

    def lazy_volumes(self, split: str, cache_bytes: int = 0) -> LazyVolumes:
        """The subjects of one split, each generated when it is used (see :class:`LazyVolumes`)."""
        return LazyVolumes(
            [(self.subject_name(i), partial(self.subject, i)) for i in self.split(split)],
            cache_bytes,
        )


@lru_cache(maxsize=CACHED_SUBJECTS)
def _generate_cached(seed: int, config: PhantomConfig) -> tuple[np.ndarray, np.ndarray]:
    image, labels = generate_phantom(seed, config)
    image.setflags(write=False)
    labels.setflags(write=False)
    return image, labels
