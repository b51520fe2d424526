"""Intensity normalisation as in Chen et al. 2019: per subject, zero mean and unit variance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError


@dataclass(frozen=True)
class NormalizationStats:
    """The mean and standard deviation (HU) one subject was normalised with."""

    mean: float
    std: float

    def denormalize(self, image: np.ndarray) -> np.ndarray:
        """Map normalised intensities back to Hounsfield units."""
        return image * self.std + self.mean


@dataclass(frozen=True)
class Normalization:
    """Per-subject z-score normalisation after an optional clip to a Hounsfield window.

    The clip (default -1000 to 1000 HU) is our addition to the paper: it bounds the effect of
    metal and of air outside the scanner's field of view on a subject's mean and deviation. It is
    stored in every model's config, so a model is always fed as it was trained.
    """

    clip_hu: tuple[float, float] | None = (-1000.0, 1000.0)

    def __post_init__(self) -> None:
        if self.clip_hu is not None and not self.clip_hu[0] < self.clip_hu[1]:
            raise InvalidInputError(
                f"HU clip must be (low, high) with low < high, got {self.clip_hu}."
            )

    def stats(self, image_hu: np.ndarray) -> NormalizationStats:
        """Mean and standard deviation of a whole subject, after clipping."""
        clipped = self._clip(image_hu)
        std = float(clipped.std(dtype=np.float64))
        if std < 1e-6:
            raise InvalidInputError(
                "The image is constant (all voxels equal after the HU clip); it holds no anatomy "
                "to segment."
            )
        return NormalizationStats(float(clipped.mean(dtype=np.float64)), std)

    def apply(
        self, image_hu: np.ndarray, stats: NormalizationStats | None = None
    ) -> tuple[np.ndarray, NormalizationStats]:
        """Normalise ``image_hu`` with the subject's own statistics unless ``stats`` is given."""
        stats = stats or self.stats(image_hu)
        out = (self._clip(image_hu) - stats.mean) / stats.std
        return out.astype(np.float32, copy=False), stats

    def _clip(self, image_hu: np.ndarray) -> np.ndarray:
        image = np.asarray(image_hu, dtype=np.float32)
        return image if self.clip_hu is None else np.clip(image, *self.clip_hu)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for a model config."""
        return {
            "method": "zscore_per_subject",
            "clip_hu": list(self.clip_hu) if self.clip_hu else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`."""
        if data.get("method") != "zscore_per_subject":
            raise InvalidInputError(f"Unknown normalisation {data.get('method')!r}.")
        clip = data.get("clip_hu")
        return cls(None if clip is None else (float(clip[0]), float(clip[1])))
