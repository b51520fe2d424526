"""The tissue table and the draw of a subject's contrast phase.

Each tissue class has an enhanced HU range, coarse and fine texture amplitudes and a label;
the tissues that take up contrast agent also have a native HU range.
"""

from __future__ import annotations

import numpy as np

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
