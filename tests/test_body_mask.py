"""The body mask (napari_advseg/evaluation/body_mask.py): where the in-body measures are taken."""

import numpy as np
import pytest

from napari_advseg.evaluation.body_mask import BODY_THRESHOLD_HU, body_mask


def synthetic_slice() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Air, a disc of soft tissue with an air hole inside, and a small bright blob apart.

    Returns the slice and the disc (hole included), the hole and the blob as masks.
    """
    y, x = np.indices((64, 80))
    image = np.full((64, 80), -1000.0, np.float32)
    disc = (y - 32) ** 2 + (x - 36) ** 2 < 24**2
    hole = (y - 30) ** 2 + (x - 34) ** 2 < 6**2
    blob = (y - 6) ** 2 + (x - 72) ** 2 < 3**2
    image[disc] = 40.0
    image[hole] = -1000.0  # a lung or bowel gas: inside the body
    image[blob] = 1000.0  # a marker or the table: apart from it
    return image, disc, hole, blob


def test_the_disc_is_kept_with_its_hole_filled_and_the_blob_dropped():
    image, disc, hole, blob = synthetic_slice()
    mask = body_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape
    assert np.array_equal(mask, disc)  # the disc, hole included, and nothing else
    assert mask[hole].all() and not mask[blob].any()


def test_each_slice_of_a_volume_is_done_on_its_own():
    image, disc, _, _ = synthetic_slice()
    air = np.full_like(image, -1000.0)
    just_above = np.full_like(image, BODY_THRESHOLD_HU + 1.0)
    volume = np.stack([image, air, just_above, np.full_like(image, BODY_THRESHOLD_HU)])
    mask = body_mask(volume)
    assert mask.shape == volume.shape
    assert np.array_equal(mask[0], disc)
    assert not mask[1].any()  # no tissue, no body
    assert mask[2].all()  # one component: the whole slice
    assert not mask[3].any()  # the threshold itself is not tissue


def test_the_largest_component_wins_and_a_hole_open_to_the_edge_stays_open():
    image = np.full((40, 40), -1000.0, np.float32)
    image[5:35, 0:20] = 0.0  # a large block touching the left edge
    image[15:25, 0:8] = -1000.0  # a notch open to the edge: not a hole
    image[10:14, 30:34] = 0.0  # a smaller block
    mask = body_mask(image)
    assert mask[5:35, 8:20].all() and not mask[15:25, 0:8].any()
    assert not mask[10:14, 30:34].any()


def test_other_shapes_are_refused():
    with pytest.raises(ValueError, match="slice"):
        body_mask(np.zeros((2, 2, 2, 2)))
