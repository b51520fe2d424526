"""The four labelled organs: liver, spleen, pancreas and kidneys.

The liver comes with the gallbladder and its intrahepatic vessels. Spleen, pancreas and
kidneys are planned first (their plans place each other and the vessels), then painted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .body import _SKIN_MM, _Body, _Frame
from .geometry import _Ellipsoid, _Field, _Grid, _paint, _perturbed, _polyline, _tube, _u
from .tissues import _ID


def _jitter(rng: np.random.Generator, size: float = 0.15) -> float:
    """A size factor in ``1 +- size``."""
    return _u(rng, 1 - size, 1 + size)


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
