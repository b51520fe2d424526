"""The phantom's configuration: volume shape, voxel spacing, noise and contrast phase."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import InvalidInputError
from .tissues import _CONTRAST_PHASES


@dataclass(frozen=True)
class PhantomConfig:
    """Geometry and noise of the generated volumes.

    Parameters
    ----------
    shape
        Volume shape ``(slices z, rows y, cols x)``, each at least 8.
    spacing
        Voxel size in mm, ``(z, y, x)``, each positive.
    noise_hu
        Standard deviation of the white noise in HU (non-negative).
    contrast
        ``"enhanced"`` (portal-venous-like), ``"native"`` (no contrast agent) or ``"mixed"``
        (default): each subject draws its own phase, 40 % native and the rest partly to fully
        enhanced, as in a clinical cohort (the bundled real case is a native scan).
    """

    shape: tuple[int, int, int] = (40, 128, 128)
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    noise_hu: float = 12.0
    contrast: str = "mixed"

    def __post_init__(self) -> None:
        shape, spacing = _validated(self.shape, self.spacing, self.noise_hu)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "noise_hu", float(self.noise_hu))
        if self.contrast not in _CONTRAST_PHASES:
            raise InvalidInputError(
                f"PhantomConfig.contrast must be one of {', '.join(_CONTRAST_PHASES)}, "
                f"got {self.contrast!r}."
            )


def _validated(
    shape: object, spacing: object, noise_hu: object
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Check a config and return its shape and spacing as plain tuples.

    Raises
    ------
    InvalidInputError
        If the shape is not three integers >= 8, the spacing not three positive finite numbers,
        or the noise negative or not finite.
    """
    try:
        dims = tuple(shape)  # type: ignore[call-overload]
        ints = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"PhantomConfig.shape must be three integers (z, y, x), got {shape!r}."
        ) from None
    if len(ints) != 3 or ints != dims or min(ints) < 8:
        raise InvalidInputError(
            f"PhantomConfig.shape must be three integers (z, y, x), each >= 8, got {shape!r}."
        )
    try:
        floats = tuple(float(s) for s in spacing)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"PhantomConfig.spacing must be three numbers in mm (z, y, x), got {spacing!r}."
        ) from None
    if len(floats) != 3 or not all(math.isfinite(s) and s > 0 for s in floats):
        raise InvalidInputError(
            f"PhantomConfig.spacing must be three positive finite sizes in mm (z, y, x), "
            f"got {spacing!r}."
        )
    try:
        noise = float(noise_hu)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        noise = float("nan")
    if not (math.isfinite(noise) and noise >= 0):
        raise InvalidInputError(
            f"PhantomConfig.noise_hu must be a finite number >= 0, got {noise_hu!r}."
        )
    return (ints[0], ints[1], ints[2]), (floats[0], floats[1], floats[2])
