"""Procedural, deterministic abdominal CT phantom with four organ labels.

:func:`generate_phantom` draws one synthetic subject from a seed: an int16 volume in Hounsfield
units (HU) and a uint8 label volume (0 background, 1 pancreas, 2 kidneys (left and right),
3 liver, 4 spleen), both of shape ``config.shape``.

Axis convention
---------------
Arrays are indexed ``(z, y, x)``, the standard radiological axial display:

* ``z``: slice index, inferior (0) to superior (last);
* ``y``: rows, anterior (row 0, top of the image) to posterior;
* ``x``: columns, the patient's right (column 0, the viewer's left) to the patient's left.

So the liver lies on the image's left, the spleen on the image's right and posterior, the spine
at the bottom centre and the kidneys either side of it.

Anatomy
-------
Everything is built in millimetres. In-plane, the body is centred in the field of view (and
shrunk as a whole if the field of view is too small for it); along z the volume is centred on a
120 mm reference block of the upper abdomen (liver dome to below the kidneys; craniocaudal
organ extents are about 0.7 times adult ones so that the default 40 x 3 mm volume holds the
whole organ set, with organ-free slices at the inferior end). A different shape or spacing
images the same subject at another resolution or coverage.

Organs are ellipsoids (unions, crescents, a curved tube for the pancreas) whose surfaces are
perturbed by smooth random fields, with per-subject size (about +-15 %), position (about
+-10 mm) and in-plane rotation. Overlaps are resolved by painting order, later wins: liver,
spleen, pancreas, kidneys (each kidney in a shell of perirenal fat cut out of the liver); the
gallbladder, lung bases, vessels, bone and muscle are painted last and carry no label (the
intrahepatic vessels are labelled liver). Organs are clipped to the abdominal cavity.

HU values (contrast-enhanced, portal-venous-like; each subject draws its own value in range;
see ``PhantomConfig.contrast`` and ``_NATIVE`` for native scans and mixed cohorts)
---------------------------------------------------------------------------------------------
air -1000, lung -870..-820, bowel gas -950..-880, subcutaneous fat -110..-90, visceral fat
-100..-80, stool -60..-20, gallbladder 5..20, bowel content 20..40, skin 30..50, muscle 45..60,
bowel wall 60..80, pancreas 80..100, liver 100..110, spleen 110..120, IVC 110..130, portal and
other veins 145..170, hepatic vessels 140..165, aorta 150..180, kidney cortex 160..190, kidney
medulla 45..60, renal pelvis 30..40, costal cartilage 130..200, cancellous bone 250..400,
cortical bone 650..800, intervertebral disc 80..100, spinal canal 15..35.

Each tissue gets a smooth low-frequency texture of a few HU (more for fat, lung, stool and
bone), the image is slightly blurred in-plane (partial volume) and white noise of standard
deviation ``config.noise_hu`` is added. Everything is drawn from ``np.random.default_rng(seed)``:
the same seed and config give bit-identical arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PhantomConfig", "generate_phantom"]


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
            raise ValueError(
                f"PhantomConfig.contrast must be one of {', '.join(_CONTRAST_PHASES)}, "
                f"got {self.contrast!r}."
            )


def _validated(
    shape: object, spacing: object, noise_hu: object
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Check a config and return its shape and spacing as plain tuples.

    Raises
    ------
    ValueError
        If the shape is not three integers >= 8, the spacing not three positive finite numbers,
        or the noise negative or not finite.
    """
    try:
        dims = tuple(shape)  # type: ignore[call-overload]
        ints = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise ValueError(
            f"PhantomConfig.shape must be three integers (z, y, x), got {shape!r}."
        ) from None
    if len(ints) != 3 or ints != dims or min(ints) < 8:
        raise ValueError(
            f"PhantomConfig.shape must be three integers (z, y, x), each >= 8, got {shape!r}."
        )
    try:
        floats = tuple(float(s) for s in spacing)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise ValueError(
            f"PhantomConfig.spacing must be three numbers in mm (z, y, x), got {spacing!r}."
        ) from None
    if len(floats) != 3 or not all(math.isfinite(s) and s > 0 for s in floats):
        raise ValueError(
            f"PhantomConfig.spacing must be three positive finite sizes in mm (z, y, x), "
            f"got {spacing!r}."
        )
    try:
        noise = float(noise_hu)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        noise = float("nan")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"PhantomConfig.noise_hu must be a finite number >= 0, got {noise_hu!r}.")
    return (ints[0], ints[1], ints[2]), (floats[0], floats[1], floats[2])


# --------------------------------------------------------------------------------------------
# Tissue classes: name -> (HU low, HU high, coarse texture HU, fine texture HU, label)
# --------------------------------------------------------------------------------------------

