"""The patient's body in a CT: where perceptibility, displacement and folding are measured.

Mean |I_DV - I0| over the whole field of view (eq. 7) counts the air around the patient, where
a change costs the attack nothing that a reader would see; the in-body measures count only the
body. Per axial slice (2D), the body is the largest connected component of the pixels above
:data:`BODY_THRESHOLD_HU` (4-connected), with its holes filled: the lungs, the bowel gas and the
air in the airways inside it belong to it, and the table, a hand or a calibration marker apart
from it do not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BODY_THRESHOLD_HU = -500.0
"""Pixels above this many HU are tissue (air is about -1000 HU, fat about -100 HU)."""


def _slice_body(image_hu: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(image_hu > BODY_THRESHOLD_HU)
    if count == 0:
        return np.zeros(image_hu.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0  # the background
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))


def body_mask(image_hu: np.ndarray) -> np.ndarray:
    """The body of each axial slice of ``image_hu``, a bool array of the same shape.

    ``image_hu`` is one (H, W) slice or a (Z, H, W) volume in Hounsfield units (anything
    ``np.asarray`` takes, a torch tensor on the CPU included). Each slice is done on its own;
    a slice with no pixel above :data:`BODY_THRESHOLD_HU` has an empty body.
    """
    image = np.asarray(image_hu)
    if image.ndim == 2:
        return _slice_body(image)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W) slice or a (Z, H, W) volume, got {image.shape}")
    return np.stack([_slice_body(s) for s in image]) if len(image) else np.zeros(image.shape, bool)
