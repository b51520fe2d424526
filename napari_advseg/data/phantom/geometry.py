"""Coordinates, smooth random fields and the shape primitives the anatomy is built from."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .tissues import _ID

# --------------------------------------------------------------------------------------------
# Coordinates and smooth random fields
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Anatomical mm coordinates of the voxel centres along each axis.

    ``x`` runs from the patient's right (negative) to left, ``y`` from anterior (negative) to
    posterior, both 0 at the image centre; ``z`` is inferior to superior.
    """

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    def crop(
        self, lo: tuple[float, float, float], hi: tuple[float, float, float]
    ) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, np.ndarray] | None:
        """Voxels whose centres lie in the box ``lo..hi`` (z, y, x in mm).

        Returns
        -------
        The index slices and the broadcastable coordinates ``Z (n,1,1)``, ``Y (1,m,1)``,
        ``X (1,1,k)``, or ``None`` if the box holds no voxel.
        """
        slices = []
        for axis, a, b in zip((self.z, self.y, self.x), lo, hi, strict=True):
            i0 = int(np.searchsorted(axis, a, side="left"))
            i1 = int(np.searchsorted(axis, b, side="right"))
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
        sz, sy, sx = slices
        return (
            (sz, sy, sx),
            self.z[sz][:, None, None],
            self.y[sy][None, :, None],
            self.x[sx][None, None, :],
        )


class _Field:
    """A smooth Gaussian random field with unit variance and correlation length ``corr`` mm.

    Its coefficients live on a coarse control grid fixed in anatomical mm (independent of the
    voxel grid); evaluation is a separable Gaussian-kernel upsampling (three small matmuls).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        lo: tuple[float, float, float],
        hi: tuple[float, float, float],
        corr: float,
    ) -> None:
        self.corr = corr
        self.centres = [
            np.arange(a - 2 * corr, b + 2 * corr + 1e-6, corr) for a, b in zip(lo, hi, strict=True)
        ]
        shape = tuple(len(c) for c in self.centres)
        self.coef = rng.standard_normal(shape, dtype=np.float32)

    def _weights(self, coords: np.ndarray, axis: int) -> np.ndarray:
        """Normalised kernel weights (len(coords), n_centres) along one axis."""
        w = np.exp(-0.5 * ((coords.reshape(-1, 1) - self.centres[axis]) / self.corr) ** 2)
        norm = np.sqrt((w**2).sum(axis=1, keepdims=True))
        return (w / np.maximum(norm, 1e-12)).astype(np.float32)

    def at(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Field values ``(len(z), len(y), len(x))`` on the outer grid of the coordinates."""
        wz, wy, wx = (self._weights(c, i) for i, c in enumerate((z, y, x)))
        gz, gy, gx = self.coef.shape
        t = (wz @ self.coef.reshape(gz, gy * gx)).reshape(len(z) * gy, gx)
        t = (t @ wx.T).reshape(len(z), gy, len(x))
        return np.matmul(wy, t)  # (nz, ny, nx)


def _fine_field(rng: np.random.Generator, grid: _Grid, corr: float) -> np.ndarray:
    """A cheap fine-grained unit-variance random field on the whole grid.

    A low-rank stand-in for a full 3-D field (which costs tens of ms at this scale): three
    in-plane fields mixed by smooth random functions of z (row-normalised, so the variance is
    one everywhere and the pattern changes over about ``corr`` mm in z).
    """
    lo = (grid.z[0], grid.y[0], grid.x[0])
    hi = (grid.z[-1], grid.y[-1], grid.x[-1])
    far = np.array([0.0, 5 * corr, 10 * corr])  # far enough apart to be independent
    planes = _Field(rng, (0.0, lo[1], lo[2]), (far[-1], hi[1], hi[2]), corr)
    mixing = _Field(rng, (lo[0], 0.0, 0.0), (hi[0], 0.0, far[-1]), corr)
    a = planes.at(far, grid.y, grid.x)  # (3, ny, nx)
    w = mixing.at(grid.z, far[:1], far)[:, 0, :]  # (nz, 3)
    w /= np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-6)
    ny, nx = a.shape[1:]
    return (w @ a.reshape(3, ny * nx)).reshape(len(grid.z), ny, nx)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One uniform draw as a Python float."""
    return float(rng.uniform(lo, hi))


# --------------------------------------------------------------------------------------------
# Shape primitives
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ellipsoid:
    """An ellipsoid with in-plane rotation, z-drift of its centre and in-plane taper along z.

    ``angle`` rotates the first in-plane semi-axis ``a`` from the +x direction towards +y;
    ``drift`` is (dy/dz, dx/dz) of the centre; ``taper`` scales ``a, b`` by
    ``1 + taper * (z - cz) / c``.
    """

    centre: tuple[float, float, float]
    a: float
    b: float
    c: float
    angle: float = 0.0
    drift: tuple[float, float] = (0.0, 0.0)
    taper: float = 0.0

    def bounds(self, margin: float = 1.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """A (lo, hi) box in mm that contains the ellipsoid grown by ``margin``."""
        cz, cy, cx = self.centre
        r = max(self.a, self.b) * (1 + abs(self.taper)) * margin
        c = self.c * margin
        ry = r + abs(self.drift[0]) * c
        rx = r + abs(self.drift[1]) * c
        return (cz - c, cy - ry, cx - rx), (cz + c, cy + ry, cx + rx)

    def radius(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Normalised radius (< 1 inside, 1 on the surface) at broadcastable coordinates."""
        cz, cy, cx = self.centre
        dz = (z - cz).astype(np.float32)
        ddy = y - (cy + self.drift[0] * dz)
        ddx = x - (cx + self.drift[1] * dz)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u = ddx * ca + ddy * sa
        v = ddy * ca - ddx * sa
        s = np.maximum(1.0 + self.taper * dz / self.c, 0.15)
        d2 = (u / (self.a * s)) ** 2 + (v / (self.b * s)) ** 2 + (dz / self.c) ** 2
        return np.sqrt(d2)


