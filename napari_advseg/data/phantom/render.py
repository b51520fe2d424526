"""Rendering: tissue classes to int16 HU with texture, partial-volume blur and noise."""

from __future__ import annotations

import numpy as np

from .geometry import _Field, _fine_field, _Grid
from .tissues import _NAMES, _TABLE


def _blur_inplane(img: np.ndarray, w: float) -> np.ndarray:
    """Separable ``[w, 1 - 2w, w]`` blur along y and x with edge replication (partial volume)."""
    for axis in (1, 2):
        a = np.moveaxis(img, axis, 0)
        out = a * (1 - 2 * w)
        out[1:] += w * a[:-1]
        out[:1] += w * a[:1]
        out[:-1] += w * a[1:]
        out[-1:] += w * a[-1:]
        img = np.moveaxis(out, 0, axis)
    return img


def _render(
    rng: np.random.Generator, cls: np.ndarray, grid: _Grid, hu: np.ndarray, noise_hu: float
) -> np.ndarray:
    """Tissue classes to int16 HU: per-tissue value and texture, in-plane blur, white noise."""
    lo = (grid.z[0], grid.y[0], grid.x[0])
    hi = (grid.z[-1], grid.y[-1], grid.x[-1])
    coarse = [_Field(rng, lo, hi, 22.0).at(grid.z, grid.y, grid.x) for _ in range(2)]
    fine = _fine_field(rng, grid, 5.0)
    mix = rng.uniform(0, 2 * np.pi, len(_NAMES))
    amp_c = _TABLE[:, 2]
    amp_f = _TABLE[:, 3].astype(np.float32)
    c1 = (amp_c * np.cos(mix)).astype(np.float32)
    c2 = (amp_c * np.sin(mix)).astype(np.float32)
    img = hu.astype(np.float32)[cls]
    img += c1[cls] * coarse[0]
    img += c2[cls] * coarse[1]
    img += amp_f[cls] * fine
    img = _blur_inplane(img, 0.15)
    img += np.float32(noise_hu) * rng.standard_normal(cls.shape, dtype=np.float32)
    np.rint(img, out=img)
    np.clip(img, -1024, 3071, out=img)
    return img.astype(np.int16)
