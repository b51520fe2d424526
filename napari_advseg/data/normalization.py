"""Intensity normalisation: how Hounsfield units become a network's input.

Three kinds, each ``(clip(HU) - mean) / std`` with its own clip and statistics, so that one
:class:`NormalizationStats` maps normalised values back to HU whatever the kind:

- ``zscore``: per subject, zero mean and unit variance after an optional clip (Chen et al. 2019;
  the shipped U-Net, with our clip to [-1000, 1000] HU);
- ``window``: clip to a HU window and scale it linearly onto an output range (a MONAI
  ``ScaleIntensityRange`` with clipping);
- ``dataset``: clip, then subtract a dataset-wide mean and divide by a dataset-wide standard
  deviation (nnU-Net's CT scheme).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..validation import check_number

KINDS = ("zscore", "window", "dataset")
ZSCORE_METHOD = "zscore_per_subject"
"""How version-1 configs name the z-score kind (kept, so that they load and are written alike)."""


@dataclass(frozen=True)
class NormalizationStats:
    """The mean and standard deviation (HU) a subject was normalised with."""

    mean: float
    std: float

    def denormalize(self, image: np.ndarray) -> np.ndarray:
        """Map normalised intensities back to Hounsfield units."""
        return image * self.std + self.mean


def _pair(value: Any, name: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidInputError(f"{name} must be two numbers (low, high), got {value!r}.")
    low, high = (check_number(v, name) for v in value)
    if not low < high:
        raise InvalidInputError(f"{name} must be (low, high) with low < high, got {value!r}.")
    return low, high


@dataclass(frozen=True)
class Normalization:
    """How HU become network inputs: ``(clip(HU) - mean) / std`` (see the module docstring).

    Attributes
    ----------
    clip_hu
        HU range to clip to first (None: no clip). For ``window`` it is the window itself.
    kind
        ``"zscore"`` (statistics of each subject), ``"window"`` or ``"dataset"``.
    output_range
        ``window`` only: the values the window's low and high ends map to.
    mean, std
        ``dataset`` only: the dataset-wide statistics in HU (after the clip).
    """

    clip_hu: tuple[float, float] | None = (-1000.0, 1000.0)
    kind: str = "zscore"
    output_range: tuple[float, float] = (0.0, 1.0)
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(
                f"Unknown normalisation kind {self.kind!r}; use one of {', '.join(KINDS)}."
            )
        if self.clip_hu is not None:
            object.__setattr__(self, "clip_hu", _pair(self.clip_hu, "HU clip"))
        if self.kind == "window":
            if self.clip_hu is None:
                raise InvalidInputError("A window normalisation needs its HU window (window_hu).")
            object.__setattr__(self, "output_range", _pair(self.output_range, "output_range"))
        if self.kind == "dataset":
            if self.mean is None or self.std is None:
                raise InvalidInputError("A dataset normalisation needs the dataset's mean and std.")
            object.__setattr__(self, "mean", check_number(self.mean, "normalisation mean"))
            std = check_number(self.std, "normalisation std", low=0.0, low_open=True)
            object.__setattr__(self, "std", std)

    def stats(self, image_hu: np.ndarray) -> NormalizationStats:
        """The mean and std (HU) that ``image_hu`` is normalised with."""
        if self.kind == "window":
            low, high = self.clip_hu  # type: ignore[misc]
            out_low, out_high = self.output_range
            std = (high - low) / (out_high - out_low)
            return NormalizationStats(low - out_low * std, std)
        if self.kind == "dataset":
            return NormalizationStats(float(self.mean), float(self.std))  # type: ignore[arg-type]
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
        """Normalise ``image_hu`` (with its own statistics for ``zscore``, unless given)."""
        stats = stats or self.stats(image_hu)
        out = (self._clip(image_hu) - stats.mean) / stats.std
        return out.astype(np.float32, copy=False), stats

    def _clip(self, image_hu: np.ndarray) -> np.ndarray:
        image = np.asarray(image_hu, dtype=np.float32)
        return image if self.clip_hu is None else np.clip(image, *self.clip_hu)

    def to_dict(self) -> dict[str, Any]:
        """The version-1 config form: ``method`` (``zscore_per_subject`` for a z-score)."""
        data = self.to_spec_dict()
        kind = data.pop("kind")
        return {"method": ZSCORE_METHOD if kind == "zscore" else kind, **data}

    def to_spec_dict(self) -> dict[str, Any]:
        """The spec-file form: ``kind`` and the entries that kind needs."""
        clip = list(self.clip_hu) if self.clip_hu else None
        if self.kind == "window":
            return {"kind": "window", "window_hu": clip, "output_range": list(self.output_range)}
        if self.kind == "dataset":
            return {"kind": "dataset", "clip_hu": clip, "mean": self.mean, "std": self.std}
        return {"kind": "zscore", "clip_hu": clip}

    def describe(self) -> str:
        """A short human-readable form, for messages."""
        clip = f"[{self.clip_hu[0]:g}, {self.clip_hu[1]:g}] HU" if self.clip_hu else "no clip"
        if self.kind == "window":
            low, high = self.output_range
            return f"window {clip} -> [{low:g}, {high:g}]"
        if self.kind == "dataset":
            return f"dataset z-score (clip {clip}, mean {self.mean:g}, std {self.std:g})"
        return f"per-subject z-score (clip {clip})"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalization:
        """Inverse of :meth:`to_dict`; also takes ``kind`` for ``method`` (hand-written specs)."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"A normalisation must be a mapping, got {data!r}.")
        kind = data.get("kind", data.get("method"))
        kind = "zscore" if kind == ZSCORE_METHOD else kind
        if kind == "window":
            window = data.get("window_hu", data.get("clip_hu"))
            output = data.get("output_range", (0.0, 1.0))
            return cls(window, "window", output)
        clip = data.get("clip_hu")
        if kind == "dataset":
            return cls(clip, "dataset", mean=data.get("mean"), std=data.get("std"))
        if kind != "zscore":
            raise InvalidInputError(
                f"Unknown normalisation {kind!r}; use one of {', '.join(KINDS)}."
            )
        return cls(clip)
