"""The body: its outline, wall layers and the landmarks that place the anatomy.

The wall is skin, subcutaneous fat and muscle around the abdominal cavity; the landmarks are
the spine, the aorta and the IVC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import _Grid, _u
from .tissues import _ID

_Z_CENTRE = 60.0  # anatomical z (mm) of the volume centre; the reference block spans 0..120 mm
_SKIN_MM = 2.5


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