def _tube(
    grid: _Grid, points: np.ndarray, r_xy: np.ndarray, r_z: np.ndarray
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Normalised distance to a tube along sampled centre ``points`` (n, 3) as (z, y, x) mm.

    The tube's cross-section at point ``i`` has in-plane radius ``r_xy[i]`` and z half-height
    ``r_z[i]``; the returned ``d`` is < 1 inside. Each point only touches its own small box.
    """
    rmax = np.maximum(r_xy, r_z)[:, None]
    lo = (points - rmax).min(axis=0)
    hi = (points + rmax).max(axis=0)
    box = grid.crop(tuple(lo), tuple(hi))
    if box is None:
        return None
    sl, zc, yc, xc = box
    zc, yc, xc = zc.ravel(), yc.ravel(), xc.ravel()
    d = np.full((len(zc), len(yc), len(xc)), np.inf, dtype=np.float32)
    for (pz, py, px), rxy, rz in zip(points, r_xy, r_z, strict=True):
        iz = np.searchsorted(zc, [pz - rz, pz + rz], side="left")
        iy = np.searchsorted(yc, [py - rxy, py + rxy], side="left")
        ix = np.searchsorted(xc, [px - rxy, px + rxy], side="left")
        if iz[1] <= iz[0] or iy[1] <= iy[0] or ix[1] <= ix[0]:
            continue
        bz = slice(*iz)
        by = slice(*iy)
        bx = slice(*ix)
        loc = (
            ((zc[bz, None, None] - pz) / rz) ** 2
            + ((yc[None, by, None] - py) / rxy) ** 2
            + ((xc[None, None, bx] - px) / rxy) ** 2
        ).astype(np.float32)
        np.minimum(d[bz, by, bx], loc, out=d[bz, by, bx])
    return sl, np.sqrt(d)


def _polyline(
    waypoints: list[tuple[float, float, float]], n: int, *radii: list[float]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sample ``n`` points (z, y, x) along a smoothed polyline; interpolate per-waypoint radii."""
    w = np.asarray(waypoints, dtype=np.float64)
    seg = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(w, axis=0), axis=1))]
    t = np.linspace(0.0, seg[-1], n)
    pts = np.stack([np.interp(t, seg, w[:, k]) for k in range(3)], axis=1)
    if n >= 8 and len(w) > 2:  # round the corners, keep the ends
        k = max(2, n // 8)
        pad = np.concatenate([np.repeat(pts[:1], k, 0), pts, np.repeat(pts[-1:], k, 0)])
        kern = np.ones(2 * k + 1) / (2 * k + 1)
        pts = np.stack([np.convolve(pad[:, j], kern, mode="valid") for j in range(3)], axis=1)
    return pts, [np.interp(t, seg, np.asarray(r, dtype=np.float64)) for r in radii]


def _paint(
    cls: np.ndarray,
    sl: tuple[slice, slice, slice],
    mask: np.ndarray,
    name: str,
    only: tuple[str, ...] | None = None,
) -> None:
    """Set ``cls[sl][mask]`` to tissue ``name``, optionally only over the tissues ``only``."""
    sub = cls[sl]
    if only is not None:
        mask = mask & np.isin(sub, [_ID[n] for n in only])
    sub[mask] = _ID[name]


def _vertical_tube(
    cls: np.ndarray,
    grid: _Grid,
    name: str,
    z_range: tuple[float, float],
    centre: tuple[float, float],
    radii: tuple[float, float],
    wobble: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Paint an elliptic cylinder of semi-axes ``radii`` (y, x) whose centre wobbles with z."""
    (cy, cx), (ry, rx) = centre, radii
    w = max(abs(wobble[0]), abs(wobble[1]))
    box = grid.crop((z_range[0], cy - ry - w, cx - rx - w), (z_range[1], cy + ry + w, cx + rx + w))
    if box is None:
        return
    sl, z, y, x = box
    phase = z / 40.0
    d = ((y - cy - wobble[0] * np.sin(phase)) / ry) ** 2 + (
        (x - cx - wobble[1] * np.cos(phase)) / rx
    ) ** 2
    _paint(cls, sl, d < 1.0, name)


def _perturbed(
    rng: np.random.Generator,
    grid: _Grid,
    shape: _Ellipsoid,
    amp: float,
    corr: float = 28.0,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """An ellipsoid with a randomly perturbed surface: (slices, d_rel) on its crop.

    ``d_rel = d / (1 + amp * field)`` is < 1 inside. The field is drawn even when the shape
    misses the volume, so the random stream does not depend on the config.
    """
    lo, hi = shape.bounds(1.0 + 3.0 * amp)
    field = _Field(rng, lo, hi, corr)
    box = grid.crop(lo, hi)
    if box is None:
        return None
    sl, z, y, x = box
    f = field.at(z.ravel(), y.ravel(), x.ravel())
    return sl, shape.radius(z, y, x) / np.maximum(1.0 + amp * f, 0.4)
