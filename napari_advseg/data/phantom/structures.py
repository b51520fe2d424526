"""The unlabelled structures: lung bases, bowel, great vessels, spine, back muscles and ribs."""

from __future__ import annotations

import numpy as np

from .body import _SKIN_MM, _Body, _Frame, _wall
from .geometry import _Ellipsoid, _Grid, _paint, _polyline, _tube, _u, _vertical_tube
from .organs import _PancreasPlan
from .tissues import _ID


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