_TISSUES: dict[str, tuple[float, float, float, float, int]] = {
    "air": (-1000, -1000, 0, 0, 0),
    "skin": (30, 50, 3, 2, 0),
    "subcut_fat": (-110, -90, 5, 7, 0),
    "muscle": (45, 60, 4, 3, 0),
    "visceral_fat": (-100, -80, 5, 7, 0),
    "lung": (-870, -820, 15, 30, 0),
    "bone_cancellous": (250, 400, 20, 30, 0),
    "bone_cortical": (650, 800, 30, 20, 0),
    "cartilage": (130, 200, 10, 5, 0),
    "disc": (80, 100, 4, 4, 0),
    "canal": (15, 35, 3, 2, 0),
    "aorta": (150, 180, 2, 1, 0),
    "ivc": (110, 130, 4, 2, 0),
    "vein": (145, 170, 3, 2, 0),
    "bowel_wall": (60, 80, 3, 3, 0),
    "bowel_content": (20, 40, 4, 5, 0),
    "stool": (-60, -20, 15, 70, 0),
    "gas": (-950, -880, 15, 10, 0),
    "gallbladder": (5, 20, 2, 1, 0),
    "liver": (100, 110, 3, 2, 3),
    "hepatic_vessel": (140, 165, 3, 2, 3),
    "spleen": (110, 120, 3, 2, 4),
    "kidney_cortex": (160, 190, 4, 3, 2),
    "kidney_medulla": (45, 60, 3, 3, 2),
    "renal_pelvis": (30, 40, 2, 1, 2),
    "pancreas": (80, 100, 3, 5, 1),
}
# Native (non-contrast) HU ranges of the tissues that take up contrast agent; the others keep
# their value whatever the phase.
_NATIVE: dict[str, tuple[float, float]] = {
    "aorta": (35, 45),
    "ivc": (35, 45),
    "vein": (35, 45),
    "bowel_wall": (35, 45),
    "liver": (50, 65),
    "hepatic_vessel": (35, 45),
    "spleen": (40, 50),
    "kidney_cortex": (28, 38),
    "kidney_medulla": (25, 35),
    "renal_pelvis": (5, 15),
    "pancreas": (30, 45),
}
_CONTRAST_PHASES = ("mixed", "enhanced", "native")
_NAMES = tuple(_TISSUES)
_ID = {name: np.uint8(i) for i, name in enumerate(_NAMES)}
_TABLE = np.array(list(_TISSUES.values()), dtype=np.float64)
_LABEL_OF_CLASS = _TABLE[:, 4].astype(np.uint8)

_Z_CENTRE = 60.0  # anatomical z (mm) of the volume centre; the reference block spans 0..120 mm
_SKIN_MM = 2.5


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
# Body outline and wall layers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Body:
    """Per-subject body outline and wall parameters (mm)."""

    half_width: float
    half_ant: float
    half_post: float
    cy: float
    cx: float
    taper: float
    fat0: float
    fat_harm: tuple[float, ...]
    fat_z: tuple[float, float]
    muscle0: float
    muscle_harm: tuple[float, float]

    def radius(self, theta: np.ndarray | float) -> np.ndarray:
        """Distance from the body centre to the skin along direction ``theta`` (mm).

        ``theta = atan2(y, x)``: 0 patient's left, pi/2 posterior, -pi/2 anterior.
        """
        c, s = np.abs(np.cos(theta)), np.sin(theta)
        post = s > 0
        b = np.where(post, self.half_post, self.half_ant)
        p = np.where(post, 2.6, 2.1)  # flatter back (the table)
        return 1.0 / ((c / self.half_width) ** p + (np.abs(s) / b) ** p) ** (1.0 / p)

    def scale(self, z: np.ndarray | float) -> np.ndarray:
        """In-plane size factor of the body at height ``z`` (wider ribcage above)."""
        return 1.0 + self.taper * (np.asarray(z) - _Z_CENTRE) / 60.0

    def fat(self, theta: np.ndarray | float) -> np.ndarray:
        """Subcutaneous fat thickness (mm) along ``theta``: thickest anterior and lateral."""
        a1, a2, a3, p2, p3 = self.fat_harm
        f = 1.0 - a1 * np.sin(theta) + a2 * np.cos(2 * theta + p2) + a3 * np.cos(3 * theta + p3)
        return self.fat0 * np.clip(f, 0.3, None)

    def muscle(self, theta: np.ndarray | float) -> np.ndarray:
        """Abdominal wall muscle thickness (mm): thicker laterally, thinner posteriorly."""
        a2, p2 = self.muscle_harm
        return self.muscle0 * (1.0 + a2 * np.cos(2 * theta + p2) - 0.3 * np.sin(theta))

    def wall_point(self, theta: float, z: float, depth: float) -> tuple[float, float]:
        """(y, x) of the point ``depth`` mm below the skin along ``theta`` at height ``z``."""
        r = float(self.radius(theta)) * float(self.scale(z)) - depth
        return self.cy + r * math.sin(theta), self.cx + r * math.cos(theta)


def _draw_body(rng: np.random.Generator) -> _Body:
    """Draw the body outline of one subject."""
    width = _u(rng, 300, 340)
    ap = _u(rng, 220, 260)
    return _Body(
        half_width=width / 2,
        half_ant=0.53 * ap,
        half_post=0.47 * ap,
        cy=_u(rng, -6, 6),
        cx=_u(rng, -6, 6),
        taper=_u(rng, -0.02, 0.05),
        fat0=_u(rng, 10, 28),
        fat_harm=(
            _u(rng, 0.2, 0.4),
            _u(rng, 0.0, 0.3),
            _u(rng, 0.0, 0.12),
            _u(rng, -0.4, 0.4),
            _u(rng, 0, 2 * np.pi),
        ),
        fat_z=(_u(rng, 0.0, 0.12), _u(rng, 0, 2 * np.pi)),
        muscle0=_u(rng, 10, 14),
        muscle_harm=(_u(rng, 0.15, 0.4), _u(rng, -0.4, 0.4)),
    )


