"""Generate one subject: draw the plans, paint the tissue classes in order, render."""

from __future__ import annotations

import numpy as np

from .body import _Z_CENTRE, _Body, _draw_body, _frame, _paint_body
from .config import PhantomConfig, _validated
from .geometry import _Grid, _u
from .organs import (
    _paint_hepatic_vessels,
    _paint_kidneys,
    _paint_liver,
    _paint_pancreas,
    _paint_spleen,
    _plan_kidneys,
    _plan_pancreas,
    _plan_spleen,
)
from .render import _render
from .structures import (
    _paint_bowel,
    _paint_bowel_loop,
    _paint_lungs,
    _paint_ribs,
    _paint_spine_and_muscles,
    _paint_vessels,
)
from .tissues import _LABEL_OF_CLASS, _TABLE, _contrast_phase


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