def _wall(
    body: _Body, z: np.ndarray, y: np.ndarray, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Depth below the skin and the depths of the fat/muscle and muscle/cavity interfaces (mm).

    ``z, y, x`` are 1-D coordinate vectors; returns ``depth (nz, ny, nx)``, ``t_fat (nz, ny,
    nx)``, ``t_muscle (nz, ny, nx)`` and ``theta (ny, nx)``.
    """
    dy = y[:, None] - body.cy
    dx = x[None, :] - body.cx
    theta = np.arctan2(dy, dx)
    r = np.hypot(dy, dx)
    rb = body.radius(theta)
    amp, phase = body.fat_z
    fat_z = 1.0 + amp * np.sin(2 * np.pi * z / 150.0 + phase)
    depth = (body.scale(z)[:, None, None] * rb - r).astype(np.float32)
    fat = body.fat(theta).astype(np.float32)
    t_fat = _SKIN_MM + fat * fat_z.astype(np.float32)[:, None, None]
    t_muscle = t_fat + body.muscle(theta).astype(np.float32)
    return depth, t_fat, t_muscle, theta


def _paint_body(cls: np.ndarray, grid: _Grid, body: _Body) -> np.ndarray:
    """Paint air, skin, subcutaneous fat, wall muscle and visceral fat; return the cavity mask."""
    depth, t_fat, t_muscle, _ = _wall(body, grid.z, grid.y, grid.x)
    layer = (depth > 0).view(np.uint8) + (depth > _SKIN_MM)
    layer += depth > t_fat
    layer += depth > t_muscle
    lut = np.array(
        [_ID[n] for n in ("air", "skin", "subcut_fat", "muscle", "visceral_fat")], np.uint8
    )
    cls[...] = lut[layer]
    return layer == 4


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


# --------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """Landmarks that place the anatomy of one subject (mm)."""

    kx: float  # lateral scale of organ positions (body width / 320 mm)
    ky: float  # AP scale of organ positions
    yv: float  # centre of the vertebral body (y); the spine is at x = body.cx
    x0: float  # midline x
    y_tip: float  # tip of the spinous process (y)
    aorta: tuple[float, float, float]  # (y, x, radius)
    ivc: tuple[float, float, float, float]  # (y, x, radius y, radius x)


def _frame(rng: np.random.Generator, body: _Body) -> _Frame:
    """Place the spine and great vessels relative to the body outline."""
    post_fat = float(body.fat(np.pi / 2))
    y_tip = body.cy + body.half_post - _SKIN_MM - post_fat - _u(rng, 4, 9)
    yv = y_tip - _u(rng, 58, 66)
    x0 = body.cx + _u(rng, -3, 3)
    ra = _u(rng, 8.0, 11.5)
    aorta = (yv - 17 - ra - _u(rng, 1, 4), x0 + _u(rng, 8, 16), ra)
    ivc = (yv - _u(rng, 20, 28), x0 - _u(rng, 20, 27), _u(rng, 8, 11), _u(rng, 11, 15))
    return _Frame(
        kx=body.half_width / 160.0,
        ky=(body.half_ant + body.half_post) / 240.0,
        yv=yv,
        x0=x0,
        y_tip=y_tip,
        aorta=aorta,
        ivc=ivc,
    )


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


def _jitter(rng: np.random.Generator, size: float = 0.15) -> float:
    """A size factor in ``1 +- size``."""
    return _u(rng, 1 - size, 1 + size)


def _paint_lungs(
    rng: np.random.Generator, cls: np.ndarray, grid: _Grid, body: _Body, fr: _Frame
) -> None:
    """Lung bases: a crescent in the posterior costophrenic recesses of the top slices.

    Painted after the organs (the recess lies outside the diaphragm, around liver and spleen).
    """
    z0 = _u(rng, 98, 112)  # lowest point of the recess
    thick = _u(rng, 30, 45)  # mm inside the wall, reached 30 mm above z0
    box = grid.crop((z0, -1e4, -1e4), (1e4, 1e4, 1e4))
    if box is None:
        return
    sl, z, _, _ = box
    depth, _, t_muscle, theta = _wall(body, z.ravel(), grid.y, grid.x)
    grow = np.clip((z - z0) / 30.0, 0.0, 1.0) ** 0.8
    side = np.clip(0.35 + np.sin(theta), 0.0, 1.0)  # posterior and lateral, not anterior
    inner = depth - t_muscle
    beside_spine = np.abs(grid.x - fr.x0) > 32.0  # the recesses flank the vertebral body
    lung = (inner > 0) & (inner < thick * grow * side) & beside_spine
    _paint(cls, sl, lung, "lung")


def _paint_bowel_loop(
    cls: np.ndarray,
    grid: _Grid,
    cavity: np.ndarray,
    shape: _Ellipsoid,
    wall: float,
    content: str,
    gas_level: float,
) -> None:
    """A bowel segment: enhancing wall, content and gas above an air-fluid level.

    ``gas_level`` is the fraction of the lumen's AP size (from the anterior edge) filled with gas.
    """
    box = grid.crop(*shape.bounds())
    if box is None:
        return
    sl, z, y, x = box
    d = shape.radius(z, y, x)
    inside = (d < 1.0) & cavity[sl]
    ry = max(shape.a, shape.b)
    lumen = d < 1.0 - wall / min(shape.a, shape.b)
    sub = cls[sl]
    sub[inside] = _ID["bowel_wall"]
    sub[inside & lumen] = _ID[content]
    level = shape.centre[1] - ry + 2 * ry * gas_level
    gas = inside & lumen & (y < level)
    sub[gas] = _ID["gas"]


def _paint_bowel(
    rng: np.random.Generator,
    cls: np.ndarray,
    grid: _Grid,
    body: _Body,
    fr: _Frame,
    cavity: np.ndarray,
) -> None:
    """Stomach, colon and small-bowel loops (mostly anterior), painted before the organs."""
    kx, ky, x0 = fr.kx, fr.ky, fr.x0
    # Stomach: left upper quadrant, anterior to the spleen, gas anteriorly.
    stomach = _Ellipsoid(
        centre=(_u(rng, 92, 104), body.cy - _u(rng, 15, 30) * ky, x0 + _u(rng, 35, 55) * kx),
        a=_u(rng, 32, 45),
        b=_u(rng, 25, 35),
        c=_u(rng, 30, 40),
        angle=_u(rng, -0.6, 0.2),
        drift=(0.1, -0.25),
    )
    _paint_bowel_loop(cls, grid, cavity, stomach, 4.0, "bowel_content", _u(rng, 0.05, 0.45))
    # Colon: ascending (patient right), descending (left), transverse (anterior).
    colon = [
        (_u(rng, 20, 40), (body.cy + _u(rng, -5, 15) * ky, x0 - _u(rng, 100, 112) * kx), 30),
        (_u(rng, 30, 55), (body.cy + _u(rng, 5, 25) * ky, x0 + _u(rng, 100, 112) * kx), 35),
    ]
    for zc, (cy, cx), c in colon:
        shape = _Ellipsoid((zc, cy, cx), _u(rng, 16, 22), _u(rng, 16, 22), c)
        _paint_bowel_loop(cls, grid, cavity, shape, 2.5, "stool", _u(rng, 0.2, 0.6))
    transverse = _Ellipsoid(
        centre=(_u(rng, 62, 80), body.cy - _u(rng, 65, 80) * ky, x0 + _u(rng, -10, 10)),
        a=_u(rng, 70, 95),
        b=_u(rng, 14, 20),
        c=_u(rng, 12, 18),
        angle=_u(rng, -0.12, 0.12),
    )
    _paint_bowel_loop(cls, grid, cavity, transverse, 2.5, "stool", _u(rng, 0.3, 0.8))
    # Small-bowel loops: more and more posterior in the lower abdomen.
    for _ in range(32):
        zc = 85.0 * float(rng.beta(1.0, 1.9)) - 10.0
        post = 0.1 + 0.5 * max(0.0, (45.0 - zc) / 50.0)
        shape = _Ellipsoid(
            centre=(
                zc,
                body.cy + _u(rng, -0.7, post) * body.half_ant,
                x0 + _u(rng, -0.65, 0.65) * body.half_width,
            ),
            a=_u(rng, 10, 19),
            b=_u(rng, 9, 16),
            c=_u(rng, 10, 24),
            angle=_u(rng, 0, np.pi),
            drift=(_u(rng, -0.4, 0.4), _u(rng, -0.4, 0.4)),
        )
        gas = _u(rng, -0.4, 0.5)
        _paint_bowel_loop(cls, grid, cavity, shape, 2.0, "bowel_content", gas)


def _paint_liver(
    rng: np.random.Generator,
    cls: np.ndarray,
    grid: _Grid,
    body: _Body,
    fr: _Frame,
    cavity: np.ndarray,
) -> tuple[float, float, float]:
    """Right and left lobe, gallbladder; returns the (z, y, x) of the porta hepatis."""
    kx, ky, x0 = fr.kx, fr.ky, fr.x0
    s = _jitter(rng)
    cz = _u(rng, 94, 106)
    right = _Ellipsoid(
        centre=(cz, body.cy + _u(rng, -12, 4) * ky, x0 - _u(rng, 58, 72) * kx),
        a=70 * s,
        b=88 * s,
        c=_u(rng, 58, 68) * s,
        angle=_u(rng, -0.25, 0.2),
        drift=(0.25, 0.3),  # inferior tip more anterior and lateral
        taper=0.12,
    )
    left = _Ellipsoid(
        centre=(cz + _u(rng, 2, 12), body.cy - _u(rng, 40, 52) * ky, x0 + _u(rng, -10, 10) * kx),
        a=_u(rng, 65, 80) * s,
        b=_u(rng, 28, 36) * s,
        c=_u(rng, 32, 42) * s,
        angle=_u(rng, -0.35, 0.1),
        drift=(0.15, -0.2),
    )
    for shape, amp in ((right, 0.07), (left, 0.1)):
        res = _perturbed(rng, grid, shape, amp)
        if res is None:
            continue
        sl, d = res
        _paint(cls, sl, (d < 1.0) & cavity[sl], "liver")
    # Gallbladder at the inferior surface (not labelled liver).
    gb = _Ellipsoid(
        centre=(cz - _u(rng, 28, 40), body.cy - _u(rng, 28, 42) * ky, x0 - _u(rng, 35, 50) * kx),
        a=_u(rng, 10, 15),
        b=_u(rng, 16, 24),
        c=_u(rng, 18, 26),
        angle=_u(rng, -0.6, 0.6),
        drift=(0.5, 0.2),
    )
    if rng.random() < 0.8:
        box = grid.crop(*gb.bounds())
        if box is not None:
            sl, z, y, x = box
            d = gb.radius(z, y, x)
            _paint(cls, sl, (d < 1.0) & cavity[sl], "gallbladder")
    porta = (cz - _u(rng, 18, 26), body.cy - _u(rng, 10, 20) * ky, x0 - _u(rng, 28, 38) * kx)
    return porta


def _paint_hepatic_vessels(
    rng: np.random.Generator,
    cls: np.ndarray,
    grid: _Grid,
    fr: _Frame,
    porta: tuple[float, float, float],
) -> None:
    """Portal branches from the porta hepatis and hepatic veins to the IVC, inside the liver."""
    pz, py, px = porta
    iy, ix = fr.ivc[0], fr.ivc[1]
    kx, ky = fr.kx, fr.ky
    branches = [
        (porta, (pz + _u(rng, 10, 25), py + _u(rng, -10, 15) * ky, px - _u(rng, 45, 60) * kx), 5),
        (porta, (pz + _u(rng, 15, 30), py - _u(rng, 30, 45) * ky, px + _u(rng, 40, 60) * kx), 4),
    ]
    top = _u(rng, 108, 118)
    for ang in (_u(rng, -2.5, -2.0), _u(rng, -1.9, -1.4), _u(rng, -1.3, -0.9)):
        end = (top + _u(rng, -5, 5), iy + 70 * ky * math.sin(ang), ix + 70 * kx * math.cos(ang))
        branches.append(((top + 4, iy, ix), end, 4))
    for start, end, r in branches:
        pts, (radii,) = _polyline([start, end], 14, [r, r * 0.55])
        res = _tube(grid, pts, radii, radii * 1.3)
        if res is not None:
            sl, d = res
            _paint(cls, sl, d < 1.0, "hepatic_vessel", only=("liver",))


@dataclass(frozen=True)
class _SpleenPlan:
    """Spleen shape, the cutter that makes it a crescent, and its hilum (z, y, x)."""

    shape: _Ellipsoid
    cut: _Ellipsoid
    hilum: tuple[float, float, float]


def _plan_spleen(rng: np.random.Generator, body: _Body) -> _SpleenPlan:
    """Draw the spleen: a crescent against the left posterolateral wall, superior half."""
    s = _jitter(rng)
    a, b, c = _u(rng, 46, 56) * s, _u(rng, 27, 32) * s, _u(rng, 34, 42) * s
    zc = _u(rng, 80, 90)
    theta = _u(rng, 0.35, 0.65)  # direction from the body centre: posterolateral left
    depth = _SKIN_MM + float(body.fat(theta)) + float(body.muscle(theta)) + b * _u(rng, 0.7, 0.9)
    cy, cx = body.wall_point(theta, zc, depth)
    angle = theta - np.pi / 2 + _u(rng, -0.15, 0.15)  # long axis along the wall
    centre = (zc, cy, cx)
    shape = _Ellipsoid(centre, a, b, c, angle, drift=(0.3, -0.1))  # lower pole anterolateral
    # In-plane unit normal of the long axis pointing inwards: the concave hilum side.
    ny, nx = math.cos(angle), -math.sin(angle)
    if ny * math.sin(theta) + nx * math.cos(theta) > 0:
        ny, nx = -ny, -nx
    off = b * _u(rng, 1.4, 1.6)
    cut = _Ellipsoid(
        centre=(zc, cy + ny * off, cx + nx * off),
        a=a * 0.75,
        b=b,
        c=c * 0.8,
        angle=angle,
    )
    hilum = (zc - 10, cy + ny * 0.5 * b, cx + nx * 0.5 * b)
    return _SpleenPlan(shape, cut, hilum)


def _paint_spleen(
    rng: np.random.Generator, cls: np.ndarray, grid: _Grid, plan: _SpleenPlan, cavity: np.ndarray
) -> None:
    """Paint the perturbed spleen crescent."""
    res = _perturbed(rng, grid, plan.shape, 0.08)
    if res is None:
        return
    sl, d = res
    z = grid.z[sl[0]][:, None, None]
    y = grid.y[sl[1]][None, :, None]
    x = grid.x[sl[2]][None, None, :]
    dc = plan.cut.radius(z, y, x)
    _paint(cls, sl, (d < 1.0) & (dc > 1.0) & cavity[sl], "spleen")


@dataclass(frozen=True)
class _PancreasPlan:
    """Pancreas centre line and radii, its neighbouring duodenum and veins."""

    points: np.ndarray
    r_xy: np.ndarray
    r_z: np.ndarray
    duodenum: tuple[_Ellipsoid, ...]
    splenic_vein: list[tuple[float, float, float]]
    confluence: tuple[float, float, float]
    smv: tuple[float, float]
    sma: tuple[float, float]


def _plan_pancreas(
    rng: np.random.Generator,
    fr: _Frame,
    spleen: _SpleenPlan,
    left_kidney: _Ellipsoid,
) -> _PancreasPlan:
    """Draw the pancreas and its neighbours.

    The head lies right of the midline anterior to the IVC, the neck and body anterior to the
    SMV/SMA and aorta, and the tail runs up and to the left, anterior to the left kidney,
    towards the splenic hilum.
    """
    kx = fr.kx
    ya, xa, ra = fr.aorta
    iy, ix, iry, _ = fr.ivc
    s = _jitter(rng)
    zp = _u(rng, 62, 70)
    hz, hy, hx = spleen.hilum
    r_head, r_neck, r_body, r_tail = (
        _u(rng, 11, 13.5) * s,
        _u(rng, 7, 8.5) * s,
        _u(rng, 8, 10) * s,
        _u(rng, 7, 9) * s,
    )
    head = (zp - _u(rng, 5, 9), iy - iry - r_head + _u(rng, -2, 4), ix - _u(rng, 0, 8) * kx)
    neck = (zp - 2, ya - ra - r_neck - _u(rng, 12, 16), xa - _u(rng, 12, 18))
    body_ = (zp + _u(rng, 1, 5), ya - ra - r_body - _u(rng, 8, 14), xa + _u(rng, 20, 32) * kx)
    _, ky_, kx_ = left_kidney.centre
    tail = (
        min(zp + _u(rng, 7, 13), hz + 5),
        min(hy + _u(rng, -6, 4), ky_ - left_kidney.b - 0.5 * r_tail),
        min(hx - _u(rng, 4, 14) * kx, kx_ + 12),
    )
    points, (r_xy, r_z) = _polyline(
        [head, neck, body_, tail],
        44,
        [r_head, r_neck, r_body, r_tail],
        [r_head * 1.1, r_neck * 1.15, r_body * 1.1, r_tail],
    )
    # Duodenum: descending part lateral to the head, horizontal part below it.
    d2 = _Ellipsoid(
        centre=(head[0] - _u(rng, 6, 12), head[1] + _u(rng, -4, 6), head[2] - r_head - 12),
        a=_u(rng, 10, 13),
        b=_u(rng, 10, 13),
        c=_u(rng, 16, 22),
        drift=(0.0, 0.15),
    )
    d3 = _Ellipsoid(
        centre=(head[0] - _u(rng, 20, 26), ya - ra - 9, (head[2] + xa) / 2),
        a=_u(rng, 32, 40),
        b=_u(rng, 7, 9),
        c=_u(rng, 8, 10),
        angle=_u(rng, -0.15, 0.15),
    )
    smv = (ya - ra - _u(rng, 5, 8), neck[2] + _u(rng, -3, 2))
    sma = (ya - ra - _u(rng, 4, 7), xa - _u(rng, 1, 4))
    confluence = (neck[0], smv[0], smv[1])
    offset = [r_neck + 3.5, r_body + 3.5, r_tail + 3.0]
    splenic = [
        confluence,
        *[(p[0], p[1] + o, p[2]) for p, o in zip((neck, body_, tail), offset, strict=True)][1:],
        (hz, hy, hx),
    ]
    return _PancreasPlan(points, r_xy, r_z, (d2, d3), splenic, confluence, smv, sma)


def _paint_pancreas(
    rng: np.random.Generator,
    cls: np.ndarray,
    grid: _Grid,
    plan: _PancreasPlan,
    cavity: np.ndarray,
) -> None:
    """Paint the lobulated pancreas band."""
    rmax = np.maximum(plan.r_xy, plan.r_z)[:, None] * 1.3
    lo = tuple((plan.points - rmax).min(axis=0))
    hi = tuple((plan.points + rmax).max(axis=0))
    field = _Field(rng, lo, hi, 9.0)
    res = _tube(grid, plan.points, plan.r_xy * 1.3, plan.r_z * 1.3)
    if res is None:
        return
    sl, d = res
    f = field.at(grid.z[sl[0]], grid.y[sl[1]], grid.x[sl[2]])
    _paint(cls, sl, (d < 1.0 + 0.15 * f) & cavity[sl], "pancreas")


def _plan_kidneys(
    rng: np.random.Generator, fr: _Frame
) -> list[tuple[_Ellipsoid, _Ellipsoid, _Ellipsoid]]:
    """Draw both kidneys: (parenchyma, hilum notch, pelvis) for the right then the left one.

    Either side of the spine, posterior, the hilum facing anteromedially, upper poles more
    medial and posterior, the left kidney slightly higher.
    """
    out = []
    for side in (-1, 1):  # -1: patient's right (image left)
        s = _jitter(rng)
        rot = _u(rng, 0.35, 0.7)
        angle = rot if side > 0 else math.pi - rot  # u axis points posterolaterally
        centre = (
            _u(rng, 56, 64) + (6.0 if side > 0 else 0.0),
            fr.yv + _u(rng, 2, 14),
            fr.x0 + side * _u(rng, 62, 72) * fr.kx,
        )
        a, b, c = _u(rng, 28, 32) * s, _u(rng, 20, 23) * s, _u(rng, 33, 39) * s
        drift = (0.12, -side * 0.15)
        kidney = _Ellipsoid(centre, a, b, c, angle, drift)
        # The hilum is at the anteromedial end of the u axis.
        ux, uy = math.cos(angle), math.sin(angle)
        hilum = (centre[0], centre[1] - a * uy, centre[2] - a * ux)
        sinus = (centre[0], centre[1] - 0.45 * a * uy, centre[2] - 0.45 * a * ux)
        notch = _Ellipsoid(hilum, 0.42 * a, 0.5 * b, 0.4 * c, angle, drift)
        pelvis = _Ellipsoid(sinus, 0.38 * a, 0.42 * b, 0.3 * c, angle, drift)
        out.append((kidney, notch, pelvis))
    return out


def _paint_kidneys(
    rng: np.random.Generator,
    cls: np.ndarray,
    grid: _Grid,
    plans: list[tuple[_Ellipsoid, _Ellipsoid, _Ellipsoid]],
    cavity: np.ndarray,
) -> None:
    """Paint cortex, lumpy medulla and pelvis of each kidney, with renal sinus fat at the hilum.

    Each kidney first clears a shell of perirenal fat (thicker posteriorly) out of the liver, so
    that the liver covers its anterior and lateral surface but not its back.
    """
    for kidney, notch, pelvis in plans:
        cz, cy, cx = kidney.centre
        fat = _Ellipsoid(
            (cz, cy + 0.6 * kidney.b, cx),
            kidney.a * 1.25 + 3.0,
            kidney.b * 1.7 + 3.0,
            kidney.c * 1.1,
            kidney.angle,
            kidney.drift,
        )
        box = grid.crop(*fat.bounds())
        if box is not None:
            sl, z, y, x = box
            _paint(cls, sl, fat.radius(z, y, x) < 1.0, "visceral_fat", only=("liver",))
        lo, hi = kidney.bounds(1.2)
        pyramids = _Field(rng, lo, hi, 6.0)
        res = _perturbed(rng, grid, kidney, 0.05, corr=20.0)
        if res is None:
            continue
        sl, d = res
        z = grid.z[sl[0]]
        y = grid.y[sl[1]]
        x = grid.x[sl[2]]
        dn = notch.radius(z[:, None, None], y[None, :, None], x[None, None, :])
        dp = pelvis.radius(z[:, None, None], y[None, :, None], x[None, None, :])
        f = pyramids.at(z, y, x)
        organ = (d < 1.0) & cavity[sl]
        sub = cls[sl]
        sub[organ] = _ID["kidney_cortex"]
        sub[organ & (d < 0.58 + 0.14 * f)] = _ID["kidney_medulla"]
        sub[organ & (dp < 1.0)] = _ID["renal_pelvis"]
        sub[organ & (dn < 1.0)] = _ID["visceral_fat"]


def _paint_vessels(
    rng: np.random.Generator,
    cls: np.ndarray,
    grid: _Grid,
    fr: _Frame,
    pancreas: _PancreasPlan,
    kidneys: list[tuple[_Ellipsoid, _Ellipsoid, _Ellipsoid]],
    porta: tuple[float, float, float],
) -> None:
    """Aorta, IVC, SMA, SMV, portal, splenic and renal veins (no label)."""
    ya, xa, ra = fr.aorta
    iy, ix, iry, irx = fr.ivc
    _vertical_tube(cls, grid, "aorta", (-200, 135), (ya, xa), (ra, ra), (1.5, 2.0))
    _vertical_tube(cls, grid, "ivc", (-200, 400), (iy, ix), (iry, irx), (2.0, 1.5))
    zc = pancreas.confluence[0]
    _vertical_tube(cls, grid, "aorta", (-200, zc + 2), pancreas.sma, (3.5, 3.5), (1.0, 1.5))
    _vertical_tube(cls, grid, "vein", (-200, zc), pancreas.smv, (5.5, 5.0), (1.0, 1.5))
    paths: list[tuple[list[tuple[float, float, float]], float]] = [
        ([pancreas.confluence, porta], _u(rng, 6, 7.5)),
        (pancreas.splenic_vein, _u(rng, 3.5, 4.5)),
    ]
    for side, (_, notch, _) in zip((-1, 1), kidneys, strict=True):
        hilum = notch.centre
        if side < 0:
            paths.append(([hilum, (hilum[0] + 4, iy, ix)], 5.0))
        else:  # the left renal vein crosses anterior to the aorta
            front = (hilum[0] + 2, ya - ra - 4.5, xa)
            paths.append(([hilum, front, (hilum[0] + 4, iy, ix)], 4.5))
    for waypoints, r in paths:
        pts, (radii,) = _polyline(waypoints, 30, [r] * len(waypoints))
        res = _tube(grid, pts, radii, radii * 1.2)
        if res is not None:
            sl, d = res
            _paint(cls, sl, d < 1.0, "vein")


def _paint_spine_and_muscles(
    rng: np.random.Generator, cls: np.ndarray, grid: _Grid, fr: _Frame
) -> None:
    """Paraspinal, quadratus lumborum and psoas muscles, then the vertebrae and discs."""
    x0, yv, y_tip = fr.x0, fr.yv, fr.y_tip
    wx, wy = _u(rng, 20, 24), _u(rng, 14, 17)
    rc = _u(rng, 8, 10)
    yc = yv + wy + rc - 1  # spinal canal centre
    period, phase, disc = _u(rng, 33, 38), _u(rng, 0, 40), _u(rng, 7, 10)
    wp = _u(rng, 17, 22)
    psoas_top, psoas_r = _u(rng, 75, 90), _u(rng, 17, 22)
    ql = _u(rng, 10, 14)
    box = grid.crop((-1e4, yv - 60, x0 - 110), (1e4, y_tip + 30, x0 + 110))
    if box is None:
        return
    sl, z, y, x = box
    sub = cls[sl]
    inside = sub != _ID["air"]
    dx, dy = x - x0, y - yv
    adx = np.abs(dx)
    # Paraspinal muscles either side of the spinous process, quadratus lumborum lateral to them.
    half = (y_tip - yc) / 2 + 2
    para = ((adx - wp - 4) / wp) ** 2 + ((y - (yc + y_tip) / 2 - 5) / half) ** 2
    sub[(para < 1.0) & inside] = _ID["muscle"]
    ramp = np.clip((100.0 - z) / 40.0, 0.0, 1.0)
    qld = ((adx - wx - 30) / (ql * 1.5)) ** 2 + ((dy - wy - 24) / (ql * 0.8)) ** 2
    sub[(qld < ramp) & inside] = _ID["muscle"]
    # Psoas: absent above psoas_top, growing inferiorly, anterolateral to the vertebral body.
    r = psoas_r * np.clip((psoas_top - z) / psoas_top, 0.0, 1.0) ** 0.7
    r = np.maximum(r, 1e-3)
    ps = ((adx - wx - 0.8 * r) / r) ** 2 + ((dy + 2 - 0.3 * r) / (0.85 * r)) ** 2
    sub[(ps < 1.0) & (r > 3.0)] = _ID["muscle"]
    # Vertebral body with cortical rim, discs and endplates.
    pos = np.mod(z - phase, period)
    is_disc = pos < disc
    endplate = (pos < disc + 1.5) | (pos > period - 1.5)
    vb = np.sqrt((dx / wx) ** 2 + (dy / wy) ** 2)
    vertebra = np.where((vb > 0.8) | endplate, _ID["bone_cortical"], _ID["bone_cancellous"])
    vertebra = np.where(is_disc, _ID["disc"], vertebra)
    in_vb = np.broadcast_to(vb < 1.0, sub.shape)
    sub[in_vb] = vertebra[in_vb]
    # Posterior elements: arch around the canal, spinous and transverse processes.
    dc = np.hypot(dx, y - yc)
    arch = (dc >= rc) & (dc < rc + 5.0) & (y > yv + wy - 4)
    ys0 = yc + rc + 2
    sp = ((dx / 4.5) ** 2 + ((y - (ys0 + y_tip) / 2) / ((y_tip - ys0) / 2)) ** 2 < 1.0) & (
        pos > disc + 2
    )
    mid = (pos > disc + 0.3 * (period - disc)) & (pos < disc + 0.7 * (period - disc))
    tp = ((adx - wx - 8) / 13) ** 2 + ((y - yc + 2) / 3.5) ** 2 < 1.0
    sub[(arch | sp | (tp & mid)) & inside] = _ID["bone_cortical"]
    sub[np.broadcast_to(dc < rc, sub.shape)] = _ID["canal"]


def _paint_ribs(rng: np.random.Generator, cls: np.ndarray, grid: _Grid, body: _Body) -> None:
    """Ribs as chains of small oblique ellipsoids in the body wall, superior slices only.

    Each rib starts beside the spine and runs laterally, then anteriorly, descending; its
    anterior end is costal cartilage.
    """
    top = _u(rng, 175, 185)
    spacing = _u(rng, 20, 24)
    z_min = _u(rng, 55, 65)  # the costal margin: no rib below
    for k in range(7):
        z_start = top - k * spacing + _u(rng, -3, 3)
        length = _u(rng, 2.2, 2.8) if k < 4 else _u(rng, 0.9, 1.6)  # floating ribs are short
        drop = _u(rng, 35, 45)  # mm of descent per radian
        for side in (-1, 1):
            for phi in np.arange(0.0, length, 0.11):
                z = z_start - drop * phi
                if z < max(z_min, grid.z[0] - 10) or z > grid.z[-1] + 10:
                    continue
                theta = (np.pi / 2 + 0.35 + phi) if side < 0 else (np.pi / 2 - 0.35 - phi)
                depth = _SKIN_MM + float(body.fat(theta)) + 0.6 * float(body.muscle(theta))
                cy, cx = body.wall_point(theta, z, depth)
                name = "cartilage" if phi > length - 0.5 and k < 4 else "bone_cortical"
                bead = _Ellipsoid((z, cy, cx), 7.0, 4.5, 4.5, angle=theta + np.pi / 2)
                box = grid.crop(*bead.bounds())
                if box is None:
                    continue
                sl, zz, yy, xx = box
                d = bead.radius(zz, yy, xx)
                inside = d < 1.0
                sub = cls[sl]
                sub[inside] = _ID[name]
                if name != "cartilage":
                    sub[d < 0.5] = _ID["bone_cancellous"]


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


def _make_grid(config: PhantomConfig, body: _Body) -> _Grid:
    """Voxel-centre coordinates; shrink the in-plane anatomy if the field of view is too small."""
    nz, ny, nx = config.shape
    sz, sy, sx = config.spacing
    z = (np.arange(nz) - (nz - 1) / 2) * sz + _Z_CENTRE
    widest = float(np.max(body.scale(z)))
    need_x = (body.half_width * widest + abs(body.cx)) * 1.04
    need_y = (max(body.half_ant, body.half_post) * widest + abs(body.cy)) * 1.04
    fit = min(1.0, nx * sx / 2 / need_x, ny * sy / 2 / need_y)
    y = (np.arange(ny) - (ny - 1) / 2) * sy / fit
    x = (np.arange(nx) - (nx - 1) / 2) * sx / fit
    return _Grid(z=z, y=y, x=x)


def _contrast_phase(rng: np.random.Generator, enhanced: np.ndarray, phase: str) -> np.ndarray:
    """Blend each tissue's enhanced HU towards its native HU by the subject's enhancement.

    A separate generator draws the phase, so a subject's anatomy does not depend on it.
    """
    if phase == "enhanced":
        return enhanced
    native_rows = [_NAMES.index(name) for name in _NATIVE]
    bounds = np.array(list(_NATIVE.values()))
    native = enhanced.copy()
    native[native_rows] = rng.uniform(bounds[:, 0], bounds[:, 1])
    if phase == "native":
        return native
    enhancement = 0.0 if rng.random() < 0.4 else rng.uniform(0.3, 1.0)
    return native + enhancement * (enhanced - native)


def generate_phantom(
    seed: int, config: PhantomConfig = PhantomConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic abdominal CT subject.

    Parameters
    ----------
    seed
        Seed of ``np.random.default_rng``; the same seed and config give identical arrays,
        different seeds different subjects.
    config
        Volume shape, voxel spacing (mm) and noise level.

    Returns
    -------
    image
        int16 Hounsfield units, shape ``config.shape``, axes (z inferior->superior,
        y anterior->posterior, x patient's right->left).
    labels
        uint8, same shape: 0 background, 1 pancreas, 2 kidneys, 3 liver, 4 spleen.
    """
    _validated(config.shape, config.spacing, config.noise_hu)
    rng = np.random.default_rng(seed)
    body = _draw_body(rng)
    fr = _frame(rng, body)
    hu = rng.uniform(_TABLE[:, 0], _TABLE[:, 1])
    hu = _contrast_phase(np.random.default_rng([seed, 1]), hu, config.contrast)
    spleen = _plan_spleen(rng, body)
    kidneys = _plan_kidneys(rng, fr)
    pancreas = _plan_pancreas(rng, fr, spleen, kidneys[1][0])

    grid = _make_grid(config, body)
    cls = np.empty(config.shape, dtype=np.uint8)
    cavity = _paint_body(cls, grid, body)
    _paint_bowel(rng, cls, grid, body, fr, cavity)
    for shape in pancreas.duodenum:
        _paint_bowel_loop(cls, grid, cavity, shape, 2.5, "bowel_content", _u(rng, -0.3, 0.3))
    porta = _paint_liver(rng, cls, grid, body, fr, cavity)
    _paint_spleen(rng, cls, grid, spleen, cavity)
    _paint_pancreas(rng, cls, grid, pancreas, cavity)
    _paint_kidneys(rng, cls, grid, kidneys, cavity)
    _paint_hepatic_vessels(rng, cls, grid, fr, porta)
    _paint_lungs(rng, cls, grid, body, fr)
    _paint_vessels(rng, cls, grid, fr, pancreas, kidneys, porta)
    _paint_spine_and_muscles(rng, cls, grid, fr)
    _paint_ribs(rng, cls, grid, body)

    labels = _LABEL_OF_CLASS[cls]
    image = _render(rng, cls, grid, hu, config.noise_hu)
    return image, labels
